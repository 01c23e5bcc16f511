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
from trainables.catalog import IMAGE_MODELS
from trainables.feed import data_workers
from trainables.hyperparameters import TASK_LOSSES, ends_at, resolve
from trainables.interface import Data, Feed
from trainables.models import build_model, num_params
from trainables.optim import build_optimizer, build_schedule, l1_penalty
from trainables.patience import Patience

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
    if data.task == "regression" and "loss" not in config:
        hp["loss"] = TASK_LOSSES["regression"][0]  # a regression run's default loss
    torch.manual_seed(hp["seed"])
    model = build_model(data.input_shape, data.num_classes, hp["model"], hp)
    optimizer = build_optimizer(model, hp)
    return Setup(hp, model, optimizer, build_schedule(optimizer, hp))


# Regression losses on standardised targets, elementwise; huber's delta is then one standard
# deviation of the target.
REGRESSION_LOSSES = {"mse": F.mse_loss, "mae": F.l1_loss, "huber": F.huber_loss}
# The power of the target's scale that takes each loss back to the target's own units.
UNITS = {"mse": 2, "mae": 1, "huber": 2}


def criterion(hp: dict[str, Any], task: str) -> Callable[..., torch.Tensor]:
    """The training loss of `task`: label-smoothed cross-entropy, or hp["loss"] for regression
    (mse, mae or huber on the standardised targets)."""
    if task == "regression":
        return REGRESSION_LOSSES[hp["loss"]]
    smoothing = hp["label_smoothing"]
    return lambda out, target: F.cross_entropy(out, target, label_smoothing=smoothing)


def loss_fn(
    setup: Setup,
    logits: torch.Tensor,
    target: torch.Tensor,
    partner: torch.Tensor | None = None,
    share: float = 1.0,
    task: str = "classification",
) -> torch.Tensor:
    """The task's loss (cross-entropy label-smoothed by `label_smoothing`, or the regression
    loss) plus the L1 penalty when `l1` > 0. A mixed batch (mixup, cutmix) scores each example
    `share` against its own target and the rest against its `partner`'s."""
    score = criterion(setup.hp, task)
    loss = score(logits, target)
    if partner is not None:
        other = score(logits, target[partner])
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


@torch.no_grad()
def evaluate_regression(run: "Run", split: str) -> dict[str, float]:
    """Loss, RMSE, MAE and R^2 of the model in eval mode over a split, in the target's own
    units (R^2 averaged over the outputs, as scikit-learn's r2_score)."""
    model, feed, hp = run.setup.model, run.feed, run.setup.hp
    model.eval()
    mean, std = run.target_mean, run.target_std
    sums = {k: torch.zeros_like(std) for k in ("loss", "sse", "sae", "y", "yy")}
    count = 0
    for x, target in feed.split(split):
        out = model(feed.normalize(x)).float().reshape(target.shape)
        elementwise = REGRESSION_LOSSES[hp["loss"]](out, target, reduction="none")
        sums["loss"] += (elementwise * std ** UNITS[hp["loss"]]).sum(0)
        error = (out - target) * std  # in the target's units
        truth = target * std + mean
        sums["sse"] += (error**2).sum(0)
        sums["sae"] += error.abs().sum(0)
        sums["y"] += truth.sum(0)
        sums["yy"] += (truth**2).sum(0)
        count += len(target)
    total = {k: v.double().cpu() for k, v in sums.items()}
    spread = total["yy"] - total["y"] ** 2 / count  # the split's own sum of squares
    r2 = (1 - total["sse"] / spread.clamp_min(1e-12)).mean()
    outputs = len(std)
    return {
        "loss": total["loss"].sum().item() / (count * outputs),
        "rmse": (total["sse"].sum().item() / (count * outputs)) ** 0.5,
        "mae": total["sae"].sum().item() / (count * outputs),
        "r2": r2.item(),
    }


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
    task: str = "classification"
    target_mean: torch.Tensor | None = None  # regression: to take outputs to the target's units
    target_std: torch.Tensor | None = None


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
    channels_last = gpu and data.is_image and hp["model"]["name"] in IMAGE_MODELS
    if channels_last:
        model.to(memory_format=torch.channels_last)
    regression = data.task == "regression"
    on_device = lambda values: torch.tensor(values, device=dev) if regression else None  # noqa: E731
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
        # chance level: ln C for classes; predicting the mean (loss ~1 on standardised targets)
        divergence=DIVERGENCE * (1.0 if regression else math.log(data.num_classes)),
        task=data.task,
        target_mean=on_device(data.target_mean),
        target_std=on_device(data.target_std),
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
            loss = loss_fn(setup, run.forward(x), target, partner, share, run.task)
        setup.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if hp["grad_clip"] > 0:
            nn.utils.clip_grad_norm_(setup.model.parameters(), hp["grad_clip"])
        setup.optimizer.step()
        losses.append(loss.detach())
    if setup.schedule:
        setup.schedule.step()
    return torch.stack(losses).nan_to_num(math.inf).max().item()


def evaluate_split(run: Run, split: str) -> dict[str, float]:
    """The task's metrics over one split, named `<split>_<metric>`."""
    if run.task == "regression":
        scores = evaluate_regression(run, split)
    else:
        loss, acc = evaluate(run.setup.model, run.feed, split, run.device)
        scores = {"loss": loss, "acc": acc}
    return {f"{split}_{name}": value for name, value in scores.items()}


def evaluate_epoch(run: Run) -> dict[str, float]:
    """The task's metrics on the training and validation splits, in eval mode (so that the gap
    compares like with like), and the gap: positive when the network fits the training split
    better (train_acc - val_acc; for regression val_rmse - train_rmse)."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=run.amp):
        metrics = {**evaluate_split(run, "train"), **evaluate_split(run, "val")}
    if run.task == "regression":
        metrics["gap"] = metrics["val_rmse"] - metrics["train_rmse"]
    else:
        metrics["gap"] = metrics["train_acc"] - metrics["val_acc"]
    return metrics


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


# -- k-fold cross-validation: the folds' models trained side by side -------------------------


def combined(scores: list[dict[str, float]]) -> dict[str, float]:
    """One epoch's metrics of every fold as one: each metric's mean over the folds (what the
    study ranks, ASHA cuts and patience watches), its `_std` across them and each fold's own
    value (`fold1_val_acc`, ...). One fold (a hold-out split): its metrics as they are."""
    if len(scores) == 1:
        return scores[0]
    means = {k: sum(s[k] for s in scores) / len(scores) for k in scores[0]}
    spread = {
        f"{k}_std": (sum((s[k] - means[k]) ** 2 for s in scores) / (len(scores) - 1)) ** 0.5
        for k in scores[0]
    }
    folds = {f"fold{i}_{k}": v for i, s in enumerate(scores, 1) for k, v in s.items()}
    return {**means, **spread, **folds}


def checkpoint(runs: list[Run], patience: Patience | None, epoch: int) -> dict[str, Any]:
    """The state of every fold after `epoch`, with the patience counter and best weights."""
    saved = snapshot(runs[0], epoch) if len(runs) == 1 else {
        "epoch": epoch, "folds": [snapshot(run, epoch) for run in runs]
    }  # fmt: skip
    return {**saved, **(patience.state() if patience else {})}


def resume(runs: list[Run], patience: Patience | None, state: dict[str, Any]) -> int:
    """Continue every fold from a `checkpoint`; returns the epoch to train next."""
    folds = state["folds"] if len(runs) > 1 else [state]
    for run, saved in zip(runs, folds, strict=True):
        restore(run, saved)
    if patience and state.get("patience"):
        patience.load_state(state)
    return state["epoch"] + 1


def stop_by_patience(
    runs: list[Run], patience: Patience | None, epoch: int, metrics: dict[str, float]
) -> dict[str, Any] | None:
    """Whether patience ends the run after `epoch` (watching the folds' mean): None to go on,
    else what the stop adds to the epoch's metrics: the flag, the best and stopped epochs and,
    when the best epoch's weights are restored (in every fold), the metrics of those weights
    (`final`, the run's score)."""
    models = [run.setup.model for run in runs]
    if patience is None or not patience.update(epoch, metrics, models):
        return None
    stop = {"patience_stopped": 1.0, "best_epoch": patience.best_epoch, "stopped_epoch": epoch}
    if patience.restore and patience.best_epoch < epoch:
        for model, weights in zip(models, patience.best_models, strict=True):
            model.load_state_dict(weights)
        best = {k: v for k, v in patience.best_metrics.items() if k not in ("epoch", "epoch_time")}
        stop["final"] = best
    return stop


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
    where it was. A cross-validated set (`data.parts()`: one per fold) trains a model per fold
    side by side, epoch by epoch, and reports their mean (see `combined`). An epoch in which a
    batch loss is not finite or above DIVERGENCE times chance level ends training with
    `diverged: 1` in its metrics. With `patience` on, the epoch that runs out of it ends
    training with `patience_stopped: 1` (see `stop_by_patience`).
    Returns the metrics of the weights training ends with (the best epoch's when patience
    restored them), with the test split's (`test_*`) when `test` is set.
    """
    runs = [start(config, part) for part in data.parts()]
    hp = runs[0].setup.hp
    patience = Patience.of(hp)
    first_epoch = resume(runs, patience, state) if state else 1
    last_epoch = ends_at(hp)
    if patience and patience.wait >= patience.patience:
        last_epoch = first_epoch - 1  # resumed from the epoch whose patience ran out: done
    size = num_params(runs[0].setup.model)
    metrics: dict[str, Any] = {}
    for epoch in range(first_epoch, last_epoch + 1):
        started = time.perf_counter()
        lr = runs[0].setup.optimizer.param_groups[0]["lr"]
        peaks = [train_epoch(run, epoch) for run in runs]
        metrics = {
            "epoch": epoch,
            **combined([evaluate_epoch(run) for run in runs]),
            "lr": lr,
            "epoch_time": time.perf_counter() - started,
            "num_params": size,
        }
        if not all(peak < run.divergence for peak, run in zip(peaks, runs, strict=True)):
            metrics["diverged"] = 1.0
        stop = None if "diverged" in metrics else stop_by_patience(runs, patience, epoch, metrics)
        metrics.update(stop or {})
        report(metrics, checkpoint(runs, patience, epoch))
        if "diverged" in metrics or stop:
            break
    final = {k: v for k, v in {**metrics, **metrics.get("final", {})}.items() if k != "final"}
    if test:
        if not runs[0].feed.has("test"):
            raise ValueError("dataset.test_fraction: no test split kept; set it above 0")
        final.update(combined([evaluate_split(run, "test") for run in runs]))
    return final
