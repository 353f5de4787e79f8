"""Download one wheel (no dependencies, never installed) and unpack some of its folders.

    python scripts/fetch_wheel_files.py SPEC DEST PREFIX[=NEWPREFIX] ...

For what a project needs from a wheel without installing it: the TensorRT headers of
``kernel-lens`` (``kernel_lens/include/tensorrt/=`` strips the prefix), the Triton server of
``nvidia-pytriton`` (kept under its own paths). File modes keep their execute bits.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    spec, dest, prefixes = argv[0], Path(argv[1]), [p.partition("=") for p in argv[2:]]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", spec, "-d", tmp], check=True)
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.infolist():
                for old, renamed, new in prefixes:
                    if info.filename.startswith(old) and not info.is_dir():
                        out = dest / ((new if renamed else old) + info.filename[len(old):])
                        out.parent.mkdir(parents=True, exist_ok=True)
                        out.write_bytes(zf.read(info))
                        out.chmod(0o755 if (info.external_attr >> 16) & 0o111 else 0o644)
                        break
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
