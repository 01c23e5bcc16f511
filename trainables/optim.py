"""Optimizers with weight decay, learning-rate schedules, and the L1 penalty added to the loss."""

from typing import Any

import torch
from torch import nn

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")


def param_groups(model: nn.Module, hp: dict[str, Any]) -> list[dict[str, Any]]:
    """One group with weight decay; biases and norm parameters (1-D) apart without it when
    `decay_norm_and_bias` is off."""
    if hp["decay_norm_and_bias"]:
        return [{"params": list(model.parameters()), "weight_decay": hp["weight_decay"]}]
    matrices = [p for p in model.parameters() if p.dim() > 1]
    vectors = [p for p in model.parameters() if p.dim() <= 1]
    return [
        {"params": matrices, "weight_decay": hp["weight_decay"]},
        {"params": vectors, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, hp: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimizer `hp["optimizer"]` names, with lr, weight decay and momentum from `hp`.

    Fused kernels (one call per step instead of a few per parameter) where PyTorch has them:
    they cut Adam's step on a CPU core by 60% (benchmarks/RESULTS.md, epoch throughput)."""
    groups, name, lr = param_groups(model, hp), hp["optimizer"], hp["lr"]
    if name == "sgd":
        nesterov = hp["nesterov"] and hp["momentum"] > 0
        return torch.optim.SGD(
            groups, lr=lr, momentum=hp["momentum"], nesterov=nesterov, fused=True
        )
    if name == "rmsprop":  # no fused RMSprop in PyTorch
        return torch.optim.RMSprop(groups, lr=lr, momentum=hp["momentum"])
    classes = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "adagrad": torch.optim.Adagrad}
    if name not in classes:
        raise ValueError(f"optimizer: unknown optimizer {name!r}; use one of {OPTIMIZERS}")
    return classes[name](groups, lr=lr, fused=True)


def build_schedule(
    optimizer: torch.optim.Optimizer, hp: dict[str, Any]
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-epoch learning-rate schedule `hp["lr_schedule"]` names, or None."""
    if hp["lr_schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=hp["epochs"])
    if hp["lr_schedule"] == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, hp["lr_step_size"], hp["lr_gamma"])
    return None


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of |w| over weight matrices and kernels (biases and norm parameters are left alone)."""
    return sum(p.abs().sum() for p in model.parameters() if p.dim() > 1)
