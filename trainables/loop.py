"""The training loop: one function, called by Ray trials and by `study train` alike.

In memory, data lives in tensors on the trial's device for the whole run; each epoch draws a
seeded permutation and slices batches by index, so there is no per-sample DataLoader and no
copy. Streamed data comes through DataLoaders instead (trainables.feed); the loop sees
batches on its device either way.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainables.augment import augment, enabled, mix, mixing
from trainables.data import Dataset
from trainables.feed import MemoryFeed, StreamFeed, data_workers
from trainables.hyperparameters import resolve
from trainables.models import build_model, num_params
from trainables.optim import build_optimizer, build_schedule, l1_penalty

# report(metrics, state): metrics of one epoch, and the state a checkpoint needs. The state
# holds live references to the model's tensors: save or copy it before returning.
Report = Callable[[dict[str, float], dict[str, Any]], None]

# An epoch in which a batch's training loss is NaN, infinite or this many times chance level
# (ln C) has diverged: at lr=1000 SGD's loss on digits passes 1e5 on its second batch for
# every seed (lr=10 is a coin toss: some seeds blow up to 1e23, others recover).
DIVERGENCE = 100.0


def load_state(path: Any) -> dict[str, Any]:
    """A training state a `report` saved (a checkpoint), read as tensors and plain containers
    only (`weights_only`: a file that would run code when unpickled is refused), on the CPU
    (`fit` moves it to the trial's device, which may differ from the one that saved it)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def device() -> torch.device:
    """The GPU Ray assigned to this process when there is one, the CPU otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class Setup:
    """Everything one training run builds from its config."""

    hp: dict[str, Any]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler | None


def build(config: dict[str, Any], data: Dataset) -> Setup:
    """Model, optimizer and schedule for `config` on `data` (seeded, on the CPU)."""
    hp = resolve(config)
    torch.manual_seed(hp["seed"])
    model = build_model(data.input_shape, data.num_classes, hp["model"], hp)
    optimizer = build_optimizer(model, hp)
    return Setup(hp, model, optimizer, build_schedule(optimizer, hp))


def loss_fn(
    setup: Setup,
    logits: torch.Tensor,
    target: torch.Tensor,
    partner: torch.Tensor | None = None,
    share: float = 1.0,
) -> torch.Tensor:
    """Cross-entropy (label-smoothed by `label_smoothing`) plus the L1 penalty when `l1` > 0.
    A mixed batch (mixup, cutmix) scores each example `share` against its own label and the
    rest against its `partner`'s."""
    smoothing = setup.hp["label_smoothing"]
    loss = F.cross_entropy(logits, target, label_smoothing=smoothing)
    if partner is not None:
        other = F.cross_entropy(logits, target[partner], label_smoothing=smoothing)
        loss = share * loss + (1 - share) * other
    if setup.hp["l1"] > 0:
        loss = loss + setup.hp["l1"] * l1_penalty(setup.model)
    return loss


@torch.no_grad()
def evaluate(model: nn.Module, feed: Any, split: str, device: torch.device):
    """Mean cross-entropy and accuracy of `model` in eval mode over a split of the feed."""
    model.eval()
    loss, correct = torch.zeros((), device=device), torch.zeros((), device=device)
    count = 0
    for x, target in feed.split(split):
        out = model(feed.normalize(x))
        loss += F.cross_entropy(out, target, reduction="sum")
        correct += (out.argmax(1) == target).sum()
        count += len(target)
    return loss.item() / count, correct.item() / count


def fit(
    config: dict[str, Any],
    data: Dataset,
    report: Report,
    state: dict[str, Any] | None = None,
    test: bool = False,
) -> dict[str, float]:
    """Train the model `config` describes on `data`, calling `report` after every epoch.

    `config` holds the hyperparameters (defaults fill the rest), `model`, `epochs` (the length
    of the schedule), `seed`, `threads` and optionally `stop_epoch` (end earlier, as an
    early-stopped trial did). `state`, a dict a previous `report` was given, resumes training
    where it was. An epoch in which a batch loss is not finite or above DIVERGENCE times
    chance level ends training with `diverged: 1` in its metrics.
    Returns the metrics of the last epoch, with test_loss and test_acc when `test` is set.
    """
    threads = int(config.get("threads", 1))
    streamed = not isinstance(data, Dataset)
    workers, threads = data_workers(threads) if streamed else (0, threads)
    torch.set_num_threads(threads)
    setup = build(config, data)
    hp, model, optimizer = setup.hp, setup.model, setup.optimizer
    dev = device()
    augmenting = data.is_image and enabled(hp)
    if streamed:
        feed = StreamFeed(data, dev, workers, hp["seed"])
    else:
        feed = MemoryFeed(data, dev, augmenting, hp["seed"])
    model.to(dev)
    # GPU path: bf16 autocast where the GPU has it, channels_last convolutions, optional
    # torch.compile. On the CPU all three are off, so CPU results stay bit-for-bit the same.
    gpu = dev.type == "cuda"
    amp = gpu and torch.cuda.is_bf16_supported()
    channels_last = gpu and data.is_image and hp["model"]["name"] in ("cnn", "torchvision")
    if channels_last:
        model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if gpu and hp["compile"] else model
    mixed = mixing(hp)
    size = num_params(model)
    augment_gen = torch.Generator(device=dev).manual_seed(hp["seed"])
    first_epoch = 1
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if setup.schedule and state.get("schedule"):
            setup.schedule.load_state_dict(state["schedule"])
        feed.load_state(state)
        augment_gen.set_state(state["augment"])
        torch.set_rng_state(state["torch"])  # dropout draws from the global generators
        if state.get("cuda") is not None and dev.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"])
        first_epoch = state["epoch"] + 1

    metrics: dict[str, float] = {}
    last_epoch = min(hp["epochs"], hp.get("stop_epoch") or hp["epochs"])
    for epoch in range(first_epoch, last_epoch + 1):
        started = time.perf_counter()
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        losses = []  # tensors on the device, read once after the epoch
        for step, (x, target) in enumerate(feed.train(hp["batch_size"], epoch)):
            if augmenting:
                x = augment(x, hp, augment_gen)
            x = feed.normalize(x)
            partner, share = None, 1.0
            if mixed:  # the draws depend on (seed, epoch, step) alone: a resume repeats them
                x, partner, share = mix(x, hp, augment_gen, (hp["seed"], epoch, step))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                loss = loss_fn(setup, forward(x), target, partner, share)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if hp["grad_clip"] > 0:
                nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])
            optimizer.step()
            losses.append(loss.detach())
        if setup.schedule:
            setup.schedule.step()
        # Train metrics in eval mode, so that the gap compares like with like.
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            train_loss, train_acc = evaluate(model, feed, "train", dev)
            val_loss, val_acc = evaluate(model, feed, "val", dev)
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "gap": train_acc - val_acc,
            "lr": lr,
            "epoch_time": time.perf_counter() - started,
            "num_params": size,
        }
        peak = torch.stack(losses).nan_to_num(math.inf).max().item()
        if not peak < DIVERGENCE * math.log(data.num_classes):
            metrics["diverged"] = 1.0
        state = {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": setup.schedule.state_dict() if setup.schedule else None,
            **feed.state(),
            "augment": augment_gen.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if dev.type == "cuda" else None,
        }
        report(metrics, state)
        if "diverged" in metrics:
            break
    if test:
        if not feed.has("test"):
            raise ValueError("dataset.test_fraction: no test split kept; set it above 0")
        metrics["test_loss"], metrics["test_acc"] = evaluate(model, feed, "test", dev)
    return metrics
