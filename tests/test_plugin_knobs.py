"""The knobs the loop applies to any model, checked on a plug-in network from an uninstalled
folder: each test fails when its knob is silently ignored for a model that is not ours."""

import importlib
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from tests.plugin_files import write_module
from trainables import build, fit, load_dataset
from trainables.augment import mix
from trainables.hyperparameters import resolve
from trainables.loop import loss_fn
from trainables.plugins import load_callable

# A small conv net that reads no knob at all and keeps every training batch it is given.
SOURCE = """
from torch import nn

seen = []


class Recorder(nn.Module):
    def forward(self, x):
        if self.training:
            seen.append(x.detach().clone())
        return x


def build(input_shape, num_classes, hp, width=16):
    channels = input_shape[0]
    return nn.Sequential(
        Recorder(), nn.Conv2d(channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 8 * 8, width), nn.ReLU(), nn.Linear(width, num_classes),
    )
"""


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    folder = tmp_path_factory.mktemp("knob_plugin")
    write_module(folder, "knob_net", SOURCE)
    model = {"name": "knob_net:build", "code_dir": str(folder)}
    data = load_dataset({"name": "digits"}, seed=0)
    return model, replace(data, x_train=data.x_train[:256], y_train=data.y_train[:256])


def module_of(model):
    load_callable(model["name"], model["code_dir"])  # found as a study finds it, in any order
    return importlib.import_module(model["name"].split(":")[0])


def config(model, **knobs):
    return {"model": model, "epochs": 2, "seed": 0, **knobs}


def train(plugin, **knobs):
    """Train 1 epoch; the last state's weights and every batch the network was fed."""
    model, data = plugin
    seen = module_of(model).seen
    seen.clear()
    states = []
    metrics = fit(
        config(model, epochs=1, **knobs),
        data,
        lambda m, s: states.append({k: v.clone() for k, v in s["model"].items()}),
    )
    return states[-1], list(seen), metrics


def weight_norm(state):
    return sum(v.pow(2).sum() for k, v in state.items() if k.endswith("weight")).sqrt().item()


def test_lr_optimizer_momentum_and_nesterov(plugin):
    model, data = plugin
    setup = build(config(model, optimizer="sgd", lr=0.0123, momentum=0.9, nesterov=True), data)
    group = setup.optimizer.param_groups[0]
    assert type(setup.optimizer) is torch.optim.SGD
    assert group["lr"] == 0.0123 and group["momentum"] == 0.9 and group["nesterov"] is True
    params = {id(p) for g in setup.optimizer.param_groups for p in g["params"]}
    assert params == {id(p) for p in setup.model.parameters()}  # all of the plug-in's
    assert type(build(config(model, optimizer="rmsprop"), data).optimizer) is torch.optim.RMSprop


def test_lr_schedule(plugin):
    model, data = plugin
    lrs = []
    fit(
        config(model, epochs=3, lr_schedule="cosine", lr=0.01),
        data,
        lambda m, s: lrs.append(m["lr"]),
    )
    assert lrs[0] == 0.01 and lrs[0] > lrs[1] > lrs[2]


def test_batch_size(plugin):
    _, batches, _ = train(plugin, batch_size=100)
    assert [len(b) for b in batches] == [100, 100, 56]


def test_weight_decay_shrinks_the_weights(plugin):
    free, _, _ = train(plugin, optimizer="sgd", lr=0.05)
    decayed, _, _ = train(plugin, optimizer="sgd", lr=0.05, weight_decay=0.5)
    assert weight_norm(decayed) < 0.97 * weight_norm(free)


def test_decay_norm_and_bias_splits_by_shape(plugin):
    model, data = plugin
    setup = build(config(model, weight_decay=0.1, decay_norm_and_bias=False), data)
    decayed, spared = setup.optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and spared["weight_decay"] == 0.0
    assert all(p.dim() > 1 for p in decayed["params"]) and all(
        p.dim() == 1 for p in spared["params"]
    )
    assert len(spared["params"]) == 5  # conv, linear x2 biases and the BatchNorm's two


def test_l1_shrinks_the_weights(plugin):
    free, _, _ = train(plugin, optimizer="sgd", lr=0.05)
    sparse, _, _ = train(plugin, optimizer="sgd", lr=0.05, l1=2e-2)
    total = lambda s: sum(v.abs().sum() for k, v in s.items() if v.dim() > 1).item()  # noqa: E731
    assert total(sparse) < 0.97 * total(free)


def test_grad_clip_bounds_each_step(plugin):
    model, data = plugin
    start = {
        k: v.clone()
        for k, v in build(config(model, optimizer="sgd"), data).model.state_dict().items()
    }
    clipped, _, _ = train(plugin, optimizer="sgd", lr=1.0, grad_clip=1e-6)
    moved = sum(
        (clipped[k] - start[k]).float().pow(2).sum() for k in start if "weight" in k or "bias" in k
    )
    assert math.sqrt(moved) < 4 * 1e-6 * 1.01  # 4 steps of at most lr * clip


def test_augmentation_reaches_the_batches(plugin):
    _, plain, _ = train(plugin)
    _, flipped, _ = train(plugin, hflip=True, crop_padding=1)
    assert len(plain) == len(flipped)
    assert not all(torch.equal(a, b) for a, b in zip(plain, flipped, strict=True))


def test_label_smoothing_changes_the_loss_as_the_formula_says(plugin):
    model, data = plugin
    logits, target = torch.randn(6, 10), torch.arange(6)
    smooth = build(config(model, label_smoothing=0.2), data)
    log_p = F.log_softmax(logits, 1)
    expected = (0.8 * F.nll_loss(log_p, target) - 0.2 * log_p.mean(1).mean()).item()
    assert loss_fn(smooth, logits, target).item() == pytest.approx(expected, rel=1e-5)
    plain = build(config(model), data)
    assert loss_fn(plain, logits, target).item() == pytest.approx(
        F.cross_entropy(logits, target).item()
    )


def test_mixup_trains_on_mixed_batches(plugin):
    model, data = plugin
    _, plain, _ = train(plugin)
    _, mixed, metrics = train(plugin, mixup_alpha=0.4)
    assert len(plain) == len(mixed)
    # Each mixed batch is, pixel for pixel, a blend of the plain batch with a permutation of it.
    for a, b in zip(plain, mixed, strict=True):
        assert not torch.allclose(a, b)
    assert 0 <= metrics["train_acc"] <= 1  # measured on the unmixed data, in eval mode


def test_mix_is_seeded_and_cutmix_pastes_a_box(plugin):
    hp = resolve({"cutmix_alpha": 1.0})
    x = torch.rand(8, 1, 8, 8)
    out, partner, share = mix(x, hp, torch.Generator().manual_seed(0), (0, 1, 2))
    again = mix(x, hp, torch.Generator().manual_seed(0), (0, 1, 2))
    assert torch.equal(out, again[0]) and torch.equal(partner, again[1]) and share == again[2]
    pasted = (out != x).any(0).any(0)  # the pixels that came from a partner
    kept = 1 - pasted.float().mean().item()
    assert kept <= share + 1e-6 and 0 < share < 1
    rows, cols = pasted.nonzero().T
    if len(rows):  # a rectangle
        assert pasted[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
    mixed, _, lam = mix(
        x, resolve({"mixup_alpha": 0.4}), torch.Generator().manual_seed(0), (0, 1, 2)
    )
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[_])


def test_cutmix_runs_through_the_loop(plugin):
    _, plain, _ = train(plugin)
    _, cut, _ = train(plugin, cutmix_alpha=1.0)
    assert not all(torch.equal(a, b) for a, b in zip(plain, cut, strict=True))


def test_divergence_is_detected(plugin):
    _, _, metrics = train(plugin, optimizer="sgd", lr=1e4)
    assert metrics.get("diverged") == 1.0
