"""Batches for the training loop, wherever the data lives.

`MemoryFeed` (placement memory): the whole set on the trial's device, an epoch a seeded
permutation sliced by index. `StreamFeed` (placement stream): each trial reads its splits
with DataLoaders whose workers come out of the trial's CPUs, in an order that depends only on
the seed and the epoch (so a trial resumed from a checkpoint reads what it would have read).
Either way the loop gets batches on its device, images as floats in [0, 1].
"""

from collections.abc import Iterator
from typing import Any

import torch

from trainables.transform import as_floats

EVAL_BATCH = 4096  # evaluation has no backward pass, so it takes big slices (in memory)
STREAM_EVAL_BATCH = 256  # streamed examples may be large images: smaller eval batches


def batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Index slices of one shuffled epoch; a last batch of one example is dropped (BatchNorm)."""
    order = torch.randperm(n, generator=generator)
    if n % batch_size == 1 and n > 1:
        order = order[:-1]
    return list(order.split(batch_size))


def data_workers(cpus: float) -> tuple[int, int]:
    """DataLoader workers and torch threads for a streaming trial of `cpus` CPUs: half each
    (the workers decode, the threads train), never more than the CPUs Ray gave the trial."""
    total = max(1, int(cpus))
    workers = total // 2
    return workers, total - workers


class MemoryFeed:
    """The data set on the device; batches by index."""

    def __init__(self, data: Any, device: torch.device, raw: bool, seed: int) -> None:
        # raw: images stay in [0, 1] for augmentation, normalised per batch; otherwise the
        # whole set is normalised once.
        self.data = data.to(device) if raw else data.to(device).normalized()
        self.device = device
        self.shuffle = torch.Generator().manual_seed(seed)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return self.data.normalize(x)

    def train(self, batch_size: int, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for index in batches(len(self.data.x_train), batch_size, self.shuffle):
            index = index.to(self.device, non_blocking=True)
            yield self.data.x_train[index], self.data.y_train[index]

    def split(self, name: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = getattr(self.data, f"x_{name}"), getattr(self.data, f"y_{name}")
        for start in range(0, len(x), EVAL_BATCH):
            yield x[start : start + EVAL_BATCH], y[start : start + EVAL_BATCH]

    def has(self, name: str) -> bool:
        return getattr(self.data, f"x_{name}") is not None

    def state(self) -> dict[str, Any]:
        return {"shuffle": self.shuffle.get_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.shuffle.set_state(state["shuffle"])


class EpochSampler(torch.utils.data.Sampler):
    """A permutation of range(n) drawn from (seed, epoch) alone: reproducible, and resumable
    at any epoch without saved state."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 1

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())


class StreamFeed:
    """The data set read by DataLoaders in the trial (persistent workers, pinned memory and
    non-blocking copies on a GPU). Train metrics come from a fixed, seeded sample of the
    training split as large as the validation split, so an epoch reads the training data
    once more at most by that much."""

    def __init__(self, data: Any, device: torch.device, workers: int, seed: int) -> None:
        self.data, self.device, self.workers = data, device, workers
        self.sets = data.splits()
        self.sampler = EpochSampler(len(self.sets["train"]), seed)
        seeded = torch.Generator().manual_seed(seed)
        sample = torch.randperm(len(self.sets["train"]), generator=seeded)
        self.sets["train_eval"] = torch.utils.data.Subset(
            self.sets["train"], sample[: len(self.sets["val"])].tolist()
        )
        self.loaders: dict[Any, torch.utils.data.DataLoader] = {}

    def _loader(self, name: str, **options: Any) -> torch.utils.data.DataLoader:
        key = (name, tuple(sorted(options.items())))
        if key not in self.loaders:
            self.loaders[key] = torch.utils.data.DataLoader(
                self.sets[name],
                num_workers=self.workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=self.workers > 0,
                **options,
            )
        return self.loaders[key]

    def _on_device(self, x: torch.Tensor, y: torch.Tensor):
        x = as_floats(x.to(self.device, non_blocking=True))
        return x, torch.as_tensor(y).to(self.device, non_blocking=True)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return self.data.normalize(x)

    def train(self, batch_size: int, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.sampler.epoch = epoch
        loader = self._loader("train", batch_size=batch_size, sampler=self.sampler)
        for x, y in loader:
            if len(x) == 1 and self.sampler.n > 1:  # a last batch of one: dropped (BatchNorm)
                continue
            yield self._on_device(x, y)

    def split(self, name: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        name = "train_eval" if name == "train" else name
        for x, y in self._loader(name, batch_size=STREAM_EVAL_BATCH):
            yield self._on_device(x, y)

    def has(self, name: str) -> bool:
        return name in self.sets

    def state(self) -> dict[str, Any]:
        return {"shuffle": None}  # the order is the seed's and the epoch's

    def load_state(self, state: dict[str, Any]) -> None:
        pass
