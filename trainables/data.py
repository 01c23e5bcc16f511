"""Data sets as preloaded tensors: loaded once, split with a seed, batched by index."""

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class Dataset:
    """A classification data set held in memory as float features and integer labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int

    @property
    def num_features(self) -> int:
        return int(self.x_train[0].numel())

    def to(self, device: torch.device | str) -> "Dataset":
        """Return the same data on `device` (a no-op when it is already there)."""
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return Dataset(
            self.name,
            move(self.x_train),
            move(self.y_train),
            move(self.x_val),
            move(self.y_val),
            self.num_classes,
        )


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data / 16.0, digits.target  # 8x8 images, pixel values 0..16


LOADERS = {"digits": _digits}
DATASETS = tuple(LOADERS)


def stratified_split(
    y: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return train and validation indices with each class split in the same proportion."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y))
    return train_test_split(index, test_size=val_fraction, random_state=seed, stratify=y)


def load_dataset(spec: dict[str, Any], seed: int = 0) -> Dataset:
    """Load the data set a study's `dataset` mapping names and split it train/validation."""
    x, y = LOADERS[spec["name"]]()
    train, val = stratified_split(y, spec.get("val_fraction", 0.2), seed)
    features = torch.as_tensor(x, dtype=torch.float32)
    labels = torch.as_tensor(y, dtype=torch.long)
    return Dataset(
        spec["name"],
        features[train],
        labels[train],
        features[val],
        labels[val],
        int(labels.max()) + 1,
    )
