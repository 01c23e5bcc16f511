"""A diverging trial is recorded as `diverged` in MLflow and Optuna, and the study goes on."""

import optuna
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import study_cli, study_here


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


def test_a_diverged_trial_is_recorded_the_study_completes_and_exports_the_other(tmp_path, ray_head):
    """lr 1000 blows up, lr 0.01 trains. One trial at a time, grid order: the diverged trial
    is told last, which is when Optuna's GridSampler used to raise from `study.tell` (it calls
    `study.stop()`, which Optuna allows only inside `optimize()`)."""
    spec = spec_file(
        tmp_path,
        {
            "name": "diverge",
            "space": {"params": {"lr": {"type": "categorical", "choices": [1000.0, 0.01]}}},
            "fixed": {"optimizer": "sgd"},
            "search": {"sampler": "grid", "max_concurrent": 1},  # num_samples follows: 2
            "scheduler": {"name": "none", "max_epochs": 3},
        },
    )
    root = tmp_path / "runs"
    done = study_cli("run", str(spec), root=root, ray=ray_head["address"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "diverged" in done.stdout and "best val_acc" in done.stdout
    assert "Traceback" not in done.stderr, done.stderr[-2000:]

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    children = children_by(root, "diverge", "lr")
    assert set(children) == {"1000.0", "0.01"}
    blown, fine = children["1000.0"], children["0.01"]
    assert blown.data.tags["outcome"] == "diverged" and blown.info.status == "FAILED"
    assert "blew up" in blown.data.tags["error"]
    assert fine.data.tags["outcome"] == "completed" and fine.info.status == "FINISHED"
    assert len(client.get_metric_history(fine.info.run_id, "val_acc")) == 3
    assert blown.info.start_time > fine.info.end_time  # the diverged one ran, and ended, last

    trials = optuna.load_study(
        study_name="diverge", storage=f"sqlite:///{root / 'optuna.db'}"
    ).trials
    by_lr = {t.params["lr"]: t for t in trials}
    assert by_lr[1000.0].state == optuna.trial.TrialState.FAIL
    assert by_lr[1000.0].user_attrs["outcome"] == "diverged"
    assert by_lr[0.01].state == optuna.trial.TrialState.COMPLETE

    export = study_here("export", "diverge", "-o", str(tmp_path / "best.yaml"), root=root)
    assert export.returncode == 0
    assert yaml.safe_load((tmp_path / "best.yaml").read_text())["config"]["lr"] == 0.01
