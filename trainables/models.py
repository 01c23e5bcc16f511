"""Networks whose regularization knobs (dropout, BatchNorm, activation) come from the config."""

from typing import Any

from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
}


def build_mlp(
    num_features: int, num_classes: int, widths: list[int], hp: dict[str, Any]
) -> nn.Sequential:
    """An MLP: per hidden layer Linear -> [BatchNorm1d] -> activation -> [Dropout]."""
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = num_features
    for width in widths:
        # BatchNorm's own shift makes the linear bias redundant.
        layers.append(nn.Linear(fan_in, width, bias=not hp["batch_norm"]))
        if hp["batch_norm"]:
            layers.append(nn.BatchNorm1d(width))
        layers.append(ACTIVATIONS[hp["activation"]]())
        if hp["dropout"] > 0:
            layers.append(nn.Dropout(hp["dropout"]))
        fan_in = width
    layers.append(nn.Linear(fan_in, num_classes))
    return nn.Sequential(*layers)


MODELS = {"mlp": build_mlp}
