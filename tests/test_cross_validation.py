"""k-fold cross-validation inside a trial: the same stratified, seeded folds for every trial,
a model per fold trained side by side, their mean reported, checkpoints holding every fold,
and a study of it end to end: exactly once, reproduced by `study train`, refit on all folds."""

import re
from copy import deepcopy

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from study.cli import app
from tests.conftest import study_cli, study_here
from tests.exactly_once import check_exactly_once
from trainables import DataError, fit, load_dataset

BASE = {
    "lr": 3e-3,
    "model": {"name": "mlp", "widths": [32]},
    "dataset": {"name": "digits", "cv_folds": 3},
    "epochs": 3,
    "seed": 0,
}


@pytest.fixture(scope="module")
def folds():
    return load_dataset({"name": "digits", "cv_folds": 3}, seed=0)


def test_folds_are_stratified_seeded_and_cover_every_example_once(folds):
    parts = folds.parts()
    assert len(parts) == 3 and folds.sizes()["folds"] == 3
    assert sum(len(p.x_val) for p in parts) == 1797  # every example validates exactly once
    held = torch.cat([p.x_val.flatten(1) for p in parts])
    assert (
        torch.unique(held, dim=0).shape[0]
        == torch.unique(torch.cat([parts[0].x_train, parts[0].x_val]).flatten(1), dim=0).shape[0]
    )
    for part in parts:
        assert len(part.x_train) + len(part.x_val) == 1797
        share = torch.bincount(part.y_val, minlength=10) / len(part.y_val)
        assert (share - 0.1).abs().max() < 0.02  # each class ~10% of every fold
    again = load_dataset({"name": "digits", "cv_folds": 3}, seed=0)
    other = load_dataset({"name": "digits", "cv_folds": 3}, seed=1)
    assert torch.equal(again.parts()[1].y_val, parts[1].y_val)
    assert not torch.equal(other.parts()[1].y_val, parts[1].y_val)


def test_each_fold_of_a_table_is_standardised_on_its_own_training_part():
    data = load_dataset({"name": "diabetes", "cv_folds": 4, "test_fraction": 0.2}, seed=0)
    for part in data.parts():
        assert torch.allclose(part.x_train.mean(0), torch.zeros(10), atol=1e-5)
        assert abs(part.y_train.mean().item()) < 1e-5
        assert len(part.x_test) == 89  # the test split kept apart, the same for every fold
    means = {part.target_mean for part in data.parts()}
    assert len(means) == 4


def test_too_many_folds_for_the_smallest_class_is_refused(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text(
        "x,label\n" + "".join(f"{i},{'rare' if i < 3 else 'common'}\n" for i in range(60))
    )
    with pytest.raises(DataError, match="cv_folds: 5 folds, but .* smallest class has 3"):
        load_dataset({"name": "csv", "path": str(table), "target": "label", "cv_folds": 5})


def test_folds_trained_side_by_side_are_the_folds_trained_one_by_one(folds):
    """Lockstep changes nothing in what each fold's model learns: fold k's curve is that of a
    hold-out run on fold k alone, and the trial's metric is their mean (with their spread)."""
    reports = []
    fit(BASE, folds, lambda m, s: reports.append(m))
    last = reports[-1]
    alone = [fit(BASE, part, lambda m, s: None) for part in folds.parts()]
    for number, run in enumerate(alone, 1):
        assert last[f"fold{number}_val_acc"] == run["val_acc"]
    values = [run["val_acc"] for run in alone]
    assert last["val_acc"] == pytest.approx(np.mean(values), abs=1e-12)
    assert last["val_acc_std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    assert last["gap"] == pytest.approx(np.mean([run["gap"] for run in alone]), abs=1e-12)


def test_a_checkpoint_holds_every_fold_and_a_resume_continues_each(folds):
    config = {**BASE, "epochs": 4}
    reports, states = [], []
    fit(config, folds, lambda m, s: (reports.append(m), states.append(deepcopy(s))))
    assert len(states[1]["folds"]) == 3
    rest = []
    fit(config, folds, lambda m, s: rest.append(m), state=states[1])
    assert [m["epoch"] for m in rest] == [3, 4]
    for key in ("val_loss", "fold1_val_loss", "fold3_val_acc"):
        assert [m[key] for m in rest] == [m[key] for m in reports[2:]]


def test_patience_watches_the_folds_mean_and_restores_every_fold(folds):
    config = {**BASE, "epochs": 40, "lr": 1e-2, "model": {"name": "mlp", "widths": [256]},
              "patience": 2}  # fmt: skip
    reports, states = [], []
    final = fit(config, folds, lambda m, s: (reports.append(m), states.append(deepcopy(s))))
    best = reports[-1]["best_epoch"]
    assert reports[-1]["patience_stopped"] and len(reports) == best + 2
    assert final["val_loss"] == min(m["val_loss"] for m in reports)
    for fold in range(3):
        weights = states[-1]["folds"][fold]["model"]
        for name, tensor in states[best - 1]["folds"][fold]["model"].items():
            assert torch.equal(weights[name], tensor), (fold, name)


@pytest.mark.parametrize(
    "overrides, said",
    [
        (["dataset.cv_folds=1"], "dataset.cv_folds: 1 is no number of folds"),
        (["dataset.cv_folds=0"], "dataset.cv_folds: 0 is no number of folds"),
        (["dataset.name=my_data:load", "dataset.cv_folds=3"], "its own (a loader's"),
    ],
)
def test_bad_fold_counts_and_fixed_validation_splits_are_refused(overrides, said, tmp_path):
    args = ["run"] + [a for o in overrides for a in ("--set", o)]
    result = CliRunner().invoke(app, args, env={"STUDY_ROOT": str(tmp_path / "runs")})
    assert result.exit_code == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and said in line, line
    assert not (tmp_path / "runs").exists()


def test_a_cross_validated_study_end_to_end(tmp_path, ray_head):
    """Through Ray with ASHA: each run holds the mean, its spread and every fold's curves,
    exactly once; `study train` of the best reproduces the fold mean, and --refit trains one
    model on all the folds' data and scores the test split."""
    root = tmp_path / "runs"
    overrides = [
        "name=cv",
        "dataset.cv_folds=3",
        "dataset.test_fraction=0.2",
        "search.num_samples=6",
        "scheduler.max_epochs=9",
        "scheduler.grace_period=1",
        "model.widths=[64]",
    ]
    args = [a for o in overrides for a in ("--set", o)]
    done = study_cli("run", *args, root=root, ray=ray_head["address"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = check_exactly_once(root, "cv", 6, 9)
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    run = next(iter(runs.values()))
    for key in ("val_acc", "val_acc_std", "fold1_val_acc", "fold3_train_loss"):
        assert key in run.data.metrics, key
    steps = client.get_metric_history(run.info.run_id, "fold2_val_acc")
    assert len(steps) == int(run.data.tags["epochs"])
    values = [run.data.metrics[f"fold{k}_val_acc"] for k in (1, 2, 3)]
    assert run.data.metrics["val_acc"] == pytest.approx(np.mean(values), abs=1e-9)

    best = tmp_path / "best.yaml"
    assert study_here("export", "cv", "-o", str(best), root=root).returncode == 0
    assert yaml.safe_load(best.read_text())["config"]["dataset"]["cv_folds"] == 3
    again = study_cli("train", str(best), "--no-log", root=root)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "difference +0.0000" in again.stdout
    refit = study_cli("train", str(best), "--refit", "--test", "--no-log", root=root)
    assert refit.returncode == 0, refit.stderr[-2000:]
    assert re.search(r"refit: one model on all 1437 examples of the 3 folds", refit.stdout)
    assert re.search(r"^test_loss \S+  test_acc 0\.\d+", refit.stdout, re.M), refit.stdout
    refused = study_cli("train", str(best), "--register", "cv-best", root=root)
    assert refused.returncode == 2 and "add --refit" in refused.stderr
