"""Early stopping by patience in the training loop: when it stops, which weights it ends with,
what it reports, and that a run resumed mid-patience stops exactly where it would have."""

from copy import deepcopy

import pytest
import torch
from torch import nn

from trainables import fit, load_dataset
from trainables.patience import Patience

# A digits MLP that over-fits within a few epochs at this learning rate: val_loss turns.
BASE = {
    "lr": 1e-2,
    "model": {"name": "mlp", "widths": [256, 256]},
    "dataset": {"name": "digits"},
    "epochs": 40,
    "seed": 0,
    "patience": 3,
}


@pytest.fixture(scope="module")
def digits():
    return load_dataset({"name": "digits"}, seed=0)


def run(config: dict, data, state=None) -> tuple[list[dict], list[dict], dict]:
    """The metrics and (copied) states of each epoch, and what fit returned."""
    reports, states = [], []
    final = fit(config, data, lambda m, s: (reports.append(m), states.append(deepcopy(s))), state)
    return reports, states, final


def test_patience_counts_epochs_without_an_improvement_larger_than_min_delta():
    model = nn.Linear(2, 1)
    patience = Patience(patience=2, min_delta=0.1, monitor="val_loss", restore=False)
    assert not patience.update(1, {"val_loss": 1.0}, [model])  # the first value is the best
    assert not patience.update(2, {"val_loss": 0.95}, [model])  # better, but by less than 0.1
    assert patience.update(3, {"val_loss": 0.91}, [model])  # two epochs without: out
    assert (patience.best, patience.best_epoch, patience.wait) == (1.0, 1, 2)
    rising = Patience(patience=1, min_delta=0.0, monitor="val_acc", restore=False)
    rising.update(1, {"val_acc": 0.5}, [model])
    assert not rising.update(2, {"val_acc": 0.6}, [model]) and rising.best_epoch == 2  # max
    assert rising.update(3, {"val_acc": float("nan")}, [model])  # NaN never improves


def test_a_run_stops_when_patience_runs_out_and_ends_with_the_best_weights(digits):
    reports, states, final = run(BASE, digits)
    losses = [m["val_loss"] for m in reports]
    best = losses.index(min(losses)) + 1
    assert len(reports) == best + 3 < BASE["epochs"]  # three epochs without improving
    last = reports[-1]
    assert last["patience_stopped"] == 1.0
    assert (last["best_epoch"], last["stopped_epoch"]) == (best, len(reports))
    assert last["final"]["val_loss"] == min(losses)  # the restored weights' metrics
    assert final["val_loss"] == min(losses) and final["val_acc"] == reports[best - 1]["val_acc"]
    weights = states[-1]["model"]  # the checkpoint holds the restored weights
    for name, tensor in states[best - 1]["model"].items():
        assert torch.equal(weights[name], tensor), name


def test_without_restore_best_a_run_ends_with_its_last_epochs_weights(digits):
    reports, states, final = run({**BASE, "restore_best": False}, digits)
    assert reports[-1]["patience_stopped"] == 1.0 and "final" not in reports[-1]
    assert final["val_loss"] == reports[-1]["val_loss"] > min(m["val_loss"] for m in reports)


def test_patience_off_trains_every_epoch_as_before(digits):
    reports, _, final = run({**BASE, "patience": 0, "epochs": 8}, digits)
    assert len(reports) == 8 and "patience_stopped" not in final
    assert "patience" not in run({**BASE, "patience": 0, "epochs": 1}, digits)[1][0]


def test_a_run_resumed_mid_patience_stops_where_it_would_have(digits):
    """The checkpoint keeps the counter, the best value and the best weights: resumed two
    epochs after its best, the run stops at the same epoch with the same weights."""
    reports, states, final = run(BASE, digits)
    best = reports[-1]["best_epoch"]
    resumed, resumed_states, again = run(BASE, digits, state=states[best + 1])
    assert [m["epoch"] for m in resumed] == [m["epoch"] for m in reports[best + 2 :]]
    assert resumed[-1]["best_epoch"] == best and again["val_loss"] == final["val_loss"]
    for name, tensor in states[-1]["model"].items():
        assert torch.equal(resumed_states[-1]["model"][name], tensor), name
    # Resumed from the checkpoint of the epoch that stopped it: nothing more to train.
    done, _, _ = run(BASE, digits, state=states[-1])
    assert done == []


def test_a_regression_study_with_patience_sampled_records_reproduces_and_reports_it(
    tmp_path, ray_head
):
    """diabetes, patience 0 or 3 (a grid, no ASHA): the patience-stopped trials end as their
    own outcome, Optuna COMPLETE with the restored weights' score, which is also the MLflow
    run's last val_rmse (one step after the last epoch); export and `study train` reproduce
    one exactly; status and the report say what patience did."""
    import optuna
    import yaml
    from mlflow.tracking import MlflowClient

    from tests.conftest import study_cli, study_here
    from tests.exactly_once import check_exactly_once

    spec = tmp_path / "patient.yaml"
    spec.write_text(
        "name: patient\n"
        "dataset: {name: diabetes}\n"
        "model: {name: mlp, widths: [128, 128]}\n"
        "space: {params: {lr: {type: categorical, choices: [0.003, 0.01]},\n"
        "                 patience: {type: categorical, choices: [0, 3]}}}\n"
        "fixed: {optimizer: adam, batch_size: 32}\n"
        "search: {sampler: grid}\n"
        "scheduler: {name: none, max_epochs: 30}\n"
    )
    root = tmp_path / "runs"
    done = study_cli("run", str(spec), root=root, ray=ray_head["address"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "patience_stopped" in done.stdout
    runs = check_exactly_once(root, "patient", 4, 30)
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    trials = optuna.load_study(study_name="patient", storage=f"sqlite:///{root}/optuna.db").trials
    stopped = [r for r in runs.values() if r.data.tags["outcome"] == "patience_stopped"]
    assert len(stopped) == 2  # both patience-3 trials over-fit within 30 epochs
    for run in stopped:
        history = client.get_metric_history(run.info.run_id, "val_rmse")
        trained = [m.value for m in sorted(history, key=lambda m: m.step)][:-1]
        assert run.data.metrics["val_rmse"] == min(trained)  # the best epoch's weights
        assert run.data.metrics["best_epoch"] == trained.index(min(trained)) + 1
        assert run.data.metrics["stopped_epoch"] == int(run.data.tags["epochs"]) < 30
        trial = trials[int(run.data.tags["trial"]) - 1]
        assert trial.state.name == "COMPLETE" and trial.value == min(trained)

    status = study_here("status", "patient", root=root)
    assert "patience_stopped 2" in status.stdout and "completed 2" in status.stdout
    out = tmp_path / "top"
    assert study_here("export", "patient", "--top", "4", "-o", str(out), root=root).returncode == 0
    bundles = [yaml.safe_load((f / "config.yaml").read_text()) for f in sorted(out.iterdir())]
    patient = next(b for b in bundles if b["config"]["patience"] == 3)
    retrain = study_cli("train", str(next(out.glob(f"*{patient['trial']}*")) / "config.yaml"),
                        "--no-log", root=root)  # fmt: skip
    assert retrain.returncode == 0, retrain.stderr[-2000:]
    assert "difference +0.0000" in retrain.stdout and "patience ran out" in retrain.stdout
    report = study_here("report", "patient", root=root)
    assert report.returncode == 0, report.stderr[-2000:]
    assert "Patience stopped 2 of the 2 trials that had it on" in report.stdout
    assert "The best trial:" in report.stdout and "train_r2" in report.stdout
