"""stn_deploy.trt.runner: the engine runner (profile checks; GPU runs under the gpu marker)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers_trt import (
    needs_rtx,
)
from stn_deploy.errors import UserError


class _FakeEngine:
    def get_tensor_profile_shape(self, name, profile):
        return (1, 1, 28, 28), (8, 1, 28, 28), (64, 1, 28, 28)


@pytest.mark.parametrize("shape, ok", [((1, 1, 28, 28), True), ((64, 1, 28, 28), True), ((65, 1, 28, 28), False),
                                       ((8, 1, 32, 32), False), ((8, 28, 28), False)],
                         ids=["min", "max", "batch-above", "size-off", "rank"])
def test_runner_checks_profile(shape, ok):
    from stn_deploy.trt.runner import EngineRunner

    runner = EngineRunner("unused.engine")
    runner.engine = _FakeEngine()
    if ok:
        runner.check_profile("input", shape)
    else:
        with pytest.raises(UserError, match="outside the engine's profile"):
            runner.check_profile("input", shape)


def test_runner_without_gpu_is_user_error(tmp_path):
    pytest.importorskip("torch")
    import torch

    from stn_deploy.trt import EngineRunner

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    (tmp_path / "e.engine").write_bytes(b"vtrt" + bytes(20) + bytes([1, 7, 1]) + bytes(100))
    with pytest.raises(UserError):
        EngineRunner(tmp_path / "e.engine").activate()


@pytest.mark.gpu
@needs_rtx
def test_runner_matches_numpy_on_gpu(standard_builds):
    from stn_deploy.trt import EngineRunner

    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    with EngineRunner(standard_builds["fp32"].options.engine) as runner:
        y = runner.infer({"x": x})["y"]
        with pytest.raises(UserError, match="outside the engine's profile"):
            runner.infer({"x": np.zeros((17, 4), np.float32)})
    np.testing.assert_allclose(y, np.maximum(x @ (np.arange(16, dtype=np.float32).reshape(4, 4) / 16), 0),
                               atol=1e-3, rtol=1e-3)
