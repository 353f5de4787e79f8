"""stn_deploy.io: atomic outputs (temp file + rename), output folders, file digests."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from stn_deploy.errors import UserError
from stn_deploy.io import atomic_path, ensure_writable_dir, file_sha256, require_file, write_bytes, write_json


def test_atomic_path_renames_on_success_with_plain_file_mode(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_bytes(b"new")
        assert not target.exists()  # nothing at the target until the body succeeded
    assert target.read_bytes() == b"new"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_path_keeps_the_old_file_when_the_body_fails(tmp_path, error):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(error):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise error()
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_write_helpers(tmp_path):
    write_json(tmp_path / "a" / "r.json", {"x": 1, "p": tmp_path})
    assert json.loads((tmp_path / "a" / "r.json").read_text()) == {"x": 1, "p": str(tmp_path)}
    write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert file_sha256(tmp_path / "b.bin") == hashlib.sha256(b"\x00\x01").hexdigest()


def test_ensure_writable_dir_reports_a_file_in_the_way(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="cannot create output folder"):
        ensure_writable_dir(tmp_path / "f" / "sub")


@pytest.mark.parametrize("case", ["missing", "directory", "unreadable"])
def test_require_file_words(tmp_path, case):
    path = tmp_path / "x.onnx"
    expected = {"missing": "no such file", "directory": "is a directory", "unreadable": "is not readable"}[case]
    if case == "directory":
        path.mkdir()
    elif case == "unreadable":
        if os.geteuid() == 0:
            pytest.skip("root reads any file: no unreadable file to make")
        path.write_bytes(b"x")
        path.chmod(0)
    with pytest.raises(UserError, match=f"^--onnx file {path}: {expected}"):
        require_file(path, "--onnx file")
