"""Data sets as preloaded tensors: loaded once per study, split with a seed, batched by index.

Images stay uint8 (N, C, H, W) until they reach the trial's device, where they become floats in
[0, 1]; augmentation works on those and `Dataset.normalize` standardises each batch.
"""

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.plugins import is_plugin

# name -> (modality, channels): what a search space's `when:` may ask before any data is read.
KINDS = {
    "digits": ("image", 1),
    "circles": ("tabular", 0),
    "moons": ("tabular", 0),
    "mnist": ("image", 1),
    "fashion_mnist": ("image", 1),
    "cifar10": ("image", 3),
    "cifar100": ("image", 3),
    "svhn": ("image", 3),
    "csv": ("tabular", 0),
}
DATASETS = tuple(KINDS)

# Per-channel mean and std of the training images, the values everyone uses.
NORMALIZATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}
TORCHVISION_SETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn")


class DataError(ValueError):
    """A data set that cannot be read as its spec says; the message names the field and fix."""


@dataclass
class Dataset:
    """A classification data set in memory: features, integer labels, optional test split."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    mean: tuple[float, ...] | None = None  # per channel, images only
    std: tuple[float, ...] | None = None

    @property
    def is_image(self) -> bool:
        return self.x_train.dim() == 4

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1]) if self.is_image else 0

    @property
    def num_features(self) -> int:
        return int(self.x_train[0].numel())

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's shape: (C, H, W) for images, (F,) for tables."""
        return tuple(self.x_train.shape[1:])

    def sizes(self) -> dict[str, int]:
        """Examples per split."""
        found = {"train": len(self.x_train), "val": len(self.x_val)}
        return found | ({"test": len(self.x_test)} if self.x_test is not None else {})

    def examples(self, n: int) -> torch.Tensor:
        """The first `n` training examples as a model gets them (floats, normalised)."""
        x = self.x_train[:n]
        return self.normalize(x.float().div(255) if x.dtype == torch.uint8 else x.float())

    def digest(self) -> str:
        """A content hash of the splits (what MLflow records as the data set's digest)."""
        import hashlib

        sha = hashlib.sha256()
        for t in (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test):
            if t is not None:
                sha.update(t.contiguous().numpy().tobytes())
        return sha.hexdigest()[:16]

    def to(self, device: torch.device | str) -> "Dataset":
        """The same data on `device`, images as floats in [0, 1]."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            t = t.to(device, non_blocking=True)
            return t.float().div_(255) if t.dtype == torch.uint8 else t

        return replace(
            self,
            **{k: move(getattr(self, k)) for k in ("x_train", "y_train", "x_val", "y_val")},
            x_test=move(self.x_test),
            y_test=move(self.y_test),
        )

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Standardise a batch of images per channel (a no-op without statistics)."""
        if self.mean is None:
            return x
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.mean, device=x.device).view(shape)
        std = torch.tensor(self.std, device=x.device).view(shape)
        return (x - mean) / std

    def normalized(self) -> "Dataset":
        """The data standardised once, in place of every batch (for training without
        augmentation, which works on the raw [0, 1] images)."""
        if self.mean is None:
            return self
        parts = ("x_train", "x_val", "x_test")
        moved = {
            k: None if getattr(self, k) is None else self.normalize(getattr(self, k)) for k in parts
        }
        return replace(self, **moved, mean=None, std=None)


def split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified, seeded split: (the rest, the `fraction` held out)."""
    from sklearn.model_selection import train_test_split

    return train_test_split(np.arange(len(y)), test_size=fraction, random_state=seed, stratify=y)


# ----------------------------------------------------------------------------------------------
# Loaders: each returns (x_train, y_train, x_test, y_test); test may be None.


def _digits(spec: dict[str, Any], seed: int):
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images[:, None] / 16.0).astype(np.float32), digits.target, None, None


def _circles(spec: dict[str, Any], seed: int):
    from sklearn.datasets import make_circles

    x, y = make_circles(
        n_samples=spec.get("n_samples", 2000),
        noise=spec.get("noise", 0.1),
        factor=spec.get("factor", 0.4),
        random_state=seed,
    )
    return x.astype(np.float32), y, None, None


def _moons(spec: dict[str, Any], seed: int):
    from sklearn.datasets import make_moons

    x, y = make_moons(
        n_samples=spec.get("n_samples", 2000), noise=spec.get("noise", 0.1), random_state=seed
    )
    return x.astype(np.float32), y, None, None


def _torchvision(spec: dict[str, Any], seed: int):
    from torchvision import datasets

    name, root = spec["name"], Path(spec.get("root") or "data")
    classes = {
        "mnist": datasets.MNIST,
        "fashion_mnist": datasets.FashionMNIST,
        "cifar10": _files_only(datasets.CIFAR10),
        "cifar100": _files_only(datasets.CIFAR100),
    }
    download = spec.get("download", False)
    try:
        if name == "svhn":  # split= instead of train=, and its own file check
            svhn = _svhn_class()
            train = svhn(root, split="train", download=download)
            test = svhn(root, split="test", download=False)
        else:
            train = classes[name](root, train=True, download=download)
            test = classes[name](root, train=False, download=False)
    except RuntimeError as error:
        raise DataError(
            f"dataset.root: {name} not found under {root.resolve()} ({error}); expected "
            f"{_EXPECTED[name]} there, or set dataset.download: true where the network allows"
        ) from None

    def arrays(ds) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(ds.data, dtype=np.uint8)
        if name != "svhn":  # SVHN's is (N, C, H, W) already
            x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)  # to (N, C, H, W)
        labels = ds.labels if name == "svhn" else ds.targets
        return np.ascontiguousarray(x), np.asarray(labels)

    return (*arrays(train), *arrays(test))


_EXPECTED = {
    "mnist": "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte",
    "fashion_mnist": "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte",
    "cifar10": "cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}",
    "cifar100": "cifar-100-python/{train,test,meta}",
    "svhn": "{train,test}_32x32.mat",
}


def _files_only(cls):
    """torchvision's CIFAR10 or CIFAR100, checking that its files exist rather than their md5
    sums: the same reading code, and a damaged file still fails to unpickle."""
    return type(
        f"{cls.__name__}Files",
        (cls,),
        {
            "train_list": [[name, None] for name, _ in cls.train_list],
            "test_list": [[name, None] for name, _ in cls.test_list],
            "meta": {**cls.meta, "md5": None},
        },
    )


def _svhn_class():
    from torchvision.datasets import SVHN

    class SVHNFiles(SVHN):
        """torchvision's SVHN, checking that its .mat file exists rather than its md5 sum."""

        def _check_integrity(self) -> bool:
            return (Path(self.root) / self.filename).is_file()

    return SVHNFiles


def _csv(spec: dict[str, Any], seed: int):
    import pandas as pd

    path, target = spec.get("path"), spec.get("target")
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as error:
        raise DataError(
            f"dataset.path: cannot read {path} as CSV ({error}); fix the path"
        ) from None
    if target not in frame.columns:
        raise DataError(
            f"dataset.target: no column {target!r} in {path}; use one of {', '.join(frame.columns)}"
        )
    features = pd.get_dummies(frame.drop(columns=[target]), dtype=np.float32)
    missing = features.columns[features.isna().any()].tolist()
    if missing or frame[target].isna().any():
        column = missing[0] if missing else target
        raise DataError(f"dataset.path: column {column!r} has missing values; fill or drop them")
    labels, _ = pd.factorize(frame[target], sort=True)
    return features.to_numpy(np.float32), labels, None, None


LOADERS = {
    "digits": _digits,
    "circles": _circles,
    "moons": _moons,
    "mnist": _torchvision,
    "fashion_mnist": _torchvision,
    "cifar10": _torchvision,
    "cifar100": _torchvision,
    "svhn": _torchvision,
    "csv": _csv,
}


def load_dataset(spec: dict[str, Any], seed: int = 0) -> Any:
    """Load the data set a study's `dataset` mapping describes and split it with `seed`:
    in memory (a Dataset), or, with placement `stream`, only its index (a Streamed set that
    each trial opens itself).

    Sets without an official test split keep `test_fraction` of the data apart first; the
    validation split (`val_fraction`) comes from what is left, `train_size` caps the training
    split. Tabular features are standardised with statistics of the training split only.
    """
    from trainables import sources  # image folders and loader plug-ins

    name = spec["name"]
    if name == "image_folder" or is_plugin(name):
        return sources.load(spec, seed)
    x, y, x_test, y_test = LOADERS[name](spec, seed)
    test_fraction = spec.get("test_fraction", 0.0)
    if x_test is None and test_fraction > 0:
        rest, held = split(y, test_fraction, seed)
        x, y, x_test, y_test = x[rest], y[rest], x[held], y[held]
    train, val = split(y, spec.get("val_fraction", 0.2), seed)
    return assemble(
        name, (x[train], y[train]), (x[val], y[val]), x_test, y_test, spec, seed,
        NORMALIZATION.get(name, (None, None)),
    )  # fmt: skip


def assemble(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    x_test: np.ndarray | None,
    y_test: np.ndarray | None,
    spec: dict[str, Any],
    seed: int,
    mean_std: tuple[Any, Any] = (None, None),
) -> Dataset:
    """A Dataset of split arrays: the training split capped at `train_size`, tabular features
    standardised with the training split's statistics."""
    (x_train, y_train), (x_val, y_val) = train, val
    labels = [y_train, y_val] + ([] if y_test is None else [y_test])
    num_classes = int(max(part.max() for part in labels)) + 1
    if spec.get("train_size"):
        keep = np.random.default_rng(seed).permutation(len(y_train))[: spec["train_size"]]
        x_train, y_train = x_train[keep], y_train[keep]
    if x_train.ndim == 2:  # tabular: standardise with the training split's statistics
        mean, std = x_train.mean(0), x_train.std(0) + 1e-8
        x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
        x_test = None if x_test is None else (x_test - mean) / std
    tensor = lambda a: None if a is None else torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    label = lambda a: None if a is None else torch.as_tensor(a, dtype=torch.long)  # noqa: E731
    return Dataset(
        name,
        tensor(x_train),
        label(y_train),
        tensor(x_val),
        label(y_val),
        num_classes,
        tensor(x_test),
        label(y_test),
        *mean_std,
    )
