"""Networks whose regularization knobs (dropout, BatchNorm, activation, init) come from the
hyperparameters: an MLP for any input, a small CNN for 1- and 3-channel images."""

import math
from typing import Any

from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
}

INITS = {
    "normal": lambda w: nn.init.normal_(w, std=0.02),
    "uniform": lambda w: nn.init.uniform_(w, -0.05, 0.05),
    "xavier_normal": nn.init.xavier_normal_,
    "xavier_uniform": nn.init.xavier_uniform_,
    "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
    "kaiming_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
}


def dropout_rate(hp: dict[str, Any]) -> float:
    """The dropout rate in force: 0 when `use_dropout` is off."""
    return hp["dropout"] if hp["use_dropout"] else 0.0


def hidden_widths(model: dict[str, Any], hp: dict[str, Any]) -> list[int]:
    """The MLP's hidden widths: `depth` x `width` when tuned, else the model's `widths`."""
    if hp["depth"] > 0:
        return [hp["width"] or 128] * hp["depth"]
    return list(model.get("widths", [128, 128]))


def dense_block(fan_in: int, width: int, hp: dict[str, Any]) -> list[nn.Module]:
    """Linear -> [BatchNorm1d] -> activation -> [Dropout]."""
    layers: list[nn.Module] = [nn.Linear(fan_in, width, bias=not hp["batch_norm"])]
    if hp["batch_norm"]:  # BatchNorm's own shift makes the linear bias redundant
        layers.append(nn.BatchNorm1d(width))
    layers.append(ACTIVATIONS[hp["activation"]]())
    if dropout_rate(hp) > 0:
        layers.append(nn.Dropout(dropout_rate(hp)))
    return layers


def build_mlp(data_shape: tuple[int, ...], num_classes: int, model: dict, hp: dict) -> nn.Module:
    """Flatten, then per hidden width a dense block, then a linear classifier."""
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = math.prod(data_shape)
    for width in hidden_widths(model, hp):
        layers += dense_block(fan_in, width, hp)
        fan_in = width
    layers.append(nn.Linear(fan_in, num_classes))
    return nn.Sequential(*layers)


def build_cnn(data_shape: tuple[int, ...], num_classes: int, model: dict, hp: dict) -> nn.Module:
    """Per entry of `channels` a conv block (3x3 conv -> [BatchNorm2d] -> activation -> 2x2 max
    pool -> [Dropout or Dropout2d]), then a dense head of `widths` and a linear classifier."""
    if len(data_shape) != 3:
        raise ValueError("model.name: cnn needs image data (N, C, H, W); use mlp for tables")
    channels, height, width = data_shape
    layers: list[nn.Module] = []
    for out in model.get("channels", [32, 64]):
        layers.append(nn.Conv2d(channels, out, 3, padding=1, bias=not hp["batch_norm"]))
        if hp["batch_norm"]:
            layers.append(nn.BatchNorm2d(out))
        layers.append(ACTIVATIONS[hp["activation"]]())
        if min(height, width) >= 2:
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        if dropout_rate(hp) > 0:
            drop = nn.Dropout2d if hp["dropout2d"] else nn.Dropout
            layers.append(drop(dropout_rate(hp)))
        channels = out
    layers.append(nn.Flatten())
    fan_in = channels * height * width
    for hidden in model.get("widths", [128]):
        layers += dense_block(fan_in, hidden, hp)
        fan_in = hidden
    layers.append(nn.Linear(fan_in, num_classes))
    return nn.Sequential(*layers)


def initialise(model: nn.Module, scheme: str) -> None:
    """Re-initialise every linear and conv weight with `scheme`, biases to zero."""
    if scheme == "default":
        return
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            INITS[scheme](module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


MODELS = {"mlp": build_mlp, "cnn": build_cnn}


def build_model(
    data_shape: tuple[int, ...], num_classes: int, model: dict[str, Any], hp: dict[str, Any]
) -> nn.Module:
    """The network `model` names, with the knobs from `hp`, initialised as `hp["init"]` says."""
    network = MODELS[model["name"]](data_shape, num_classes, model, hp)
    initialise(network, hp["init"])
    return network
