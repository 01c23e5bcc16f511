"""Each knob of search_spaces/full.yaml reaches the model, the optimizer, the loss or the batch:
build the trial as the loop does, then look inside."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import search_spaces
from trainables import build, fit, load_dataset
from trainables.augment import augment
from trainables.hyperparameters import resolve
from trainables.loop import loss_fn

MLP = {"name": "mlp", "widths": [32, 16]}
CNN = {"name": "cnn", "channels": [4, 8], "widths": [16]}


@pytest.fixture(scope="module")
def digits():
    return load_dataset({"name": "digits"}, seed=0)


def setup(data, model=MLP, **knobs):
    return build({"model": model, "epochs": 10, "seed": 0, **knobs}, data)


def modules(setup_, kind):
    return [m for m in setup_.model.modules() if isinstance(m, kind)]


def trained_state(data, **knobs):
    states = []
    config = {"model": MLP, "epochs": 1, "seed": 0, **knobs}
    fit(config, data, lambda m, s: states.append({k: v.clone() for k, v in s["model"].items()}))
    return states[-1]


def check_optimizer(data):
    for name, cls in [("sgd", torch.optim.SGD), ("rmsprop", torch.optim.RMSprop),
                      ("adagrad", torch.optim.Adagrad), ("adamw", torch.optim.AdamW)]:  # fmt: skip
        assert type(setup(data, optimizer=name).optimizer) is cls


def check_lr(data):
    assert setup(data, lr=0.0123).optimizer.param_groups[0]["lr"] == 0.0123


def check_momentum(data):
    assert setup(data, optimizer="sgd", momentum=0.9).optimizer.param_groups[0]["momentum"] == 0.9
    rms = setup(data, optimizer="rmsprop", momentum=0.5).optimizer
    assert rms.param_groups[0]["momentum"] == 0.5


def check_nesterov(data):
    group = setup(data, optimizer="sgd", momentum=0.9, nesterov=True).optimizer.param_groups[0]
    assert group["nesterov"] is True


def check_batch_size(data):
    states = []
    config = {"model": MLP, "epochs": 1, "seed": 0, "batch_size": 100}
    fit(config, data, lambda m, s: states.append(s["optimizer"]["state"][0]["step"].item()))
    assert states == [15]  # ceil(1437 / 100) Adam steps in one epoch


def check_lr_schedule(data):
    cosine = setup(data, lr_schedule="cosine").schedule
    assert isinstance(cosine, torch.optim.lr_scheduler.CosineAnnealingLR) and cosine.T_max == 10
    lrs = []
    config = {"model": MLP, "epochs": 3, "seed": 0, "lr_schedule": "cosine", "lr": 0.01}
    fit(config, data, lambda m, s: lrs.append(m["lr"]))
    assert lrs[0] == 0.01 and lrs[0] > lrs[1] > lrs[2]
    assert setup(data).schedule is None


def check_lr_step_size(data):
    assert setup(data, lr_schedule="step", lr_step_size=4).schedule.step_size == 4


def check_lr_gamma(data):
    assert setup(data, lr_schedule="step", lr_gamma=0.3).schedule.gamma == 0.3


def check_grad_clip(data):
    start = {k: v.clone() for k, v in setup(data, optimizer="sgd").model.state_dict().items()}
    clipped = trained_state(data, optimizer="sgd", lr=1.0, grad_clip=1e-6)
    free = trained_state(data, optimizer="sgd", lr=1.0)

    def moved(state):
        return sum((state[k] - start[k]).pow(2).sum() for k in start).sqrt().item()

    assert moved(clipped) < 23 * 1e-6 * 1.01 < moved(free)  # at most lr * clip per step


def check_weight_decay(data):
    assert setup(data, weight_decay=3e-4).optimizer.param_groups[0]["weight_decay"] == 3e-4


def check_decay_norm_and_bias(data):
    groups = setup(data, weight_decay=0.1, batch_norm=True, decay_norm_and_bias=False)
    decayed, spared = groups.optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and spared["weight_decay"] == 0.0
    assert all(p.dim() > 1 for p in decayed["params"]) and all(
        p.dim() == 1 for p in spared["params"]
    )
    assert len(setup(data, decay_norm_and_bias=True).optimizer.param_groups) == 1


def check_l1(data):
    trial = setup(data, l1=0.01)
    logits, target = torch.randn(5, 10), torch.arange(5)
    weights = sum(p.abs().sum() for p in trial.model.parameters() if p.dim() > 1)
    expected = F.cross_entropy(logits, target) + 0.01 * weights
    assert loss_fn(trial, logits, target).item() == pytest.approx(expected.item())
    plain = setup(data)
    assert loss_fn(plain, logits, target).item() == pytest.approx(
        F.cross_entropy(logits, target).item()
    )


def check_label_smoothing(data):
    logits, target = torch.randn(5, 10), torch.arange(5)
    expected = F.cross_entropy(logits, target, label_smoothing=0.1)
    assert loss_fn(setup(data, label_smoothing=0.1), logits, target).item() == pytest.approx(
        expected.item()
    )
    assert expected.item() != pytest.approx(F.cross_entropy(logits, target).item())


def check_mixup_alpha(data):
    config = {"model": MLP, "epochs": 1, "seed": 0}
    plain = fit(config, data, lambda m, s: None)["val_loss"]
    assert fit({**config, "mixup_alpha": 0.4}, data, lambda m, s: None)["val_loss"] != plain


def check_cutmix_alpha(data):
    config = {"model": CNN, "epochs": 1, "seed": 0}
    plain = fit(config, data, lambda m, s: None)["val_loss"]
    assert fit({**config, "cutmix_alpha": 1.0}, data, lambda m, s: None)["val_loss"] != plain
    with pytest.raises(ValueError, match="cutmix_alpha: cutmix needs images"):
        fit({"model": MLP, "epochs": 1, "seed": 0, "cutmix_alpha": 1.0},
            load_dataset({"name": "moons", "n_samples": 100}), lambda m, s: None)  # fmt: skip


def check_use_dropout(data):
    assert not modules(setup(data, dropout=0.5, use_dropout=False), nn.Dropout)


def check_dropout(data):
    assert [m.p for m in modules(setup(data, dropout=0.25), nn.Dropout)] == [0.25, 0.25]


def check_dropout2d(data):
    cnn = setup(data, model=CNN, dropout=0.2, dropout2d=True)
    assert len(modules(cnn, nn.Dropout2d)) == 2  # one per conv block
    assert not modules(setup(data, model=CNN, dropout=0.2), nn.Dropout2d)


def check_batch_norm(data):
    assert len(modules(setup(data, batch_norm=True), nn.BatchNorm1d)) == 2
    assert len(modules(setup(data, model=CNN, batch_norm=True), nn.BatchNorm2d)) == 2
    assert not modules(setup(data), (nn.BatchNorm1d, nn.BatchNorm2d))


def check_activation(data):
    for name, cls in [("leaky_relu", nn.LeakyReLU), ("sigmoid", nn.Sigmoid), ("tanh", nn.Tanh),
                      ("softplus", nn.Softplus), ("relu", nn.ReLU)]:  # fmt: skip
        assert len(modules(setup(data, activation=name), cls)) == 2


def check_init(data):
    normal = modules(setup(data, init="normal"), nn.Linear)[0]
    assert normal.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.all(normal.bias == 0)
    xavier = modules(setup(data, init="xavier_uniform"), nn.Linear)[0]
    bound = (6 / (64 + 32)) ** 0.5
    assert xavier.weight.abs().max().item() <= bound and xavier.weight.abs().max() > 0.9 * bound
    kaiming = modules(setup(data, init="kaiming_normal", model=CNN), nn.Conv2d)[0]
    assert kaiming.weight.std().item() == pytest.approx((2 / 9) ** 0.5, rel=0.25)
    default = modules(setup(data), nn.Linear)[0]
    assert not torch.all(default.bias == 0)


def check_depth(data):
    assert len(modules(setup(data, depth=3, width=20), nn.Linear)) == 4


def check_width(data):
    linears = modules(setup(data, depth=2, width=48), nn.Linear)
    assert [m.out_features for m in linears] == [48, 48, 10]


def batch(channels=1):
    torch.manual_seed(0)
    return torch.rand(16, channels, 8, 8)


def check_crop_padding(data):
    x = batch()
    out = augment(x, resolve({"crop_padding": 2}), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)
    assert (out == 0).float().mean() > 0.05  # zero padding shifted into view


def check_hflip(data):
    x = batch()
    out = augment(x, resolve({"hflip": True}), torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, i.flip(2)) for o, i in zip(out, x, strict=False)]
    kept = [torch.equal(o, i) for o, i in zip(out, x, strict=False)]
    assert all(f or k for f, k in zip(flipped, kept, strict=False)) and any(flipped) and any(kept)


def check_rotation(data):
    x = batch()
    out = augment(x, resolve({"rotation": 15.0}), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and 0 < (out - x).abs().mean() < x.abs().mean()


def check_color_jitter(data):
    x = batch(3)
    out = augment(x, resolve({"color_jitter": 0.4}), torch.Generator().manual_seed(0))
    assert not torch.equal(out, x) and out.min() >= 0 and out.max() <= 1
    gray = batch(1)
    assert torch.equal(augment(gray, resolve({"color_jitter": 0.4}), torch.Generator()), gray)
    # And the loop applies augmentation: the same run without it ends elsewhere.
    config = {"model": MLP, "epochs": 1, "seed": 0}
    plain = fit(config, data, lambda m, s: None)["val_loss"]
    assert fit({**config, "rotation": 10.0}, data, lambda m, s: None)["val_loss"] != plain


CHECKS = {
    name.removeprefix("check_"): f for name, f in globals().items() if name.startswith("check_")
}


def test_every_knob_of_the_full_space_has_a_check():
    assert set(search_spaces.load("full").params) == set(CHECKS)


@pytest.mark.parametrize("knob", sorted(CHECKS))
def test_knob_reaches_the_trial(knob, digits):
    CHECKS[knob](digits)
