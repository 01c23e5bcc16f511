"""Data sets as preloaded tensors (placement `memory`): loaded once per study, split with a
seed, batched by index.

Images stay uint8 (N, C, H, W) until they reach the trial's device, where they become floats in
[0, 1]; augmentation works on those and `Dataset.normalize` standardises each batch.
"""

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

# The names a spec may use, kept importable from here too.
from trainables.catalog import DATASETS as DATASETS
from trainables.catalog import KINDS as KINDS
from trainables.catalog import NORMALIZATION, TASKS
from trainables.catalog import TORCHVISION_SETS as TORCHVISION_SETS
from trainables.feed import MemoryFeed
from trainables.interface import DataError, Placement, Task
from trainables.memo import remembered
from trainables.transform import as_floats, normalize


@dataclass
class Dataset:
    """A data set in memory: features, targets, optional test split. Classification targets
    are integer labels; regression targets are floats (N, outputs), standardised with the
    training split's `target_mean` and `target_std` (the loop reports metrics in the
    target's own units)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int  # classes; for regression the number of outputs
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    mean: tuple[float, ...] | None = None  # per channel, images only
    std: tuple[float, ...] | None = None
    task: Task = "classification"
    target_mean: tuple[float, ...] | None = None  # regression: per output, training split
    target_std: tuple[float, ...] | None = None
    task_note: str = ""  # why the task was chosen, where the data left it open (a CSV)

    @property
    def placement(self) -> Placement:
        """Always memory: the splits are tensors, shipped whole to each trial."""
        return "memory"

    @property
    def is_image(self) -> bool:
        """Whether the examples are images (N, C, H, W)."""
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
        """The first `n` training examples exactly as the network gets them (floats,
        normalised)."""
        return self.normalize(as_floats(self.x_train[:n]))

    def digest(self) -> str:
        """A content hash of the splits (what MLflow records as the data set's digest)."""
        import hashlib

        sha = hashlib.sha256()
        for t in (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test):
            if t is not None:
                sha.update(t.contiguous().numpy().tobytes())
        return sha.hexdigest()[:16]

    def feed(self, device: torch.device, *, raw: bool, seed: int, workers: int) -> MemoryFeed:
        """The whole set on `device`, batched by index (`workers` is for streamed sets)."""
        return MemoryFeed(self, device, raw, seed)

    def parts(self) -> list["Dataset"]:
        """What a run trains on side by side: the one hold-out split."""
        return [self]

    def to(self, device: torch.device | str) -> "Dataset":
        """The same data on `device`, examples as floats (images in [0, 1])."""

        def move(t: torch.Tensor | None, examples: bool) -> torch.Tensor | None:
            if t is None:
                return None
            t = t.to(device, non_blocking=True)
            return as_floats(t) if examples else t

        splits = ("train", "val", "test")
        return replace(
            self,
            **{f"x_{k}": move(getattr(self, f"x_{k}"), True) for k in splits},
            **{f"y_{k}": move(getattr(self, f"y_{k}"), False) for k in splits},
        )

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Standardise a batch of images per channel (a no-op without statistics)."""
        return normalize(x, self.mean, self.std)

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


@dataclass
class Folds:
    """A data set cut into k folds for cross-validation (`dataset.cv_folds`): `parts` holds one
    Dataset per fold (that fold held out for validation, the rest for training, each
    standardised on its own training part), all with the same test split. A run trains a model
    per fold side by side; everything else it asks of the data, the first fold answers."""

    parts_: list[Dataset]
    whole: Dataset  # every example apart from the test split, for `study train --refit`

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("parts_", "whole"):
            raise AttributeError(name)
        return getattr(self.parts_[0], name)  # name, task, shapes, statistics, examples, ...

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles the data for its object store
        return self.__dict__

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def parts(self) -> list[Dataset]:
        """One Dataset per fold."""
        return list(self.parts_)

    def sizes(self) -> dict[str, int]:
        """Examples per split of one fold, and the number of folds."""
        return {**self.parts_[0].sizes(), "folds": len(self.parts_)}

    def digest(self) -> str:
        """A content hash of every example and of the folds."""
        import hashlib

        folds = "".join(part.digest() for part in self.parts_)
        return hashlib.sha256(folds.encode()).hexdigest()[:16]


def cross_validation(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    test: tuple[np.ndarray | None, np.ndarray | None],
    spec: dict[str, Any],
    seed: int,
    mean_std: tuple[Any, Any],
    task: Task,
) -> Folds:
    """`spec["cv_folds"]` folds of (x, y), stratified by class for classification and seeded
    by `seed`: the same folds for every trial of a study."""
    folds = spec["cv_folds"]
    if task == "classification":
        smallest = int(np.bincount(y)[np.bincount(y) > 0].min())
        if folds > smallest:
            raise DataError(
                f"dataset.cv_folds: {folds} folds, but {name}'s smallest class has {smallest} "
                f"examples, too few to put one in each fold; use at most {smallest}"
            )
    elif folds > len(y):
        raise DataError(f"dataset.cv_folds: {folds} folds of {len(y)} examples; use fewer")
    cut = fold_indices(y, folds, seed, task == "classification")
    parts = [
        assemble(name, (x[fit], y[fit]), (x[held], y[held]), *test, spec, seed, mean_std, task)
        for fit, held in cut
    ]
    if task == "classification":  # every fold knows every class
        classes = max(part.num_classes for part in parts)
        parts = [replace(part, num_classes=classes) for part in parts]
    # all of it for a refit: no split left to validate on, so the training data stands in
    whole = assemble(name, (x, y), (x, y), *test, spec, seed, mean_std, task)
    return Folds(parts, whole)


def split(
    y: np.ndarray, fraction: float, seed: int, stratified: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded split, stratified by class unless `stratified` is off (regression):
    (the rest, the `fraction` held out). scikit-learn's, kept in this machine's cache."""

    def make() -> dict[str, np.ndarray]:
        from sklearn.model_selection import train_test_split

        by = y if stratified else None
        indices = np.arange(len(y))
        rest, held = train_test_split(indices, test_size=fraction, random_state=seed, stratify=by)
        return {"rest": rest, "held": held}

    key = {**targets_key(y), "fraction": fraction, "seed": seed, "stratified": stratified}
    kept = remembered("split", key, make)
    return kept["rest"], kept["held"]


def fold_indices(
    y: np.ndarray, folds: int, seed: int, stratified: bool
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit, held) indices of each of `folds` seeded folds, stratified by class unless
    `stratified` is off (regression). scikit-learn's, kept in this machine's cache."""

    def make() -> dict[str, np.ndarray]:
        from sklearn.model_selection import KFold, StratifiedKFold

        kind = StratifiedKFold if stratified else KFold
        cut = kind(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)
        kept = {}
        for i, (fit, held) in enumerate(cut):
            kept[f"fit{i}"], kept[f"held{i}"] = fit, held
        return kept

    key = {**targets_key(y), "folds": folds, "seed": seed, "stratified": stratified}
    kept = remembered("folds", key, make)
    return [(kept[f"fit{i}"], kept[f"held{i}"]) for i in range(folds)]


def targets_key(y: np.ndarray) -> dict[str, Any]:
    """What a split's cache entry is keyed by of the targets it splits: their bytes' hash,
    dtype and shape."""
    digest = hashlib.sha256(np.ascontiguousarray(y).tobytes()).hexdigest()
    return {"targets": digest, "dtype": str(y.dtype), "shape": list(y.shape)}


# ----------------------------------------------------------------------------------------------
# Loaders: each returns (x_train, y_train, x_test, y_test); test may be None.


def _digits(spec: dict[str, Any], seed: int):
    def make() -> dict[str, np.ndarray]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        return {"x": (digits.images[:, None] / 16.0).astype(np.float32), "y": digits.target}

    kept = remembered("digits", {}, make)
    return kept["x"], kept["y"], None, None


def _circles(spec: dict[str, Any], seed: int):
    return _generated(
        "make_circles",
        n_samples=spec.get("n_samples", 2000),
        noise=spec.get("noise", 0.1),
        factor=spec.get("factor", 0.4),
        random_state=seed,
    )


def _moons(spec: dict[str, Any], seed: int):
    return _generated(
        "make_moons",
        n_samples=spec.get("n_samples", 2000),
        noise=spec.get("noise", 0.1),
        random_state=seed,
    )


def _generated(function: str, **arguments: Any):
    """What `sklearn.datasets.<function>(**arguments)` generates, features as float32, kept in
    this machine's cache."""

    def make() -> dict[str, np.ndarray]:
        import sklearn.datasets

        x, y = getattr(sklearn.datasets, function)(**arguments)
        return {"x": x.astype(np.float32), "y": y}

    kept = remembered(function, arguments, make)
    return kept["x"], kept["y"], None, None


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


def _diabetes(spec: dict[str, Any], seed: int):
    def make() -> dict[str, np.ndarray]:
        from sklearn.datasets import load_diabetes

        x, y = load_diabetes(return_X_y=True, scaled=False)  # the target in its own units
        return {"x": x.astype(np.float32), "y": y.astype(np.float32)}

    kept = remembered("diabetes", {}, make)
    return kept["x"], kept["y"], None, None


def _noise(spec: dict[str, Any], seed: int):
    """Features and targets drawn independently (the tutorials' over-fitting examples): any
    pattern a network finds in them is noise."""
    rng = np.random.default_rng(seed)
    shape = (spec.get("n_samples") or 1000, spec.get("n_features") or 20)
    if spec.get("distribution", "normal") == "uniform":
        x, y = rng.random(shape), rng.random(shape[0])
    else:
        x, y = rng.standard_normal(shape), rng.standard_normal(shape[0])
    return x.astype(np.float32), y.astype(np.float32), None, None


# A numeric CSV target with more distinct values than this is a quantity, not classes.
MAX_CLASSES = 20


def csv_task(column: Any, asked: str | None) -> tuple[Task, str]:
    """The task of a CSV's target column, and why when the spec left it open: text or few
    whole numbers are classes, other numbers a quantity to regress."""
    import pandas as pd

    if asked:
        return asked, ""
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return "classification", ""
    distinct = column.nunique()
    whole = bool((column == column.round()).all())
    if whole and distinct <= MAX_CLASSES:
        why = f"{distinct} distinct whole numbers"
        return "classification", f"{why}; treated as classes (set dataset.task: regression)"
    why = f"{distinct} distinct {'whole numbers' if whole else 'numbers'}"
    return "regression", f"{why}; treated as a quantity (set dataset.task: classification)"


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
    task, why = csv_task(frame[target], spec.get("task"))
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(frame[target]):
            raise DataError(
                f"dataset.task: regression needs a numeric target and column {target!r} of "
                f"{path} holds text; set dataset.task: classification"
            )
        labels = frame[target].to_numpy(np.float32)
    else:
        labels, _ = pd.factorize(frame[target], sort=True)
    note = f"dataset.task: column {target!r} has {why}" if why else ""
    return features.to_numpy(np.float32), labels, None, None, note


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
    "diabetes": _diabetes,
    "noise": _noise,
}


def load_builtin(spec: dict[str, Any], seed: int = 0) -> "Dataset | Folds":
    """A built-in data set (DATASETS) in memory, split with `seed`: sets without an official
    test split keep `test_fraction` of the data apart first; the validation split
    (`val_fraction`) comes from what is left, or with `cv_folds` the rest is cut into that many
    folds (Folds); `train_size` caps the training split. Splits are stratified by class, plain
    for regression."""
    name = spec["name"]
    x, y, x_test, y_test, *note = LOADERS[name](spec, seed)
    task = TASKS.get(name) or ("regression" if np.issubdtype(y.dtype, np.floating) else
                               "classification")  # fmt: skip
    stratified = task == "classification"
    test_fraction = spec.get("test_fraction", 0.0)
    if x_test is None and test_fraction > 0:
        rest, held = split(y, test_fraction, seed, stratified)
        x, y, x_test, y_test = x[rest], y[rest], x[held], y[held]
    stats = NORMALIZATION.get(name, (None, None))
    if spec.get("cv_folds"):
        folds = cross_validation(name, x, y, (x_test, y_test), spec, seed, stats, task)
        if note and note[0]:
            folds.parts_[0] = replace(folds.parts_[0], task_note=note[0])
        return folds
    train, val = split(y, spec.get("val_fraction", 0.2), seed, stratified)
    data = assemble(
        name, (x[train], y[train]), (x[val], y[val]), x_test, y_test, spec, seed, stats, task
    )
    return replace(data, task_note=note[0]) if note and note[0] else data


def assemble(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    x_test: np.ndarray | None,
    y_test: np.ndarray | None,
    spec: dict[str, Any],
    seed: int,
    mean_std: tuple[Any, Any] = (None, None),
    task: Task = "classification",
) -> Dataset:
    """A Dataset of split arrays: the training split capped at `train_size`, tabular features
    standardised with the training split's statistics, and regression targets too."""
    (x_train, y_train), (x_val, y_val) = train, val
    if task == "classification":  # every class of every split, before the cap
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
    if task == "regression":
        return regression(name, (x_train, y_train), (x_val, y_val), x_test, y_test, mean_std)
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


def regression(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    x_test: np.ndarray | None,
    y_test: np.ndarray | None,
    mean_std: tuple[Any, Any],
) -> Dataset:
    """A regression Dataset: targets (N, outputs) as float32, standardised with the training
    split's mean and std per output; refused where they are not finite or do not vary."""
    as_2d = lambda y: None if y is None else np.asarray(y, np.float64).reshape(len(y), -1)  # noqa: E731
    targets = {"train": as_2d(train[1]), "val": as_2d(val[1]), "test": as_2d(y_test)}
    for split_name, y in targets.items():
        if y is not None and not np.isfinite(y).all():
            raise DataError(
                f"dataset.name: {name}'s {split_name} targets hold NaN or infinite values; "
                "fill or drop those rows"
            )
    center, scale = targets["train"].mean(0), targets["train"].std(0)
    if (scale == 0).any():
        raise DataError(
            f"dataset.name: {name}'s training target is constant ({center.tolist()}); nothing "
            "to learn: pick a target that varies"
        )
    tensor = lambda a: None if a is None else torch.from_numpy(np.ascontiguousarray(a, np.float32))  # noqa: E731
    scaled = {k: None if y is None else (y - center) / scale for k, y in targets.items()}
    return Dataset(
        name,
        tensor(train[0]),
        tensor(scaled["train"]),
        tensor(val[0]),
        tensor(scaled["val"]),
        targets["train"].shape[1],
        tensor(x_test),
        tensor(scaled["test"]),
        *mean_std,
        task="regression",
        target_mean=tuple(center.tolist()),
        target_std=tuple(scale.tolist()),
    )
