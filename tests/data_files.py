"""Data the tests make: folders of small PNGs in ImageFolder's layout, and loader plug-ins."""

from pathlib import Path

import numpy as np

from tests.plugin_files import write_module


def image_folder(root: Path, per_class: int = 70, classes: int = 3, size: int = 12,
                 val: bool = True) -> Path:  # fmt: skip
    """root/train/<class>/*.png (and root/val/<class>/*.png when `val`): noisy images whose
    class is the colour channel that is bright, so a small network learns them."""
    rng = np.random.default_rng(0)
    from PIL import Image

    splits = (("train", per_class), ("val", per_class // 3)) if val else (("", per_class),)
    for split, count in splits:
        for label in range(classes):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
                pixels[..., label % 3] += 150
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return root


LOADER = """
import numpy as np
import torch
from sklearn.datasets import load_digits


class Pairs(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return torch.from_numpy(self.x[i]), int(self.y[i])


def load(kind="arrays", n=600):
    digits = load_digits()
    x = (digits.images[:n, None] / 16.0).astype(np.float32)
    y = digits.target[:n]
    if kind == "datasets":
        return Pairs(x[:480], y[:480]), Pairs(x[480:], y[480:])
    return x[:480], y[:480], x[480:], y[480:]
"""


def loader_plugin(folder: Path, name: str) -> Path:
    """A loader plug-in `name`:load(kind, n) over scikit-learn's digits: arrays or torch
    Datasets of (1, 8, 8) float images."""
    return write_module(folder, name, LOADER)
