"""Data sets the user brings: folders of images (torchvision's ImageFolder layout) and loader
plug-ins (`module:callable`), read into memory or, with placement `stream`, left where they
are: the driver then keeps only an index (a `Streamed` set) and each trial opens the files.

Placement `memory` suits data that fits in the driver and in Ray's object store; `stream`
data on shared storage that every node reaches. Without `dataset.placement`, a set whose
decoded examples take more than MEMORY_LIMIT bytes streams.
"""

import hashlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.data import Dataset, assemble, split
from trainables.feed import StreamFeed
from trainables.interface import DataError, Placement, Task
from trainables.plugins import PluginError, brief, code_dir, load_callable
from trainables.transform import as_floats, normalize

MEMORY_LIMIT = 2 * 2**30  # bytes of uint8 examples: above it, placement auto is stream
STATS_SAMPLE = 512  # training images decoded for the per-channel mean and std
EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


# -- image folders -------------------------------------------------------------------------------


def _classes(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir() if entry.is_dir())


def _files(folder: Path, classes: list[str]) -> list[tuple[str, int]]:
    items = []
    for label, name in enumerate(classes):
        found = sorted(
            str(path) for path in (folder / name).rglob("*") if path.suffix.lower() in EXTENSIONS
        )
        if not found:
            raise DataError(
                f"dataset.root: class folder {folder / name} has no images; add images or "
                "remove the folder"
            )
        items += [(path, label) for path in found]
    return items


def folder_index(spec: dict[str, Any], seed: int) -> dict[str, Any]:
    """The classes and the (file, label) pairs of each split of an image folder:
    root/train/<class>/* and root/val/<class>/*, or root/<class>/* split by `val_fraction`."""
    root = Path(spec.get("root") or "data")
    if not root.is_dir():
        raise DataError(f"dataset.root: no folder {root.resolve()}; point root at your images")
    train_dir = root / "train" if (root / "train").is_dir() else root
    classes = _classes(train_dir)
    if len(classes) < 2:
        raise DataError(
            f"dataset.root: {train_dir.resolve()} has {len(classes)} class folders; lay the "
            "images out as root/train/<class>/*.png (and root/val/<class>/...), 2 classes or more"
        )
    train = _files(train_dir, classes)
    if train_dir != root and (root / "val").is_dir():
        extra = sorted(set(_classes(root / "val")) - set(classes))
        if extra:
            raise DataError(
                f"dataset.root: {root / 'val'} has classes that train has not: {', '.join(extra)}"
            )
        present = [c for c in classes if (root / "val" / c).is_dir()]
        val = [(p, classes.index(c)) for c in present for p, _ in _files(root / "val", [c])]
    else:
        labels = np.array([label for _, label in train])
        rest, held = split(labels, spec.get("val_fraction", 0.2), seed)
        train, val = [train[i] for i in sorted(rest)], [train[i] for i in sorted(held)]
    return {"classes": classes, "train": train, "val": val}


def read_image(path: str, size: int) -> np.ndarray:
    """One image file as uint8 (3, size, size): any format Pillow reads, in RGB, resized."""
    from PIL import Image

    with Image.open(path) as image:
        rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))


def _bad(path: str, error: Exception) -> DataError:
    return DataError(
        f"dataset.root: cannot read image {path} ({brief(error)}); fix or remove it, or set "
        "dataset.skip_bad_files: true"
    )


def read_images(
    items: list[tuple[str, int]], size: int, skip: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of `items` (unreadable files skipped when `skip`)."""
    images, labels = [], []
    for path, label in items:
        try:
            images.append(read_image(path, size))
        except (OSError, ValueError) as error:
            if not skip:
                raise _bad(path, error) from None
            continue
        labels.append(label)
    if not images:
        raise DataError("dataset.root: no readable image in a split; check the files")
    return np.stack(images), np.array(labels)


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W), as fractions of 255."""
    x = images.astype(np.float64) / 255
    return tuple(x.mean((0, 2, 3)).round(4).tolist()), tuple(x.std((0, 2, 3)).round(4).tolist())


def sample_stats(items: list[tuple[str, int]], size: int, seed: int, skip: bool):
    """Per-channel mean and std of up to STATS_SAMPLE training images drawn with `seed`."""
    order = np.random.default_rng(seed).permutation(len(items))[:STATS_SAMPLE]
    images, _ = read_images([items[i] for i in sorted(order)], size, skip)
    return channel_stats(images)


class FolderImages(torch.utils.data.Dataset):
    """(file, label) pairs read as uint8 (3, size, size) tensors, one at a time (streaming).
    An unreadable file raises, naming it, unless `skip`: then the next readable one stands in
    for it, so every index still yields an example."""

    def __init__(self, items: list[tuple[str, int]], size: int, skip: bool = False) -> None:
        self.items, self.size, self.skip = items, size, skip

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        for step in range(len(self.items)):
            path, label = self.items[(index + step) % len(self.items)]
            try:
                return torch.from_numpy(read_image(path, self.size)), label
            except (OSError, ValueError) as error:
                if not self.skip:
                    raise _bad(path, error) from None
        raise DataError("dataset.root: no readable image left; check the files")


# -- streamed sets -------------------------------------------------------------------------------


@dataclass
class Streamed:
    """A data set each trial opens itself (placement `stream`): the driver holds only what
    preflight needs, and `splits()` makes the torch Datasets in the trial's process."""

    name: str
    spec: dict[str, Any]
    num_classes: int
    input_shape: tuple[int, ...]
    counts: dict[str, int]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    index: dict[str, Any] = field(default_factory=dict)  # an image folder's (file, label) pairs
    seed: int = 0
    # The splits a loader plug-in returned to the driver, so preflight does not call it twice;
    # never pickled: a trial calls the loader itself.
    opened: tuple[Any, ...] | None = field(default=None, repr=False, compare=False)
    # Streamed sets are classification sets: regression targets are read into memory.
    task: Task = "classification"
    target_mean: tuple[float, ...] | None = None
    target_std: tuple[float, ...] | None = None
    task_note: str = ""

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "opened": None}

    @property
    def placement(self) -> Placement:
        """Always stream: each trial reads the examples itself."""
        return "stream"

    @property
    def is_image(self) -> bool:
        """Whether the examples are images (C, H, W)."""
        return len(self.input_shape) == 3

    def sizes(self) -> dict[str, int]:
        """Examples per split."""
        return dict(self.counts)

    def splits(self) -> dict[str, torch.utils.data.Dataset]:
        """The splits as torch Datasets of (uint8 image or float features, label)."""
        if self.name == "image_folder":
            size, skip = self.spec["image_size"], self.spec.get("skip_bad_files", False)
            return {k: FolderImages(self.index[k], size, skip) for k in ("train", "val")}
        parts = self.opened if self.opened is not None else call_loader(self.spec)
        return dict(zip(("train", "val", "test"), parts, strict=False))

    def parts(self) -> list["Streamed"]:
        """What a run trains on side by side: the one hold-out split."""
        return [self]

    def feed(self, device: torch.device, *, raw: bool, seed: int, workers: int) -> StreamFeed:
        """DataLoaders of `workers` processes reading the splits in the trial, batches on
        `device` (always raw: each batch is normalised by `StreamFeed.normalize`)."""
        return StreamFeed(self, device, workers, seed)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Standardise a batch of images per channel (a no-op without statistics)."""
        return normalize(x, self.mean, self.std)

    def examples(self, n: int) -> torch.Tensor:
        """The first `n` training examples exactly as the network gets them (floats,
        normalised)."""
        train = self.splits()["train"]
        x = torch.stack([torch.as_tensor(train[i][0]) for i in range(n)])
        return self.normalize(as_floats(x))

    def digest(self) -> str:
        """A hash of what names the data: the loader and its arguments, the split sizes and an
        image folder's files (the examples themselves are never all read on the driver)."""
        described = (self.name, self.spec.get("args"), sorted(self.counts.items()))
        sha = hashlib.sha256(repr(described).encode())
        for split_name in sorted(self.index):
            for path, label in self.index[split_name]:
                sha.update(f"{path}\0{label}\n".encode())
        return sha.hexdigest()[:16]


def placement(spec: dict[str, Any], nbytes: int) -> str:
    """The spec's placement, or `stream` when the examples take more than MEMORY_LIMIT."""
    return spec.get("placement") or ("stream" if nbytes > MEMORY_LIMIT else "memory")


def load_image_folder(spec: dict[str, Any], seed: int) -> Dataset | Streamed:
    """An image folder in memory, or its index (placement `stream`). Per-channel mean and
    std come from the training split (a sample of it when streaming)."""
    index = folder_index(spec, seed)
    size, skip = spec["image_size"], spec.get("skip_bad_files", False)
    count = len(index["train"]) + len(index["val"])
    if placement(spec, count * 3 * size * size) == "stream":
        mean, std = sample_stats(index["train"], size, seed, skip)
        counts = {"train": len(index["train"]), "val": len(index["val"])}
        classes = len(index.pop("classes"))
        return Streamed("image_folder", spec, classes, (3, size, size), counts, mean, std, index)
    x_train, y_train = read_images(index["train"], size, skip)
    x_val, y_val = read_images(index["val"], size, skip)
    order = np.random.default_rng(seed).permutation(len(x_train))[: STATS_SAMPLE * 8]
    stats = channel_stats(x_train[np.sort(order)])
    return assemble("image_folder", (x_train, y_train), (x_val, y_val), None, None, spec, seed,
                    stats)  # fmt: skip


# -- loader plug-ins -----------------------------------------------------------------------------


def call_loader(spec: dict[str, Any]) -> tuple[Any, ...]:
    """What the loader plug-in `spec["name"]` returns for `spec["args"]`, as a tuple."""
    loader = load_callable(spec["name"], code_dir(spec))
    try:
        inspect.signature(loader).bind(**(spec.get("args") or {}))
    except TypeError as error:
        raise DataError(
            f"dataset.args: {spec['name']} does not take them ({error}); fix dataset.args"
        ) from None
    except ValueError:
        pass
    try:
        out = loader(**(spec.get("args") or {}))
    except Exception as error:  # noqa: BLE001  (the user's code may raise anything)
        raise DataError(
            f"dataset.name: {spec['name']} raised {brief(error)}; fix the loader"
        ) from None
    if not isinstance(out, (tuple, list)):
        raise DataError(
            f"dataset.name: {spec['name']} returned a {type(out).__name__}; return (x_train, "
            "y_train, x_val, y_val[, x_test, y_test]) or (train, val[, test]) torch Datasets"
        )
    return tuple(out)


def _array(value: Any, what: str, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as error:  # noqa: BLE001
        raise DataError(f"dataset.name: {name}'s {what} is not an array ({error})") from None


def plugin_task(spec: dict[str, Any], y: np.ndarray) -> Task:
    """A loader's task: `dataset.task` when set, else regression for float targets."""
    if spec.get("task"):
        return spec["task"]
    return "regression" if np.issubdtype(y.dtype, np.floating) else "classification"


def check_arrays(name: str, parts: dict[str, tuple[np.ndarray, np.ndarray]], task: Task) -> None:
    """One line naming dataset.name for arrays no trial could train on."""
    for split_name, (x, y) in parts.items():
        where = f"dataset.name: {name}'s {split_name} split"
        if len(x) == 0 or len(y) == 0:
            raise DataError(f"{where} is empty; give it examples")
        if len(x) != len(y):
            raise DataError(f"{where} has {len(x)} examples and {len(y)} labels; make them equal")
        if task == "regression":
            if y.ndim not in (1, 2) or not np.issubdtype(y.dtype, np.number):
                raise DataError(
                    f"{where}: regression targets must be numbers, (N,) or (N, outputs) (got "
                    f"{y.dtype} of shape {y.shape})"
                )
        elif y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(
                f"{where}: labels must be integers in [0, classes), one per example (got "
                f"{y.dtype} of shape {y.shape}); give class numbers, or set dataset.task: "
                "regression for a quantity"
            )
        elif y.min() < 0:
            raise DataError(f"{where}: label {int(y.min())} is negative; number classes from 0")
        if x.ndim == 3:
            raise DataError(
                f"{where}: images must be (N, C, H, W), got {x.shape}; add the channel axis "
                "(x[:, None])"
            )
        if x.ndim not in (2, 4):
            raise DataError(
                f"{where}: examples must be (N, features) or images (N, C, H, W), got {x.shape}"
            )
        if x.ndim == 2 and np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            raise DataError(f"{where} has NaN or infinite features; fill or drop them")
    shapes = {x.shape[1:] for x, _ in parts.values()}
    if len(shapes) > 1:
        raise DataError(f"dataset.name: {name}'s splits have different shapes: {sorted(shapes)}")


def _as_arrays(part: Any, what: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A torch Dataset of (x, y) pairs read whole into arrays (labels as ints, other targets
    as they are)."""
    xs, ys = [], []
    for x, y in part:
        xs.append(_array(x, what, name))
        ys.append(_array(y, "target", name))
    targets = np.stack(ys)
    if np.issubdtype(targets.dtype, np.integer) and targets.ndim == 1:
        targets = targets.astype(np.int64)
    return np.stack(xs), targets


def load_plugin(spec: dict[str, Any], seed: int) -> Dataset | Streamed:
    """A loader plug-in's splits: arrays go to memory; torch Datasets too, unless they are
    larger than MEMORY_LIMIT (or placement says stream): then each trial calls the loader."""
    name = spec["name"]
    out = call_loader(spec)
    datasets = all(isinstance(part, torch.utils.data.Dataset) for part in out)
    names = ("train", "val", "test")
    if datasets and len(out) in (2, 3):
        if any(len(part) == 0 for part in out):
            empty = names[[len(part) for part in out].index(0)]
            raise DataError(f"dataset.name: {name}'s {empty} split is empty; give it examples")
        first = _array(out[0][0][0], "train example", name)
        nbytes = sum(len(part) for part in out) * first.nbytes
        if placement(spec, nbytes) == "stream":
            target = _array(out[0][0][1], "target", name)
            if plugin_task(spec, target) == "regression":
                raise DataError(
                    f"dataset.placement: {name}'s targets are a quantity to regress, and "
                    "regression sets are read into memory; set dataset.placement: memory"
                )
            counts = {names[i]: len(part) for i, part in enumerate(out)}
            labels = [int(part[i][1]) for part in out for i in range(min(len(part), 256))]
            classes = spec.get("num_classes") or max(labels) + 1
            shape = first.shape
            stats = (None, None)
            if first.ndim == 3 and first.dtype == np.uint8:
                picks = range(min(len(out[0]), STATS_SAMPLE))
                stats = channel_stats(np.stack([_array(out[0][i][0], "x", name) for i in picks]))
            return Streamed(
                name, spec, classes, tuple(shape), counts, *stats, seed=seed, opened=out
            )
        out = tuple(v for part in out for v in _as_arrays(part, "example", name))
    if len(out) not in (4, 6):
        raise DataError(
            f"dataset.name: {name} returned {len(out)} values; return (x_train, y_train, x_val, "
            "y_val[, x_test, y_test]) or (train, val[, test]) torch Datasets"
        )
    arrays = [_array(v, "split", name) for v in out]
    parts = {names[i // 2]: (arrays[i], arrays[i + 1]) for i in range(0, len(arrays), 2)}
    task = plugin_task(spec, parts["train"][1])
    check_arrays(name, parts, task)
    x_train = parts["train"][0]
    images = x_train.ndim == 4 and x_train.dtype == np.uint8
    stats = channel_stats(x_train) if images else (None, None)
    if x_train.ndim == 2:
        parts = {k: (x.astype(np.float32), y) for k, (x, y) in parts.items()}
    test = parts.get("test", (None, None))
    return assemble(name, parts["train"], parts["val"], *test, spec, seed, stats, task)


def load(spec: dict[str, Any], seed: int) -> Dataset | Streamed:
    """An image folder or a loader plug-in, as its spec says."""
    if spec["name"] == "image_folder":
        return load_image_folder(spec, seed)
    try:
        return load_plugin(spec, seed)
    except PluginError as error:
        raise DataError(f"dataset.name: {error}; fix dataset.name or the module") from None
