"""Serving: ``triton`` (a model repository) and ``serve`` (a Triton server on it)."""

from __future__ import annotations

from pathlib import Path

import click

from stn_deploy.cli.group import main


@main.command("triton")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Repository folder to create (must not exist).")
@click.option("--name", default=None, help="Model name (one MODEL only)  [default: the file's stem]")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=None,
              help="Largest batch per execution  [default: an engine's profile max batch; 64 for ONNX]")
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True, help="Instances per model.")
@click.option("--max-queue-delay-us", type=click.IntRange(min=0), default=100, show_default=True,
              help="How long the dynamic batcher may hold a request to fill a batch, µs.")
@click.option("--dynamic-batching/--no-dynamic-batching", default=True, show_default=True,
              help="Let the server merge concurrent requests into batches.")
@click.option("--serve-as", default="tensorrt,onnx,python", show_default=True,
              help="Entries to write where they apply: tensorrt (engines), onnx (onnxruntime backend), "
                   "python (python backend running ONNX Runtime).")
@click.option("--intra-op-threads", type=click.IntRange(min=0), default=1, show_default=True,
              help="ONNX Runtime threads per python-backend instance (0 = ONNX Runtime's default).")
@click.option("--plugin-library", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Plugin library to copy for engines  [default: the engine sidecar's, else plugins path]")
@click.option("--kserve", is_flag=True, help="Also write a KServe InferenceService (inferenceservice.yaml).")
@click.option("--storage-uri", default="pvc://stn-models/triton", show_default=True,
              help="Where the repository will be uploaded, for --kserve.")
def triton_command(models, output, name, max_batch_size, instances, max_queue_delay_us, dynamic_batching,
                   serve_as, intra_op_threads, plugin_library, kserve, storage_uri):
    """Write a Triton model repository for checkpoints, standard ONNX models and engines.

    An engine becomes NAME (tensorrt_plan, plugin library copied in, server flags in
    tritonserver-flags.txt); a standard ONNX or a checkpoint NAME-onnx (onnxruntime backend)
    and NAME-python (python backend running ONNX Runtime, what the bundled server serves).
    Every config.pbtxt is checked against Triton's model-config schema; the repository is
    written to a temporary folder and renamed into place.
    """
    from stn_deploy.triton.repository import RepositoryOptions, write_repository

    options = RepositoryOptions(
        models=tuple(models), output=output, name=name, max_batch_size=max_batch_size, instances=instances,
        max_queue_delay_us=max_queue_delay_us, dynamic_batching=dynamic_batching,
        serve_as=tuple(f.strip() for f in serve_as.split(",") if f.strip()), intra_op_threads=intra_op_threads,
        plugin_library=plugin_library, kserve=kserve, storage_uri=storage_uri)
    result = write_repository(options)
    for m in result.models:
        click.echo(f"{m.name}: {m.serve_as}, max batch {m.max_batch_size}, preferred {m.preferred_batch_sizes}")
        for note in m.notes:
            click.echo(f"  note: {note}")
    click.echo(f"wrote {result.path}" + (f" and {result.kserve}" if result.kserve else ""))


@main.command("serve")
@click.argument("repository", type=click.Path(path_type=Path, file_okay=False))
@click.option("--http-port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=8001, show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=8002, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Interface every endpoint binds (0.0.0.0 exposes the server to the network).")
@click.option("--server", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="tritonserver binary  [default: $STN_DEPLOY_TRITONSERVER, PATH, then the bundled one]")
@click.option("--model", "models", multiple=True, help="Load only this model; repeatable  [default: all]")
@click.option("--log-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Server log  [default: a temporary file]")
@click.option("--ready-timeout", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds to wait for the server to become ready.")
@click.option("--python-env", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Environment for python-backend models (numpy<2, onnxruntime)  "
                   "[default: $STN_DEPLOY_TRITON_PYTHON_ENV, else third_party/triton/python-env]")
def serve_command(repository, http_port, grpc_port, metrics_port, address, server, models, log_file, ready_timeout,
                  python_env):
    """Serve REPOSITORY with a real Triton Inference Server until Ctrl-C / SIGTERM.

    Loads every model the server has a backend for and names the ones it skips (the bundled
    server has only the python backend). Python-backend models run with the numpy<2 +
    onnxruntime environment set-up made.
    Stopping stops the server and its python-backend stubs.
    """
    from stn_deploy.triton.server import ServerOptions, serve

    def ready(s):
        for model, why in s.selection.skipped.items():
            click.echo(f"skipped  {model}: {why}")
        click.echo(f"tritonserver ready (pid {s.pid}, log {s.log_path})"
                   + (f"; serving {', '.join(s.selection.load)}" if s.selection.load else ""))
        click.echo(f"  HTTP     http://{s.http_url}")
        click.echo(f"  gRPC     {s.grpc_url}")
        click.echo(f"  metrics  {s.metrics_url}")
        click.echo("Ctrl-C stops it.")

    serve(ServerOptions(repository=repository, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                        address=address, server=server, models=tuple(models), log_file=log_file,
                        ready_timeout_s=ready_timeout, python_env=python_env), on_ready=ready)
    click.echo("stopped")
