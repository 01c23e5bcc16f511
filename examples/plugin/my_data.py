"""Data of your own in a study: `dataset: {name: my_data:load, args: {...}}`.

The study calls load(**args) once on the driver (and, with `placement: stream`, once in each
trial). Return the splits as arrays or tensors,

    (x_train, y_train, x_val, y_val)  or  (x_train, y_train, x_val, y_val, x_test, y_test)

with images as (N, C, H, W) (uint8 in 0..255, or floats in [0, 1]) or tables as (N, features),
and labels as integers 0..classes-1; or return torch.utils.data.Dataset objects of (x, label)
pairs, (train, val) or (train, val, test), when the data is too big to hold at once.
"""

import numpy as np
import torch
from sklearn.datasets import load_digits


class Digits(torch.utils.data.Dataset):
    """(image, label) pairs, read one at a time."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return torch.from_numpy(self.images[index]), int(self.labels[index])


def load(val_share: float = 0.25, as_datasets: bool = False):
    """scikit-learn's digits as uint8 images (N, 1, 8, 8), the last `val_share` for val."""
    digits = load_digits()
    images = (digits.images[:, None] * 16).clip(0, 255).astype(np.uint8)
    cut = int(len(images) * (1 - val_share))
    train, val = (images[:cut], digits.target[:cut]), (images[cut:], digits.target[cut:])
    if as_datasets:
        return Digits(*train), Digits(*val)
    return (*train, *val)
