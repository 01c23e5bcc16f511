"""Data the tests (and benchmarks.gpu) make: MNIST's and CIFAR-10's files in their on-disk
formats, at any size; folders of small PNGs in ImageFolder's layout; loader plug-ins."""

import pickle
import struct
from pathlib import Path

import numpy as np

from tests.plugin_files import write_module


def write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """MNIST's IDX format: big-endian magic and sizes, then uint8 pixels or labels."""
    folder.mkdir(parents=True, exist_ok=True)
    n, rows, cols = images.shape
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
        struct.pack(">IIII", 2051, n, rows, cols) + images.astype(np.uint8).tobytes()
    )
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 2049, n) + labels.astype(np.uint8).tobytes()
    )


def fake_mnist(root: Path, folder: str, n_train: int = 120, n_test: int = 40) -> None:
    """root/folder/raw/{train,t10k}-*-ubyte (MNIST, FashionMNIST): noise with a bright bar
    whose row encodes the class, so a small network learns it. 60,000 / 10,000 is MNIST's
    size."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
        rows = np.arange(28)[None, :] - 2 * labels[:, None]  # the bar: rows 2 + 2 * label, +1
        bar = ((rows >= 2) & (rows < 4))[:, :, None] & (np.arange(28) >= 4)[None, None, :]
        images[bar & (np.arange(28) < 24)[None, None, :]] = 255
        write_idx(root / folder / "raw", prefix, images, labels)


def fake_cifar10(root: Path, per_batch: int = 20) -> None:
    """root/cifar-10-batches-py: CIFAR-10's python format, pickled dicts of uint8 rows (3072 =
    3 x 32 x 32) and labels in five training batches and a test batch, and batches.meta.
    Noise with a bright band whose channel and rows encode the class, so a CNN learns it.
    per_batch 10,000 is CIFAR-10's size (50,000 training images)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        labels = rng.integers(0, 10, per_batch)
        data = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        data //= 2
        for label in range(10):  # channel label % 3, rows 3 * label .. + 2
            data[labels == label, label % 3, 3 * label : 3 * label + 3] = 255
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data.reshape(per_batch, 3072), "labels": labels.tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)


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
