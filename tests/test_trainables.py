"""The training loop and what each knob does to the model, optimizer and loss."""

import inspect
import pickle
import subprocess
import sys
from copy import deepcopy
from pathlib import Path

import pytest
import torch
from torch import nn

from trainables import fit, load_dataset, resolve
from trainables.feed import batches
from trainables.loop import load_state
from trainables.models import BUILDERS, MODELS, build_mlp
from trainables.optim import build_optimizer, build_schedule, param_groups

BASE = {
    "lr": 3e-3,
    "model": {"name": "mlp", "widths": [32]},
    "dataset": {"name": "digits"},
    "epochs": 3,
    "seed": 0,
}


@pytest.fixture(scope="module")
def digits():
    return load_dataset({"name": "digits"}, seed=0)


def history(config: dict, data) -> list[dict]:
    reports = []
    fit(config, data, lambda metrics, state: reports.append(metrics))
    return reports


def test_digits_split_is_stratified_and_seeded(digits):
    assert digits.x_train.shape == (1437, 1, 8, 8) and digits.x_val.shape == (360, 1, 8, 8)
    assert digits.num_classes == 10
    counts = torch.bincount(digits.y_val, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # each class ~20%
    again = load_dataset({"name": "digits"}, seed=0)
    other = load_dataset({"name": "digits"}, seed=1)
    assert torch.equal(again.y_val, digits.y_val) and not torch.equal(other.y_val, digits.y_val)


def test_fit_reports_every_epoch_and_is_deterministic(digits):
    first = history({**BASE, "dropout": 0.2, "batch_norm": True}, digits)
    second = history({**BASE, "dropout": 0.2, "batch_norm": True}, digits)
    assert [m["epoch"] for m in first] == [1, 2, 3]
    assert [m["val_acc"] for m in first] == [m["val_acc"] for m in second]
    assert first[-1]["val_acc"] > 0.8
    last = first[-1]
    assert last["gap"] == pytest.approx(last["train_acc"] - last["val_acc"])


def test_seed_changes_the_result(digits):
    a = history(BASE, digits)[-1]["val_loss"]
    b = history({**BASE, "seed": 1}, digits)[-1]["val_loss"]
    assert a != b


def test_resuming_from_a_reported_state_continues_identically(digits):
    states, full = [], []
    # `state` holds live references: a checkpoint copies it when it is reported.
    fit({**BASE, "epochs": 4}, digits, lambda m, s: (full.append(m), states.append(deepcopy(s))))
    rest = []
    fit({**BASE, "epochs": 4}, digits, lambda m, s: rest.append(m), state=states[1])
    assert [m["epoch"] for m in rest] == [3, 4]
    assert [m["val_loss"] for m in rest] == [m["val_loss"] for m in full[2:]]


def test_dropout_and_batch_norm_reach_the_model():
    hp = resolve({"dropout": 0.3, "batch_norm": True, "activation": "tanh"})
    model = build_mlp((64,), 10, hp, widths=[16, 8])
    dropouts = [m for m in model if isinstance(m, nn.Dropout)]
    assert [d.p for d in dropouts] == [0.3, 0.3]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model) == 2
    assert sum(isinstance(m, nn.Tanh) for m in model) == 2
    plain = build_mlp((64,), 10, resolve({}), widths=[16, 8])
    assert not any(isinstance(m, (nn.Dropout, nn.BatchNorm1d)) for m in plain)


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
def test_weight_decay_and_lr_reach_the_optimizer(name, cls):
    hp = resolve({"optimizer": name, "lr": 0.05, "weight_decay": 1e-3, "momentum": 0.9})
    optimizer = build_optimizer(nn.Linear(4, 2), hp)
    assert isinstance(optimizer, cls)
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.05 and group["weight_decay"] == 1e-3
    if name == "sgd":
        assert group["momentum"] == 0.9


NO_DYNAMO = """
import sys, torch
from torch import nn
from trainables import resolve
from trainables.optim import OPTIMIZERS, build_optimizer, build_schedule
for name in OPTIMIZERS:
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    hp = resolve({"optimizer": name, "momentum": 0.9, "lr_schedule": "cosine", "epochs": 3})
    optimizer = build_optimizer(model, hp)
    schedule = build_schedule(optimizer, hp)
    for _ in range(2):
        optimizer.zero_grad(set_to_none=True)
        model(torch.randn(6, 4)).sum().backward()
        optimizer.step()
        schedule.step()
    optimizer.load_state_dict(optimizer.state_dict())
print("torch._dynamo" in sys.modules)
"""


def test_the_optimizers_run_without_importing_torch_dynamo():
    """torch.optim imports torch._dynamo (1-1.6 s of a core at each trial's start) unless
    trainables.optim keeps it out; a fresh interpreter, as a trial actor is."""
    done = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", NO_DYNAMO],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]  # a schedule warned of its step's order
    assert done.stdout.strip() == "False", (
        "torch.optim imported torch._dynamo: this torch builds its optimizers otherwise than "
        "trainables.optim._kept_out expects (each trial's start costs ~1 s more)"
    )


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
def test_the_optimizers_step_is_torchs_own_bit_for_bit(name):
    """Our optimizer (its step torch's step function, dynamo kept out) against the same
    optimizer built and stepped by torch alone, through a schedule, 5 steps."""
    hp = resolve({"optimizer": name, "lr": 0.05, "weight_decay": 1e-3, "momentum": 0.9})
    hp = {**hp, "lr_schedule": "step", "lr_step_size": 2, "lr_gamma": 0.5, "epochs": 5}
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    theirs = deepcopy(ours)
    mine = build_optimizer(ours, hp)
    takes = inspect.signature(type(mine)).parameters
    options = {k: v for k, v in mine.defaults.items() if k in takes}
    torchs = type(mine)(param_groups(theirs, hp), **options)
    assert "step" in vars(mine) and "step" not in vars(torchs)  # ours replaced, torch's not
    pairs = [(ours, mine, build_schedule(mine, hp)), (theirs, torchs, build_schedule(torchs, hp))]
    for _ in range(5):
        x = torch.randn(6, 4)
        for model, optimizer, schedule in pairs:
            optimizer.zero_grad(set_to_none=True)
            model(x).pow(2).sum().backward()
            optimizer.step()
            schedule.step()
    for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert mine.state_dict()["state"].keys() == torchs.state_dict()["state"].keys()


def test_l1_shrinks_the_weights(digits):
    def weight_norm(l1: float) -> float:
        config = {**BASE, "l1": l1, "epochs": 2}
        states = []
        fit(config, digits, lambda m, s: states.append(s))
        return sum(v.abs().sum().item() for k, v in states[-1]["model"].items() if "weight" in k)

    assert weight_norm(1e-3) < 0.8 * weight_norm(0.0)


def test_batches_cover_every_example_once_and_drop_a_lone_last_one():
    generator = torch.Generator().manual_seed(0)
    parts = batches(10, 4, generator)
    assert sorted(torch.cat(parts).tolist()) == list(range(10))
    lone = batches(9, 4, generator)
    assert [len(p) for p in lone] == [4, 4]


def test_trainables_import_neither_ray_nor_mlflow():
    code = "import sys, trainables; print('ray' in sys.modules, 'mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_the_names_a_spec_is_checked_against_import_without_torch_or_numpy():
    """`study status` must start fast: the spec's names come from torch-free modules, and the
    training names load torch on first use only."""
    code = (
        "import sys\n"
        "from trainables import DATASETS, DOMAINS, HYPERPARAMETERS, KINDS, METRICS, MODELS\n"
        "from trainables import TORCHVISION_SETS, DataError\n"
        "from trainables.plugins import is_plugin\n"
        "print('torch' in sys.modules, 'numpy' in sys.modules)\n"
        "from trainables import fit\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "True"]


def test_the_built_in_model_names_are_the_models_built():
    assert tuple(BUILDERS) == MODELS


class _Payload:
    """Unpickling this runs code: it touches `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_is_read_as_tensors_only(digits, tmp_path):
    saved = {}
    config = {**BASE, "lr_schedule": "cosine", "optimizer": "sgd", "momentum": 0.9}
    fit({**config, "epochs": 4, "stop_epoch": 2}, digits, lambda m, s: saved.update(deepcopy(s)))
    torch.save(saved, tmp_path / "state.pt")
    state = load_state(tmp_path / "state.pt")  # every part of a real state is plain data
    resumed = fit({**config, "epochs": 4}, digits, lambda m, s: None, state)
    straight = fit({**config, "epochs": 4}, digits, lambda m, s: None)
    assert resumed == {**straight, "epoch_time": resumed["epoch_time"]}

    marker = tmp_path / "code-ran"
    torch.save({**saved, "extra": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_state(tmp_path / "evil.pt")
    assert not marker.exists()
