"""Optimizers with weight decay, learning-rate schedules, and the L1 penalty added to the loss."""

import inspect
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from trainables.hyperparameters import OPTIMIZERS

CLASSES = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "adagrad": torch.optim.Adagrad}


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


def _dynamo_marker() -> types.CodeType | None:
    """The code of the wrapper `torch._disable_dynamo` puts around a method, which imports
    torch._dynamo on its first call (None where this torch has no such wrapper)."""
    try:
        return torch._disable_dynamo(lambda: None).__code__
    except AttributeError:
        return None


_WRAPPED = _dynamo_marker()


def _kept_out(cls: type[torch.optim.Optimizer]) -> Callable[..., Any] | None:
    """torch.optim imports torch._dynamo on an optimizer's first `__init__`, `step`,
    `zero_grad` and `state_dict`, only to keep the compiler out of them: 1-1.6 s of a core at
    every trial's start, the most after importing torch. Our loop never compiles them (a
    compiled model runs inside the plain loop), so `cls`'s methods are marked as kept out
    already (the cache torch's wrapper looks up first) and torch's own step function is
    returned, to run with grad mode as torch's wrapper sets it. None where this torch is built
    otherwise: then nothing changes and the import happens (pinned by name in
    tests/unit/test_engine_internals.py, and in a fresh interpreter by tests/test_trainables.py)."""
    step = inspect.unwrap(cls.step)
    if _WRAPPED is None or step is cls.step:
        return None
    for klass in cls.__mro__:
        for method in vars(klass).values():
            if getattr(method, "__code__", None) is _WRAPPED and hasattr(method, "__wrapped__"):
                method.__wrapped__.__dynamo_disable = method.__wrapped__
    return step


def build_optimizer(model: nn.Module, hp: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimizer `hp["optimizer"]` names, with lr, weight decay and momentum from `hp`;
    its methods do not import torch._dynamo (`_kept_out`).

    Fused kernels (one call per step instead of a few per parameter) where PyTorch has them:
    they cut Adam's step on a CPU core by 60% (benchmarks/history/throughput.md)."""
    name, lr = hp["optimizer"], hp["lr"]
    if name == "sgd":
        nesterov = hp["nesterov"] and hp["momentum"] > 0
        cls, options = torch.optim.SGD, {"momentum": hp["momentum"], "nesterov": nesterov}
        options["fused"] = True
    elif name == "rmsprop":  # no fused RMSprop in PyTorch
        cls, options = torch.optim.RMSprop, {"momentum": hp["momentum"]}
    elif name in CLASSES:
        cls, options = CLASSES[name], {"fused": True}
    else:
        raise ValueError(f"optimizer: unknown optimizer {name!r}; use one of {OPTIMIZERS}")
    step = _kept_out(cls)
    optimizer = cls(param_groups(model, hp), lr=lr, **options)
    if step is not None:

        def plain_step(self: torch.optim.Optimizer, closure: Any = None) -> Any:
            with torch.set_grad_enabled(self.defaults["differentiable"]):
                return step(self, closure)

        optimizer.step = types.MethodType(plain_step, optimizer)  # a method, as schedules want
    return optimizer


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
