"""Checks that a study's records hold exactly one of everything, after any number of restarts."""

from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient


def check_exactly_once(
    root: Path,
    name: str,
    num_samples: int,
    max_epochs: int,
    tracking_uri: str | None = None,
    storage_url: str | None = None,
) -> dict:
    """Assert one finished child run and one finished Optuna trial per trial, matching, with
    gap-free, repeat-free metric histories; return the child runs by trial number. The stores
    are the root's SQLite files unless `tracking_uri` / `storage_url` name others."""
    client = MlflowClient(tracking_uri or f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("study.role") == "parent"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == num_samples
    by_number = {int(r.data.tags["trial"]): r for r in children}
    assert sorted(by_number) == list(range(1, num_samples + 1))  # none doubled, none missing

    storage_url = storage_url or f"sqlite:///{root / 'optuna.db'}"
    storage = optuna.storages.RDBStorage(storage_url)
    try:
        trials = optuna.load_study(study_name=name, storage=storage).trials
    finally:  # closed now, not when collected: a test may compare the root's files after this
        storage.engine.dispose()
    assert len(trials) == num_samples
    for trial in trials:
        run = by_number[trial.number + 1]
        assert trial.state.is_finished(), trial
        assert run.info.status in ("FINISHED", "KILLED"), (trial.number, run.info.status)
        outcome = run.data.tags["outcome"]
        assert trial.user_attrs["outcome"] == outcome
        metric = "val_acc" if "val_acc" in run.data.metrics else "val_rmse"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
        assert sorted(steps) == list(range(1, len(steps) + 1)), (trial.number, steps)
        epochs = int(run.data.tags["epochs"])
        restored = outcome == "patience_stopped" and run.data.params.get("restore_best") == "True"
        restored = restored and run.data.metrics["best_epoch"] < epochs
        assert len(steps) == epochs + restored  # restored weights: one step after the last
        assert set(trial.intermediate_values) == set(range(1, epochs + 1))
        if outcome == "completed":
            assert epochs == max_epochs and run.info.status == "FINISHED"
        elif outcome == "patience_stopped":
            assert epochs <= max_epochs and run.info.status == "FINISHED"
            assert trial.state.name == "COMPLETE" and trial.value == run.data.metrics[metric]
        else:
            assert outcome == "early_stopped" and epochs < max_epochs, outcome
        assert {k: str(v) for k, v in trial.params.items()} == {
            k: run.data.params[k] for k in trial.params
        }
    return by_number
