"""Every hyperparameter the training loop understands, with its default and why."""

from typing import Any

# A study's `space` samples some of these, its `fixed` pins others, the rest keep these defaults.
HYPERPARAMETERS: dict[str, Any] = {
    "lr": 1e-3,  # step size: the knob that decides whether anything is learned at all
    "optimizer": "adam",  # sgd | adam | adamw
    "momentum": 0.0,  # sgd only: heavy-ball momentum
    "weight_decay": 0.0,  # L2 strength, applied through the optimizer (decoupled for adamw)
    "l1": 0.0,  # L1 strength: l1 * sum(|w|) over weight matrices, added to the loss
    "dropout": 0.0,  # dropout rate after each hidden activation; 0 turns dropout off
    "batch_norm": False,  # BatchNorm1d between each hidden linear layer and its activation
    "batch_size": 64,  # examples per optimizer step
    "activation": "relu",  # relu | leaky_relu | sigmoid | tanh | softplus
    "grad_clip": 0.0,  # max gradient norm; 0 turns clipping off
}

# What the loop reports each epoch; a study's `metric` must be one of these.
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "gap", "lr", "epoch_time")


def resolve(config: dict[str, Any]) -> dict[str, Any]:
    """Return the config with every hyperparameter it leaves out set to its default."""
    return {**HYPERPARAMETERS, **config}
