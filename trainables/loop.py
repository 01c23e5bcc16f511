"""The training loop: one function, called by Ray trials and by `study train` alike.

Data lives in tensors on the trial's device for the whole run; each epoch draws a seeded
permutation and slices batches by index, so there is no per-sample DataLoader and no copy.
"""

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainables.data import Dataset
from trainables.hyperparameters import resolve
from trainables.models import MODELS
from trainables.optim import build_optimizer, l1_penalty

# report(metrics, state): metrics of one epoch, and the state a checkpoint needs. The state
# holds live references to the model's tensors: save or copy it before returning.
Report = Callable[[dict[str, float], dict[str, Any]], None]

EVAL_BATCH = 4096  # evaluation has no backward pass, so it takes big slices


def device() -> torch.device:
    """The GPU Ray assigned to this process when there is one, the CPU otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` in eval mode over (x, y)."""
    model.eval()
    loss, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device)
    for start in range(0, len(x), EVAL_BATCH):
        out = model(x[start : start + EVAL_BATCH])
        target = y[start : start + EVAL_BATCH]
        loss += F.cross_entropy(out, target, reduction="sum")
        correct += (out.argmax(1) == target).sum()
    return loss.item() / len(x), correct.item() / len(x)


def batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Index slices of one shuffled epoch; a last batch of one example is dropped (BatchNorm)."""
    order = torch.randperm(n, generator=generator)
    if n % batch_size == 1 and n > 1:
        order = order[:-1]
    return list(order.split(batch_size))


def fit(
    config: dict[str, Any],
    data: Dataset,
    report: Report,
    state: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Train the model `config` describes on `data`, calling `report` after every epoch.

    `config` holds the hyperparameters (defaults fill the rest), `model`, `epochs`, `seed` and
    `threads`. `state`, a dict a previous `report` was given, resumes training where it was.
    Returns the metrics of the last epoch.
    """
    hp = resolve(config)
    torch.set_num_threads(int(hp.get("threads", 1)))
    torch.manual_seed(hp["seed"])
    dev = device()
    data = data.to(dev)

    model_spec = hp["model"]
    model = MODELS[model_spec["name"]](
        data.num_features, data.num_classes, model_spec["widths"], hp
    ).to(dev)
    optimizer = build_optimizer(model, hp)
    shuffle = torch.Generator().manual_seed(hp["seed"])
    first_epoch = 1
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        shuffle.set_state(state["shuffle"])
        torch.set_rng_state(state["torch"])
        first_epoch = state["epoch"] + 1

    metrics: dict[str, float] = {}
    for epoch in range(first_epoch, hp["epochs"] + 1):
        started = time.perf_counter()
        model.train()
        for index in batches(len(data.x_train), hp["batch_size"], shuffle):
            index = index.to(dev)
            loss = F.cross_entropy(model(data.x_train[index]), data.y_train[index])
            if hp["l1"] > 0:
                loss = loss + hp["l1"] * l1_penalty(model)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if hp["grad_clip"] > 0:
                nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])
            optimizer.step()
        # Train metrics in eval mode, so that the gap compares like with like.
        train_loss, train_acc = evaluate(model, data.x_train, data.y_train)
        val_loss, val_acc = evaluate(model, data.x_val, data.y_val)
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "gap": train_acc - val_acc,
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_time": time.perf_counter() - started,
        }
        state = {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "shuffle": shuffle.get_state(),
            "torch": torch.get_rng_state(),
        }
        report(metrics, state)
    return metrics
