"""The study stopper in memory: a tracker-like object with the study metric and its records."""

import math
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from study.core import trial_number
from study.engines.tracking import StudyStopper


@pytest.fixture
def tracker() -> SimpleNamespace:
    """What the stopper reads of the MLflow tracker: the metric and its trials by number."""
    return SimpleNamespace(
        metric="val_acc", trials={}, key=lambda trial_id, config: trial_number(config)
    )


@pytest.fixture
def stopper(tracker) -> StudyStopper:
    return StudyStopper(tracker)


def result(value: float, optuna_trial: int = 0) -> dict:
    """A Tune result of the trial whose Optuna number is `optuna_trial` (trial number + 1)."""
    return {"epoch": 1, "val_acc": value, "config": {"optuna_trial": optuna_trial}}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_metric_stops_the_trial(stopper, value):
    """NaN or an infinity in the study metric stops the trial (it ends as diverged)."""
    assert stopper("t1", result(value))


def test_a_running_trial_with_a_finite_metric_continues(stopper, tracker):
    """A trial whose record is still running goes on."""
    tracker.trials[1] = SimpleNamespace(outcome="running")
    assert not stopper("t1", result(0.5))


def test_a_trial_without_a_record_continues(stopper, tracker):
    """A trial the tracker has no record of yet (its first result) goes on."""
    tracker.trials[2] = SimpleNamespace(outcome="completed")  # another trial's
    assert not stopper("t1", result(0.5, optuna_trial=0))


@pytest.mark.parametrize("outcome", ["completed", "early_stopped", "failed", "diverged"])
def test_a_trial_that_already_ended_stops(stopper, tracker, outcome):
    """A trial whose record has an outcome (it ended before a resume) stops at once."""
    tracker.trials[4] = SimpleNamespace(outcome=outcome)
    assert stopper("t1", result(0.5, optuna_trial=3))


def test_the_stopper_never_stops_the_whole_study(stopper):
    """stop_all is False: the study ends when Tune runs out of trials."""
    assert stopper.stop_all() is False


def test_a_repeat_that_already_ended_stops_too(tmp_path):
    """`study ablate` and `study confirm` key their records by Ray's trial id (repeats share
    the number of the trial they repeat): the stopper finds an ended repeat by the same key."""
    from ray.tune.experiment import Trial

    from study.engines.records import StudyRecords
    from study.engines.repeats import RepeatTracker, config_key

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("e")
    parent_id = client.create_run(experiment_id).info.run_id
    records = StudyRecords(client, experiment_id, parent_id)
    role_id = records.role_run("confirm", "confirm top trials", {})
    run = {"dataset": {"name": "digits"}, "model": {"name": "mlp"}, "epochs": 9, "threads": 1}
    configs = [{**run, "optuna_trial": 6, "seed": seed, "lr": 0.01} for seed in (0, 1)]
    repeats = {config_key(c): ("best", c["seed"], f"best seed {c['seed']}") for c in configs}
    tracker = RepeatTracker(records, role_id, "confirm", repeats, "val_acc", "max")
    first, second = (Trial("trainable", config=c, stub=True) for c in configs)
    tracker.on_trial_start(0, [], first)
    tracker.on_trial_start(0, [], second)
    tracker.on_trial_complete(0, [], first)  # ended (no result: failed)
    stopper = StudyStopper(tracker)
    assert stopper(first.trial_id, {"val_acc": 0.5, "config": first.config})
    assert not stopper(second.trial_id, {"val_acc": 0.5, "config": second.config})
