"""The driver killed with SIGKILL mid-study, then `study resume`: every trial ends with exactly
one MLflow run and one Optuna trial, and no metric step is logged twice. Three moments."""

import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient
from ray.tune.experiment import Trial

from study.tracking import MlflowTracker
from tests.conftest import study_cli
from tests.exactly_once import check_exactly_once

NAME = "digits-regularization"
SAMPLES, EPOCHS = 8, 9
OVERRIDES = [
    f"search.num_samples={SAMPLES}",
    f"scheduler.max_epochs={EPOCHS}",
    "scheduler.grace_period=1",
    "model.widths=[512, 512]",
]


def count(db, sql: str) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute(sql).fetchone()[0]
    except sqlite3.Error:
        return 0


MOMENTS = {
    "first trial started": "select count(*) from tags where key = 'trial'",
    "three trials ended": "select count(*) from tags where key = 'outcome' and value != 'running'",
    "six trials ended": "select count(*) from tags where key = 'outcome' and value != 'running'",
}
THRESHOLDS = {"first trial started": 1, "three trials ended": 3, "six trials ended": 6}


@pytest.mark.parametrize("moment", MOMENTS)
def test_sigkill_then_resume_is_exactly_once(moment, tmp_path):
    root = tmp_path / "runs"
    args = [a for o in OVERRIDES for a in ("--set", o)]
    driver = subprocess.Popen(
        [sys.executable, "-m", "study", "run", *args],
        env={**os.environ, "STUDY_ROOT": str(root)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 180
    while count(root / "mlflow.db", MOMENTS[moment]) < THRESHOLDS[moment]:
        assert driver.poll() is None, "the study ended before the moment came"
        assert time.time() < deadline
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    assert driver.wait() == -signal.SIGKILL

    resumed = study_cli("resume", NAME, root=root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    runs = check_exactly_once(root, NAME, SAMPLES, EPOCHS)
    assert any(r.data.tags["outcome"] == "early_stopped" for r in runs.values())

    status = study_cli("status", NAME, root=root)
    assert status.returncode == 0
    assert f"finished, {SAMPLES} of {SAMPLES} trials started" in status.stdout


def test_a_run_made_just_before_the_driver_died_gets_its_params_on_resume(tmp_path):
    """SIGKILL can land between making a trial's child run and logging its params (the test
    above once did, at "first trial started"): the resumed study's tracker finds the run and
    logs the params it lacks, rather than leaving it without them or making a second run."""
    db = tmp_path / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    experiment_id = client.create_experiment("e")
    parent = client.create_run(experiment_id).info.run_id
    tracker = MlflowTracker(f"sqlite:///{db}", experiment_id, parent, sampled=["lr"])
    config = {"optuna_trial": 0, "lr": 0.01, "model": {"name": "mlp", "widths": [64]}}
    trial = Trial("trainable", config=config, stub=True)
    run_id = tracker.record(trial).run_id
    with sqlite3.connect(db) as conn:  # the store as the kill left it: the run, no params
        conn.execute("delete from params where run_uuid = ?", (run_id,))
    assert client.get_run(run_id).data.params == {}

    resumed = pickle.loads(pickle.dumps(tracker))  # as Ray restores it
    assert resumed.record(trial).run_id == run_id
    params = client.get_run(run_id).data.params
    expected = {"optuna_trial": "0", "lr": "0.01", "model.name": "mlp", "model.widths": "[64]"}
    assert params == expected
    assert len(client.search_runs([experiment_id])) == 2  # the parent and this one
