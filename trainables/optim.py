"""Optimizers with weight decay, and the L1 penalty added to the loss."""

from typing import Any

import torch
from torch import nn


def build_optimizer(model: nn.Module, hp: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimizer `hp["optimizer"]` names, with lr, weight_decay and momentum from `hp`."""
    params = model.parameters()
    name, lr, weight_decay = hp["optimizer"], hp["lr"], hp["weight_decay"]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=hp["momentum"], weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer: unknown optimizer {name!r}")


OPTIMIZERS = ("sgd", "adam", "adamw")


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of |w| over the weight matrices (biases and norm parameters are left alone)."""
    return sum(p.abs().sum() for p in model.parameters() if p.dim() > 1)
