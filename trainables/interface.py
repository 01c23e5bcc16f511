"""What a data set is to the rest of the platform, wherever it lives.

Two placements implement `Data`: `memory` (trainables.data.Dataset: the splits as tensors,
shipped whole to each trial) and `stream` (trainables.sources.Streamed: only an index, each
trial reading the examples itself). Preflight, tracking, retraining and the training loop
ask a `Data` for what they need and never which class it is. Its `Feed` is how one trial
reads it: batches on the trial's device, images as floats in [0, 1].

This module imports no torch at run time, so the study's driver can name these types
without loading it.
"""

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

Placement = Literal["memory", "stream"]
Task = Literal["classification", "regression"]
Batch = tuple["torch.Tensor", "torch.Tensor"]  # examples and their labels (or targets)


class DataError(ValueError):
    """A data set that cannot be read as its spec says; the message names the field and fix."""


@runtime_checkable
class Feed(Protocol):
    """One trial's batches of a data set, on its device; images as floats in [0, 1]."""

    def train(self, batch_size: int, epoch: int) -> Iterator[Batch]:
        """The (examples, labels) batches of training epoch `epoch`, shuffled by the seed."""
        ...

    def split(self, name: str) -> Iterator[Batch]:
        """The batches of split `name` (train, val or test) in a fixed order, for evaluation."""
        ...

    def has(self, name: str) -> bool:
        """Whether the data set has split `name`."""
        ...

    def normalize(self, x: "torch.Tensor") -> "torch.Tensor":
        """A batch standardised per channel as the network expects it (a no-op where the
        feed standardised the whole set once)."""
        ...

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps so that a resumed trial reads the same batches."""
        ...

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's `state()`."""
        ...


@runtime_checkable
class Data(Protocol):
    """A data set split for training, in memory or streamed. Read-only: its
    members are properties, which a dataclass field satisfies too."""

    @property
    def name(self) -> str:
        """The spec's `dataset.name`: a built-in, image_folder or module:callable."""
        ...

    @property
    def task(self) -> Task:
        """classification (integer labels) or regression (float targets)."""
        ...

    @property
    def num_classes(self) -> int:
        """Classes, numbered from 0; for regression, the target's width (outputs)."""
        ...

    @property
    def target_mean(self) -> tuple[float, ...] | None:
        """Regression: the training targets' mean per output (the network is trained on
        targets standardised with it and `target_std`); None for classes."""
        ...

    @property
    def target_std(self) -> tuple[float, ...] | None:
        """Regression: the training targets' standard deviation per output."""
        ...

    @property
    def task_note(self) -> str:
        """Why the task was chosen where the data left it open (a CSV's numeric column)."""
        ...

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's shape: (C, H, W) for images, (F,) for tables."""
        ...

    @property
    def mean(self) -> tuple[float, ...] | None:
        """Per-channel mean of the training images in [0, 1] (None where there is none)."""
        ...

    @property
    def std(self) -> tuple[float, ...] | None:
        """Per-channel standard deviation, as `mean`."""
        ...

    @property
    def placement(self) -> Placement:
        """memory (held whole, shipped to each trial) or stream (each trial reads it)."""
        ...

    @property
    def is_image(self) -> bool:
        """Whether the examples are images (C, H, W)."""
        ...

    def sizes(self) -> dict[str, int]:
        """Examples per split."""
        ...

    def digest(self) -> str:
        """A short content hash (what MLflow records as the data set's digest)."""
        ...

    def examples(self, n: int) -> "torch.Tensor":
        """`n` training examples exactly as the network gets them in the loop (floats,
        normalised), on the CPU."""
        ...

    def parts(self) -> list["Data"]:
        """What one run trains on side by side, each its own model: the set itself, or for
        k-fold cross-validation one set per fold (its training and validation splits)."""
        ...

    def feed(self, device: "torch.device", *, raw: bool, seed: int, workers: int) -> Feed:
        """The batches one trial trains on, on `device`: `raw` keeps images in [0, 1] for
        augmentation (normalised per batch by `Feed.normalize`), `seed` orders the epochs and
        `workers` reads a streamed set in that many processes."""
        ...
