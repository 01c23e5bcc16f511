"""Every hyperparameter the training loop understands, with its default and why."""

from typing import Any

# A study's `space` samples some of these, its `fixed` pins others, the rest keep these defaults.
HYPERPARAMETERS: dict[str, Any] = {
    # -- optimisation --------------------------------------------------------------------------
    "lr": 1e-3,  # step size: the knob that decides whether anything is learned at all
    "optimizer": "adam",  # sgd | adam | adamw | rmsprop | adagrad
    "momentum": 0.0,  # sgd and rmsprop: heavy-ball momentum
    "nesterov": False,  # sgd with momentum > 0: Nesterov's look-ahead variant
    "batch_size": 64,  # examples per optimizer step
    "grad_clip": 0.0,  # max global gradient norm; 0 turns clipping off
    "lr_schedule": "none",  # none | cosine (to 0 over `epochs`) | step
    "lr_step_size": 10,  # step schedule: epochs between decays
    "lr_gamma": 0.1,  # step schedule: factor per decay
    # -- explicit regularization ---------------------------------------------------------------
    "weight_decay": 0.0,  # L2 strength, applied by the optimizer (decoupled for adamw)
    "decay_norm_and_bias": True,  # False: no weight decay on biases and BatchNorm parameters
    "l1": 0.0,  # L1 strength: l1 * sum(|w|) over weight matrices and kernels, added to the loss
    "use_dropout": True,  # False turns dropout off whatever `dropout` says
    "dropout": 0.0,  # dropout rate after each hidden activation; 0 turns dropout off
    "dropout2d": False,  # CNN: drop whole feature maps (Dropout2d) in the conv blocks
    "batch_norm": False,  # BatchNorm between each hidden linear/conv layer and its activation
    # -- architecture --------------------------------------------------------------------------
    "activation": "relu",  # relu | leaky_relu | sigmoid | tanh | softplus
    "init": "default",  # default | normal | uniform | xavier_normal | xavier_uniform |
    #                     kaiming_normal | kaiming_uniform (biases zero unless default)
    "depth": 0,  # MLP hidden layers; 0 keeps the model's `widths`
    "width": 0,  # MLP units per hidden layer when depth > 0
    # -- data augmentation (images only, on whole batches on the trial's device) ---------------
    "crop_padding": 0,  # random crop after padding each side by this many pixels; 0 = off
    "hflip": False,  # random horizontal flip with probability 1/2
    "rotation": 0.0,  # random rotation within +-this many degrees; 0 = off
    "color_jitter": 0.0,  # 3-channel: brightness, contrast, saturation within 1 +- this
    # -- speed (GPU only; the CPU path ignores it, so results there do not change) ------------
    "compile": False,  # torch.compile the model before training
}

# What the loop reports each epoch; a study's `metric` must be one of these.
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "gap", "lr", "epoch_time")

# Values a categorical hyperparameter may take.
CHOICES = {
    "optimizer": ("sgd", "adam", "adamw", "rmsprop", "adagrad"),
    "activation": ("relu", "leaky_relu", "sigmoid", "tanh", "softplus"),
    "init": (
        "default",
        "normal",
        "uniform",
        "xavier_normal",
        "xavier_uniform",
        "kaiming_normal",
        "kaiming_uniform",
    ),
    "lr_schedule": ("none", "cosine", "step"),
}


def resolve(config: dict[str, Any]) -> dict[str, Any]:
    """Return the config with every hyperparameter it leaves out set to its default."""
    return {**HYPERPARAMETERS, **config}
