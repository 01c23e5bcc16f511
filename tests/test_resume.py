"""The driver killed with SIGKILL mid-study, then `study resume`: every trial ends with exactly
one MLflow run and one Optuna trial, and no metric step is logged twice. Three moments."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.conftest import study_cli
from tests.exactly_once import check_exactly_once

NAME = "digits-regularization"
SAMPLES, EPOCHS = 12, 9
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
    "eight trials ended": "select count(*) from tags where key = 'outcome' and value != 'running'",
}
THRESHOLDS = {"first trial started": 1, "three trials ended": 3, "eight trials ended": 8}


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
