"""Serving with NVIDIA Triton Inference Server: model repositories, a real server, a client.

Modules (each imports tritonclient/onnx lazily, so ``import stn_deploy.triton`` is cheap):
    config: ``config.pbtxt`` built and checked with Triton's own model-config schema.
    repository: ``write_repository(RepositoryOptions)`` - engines, ONNX, checkpoints.
    kserve: a KServe ``InferenceService`` for a repository, and its check.
    server: ``TritonServer(ServerOptions)`` - start, wait ready, stop (no stray processes).
    client: ``infer``, ``triton_runner``, ``batch_stats``, ``load_test(LoadOptions)``.
    bench: ``bench_triton(TritonBenchOptions)`` - load at several concurrencies + in-process ORT.
    python_model: the python-backend ``model.py`` copied into repositories (not imported here).
"""
