"""Networks whose regularization knobs (dropout, BatchNorm, activation, init) come from the
hyperparameters: an MLP for any input, a small CNN for 1- and 3-channel images, any
classification architecture torchvision ships, or the user's own `module:callable`.

Every model, built-in or not, is built by one contract:
`build(input_shape, num_classes, hp, **args) -> nn.Module` (logits), where `input_shape` is
(C, H, W) for images and (F,) for tables, `hp` the resolved hyperparameters and `args` the
spec's `model.args` (a built-in's own keys, such as `widths`, come the same way).
"""

import math
from collections.abc import Callable
from typing import Any

from torch import nn

from trainables.catalog import BUILTIN_KEYS
from trainables.catalog import MODELS as MODELS  # the built-ins' names, importable from here too
from trainables.hyperparameters import HYPERPARAMETERS, own_knobs
from trainables.plugins import PluginError, code_dir, is_plugin, load_callable, taken

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


def hidden_widths(widths: list[int], hp: dict[str, Any]) -> list[int]:
    """The MLP's hidden widths: `depth` x `width` when tuned, else the model's `widths`."""
    if hp["depth"] > 0:
        return [hp["width"] or 128] * hp["depth"]
    return list(widths)


def dense_block(fan_in: int, width: int, hp: dict[str, Any]) -> list[nn.Module]:
    """Linear -> [BatchNorm1d] -> activation -> [Dropout]."""
    layers: list[nn.Module] = [nn.Linear(fan_in, width, bias=not hp["batch_norm"])]
    if hp["batch_norm"]:  # BatchNorm's own shift makes the linear bias redundant
        layers.append(nn.BatchNorm1d(width))
    layers.append(ACTIVATIONS[hp["activation"]]())
    if dropout_rate(hp) > 0:
        layers.append(nn.Dropout(dropout_rate(hp)))
    return layers


def build_mlp(
    input_shape: tuple[int, ...], num_classes: int, hp: dict, widths: list[int] = (128, 128)
) -> nn.Module:
    """Flatten, then per hidden width a dense block, then a linear classifier."""
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = math.prod(input_shape)
    for width in hidden_widths(widths, hp):
        layers += dense_block(fan_in, width, hp)
        fan_in = width
    layers.append(nn.Linear(fan_in, num_classes))
    return nn.Sequential(*layers)


def build_cnn(
    input_shape: tuple[int, ...],
    num_classes: int,
    hp: dict,
    channels: list[int] = (32, 64),
    widths: list[int] = (128,),
) -> nn.Module:
    """Per entry of `channels` a conv block (3x3 conv -> [BatchNorm2d] -> activation -> 2x2 max
    pool -> [Dropout or Dropout2d]), then a dense head of `widths` and a linear classifier."""
    if len(input_shape) != 3:
        raise ValueError("model.name: cnn needs image data (N, C, H, W); use mlp for tables")
    blocks = channels
    channels, height, width = input_shape
    layers: list[nn.Module] = []
    for out in blocks:
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
    for hidden in widths:
        layers += dense_block(fan_in, hidden, hp)
        fan_in = hidden
    layers.append(nn.Linear(fan_in, num_classes))
    return nn.Sequential(*layers)


def build_torchvision(
    input_shape: tuple[int, ...],
    num_classes: int,
    hp: dict,
    arch: str = "resnet18",
    small_input: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """A torchvision classification architecture with random weights (none are downloaded)
    and `num_classes` outputs. `small_input` gives a ResNet the 3x3, stride-1 stem without
    max pool that 32x32 images need; `batch_norm` false replaces its BatchNorm layers with
    identity; `dropout` > 0 puts dropout before its classifier. `kwargs` go to the
    architecture's builder (torchvision.models.get_model)."""
    from torchvision import models

    if len(input_shape) != 3:
        raise ValueError("model.name: torchvision needs image data (N, C, H, W); use mlp")
    known = models.list_models(module=models)
    if arch not in known:
        raise ValueError(f"model.arch: unknown architecture {arch!r}; one of: {', '.join(known)}")
    network = models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
    channels = input_shape[0]
    if small_input:
        if not isinstance(getattr(network, "maxpool", None), nn.MaxPool2d):
            raise ValueError(f"model.small_input: only for ResNets, not {arch}; remove it")
        network.conv1 = nn.Conv2d(channels, network.conv1.out_channels, 3, 1, 1, bias=False)
        network.maxpool = nn.Identity()
    elif channels != 3:  # the first conv reads 3 channels: give it the data's
        name, conv = next((n, m) for n, m in network.named_modules() if isinstance(m, nn.Conv2d))
        _replace(network, name, _conv_like(conv, channels))
    if not hp["batch_norm"]:
        for name, module in list(network.named_modules()):
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                _replace(network, name, nn.Identity())
    if dropout_rate(hp) > 0:
        name, head = [(n, m) for n, m in network.named_modules() if isinstance(m, nn.Linear)][-1]
        _replace(network, name, nn.Sequential(nn.Dropout(dropout_rate(hp)), head))
    return network


def _conv_like(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    return nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        bias=conv.bias is not None,
    )  # fmt: skip


def _replace(network: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` where the submodule called `name` (dotted) is."""
    parent, _, leaf = name.rpartition(".")
    setattr(network.get_submodule(parent) if parent else network, leaf, module)


def initialise(model: nn.Module, scheme: str) -> None:
    """Re-initialise every linear and conv weight with `scheme`, biases to zero."""
    if scheme == "default":
        return
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            INITS[scheme](module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


# A builder's first arguments, before its keyword ones: input_shape, num_classes, hp.
BUILDER_POSITIONAL = 3

# The built-ins (catalog.MODELS) by name.
BUILDERS = {"mlp": build_mlp, "cnn": build_cnn, "torchvision": build_torchvision}


def model_builder(model: dict[str, Any]) -> Callable[..., nn.Module]:
    """The function that builds the model a `model` mapping names: a built-in or a plug-in."""
    if is_plugin(model["name"]):
        return load_callable(model["name"], code_dir(model))
    return BUILDERS[model["name"]]


def model_arguments(model: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of the model's builder: a built-in's keys and `model.args`."""
    own = {k: model[k] for k in BUILTIN_KEYS if model.get(k) is not None}
    return {**own, **(model.get("args") or {})}


def build_model(
    input_shape: tuple[int, ...], num_classes: int, model: dict[str, Any], hp: dict[str, Any]
) -> nn.Module:
    """The network `model` names, given the hyperparameters of `hp` (a plug-in's own knobs
    in `hp` go to its builder by keyword); a built-in is then initialised as `hp["init"]`
    says (a plug-in reads `init` itself)."""
    knobs = {name: hp[name] for name in HYPERPARAMETERS}
    builder = model_builder(model)
    arguments = model_arguments(model)
    if is_plugin(model["name"]):
        arguments.update(taken(builder, own_knobs(hp), BUILDER_POSITIONAL))
    network = builder(input_shape, num_classes, knobs, **arguments)
    if not isinstance(network, nn.Module):
        raise PluginError(
            f"model.name: {model['name']} returned a {type(network).__name__}, not a "
            "torch.nn.Module; return the network"
        )
    if not is_plugin(model["name"]):
        initialise(network, hp["init"])
    return network


def num_params(network: nn.Module) -> int:
    """The number of trainable parameters."""
    return sum(p.numel() for p in network.parameters() if p.requires_grad)
