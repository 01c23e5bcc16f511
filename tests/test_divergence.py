"""A diverging trial is recorded as `diverged` in MLflow and Optuna, and the study goes on."""

import optuna
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import study_cli


def children_by(root, name: str, param: str) -> dict:
    """The study's child runs keyed by the value of one param."""
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id])
    return {r.data.params[param]: r for r in runs if "mlflow.parentRunId" in r.data.tags}


def spec_file(tmp_path, spec: dict):
    """The study spec `spec` written to a YAML file; its path."""
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_diverged_trial_is_recorded_and_the_study_completes(tmp_path):
    spec = spec_file(
        tmp_path,
        {
            "name": "diverge",
            "space": {"params": {"lr": {"type": "categorical", "choices": [1000.0, 0.01]}}},
            "fixed": {"optimizer": "sgd"},
            "search": {"sampler": "grid"},  # num_samples follows the grid: 2
            "scheduler": {"name": "none", "max_epochs": 3},
        },
    )
    root = tmp_path / "runs"
    done = study_cli("run", str(spec), root=root)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "diverged" in done.stdout and "best val_acc" in done.stdout

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    children = children_by(root, "diverge", "lr")
    assert set(children) == {"1000.0", "0.01"}
    blown, fine = children["1000.0"], children["0.01"]
    assert blown.data.tags["outcome"] == "diverged" and blown.info.status == "FAILED"
    assert "blew up" in blown.data.tags["error"]
    assert fine.data.tags["outcome"] == "completed" and fine.info.status == "FINISHED"
    assert len(client.get_metric_history(fine.info.run_id, "val_acc")) == 3

    trials = optuna.load_study(
        study_name="diverge", storage=f"sqlite:///{root / 'optuna.db'}"
    ).trials
    by_lr = {t.params["lr"]: t for t in trials}
    assert by_lr[1000.0].state == optuna.trial.TrialState.FAIL
    assert by_lr[1000.0].user_attrs["outcome"] == "diverged"
    assert by_lr[0.01].state == optuna.trial.TrialState.COMPLETE

    export = study_cli("export", "diverge", "-o", str(tmp_path / "best.yaml"), root=root)
    assert export.returncode == 0
    assert yaml.safe_load((tmp_path / "best.yaml").read_text())["config"]["lr"] == 0.01


def test_a_grid_study_whose_last_trial_diverges_records_it_and_ends(tmp_path):
    """Optuna's GridSampler raises from `study.tell` when the last grid point ends (it calls
    `study.stop()`, which Optuna allows only inside `optimize()`). A diverged trial told last
    must still be recorded, and the study end with its usual message, not a traceback."""
    spec = spec_file(
        tmp_path,
        {
            "name": "grid-diverge",
            "space": {"params": {"lr": {"type": "categorical", "choices": [1000.0, 2000.0]}}},
            "fixed": {"optimizer": "sgd"},
            "search": {"sampler": "grid", "max_concurrent": 1},  # one after the other
            "scheduler": {"name": "none", "max_epochs": 2},
        },
    )
    root = tmp_path / "runs"
    done = study_cli("run", str(spec), root=root)
    assert done.returncode == 1, done.stderr[-2000:]  # no trial produced a result
    assert "no trial produced a result" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr[-2000:]

    children = children_by(root, "grid-diverge", "lr")
    assert {lr: r.data.tags["outcome"] for lr, r in children.items()} == {
        "1000.0": "diverged",
        "2000.0": "diverged",
    }
    trials = optuna.load_study(
        study_name="grid-diverge", storage=f"sqlite:///{root / 'optuna.db'}"
    ).trials
    assert [(t.state, t.user_attrs["outcome"]) for t in trials] == [
        (optuna.trial.TrialState.FAIL, "diverged")
    ] * 2
