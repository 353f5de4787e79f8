"""Run a TensorRT / TensorRT-RTX engine: a Polygraphy runner (activate / infer / deactivate).

Needs a CUDA GPU and a CUDA build of torch (device buffers are torch tensors, which keeps
this free of a separate CUDA binding). Inputs are checked against the engine's optimisation
profile before anything runs on the device.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path

from polygraphy.backend.base import BaseRunner

from stn_deploy.errors import UserError
from stn_deploy.trt.engine_file import check_engine_file, deserialize, read_sidecar


class EngineRunner(BaseRunner):
    """Runs an engine file on the GPU; a Polygraphy ``BaseRunner``.

    Args:
        path: the engine.
        flavour: "auto" (from the engine header), "tensorrt" or "rtx".
        plugin_library: plugin library to load; default: the one the sidecar names, else
            ``kernels.library_path()``.
        name: runner name shown by Polygraphy.

    ``infer(feed_dict, copy_outputs_to_host=True)``: numpy arrays or torch tensors in;
    numpy arrays out (torch CUDA tensors with ``copy_outputs_to_host=False``). Uses
    optimisation profile 0.
    """

    def __init__(self, path: Path | str, flavour: str = "auto", plugin_library: Path | None = None,
                 name: str | None = None) -> None:
        super().__init__(name=name, prefix="stn-trt-runner")
        self.path = Path(path)
        self.flavour_choice = flavour
        self.plugin_library = plugin_library

    def activate_impl(self) -> None:
        import torch


        _kind, flavour = check_engine_file(self.path, self.flavour_choice)
        if not torch.cuda.is_available():
            raise UserError(f"running engine {self.path.name} needs a CUDA GPU (torch.cuda.is_available() is False)")
        self._torch = torch
        self.flavour = flavour
        self.engine, self._runtime = deserialize(self.path, flavour, read_sidecar(self.path), self.plugin_library)
        self.context = self.engine.create_execution_context()
        trt = flavour.trt
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.stream = torch.cuda.Stream()

    def _torch_dtype(self, name: str):
        import numpy as np

        trt, torch = self.flavour.trt, self._torch
        dtype = self.engine.get_tensor_dtype(name)
        if dtype == trt.DataType.BF16:
            return torch.bfloat16
        return getattr(torch, np.dtype(trt.nptype(dtype)).name)

    def get_input_metadata_impl(self):
        import numpy as np
        from polygraphy.common import TensorMetadata

        meta = TensorMetadata()
        for name in self.inputs:
            dtype = self.engine.get_tensor_dtype(name)
            np_dtype = None if dtype == self.flavour.trt.DataType.BF16 else np.dtype(self.flavour.trt.nptype(dtype))
            meta.add(name, dtype=np_dtype, shape=list(self.engine.get_tensor_shape(name)))
        return meta

    def check_profile(self, name: str, shape: tuple[int, ...]) -> None:
        """Raise UserError when ``shape`` lies outside profile 0 of input ``name``."""
        lo, _opt, hi = self.engine.get_tensor_profile_shape(name, 0)
        lo, hi = tuple(lo), tuple(hi)
        if len(shape) != len(lo) or any(not a <= s <= b for s, a, b in zip(shape, lo, hi)):
            raise UserError(f"input {name} has shape {list(shape)}, outside the engine's profile "
                            f"(min {list(lo)}, max {list(hi)}); rebuild with --shapes to cover it")

    def infer_impl(self, feed_dict, copy_outputs_to_host: bool = True):
        torch = self._torch
        keep = []
        for name in self.inputs:
            if name not in feed_dict:
                raise UserError(f"missing input {name!r} for engine {self.path.name}")
            value = feed_dict[name]
            tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(value)
            self.check_profile(name, tuple(tensor.shape))
            tensor = tensor.to(device="cuda", dtype=self._torch_dtype(name)).contiguous()
            keep.append(tensor)
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = OrderedDict()
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            out = torch.empty(shape, dtype=self._torch_dtype(name), device="cuda")
            self.context.set_tensor_address(name, out.data_ptr())
            outputs[name] = out
        start = time.perf_counter()
        # The stream must wait for the input copies made on the default stream.
        self.stream.wait_stream(torch.cuda.current_stream())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise UserError(f"engine {self.path.name} failed to run (execute_async_v3 returned False)")
        self.stream.synchronize()
        self.inference_time = time.perf_counter() - start
        if copy_outputs_to_host:
            return OrderedDict((k, v.float().cpu().numpy() if v.dtype == torch.bfloat16 else v.cpu().numpy())
                               for k, v in outputs.items())
        return outputs

    def deactivate_impl(self) -> None:
        del self.context, self.engine, self._runtime, self.stream
