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
from trainables.feed import data_workers
from trainables.hyperparameters import resolve
from trainables.interface import Data, Feed
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


def build(config: dict[str, Any], data: Data) -> Setup:
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
def evaluate(model: nn.Module, feed: Feed, split: str, device: torch.device) -> tuple[float, float]:
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


@dataclass
class Run:
    """One training run under way: what `fit` sets up once and every epoch uses."""

    setup: Setup
    feed: Feed
    device: torch.device
    forward: Callable[[torch.Tensor], torch.Tensor]  # the model, compiled where asked
    augment_gen: torch.Generator  # augmentation draws and mixup/cutmix partners
    augmenting: bool
    mixed: bool
    amp: bool  # bf16 autocast
    channels_last: bool
    divergence: float  # a batch loss at or above this (or not finite) has diverged


def start(config: dict[str, Any], data: Data) -> Run:
    """Threads, model, optimizer, schedule and feed for `config` on `data`, on the device.

    On a GPU: bf16 autocast where the GPU has it, channels_last convolutions, optional
    torch.compile. On the CPU all three are off, so CPU results stay bit-for-bit the same."""
    threads = int(config.get("threads", 1))
    streamed = data.placement == "stream"  # DataLoader workers take half the trial's CPUs
    workers, threads = data_workers(threads) if streamed else (0, threads)
    torch.set_num_threads(threads)
    setup = build(config, data)
    hp, model = setup.hp, setup.model
    dev = device()
    augmenting = data.is_image and enabled(hp)
    feed = data.feed(dev, raw=augmenting, seed=hp["seed"], workers=workers)
    model.to(dev)
    gpu = dev.type == "cuda"
    channels_last = gpu and data.is_image and hp["model"]["name"] in ("cnn", "torchvision")
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return Run(
        setup=setup,
        feed=feed,
        device=dev,
        forward=torch.compile(model) if gpu and hp["compile"] else model,
        augment_gen=torch.Generator(device=dev).manual_seed(hp["seed"]),
        augmenting=augmenting,
        mixed=mixing(hp),
        amp=gpu and torch.cuda.is_bf16_supported(),
        channels_last=channels_last,
        divergence=DIVERGENCE * math.log(data.num_classes),
    )


def restore(run: Run, state: dict[str, Any]) -> int:
    """Continue from a state a `report` was given: weights, optimizer, schedule, the feed's
    order and every random generator (a state saved on another kind of device, GPU or CPU,
    resumes too). Returns the epoch to train next."""
    setup = run.setup
    setup.model.load_state_dict(state["model"])
    setup.optimizer.load_state_dict(state["optimizer"])
    if setup.schedule and state.get("schedule"):
        setup.schedule.load_state_dict(state["schedule"])
    run.feed.load_state(state)
    saved_on = "cuda" if state.get("cuda") is not None else "cpu"
    if saved_on == run.device.type:
        run.augment_gen.set_state(state["augment"])
    else:  # a CUDA generator's state (Philox) does not fit a CPU one (Mersenne Twister), nor
        # the reverse: the draws go on from the seed and the epoch instead
        run.augment_gen.manual_seed(run.setup.hp["seed"] * 1_000_003 + state["epoch"])
    torch.set_rng_state(state["torch"])  # dropout draws from the global generators
    if saved_on == "cuda" and run.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"])
    return state["epoch"] + 1


def train_epoch(run: Run, epoch: int) -> float:
    """One pass over the training split, a step per batch (augment, normalise, mix, clip),
    then the schedule's step. Returns the highest batch loss (inf where one was NaN)."""
    setup, hp = run.setup, run.setup.hp
    setup.model.train()
    losses = []  # tensors on the device, read once after the epoch
    for step, (x, target) in enumerate(run.feed.train(hp["batch_size"], epoch)):
        if run.augmenting:
            x = augment(x, hp, run.augment_gen)
        x = run.feed.normalize(x)
        partner, share = None, 1.0
        if run.mixed:  # the draws depend on (seed, epoch, step) alone: a resume repeats them
            x, partner, share = mix(x, hp, run.augment_gen, (hp["seed"], epoch, step))
        if run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=run.amp):
            loss = loss_fn(setup, run.forward(x), target, partner, share)
        setup.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if hp["grad_clip"] > 0:
            nn.utils.clip_grad_norm_(setup.model.parameters(), hp["grad_clip"])
        setup.optimizer.step()
        losses.append(loss.detach())
    if setup.schedule:
        setup.schedule.step()
    return torch.stack(losses).nan_to_num(math.inf).max().item()


def evaluate_epoch(run: Run) -> dict[str, float]:
    """Loss and accuracy on the training and validation splits, in eval mode (so that the
    gap compares like with like), and the gap."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=run.amp):
        train_loss, train_acc = evaluate(run.setup.model, run.feed, "train", run.device)
        val_loss, val_acc = evaluate(run.setup.model, run.feed, "val", run.device)
    return {
        "train_loss": train_loss,
        "train_acc": train_acc,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "gap": train_acc - val_acc,
    }


def snapshot(run: Run, epoch: int) -> dict[str, Any]:
    """The state a checkpoint needs to resume after `epoch` (live references to the tensors)."""
    setup = run.setup
    return {
        "epoch": epoch,
        "model": setup.model.state_dict(),
        "optimizer": setup.optimizer.state_dict(),
        "schedule": setup.schedule.state_dict() if setup.schedule else None,
        **run.feed.state(),
        "augment": run.augment_gen.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if run.device.type == "cuda" else None,
    }


def fit(
    config: dict[str, Any],
    data: Data,
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
    run = start(config, data)
    hp = run.setup.hp
    first_epoch = restore(run, state) if state else 1
    last_epoch = min(hp["epochs"], hp.get("stop_epoch") or hp["epochs"])
    size = num_params(run.setup.model)
    metrics: dict[str, float] = {}
    for epoch in range(first_epoch, last_epoch + 1):
        started = time.perf_counter()
        lr = run.setup.optimizer.param_groups[0]["lr"]
        peak = train_epoch(run, epoch)
        metrics = {
            "epoch": epoch,
            **evaluate_epoch(run),
            "lr": lr,
            "epoch_time": time.perf_counter() - started,
            "num_params": size,
        }
        if not peak < run.divergence:
            metrics["diverged"] = 1.0
        report(metrics, snapshot(run, epoch))
        if "diverged" in metrics:
            break
    if test:
        if not run.feed.has("test"):
            raise ValueError("dataset.test_fraction: no test split kept; set it above 0")
        metrics["test_loss"], metrics["test_acc"] = evaluate(
            run.setup.model, run.feed, "test", run.device
        )
    return metrics
