"""One model entry of a Triton model repository: what ``repository`` writes and ``kserve``
describes (its own module, so that neither of the two imports the other)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RepositoryModel:
    """One model entry of the repository."""

    name: str
    serve_as: str
    source: str
    max_batch_size: int
    preferred_batch_sizes: list[int]
    inputs: list[dict]
    outputs: list[dict]
    notes: list[str] = field(default_factory=list)
    #: file name of the plugin library under ``<name>/plugins/`` (engines only)
    plugin_library: str | None = None
