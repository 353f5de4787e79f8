"""A KServe ``InferenceService`` for a Triton model repository, and its check.

The manifest uses the ``triton`` model format served by KServe's ``kserve-tritonserver``
runtime, which mounts ``storageUri`` at ``/mnt/models`` and starts ``tritonserver
--model-store=/mnt/models``. Our plugin library travels inside the repository, so the flag
that loads it points under ``/mnt/models``. Replicas scale between ``minReplicas`` and
``maxReplicas`` on in-flight requests per replica (``scaleMetric: concurrency``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from stn_deploy.errors import UserError

if TYPE_CHECKING:
    from stn_deploy.triton.entry import RepositoryModel

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
MOUNT = "/mnt/models"
#: The NGC Triton container of the release ``stn-deploy serve`` bundles (2.51 = 24.10).
RUNTIME_VERSION = "24.10-py3"
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_STORAGE = re.compile(r"^(gs|s3|pvc|https?|hdfs|webhdfs|oci|azure)://.+")


@dataclass(frozen=True)
class KServeOptions:
    """Options of ``inference_service``.

    Attributes:
        name: InferenceService name (made a DNS label: lowercase, '-' for other characters).
        storage_uri: where the repository is uploaded (``gs://``, ``s3://``, ``pvc://``, ...).
        models: the repository's entries (engines ask for a GPU and load the plugin).
        min_replicas, max_replicas: autoscaling bounds; default 1..4.
        scale_target: in-flight requests per replica at which KServe adds one; default 16.
        gpus: GPUs per replica when the repository holds an engine; default 1.
    """

    name: str
    storage_uri: str
    models: tuple[RepositoryModel, ...] = ()
    min_replicas: int = 1
    max_replicas: int = 4
    scale_target: int = 16
    gpus: int = 1


def _dns_name(name: str) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if not label or not label[0].isalpha():
        label = f"stn-{label}".rstrip("-")
    return label[:63].rstrip("-")


def inference_service(options: KServeOptions) -> dict[str, Any]:
    """The InferenceService as a dict (checked by ``check_inference_service``)."""
    engines = [m for m in options.models if m.serve_as == "tensorrt"]
    args = []
    env = []
    for m in engines:
        if m.plugin_library:
            lib = f"{MOUNT}/{m.name}/plugins/{m.plugin_library}"
            args.append(f"--backend-config=tensorrt,plugins={lib}")
            # The LD_PRELOAD route serves once the library registers its creators at load time.
            env.append({"name": "LD_PRELOAD", "value": lib})
    limits: dict[str, str] = {"cpu": "4", "memory": "8Gi"}
    if engines:
        limits["nvidia.com/gpu"] = str(options.gpus)
    service = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": _dns_name(options.name),
                     "annotations": {"serving.kserve.io/autoscalerClass": "kpa.autoscaling.knative.dev"}},
        "spec": {"predictor": {
            "minReplicas": options.min_replicas,
            "maxReplicas": options.max_replicas,
            "scaleMetric": "concurrency",
            "scaleTarget": options.scale_target,
            "model": {
                "modelFormat": {"name": "triton"},
                "runtime": "kserve-tritonserver",
                "runtimeVersion": RUNTIME_VERSION,
                "storageUri": options.storage_uri,
                "args": args,
                "env": env,
                "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": limits},
            },
        }},
    }
    check_inference_service(service, needs_gpu=bool(engines))
    return service


def check_inference_service(service: Any, needs_gpu: bool = False) -> None:
    """The fields KServe requires of a v1beta1 InferenceService with a Triton model.

    Raises:
        UserError: naming the first missing or malformed field.
    """

    def fail(msg: str) -> NoReturn:
        raise UserError(f"InferenceService: {msg}")

    if not isinstance(service, dict):
        fail("not a mapping")
    if service.get("apiVersion") != API_VERSION:
        fail(f"apiVersion must be {API_VERSION}")
    if service.get("kind") != KIND:
        fail(f"kind must be {KIND}")
    name = (service.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not _DNS_LABEL.match(name):
        fail(f"metadata.name {name!r} must be a DNS-1035 label (lowercase letters, digits, '-')")
    predictor = (service.get("spec") or {}).get("predictor")
    if not isinstance(predictor, dict):
        fail("spec.predictor is required")
    model = predictor.get("model")
    if not isinstance(model, dict):
        fail("spec.predictor.model is required")
    if (model.get("modelFormat") or {}).get("name") != "triton":
        fail("spec.predictor.model.modelFormat.name must be triton")
    uri = model.get("storageUri")
    if not isinstance(uri, str) or not _STORAGE.match(uri):
        fail(f"spec.predictor.model.storageUri {uri!r} must be a URI (gs://, s3://, pvc://, https://, ...)")
    lo, hi = predictor.get("minReplicas", 1), predictor.get("maxReplicas", 0)
    if not isinstance(lo, int) or not isinstance(hi, int) or lo < 0 or (hi and hi < lo):
        fail(f"replicas: minReplicas {lo!r} must be >= 0 and <= maxReplicas {hi!r}")
    for item in model.get("env", []):
        if not isinstance(item, dict) or not item.get("name") or "value" not in item:
            fail(f"env entries need name and value: {item!r}")
    limits = ((model.get("resources") or {}).get("limits") or {})
    if needs_gpu and not str(limits.get("nvidia.com/gpu", "")).isdigit():
        fail("an engine needs resources.limits nvidia.com/gpu")


def to_yaml(service: dict[str, Any]) -> str:
    try:
        import yaml
    except ImportError as exc:
        raise UserError(f"PyYAML is not installed ({exc}); pip install pyyaml") from None
    return yaml.safe_dump(service, sort_keys=False)


def load_inference_service(path: Path) -> dict[str, Any]:
    """Read a manifest back and check it (``check_inference_service``)."""
    import yaml

    try:
        service = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: not readable YAML ({exc})") from None
    gpu = isinstance(service, dict) and "nvidia.com/gpu" in str(service)
    check_inference_service(service, needs_gpu=gpu)
    return service


def write_inference_service(options: KServeOptions, path: Path) -> Path:
    """Write ``inference_service(options)`` as YAML to ``path`` and read it back to check it."""
    Path(path).write_text(to_yaml(inference_service(options)))
    load_inference_service(path)
    return Path(path)
