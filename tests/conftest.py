"""Shared fixtures and markers: ``gpu`` tests skip cleanly without CUDA."""

from __future__ import annotations

import pytest


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def one_torch_thread():
    """Tiny models run faster on one thread than on two on a shared machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



@pytest.fixture(scope="module")
def library():
    """The built plugin library's path (``kernels.library_path()``); skips when it is not built."""
    from stn_deploy import kernels

    path = kernels.library_path()
    if not path.exists():
        pytest.skip(f"plugin library not built: {path}")
    return path
