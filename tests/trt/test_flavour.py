"""stn_deploy.trt.flavour: the TensorRT flavours (full TensorRT, TensorRT-RTX) and engine headers."""

from __future__ import annotations

import importlib.util

import pytest

from helpers_trt import (
    needs_rtx,
)
from stn_deploy.errors import UserError


@needs_rtx
def test_rtx_flavour_properties():
    from stn_deploy.trt import get_flavour

    be = get_flavour("rtx")
    assert be.name == "rtx" and be.version.startswith("1.")
    assert be.strongly_typed, "TensorRT-RTX has no FP16 builder flag"
    assert be.has_compute_capabilities


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="full TensorRT is installed here")
def test_missing_tensorrt_flavour_is_user_error():
    from stn_deploy.trt import get_flavour

    with pytest.raises(UserError, match="tensorrt"):
        get_flavour("tensorrt")


def test_engine_header_detection():
    from stn_deploy.trt.flavour import engine_flavour_from_header, engine_version_from_header

    head = b"vtrt" + bytes(20) + bytes([1, 7, 1]) + bytes(37)
    assert engine_flavour_from_header(head) == "rtx"
    assert engine_version_from_header(head) == (1, 7, 1)
    assert engine_flavour_from_header(b"ftrt" + bytes(60)) == "tensorrt"
    assert engine_flavour_from_header(b"\x08\x01onnx") is None
