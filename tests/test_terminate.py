"""`search.terminate` end to end: on a landscape with nothing to gain (a weight decay too small
to change anything), the study stops asking once its rule has seen enough trials, says so in one
line, and the running trial finishes; a driver killed right after the stop is resumed as
stopped (the running trial finished once, nothing new asked), with exactly-once records; status
and MLflow say it was stopped, and `study resume` has nothing more to do."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import study_cli, study_here
from tests.exactly_once import check_exactly_once

NAME, SAMPLES, EPOCHS, AFTER = "flat", 8, 5, 3
STOP = f"no gain expected after {AFTER + 1} of {SAMPLES} trials"  # 2 at a time: the 4th ran


def spec_file(folder) -> str:
    spec = {
        "name": NAME,
        "model": {"name": "mlp", "widths": [16]},
        "space": {"params": {"weight_decay": {"type": "float", "low": 1e-9, "high": 1e-8,
                                              "log": True}}},
        "search": {"num_samples": SAMPLES, "max_concurrent": 2, "terminate": True,
                   "terminate_after": AFTER},
        "scheduler": {"name": "none", "max_epochs": EPOCHS},
    }  # fmt: skip
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def stopped(root) -> bool:
    """Whether the rule's stop is on the Optuna study."""
    try:
        with sqlite3.connect(f"file:{root / 'optuna.db'}?mode=ro", uri=True, timeout=1) as db:
            query = "select count(*) from study_user_attributes where key = 'terminated'"
            return db.execute(query).fetchone()[0] > 0
    except sqlite3.Error:
        return False


def test_a_study_with_nothing_to_gain_stops_and_resumes_as_stopped(tmp_path):
    root = tmp_path / "runs"
    said = tmp_path / "driver.out"
    with said.open("w") as out:
        driver = subprocess.Popen(
            [sys.executable, "-m", "study", "run", spec_file(tmp_path)],
            env={**os.environ, "STUDY_ROOT": str(root), "COLUMNS": "400"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 240
        while not stopped(root):
            assert driver.poll() is None and time.time() < deadline, said.read_text()[-3000:]
            time.sleep(0.02)
        driver.send_signal(signal.SIGKILL)  # the 4th trial still runs, most likely
        driver.wait()
    assert f"stopped          {STOP}: the room left for improvement" in said.read_text()

    resumed = study_cli("resume", NAME, root=root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    check_exactly_once(root, NAME, AFTER + 1, EPOCHS)  # none asked after the stop

    status = study_here("status", NAME, root=root)
    assert status.stdout.splitlines()[0] == f"{NAME}: stopped: {STOP}", status.stdout
    again = study_here("resume", NAME, root=root)
    assert again.returncode == 2
    assert again.stderr.startswith(f"error: NAME: study '{NAME}' was stopped by search.terminate")

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(NAME)
    (parent,) = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`study.role` = 'parent'"
    )
    assert parent.data.tags["terminated"].startswith(f"{STOP}: the room left")
    # the report says it from that tag (tests/unit/test_stopping_rule.py)
