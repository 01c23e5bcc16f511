"""What preflight found of a study's data and model: a record of its own beside the spec
(the spec stays as the user wrote it), logged on the parent run and part of every trial's
config, so that exports, retrains and resumes read the same data the same way."""

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Found:
    """The data set's example shape, placement, statistics and loader file; the model's file.

    `dataset` may hold shape, placement, mean, std and source ({file, sha256} of a loader
    plug-in); `model` may hold source (of a model plug-in).
    """

    dataset: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> list[int] | None:
        """One example's shape, once the data was read."""
        return self.dataset.get("shape")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> "Found":
        raw = raw or {}
        return cls(dict(raw.get("dataset") or {}), dict(raw.get("model") or {}))
