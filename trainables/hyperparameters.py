"""Every hyperparameter the training loop understands: its default, the values it may take, and
why it is there."""

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Domain:
    """The values a hyperparameter may take: numbers within bounds (`integer` for counts), true
    or false (`boolean`), or one of `choices`. Bounds are inclusive unless `open_low` /
    `open_high` says otherwise; None is no bound."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    integer: bool = False
    boolean: bool = False
    choices: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.boolean:
            return "true or false"
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
            return f"{kind} in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{kind} {'>' if self.open_low else '>='} {self.low:g}"
        return kind

    def problem(self, value: Any) -> str | None:
        """Why `value` is outside the domain (None when it is inside)."""
        if self.boolean:
            return None if isinstance(value, bool) else "is not true or false"
        if self.choices:
            return None if value in self.choices else "is not a known value"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "is not a number"
        if self.integer and not isinstance(value, int):
            return "is not an integer"
        if not math.isfinite(value):
            return "is not finite"
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return "is too small"
        if self.high is not None and (value >= self.high if self.open_high else value > self.high):
            return "is too large"
        return None


POSITIVE = Domain(low=0, open_low=True)
NON_NEGATIVE = Domain(low=0)
FRACTION = Domain(low=0, high=1, open_high=True)  # a rate that must leave something: [0, 1)
COUNT = Domain(low=1, integer=True)
BOOLEAN = Domain(boolean=True)

# The optimizers trainables.optim builds.
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")

# name: (default, domain). A study's `space` samples some of these, its `fixed` pins others,
# the rest keep their defaults; preflight refuses any value outside its domain.
TABLE: dict[str, tuple[Any, Domain]] = {
    # -- optimisation --------------------------------------------------------------------------
    # step size: the knob that decides whether anything is learned at all
    "lr": (1e-3, POSITIVE),
    "optimizer": ("adam", Domain(choices=OPTIMIZERS)),
    "momentum": (0.0, FRACTION),  # sgd and rmsprop: heavy-ball momentum (1 never forgets)
    "nesterov": (False, BOOLEAN),  # sgd with momentum > 0: Nesterov's look-ahead variant
    "batch_size": (64, COUNT),  # examples per optimizer step
    "grad_clip": (0.0, NON_NEGATIVE),  # max global gradient norm; 0 turns clipping off
    "lr_schedule": ("none", Domain(choices=("none", "cosine", "step"))),  # cosine: to 0 at the end
    "lr_step_size": (10, COUNT),  # step schedule: epochs between decays
    "lr_gamma": (0.1, Domain(low=0, high=1, open_low=True)),  # step schedule: factor per decay
    # -- explicit regularization ---------------------------------------------------------------
    "weight_decay": (0.0, NON_NEGATIVE),  # L2 strength, by the optimizer (decoupled for adamw)
    "decay_norm_and_bias": (True, BOOLEAN),  # False: no weight decay on biases and norm params
    "l1": (0.0, NON_NEGATIVE),  # L1 strength: l1 * sum(|w|) over weight matrices and kernels
    "use_dropout": (True, BOOLEAN),  # False turns dropout off whatever `dropout` says
    "dropout": (0.0, FRACTION),  # dropout rate after each hidden activation; 0 turns it off
    "dropout2d": (False, BOOLEAN),  # CNN: drop whole feature maps (Dropout2d) in the conv blocks
    "batch_norm": (False, BOOLEAN),  # BatchNorm between each hidden layer and its activation
    # cross-entropy against (1 - s) one-hot + s uniform: punishes over-confident logits
    "label_smoothing": (0.0, FRACTION),
    # mixup / cutmix: train on pairs of examples blended (mixup) or pasted (cutmix, images)
    # with a Beta(alpha, alpha) share, labels mixed alike; 0 = off, both > 0 = one per batch
    "mixup_alpha": (0.0, NON_NEGATIVE),
    "cutmix_alpha": (0.0, NON_NEGATIVE),
    # -- the loss: cross-entropy for classes; for regression mse (the default a regression
    # study gets), mae or huber (its delta one standard deviation of the target) -------------
    "loss": ("cross_entropy", Domain(choices=("cross_entropy", "mse", "mae", "huber"))),
    # -- early stopping by patience: stop when `monitor` has not improved by more than
    # `min_delta` for `patience` epochs (0: off), and end with the best epoch's weights when
    # `restore_best` ----------------------------------------------------------------------------
    "patience": (0, Domain(low=0, integer=True)),
    "min_delta": (0.0, NON_NEGATIVE),
    "monitor": (
        "val_loss",
        Domain(choices=("val_loss", "val_acc", "val_rmse", "val_mae", "val_r2")),
    ),
    "restore_best": (True, BOOLEAN),
    # -- architecture --------------------------------------------------------------------------
    "activation": ("relu", Domain(choices=("relu", "leaky_relu", "sigmoid", "tanh", "softplus"))),
    # default (PyTorch's own) or a scheme for every linear and conv weight, biases zero
    "init": (
        "default",
        Domain(
            choices=(
                "default",
                "normal",
                "uniform",
                "xavier_normal",
                "xavier_uniform",
                "kaiming_normal",
                "kaiming_uniform",
            )
        ),
    ),
    "depth": (0, Domain(low=0, integer=True)),  # MLP hidden layers; 0 keeps the model's `widths`
    "width": (0, Domain(low=0, integer=True)),  # MLP units per hidden layer when depth > 0
    # -- data augmentation (images only, on whole batches on the trial's device) ---------------
    "crop_padding": (0, Domain(low=0, integer=True)),  # random crop after padding; 0 = off
    "hflip": (False, BOOLEAN),  # random horizontal flip with probability 1/2
    "rotation": (0.0, Domain(low=0, high=180)),  # random rotation within +-degrees; 0 = off
    "color_jitter": (0.0, Domain(low=0, high=1)),  # 3-channel: factors within 1 +- this
    # -- speed (GPU only; the CPU path ignores it, so results there do not change) ------------
    "compile": (False, BOOLEAN),  # torch.compile the model before training
}

HYPERPARAMETERS: dict[str, Any] = {name: default for name, (default, _) in TABLE.items()}
DOMAINS: dict[str, Domain] = {name: domain for name, (_, domain) in TABLE.items()}

# The knobs a network reads when it is built (a plug-in too: it gets them in `hp`); the loop
# applies every other one to any model itself.
NETWORK_KNOBS = ("use_dropout", "dropout", "dropout2d", "batch_norm", "activation", "init",
                 "depth", "width")  # fmt: skip

# What the loop reports each epoch, by task; a study's `metric` must be one of its task's.
CLASSIFICATION_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "gap")
REGRESSION_METRICS = ("train_loss", "train_rmse", "train_mae", "train_r2", "val_loss", "val_rmse",
                      "val_mae", "val_r2", "gap")  # fmt: skip
TASK_METRICS = {"classification": CLASSIFICATION_METRICS, "regression": REGRESSION_METRICS}
METRICS = (*dict.fromkeys((*CLASSIFICATION_METRICS, *REGRESSION_METRICS)), "lr", "epoch_time")
MAXIMIZED = ("train_acc", "val_acc", "train_r2", "val_r2")  # the rest are better lower

# The metric a study of each task is judged by when its spec names none (and `study train`
# of a config whose export names none).
DEFAULT_METRIC = {"classification": "val_acc", "regression": "val_rmse"}

# The losses each task may train with, its default first.
TASK_LOSSES = {"classification": ("cross_entropy",), "regression": ("mse", "mae", "huber")}


def direction(metric: str) -> str:
    """max for accuracies and R^2, min for losses, errors and the gap."""
    return "max" if metric in MAXIMIZED else "min"


# The settings of a run that a trial's config holds beside its hyperparameters (the fields of
# study.core.RunSettings; tests/unit/test_core.py checks they agree).
RUN_SETTINGS = ("dataset", "model", "epochs", "seed", "threads", "stop_epoch", "optuna_trial",
                "enqueued")  # fmt: skip


def ends_at(config: dict[str, Any]) -> int:
    """The epoch a run ends at when nothing stops it: its schedule's length (`epochs`), or
    `stop_epoch` where an early-stopped trial ended, whichever comes first."""
    return min(config["epochs"], config.get("stop_epoch") or config["epochs"])


def own_knobs(config: dict[str, Any]) -> dict[str, Any]:
    """A plug-in's own knobs in a trial's config: the names that are neither ours nor run
    settings (`kernel_size` of the user's network, passed to its builder by keyword)."""
    return {k: v for k, v in config.items() if k not in HYPERPARAMETERS and k not in RUN_SETTINGS}


def resolve(config: dict[str, Any]) -> dict[str, Any]:
    """Return the config with every hyperparameter it leaves out set to its default."""
    return {**HYPERPARAMETERS, **config}
