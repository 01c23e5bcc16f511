"""The driver killed with SIGKILL, then `study resume`: every trial ends with exactly one MLflow
run and one Optuna trial, and no metric step is logged twice. Six named moments, from before
Ray saved anything to mid-study, each killing the driver that resumed the one before; and
kills at seeded random moments (benchmarks/kills.py)."""

import glob
import os
import pickle
import random
import signal
import sqlite3
import subprocess
import sys
import time

from filelock import FileLock
from mlflow.tracking import MlflowClient
from ray.tune.experiment import Trial

from benchmarks import kills
from study.engines.records import StudyRecords
from study.engines.tracking import MlflowTracker
from tests.conftest import files, on_head, study_cli, study_here
from tests.exactly_once import check_exactly_once
from trainables import HYPERPARAMETERS

NAME = "digits-regularization"
SAMPLES, EPOCHS = 8, 9
OVERRIDES = [
    f"search.num_samples={SAMPLES}",
    f"scheduler.max_epochs={EPOCHS}",
    "scheduler.grace_period=1",
    "model.widths=[512, 512]",
]


def count(db, sql: str | None) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute(sql).fetchone()[0]
    except sqlite3.Error:
        return 0


ENDED = "select count(*) from tags where key = 'outcome' and value != 'running'"


def recorded(query: str, threshold: int):
    """A moment: the MLflow store holds `threshold` rows or more that `query` counts."""
    return lambda root: count(root / "mlflow.db", query) >= threshold


def tuner_alone(root) -> bool:
    """Tune wrote its tuner and has not saved an experiment state yet (a driver killed now
    once left a study that `study resume` ran one trial of and called finished)."""
    folder = root / "ray" / NAME
    return (folder / "tuner.pkl").exists() and not glob.glob(str(folder / "experiment_state*"))


# Each moment, as the study's files show it. The first three come before Ray saved any state,
# the rest mid-study. At the first the stores do not exist yet: the test holds the root's lock,
# under which the driver makes them.
MOMENTS = [
    ("the spec saved", lambda root: (root / "studies" / NAME / "spec.yaml").exists()),
    ("the parent run made", recorded("select count(*) from tags where key = 'study.role'", 1)),
    ("Tune's tuner written, no state saved", tuner_alone),
    ("the first trial started", recorded("select count(*) from tags where key = 'trial'", 1)),
    ("three trials ended", recorded(ENDED, 3)),
    ("six trials ended", recorded(ENDED, 6)),
]


def start(root, command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "study", *command],
        env={**os.environ, "STUDY_ROOT": str(root)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def assert_interrupted(root, pid: int) -> None:
    before = files(root)  # the study was killed before its stores existed
    status = study_here("status", NAME, root=root)
    assert status.returncode == 0, status.stderr
    assert files(root) == before  # reading wrote nothing, made no store
    assert "mlflow.db" not in before and "INFO" not in status.stdout + status.stderr
    assert f"{NAME}: interrupted, " in status.stdout, status.stdout
    assert f"its driver (pid {pid} on " in status.stdout
    assert f"continue it with `study resume {NAME}`" in status.stdout


def test_sigkill_at_six_moments_then_resume_is_exactly_once(tmp_path):
    """The driver, and then each driver that resumes it, killed with SIGKILL at the next
    moment; the last `study resume` ends the study, with one MLflow run and one Optuna trial
    per trial and no metric step logged twice."""
    root = tmp_path / "runs"
    command = ["run", *[a for o in OVERRIDES for a in ("--set", o)]]
    root.mkdir()
    held = FileLock(root / ".study.lock")  # the root's lock (study.core.driver.root_lock)
    for number, (moment, reached) in enumerate(MOMENTS):
        if number == 0:
            held.acquire()
        driver = start(root, command)
        deadline = time.time() + 180
        while not reached(root):
            assert driver.poll() is None, f"the study ended before {moment}"
            assert time.time() < deadline, f"{moment} never came"
            time.sleep(0.005)
        driver.send_signal(signal.SIGKILL)
        assert driver.wait() == -signal.SIGKILL
        if number == 0:
            held.release()
        saved = glob.glob(str(root / "ray" / NAME / "experiment_state*"))
        if number < 3:
            assert not saved, f"Ray saved its state before {moment}"
        if number == 0:
            assert_interrupted(root, driver.pid)
            again = study_cli("run", *command[1:], root=root)
            assert again.returncode == 2, again.stderr
            assert f"continue it with `study resume {NAME}`" in again.stderr
        command = ["resume", NAME]

    resumed = study_cli("resume", NAME, root=root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    runs = check_exactly_once(root, NAME, SAMPLES, EPOCHS)
    assert any(r.data.tags["outcome"] == "early_stopped" for r in runs.values())
    before = files(root)
    status = study_here("status", NAME, root=root)
    assert status.returncode == 0
    assert f"finished, {SAMPLES} of {SAMPLES} trials started" in status.stdout
    assert files(root) == before


def test_a_study_interrupted_before_an_upgrade_resumes_each_trial_once(tmp_path):
    """Tune's saved state names our classes by their modules: a study killed mid-way under a
    version whose modules moved (issue 35 moved them all) still resumes. One line says the
    state does not load; a new Tune run under the same records runs the trials still
    missing, each recorded once."""
    root = tmp_path / "runs"
    driver = start(root, ["run", *[a for o in OVERRIDES for a in ("--set", o)]])
    deadline = time.time() + 180
    saved = root / "ray" / NAME / "tuner.pkl"
    while not (recorded(ENDED, 1)(root) and glob.glob(str(saved.parent / "experiment_state*"))):
        assert driver.poll() is None and time.time() < deadline, "no trial ended"
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    state = saved.read_bytes()
    assert b"study.engines.search" in state  # the searcher, pickled by its module's name
    saved.write_bytes(state.replace(b"study.engines.search", b"study.engines.searcX"))

    resumed = study_cli("resume", NAME, root=root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    said = "Ray Tune's saved state does not load in this version (ModuleNotFoundError: "
    assert said + "No module named 'study.engines.searcX'); the trials still missing" in (
        resumed.stdout
    )
    check_exactly_once(root, NAME, SAMPLES, EPOCHS)


def test_kills_at_random_moments_then_resume_is_exactly_once(tmp_path, ray_head):
    """A handful of the benchmark's seeded random kills (20 and more there): the driver's
    process group killed at moments drawn from 0-15 s after each start, on the test worker's
    Ray head; after each kill no lock is held, and after the last resume every trial is
    recorded once in both stores, ended, and `study status` says the study finished."""
    root = tmp_path / "runs"
    rows = kills.kill_and_resume(root, random.Random(3), 3, 15.0, on_head(ray_head))
    assert any(row["stage"] != "ended first" for row in rows), rows  # a kill landed
    assert all(row.get("locks free", True) for row in rows), rows
    kills.check(root)


def test_a_run_made_just_before_the_driver_died_gets_its_params_on_resume(tmp_path):
    """SIGKILL can land between making a trial's child run and logging its params (the test
    above once did, at "first trial started"): the resumed study's tracker finds the run and
    logs the params it lacks, rather than leaving it without them or making a second run."""
    db = tmp_path / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    experiment_id = client.create_experiment("e")
    parent = client.create_run(experiment_id).info.run_id
    tracker = MlflowTracker(StudyRecords(client, experiment_id, parent), sampled=["lr"])
    config = {"optuna_trial": 0, "lr": 0.01, "model": {"name": "mlp", "widths": [64]}}
    trial = Trial("trainable", config=config, stub=True)
    run_id = tracker.running(trial).run_id
    with sqlite3.connect(db) as conn:  # the store as the kill left it: the run, no params
        conn.execute("delete from params where run_uuid = ?", (run_id,))
    assert client.get_run(run_id).data.params == {}

    resumed = pickle.loads(pickle.dumps(tracker))  # as Ray restores it
    assert resumed.running(trial).run_id == run_id
    params = client.get_run(run_id).data.params
    expected = {"optuna_trial": "0", "lr": "0.01", "model.name": "mlp", "model.widths": "[64]"}
    defaults = {k: str(v) for k, v in HYPERPARAMETERS.items() if k != "lr"}  # resolved too
    assert params == {**defaults, **expected}
    assert len(client.search_runs([experiment_id])) == 2  # the parent and this one
