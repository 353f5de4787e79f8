"""Triton python-backend model: runs the standard ONNX export in ONNX Runtime on the CPU.

``stn-deploy triton`` copies this file into ``REPO/<name>/1/model.py``. It runs inside
Triton's python-backend stub, in the environment of the first ``python3`` on the server's
PATH (``stn-deploy serve`` puts a numpy<2 + onnxruntime environment there; numpy 2 in the
stub's environment corrupts tensors). It is never imported by stn-deploy itself:
``triton_python_backend_utils`` exists only inside the stub.

Parameters read from ``config.pbtxt``: ``onnx_file`` (beside this file), ``intra_op_threads``
(ONNX Runtime threads per model instance; 0 = ONNX Runtime's default).
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = os.path.join(args["model_repository"], args["model_version"], params.get("onnx_file", "model.onnx"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_names = [i["name"] for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]
        self.dtypes = {i["name"]: pb_utils.triton_string_to_numpy(i["data_type"]) for i in config["input"]}

    def execute(self, requests):
        # The dynamic batcher hands over several requests at once: one ONNX Runtime call runs
        # them all (that is the point of batching), then the rows go back to their requests.
        feeds, sizes = {name: [] for name in self.input_names}, []
        for request in requests:
            n = None
            for name in self.input_names:
                x = pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                feeds[name].append(x.astype(self.dtypes[name], copy=False))
                n = x.shape[0] if n is None else n
            sizes.append(n)
        batch = {name: parts[0] if len(parts) == 1 else np.concatenate(parts) for name, parts in feeds.items()}
        try:
            outputs = self.session.run(self.output_names, batch)
        except Exception as exc:  # one bad batch answers its requests with the error
            error = pb_utils.TritonError(f"ONNX Runtime: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses, start = [], 0
        for n in sizes:
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(out[start:start + n]))
                       for name, out in zip(self.output_names, outputs)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses

    def finalize(self):
        self.session = None
