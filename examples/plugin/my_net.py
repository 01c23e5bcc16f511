"""A network of your own in a study: `model: {name: my_net:build, args: {...}}`.

The study calls build(input_shape, num_classes, hp, **args) once per trial: `input_shape` is
(C, H, W) for images or (F,) for tables, `hp` holds every hyperparameter resolved for the
trial (sampled, fixed or default), `args` is the spec's `model.args`. Return an nn.Module
that maps a batch (N, *input_shape) to logits (N, num_classes). Read the knobs the study
tunes from `hp`; the training loop applies the rest (lr, optimizer, weight decay, L1, label
smoothing, mixup, ...) to any model.
"""

import math

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU, "sigmoid": nn.Sigmoid,
               "softplus": nn.Softplus}  # fmt: skip


class Residual(nn.Module):
    """x + f(x): a dense block with a skip connection."""

    def __init__(self, width: int, hp: dict) -> None:
        super().__init__()
        layers = [nn.Linear(width, width)]
        if hp["batch_norm"]:
            layers.append(nn.BatchNorm1d(width))
        layers.append(ACTIVATIONS[hp["activation"]]())
        if hp["use_dropout"] and hp["dropout"] > 0:
            layers.append(nn.Dropout(hp["dropout"]))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.block(x)


def build(input_shape, num_classes, hp, width=128, blocks=2):
    """Flatten, project to `width`, `blocks` residual blocks, a linear classifier."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), width),
        *[Residual(width, hp) for _ in range(blocks)],
        nn.Linear(width, num_classes),
    )
