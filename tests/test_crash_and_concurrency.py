"""A driver killed before Ray saved anything, `study status` telling running from interrupted,
and several studies started at the same moment on a new root: each ends with its records whole."""

import glob
import os
import signal
import subprocess
import sys
import time

from tests.conftest import study_cli
from tests.exactly_once import check_exactly_once
from tests.test_resume import count

NAME = "digits-regularization"
SAMPLES, EPOCHS = 4, 3
OVERRIDES = [
    f"search.num_samples={SAMPLES}",
    f"scheduler.max_epochs={EPOCHS}",
    "scheduler.grace_period=1",
]


def start(root, *overrides: str, command: tuple[str, ...] = ("run",)) -> subprocess.Popen:
    args = (
        [a for o in [*OVERRIDES, *overrides] for a in ("--set", o)] if command == ("run",) else []
    )
    return subprocess.Popen(
        [sys.executable, "-m", "study", *command, *args],
        env={**os.environ, "STUDY_ROOT": str(root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(driver: subprocess.Popen, ready) -> None:
    deadline = time.time() + 120
    while not ready():
        assert driver.poll() is None, "the study ended before the moment came"
        assert time.time() < deadline
        time.sleep(0.02)


def kill(driver: subprocess.Popen, root) -> None:
    driver.send_signal(signal.SIGKILL)
    assert driver.wait() == -signal.SIGKILL
    assert not glob.glob(str(root / "ray" / NAME / "experiment_state*")), "Ray saved its state"


def assert_interrupted(root, pid: int) -> None:
    status = study_cli("status", NAME, root=root)
    assert status.returncode == 0, status.stderr
    assert f"{NAME}: interrupted, 0 of {SAMPLES} trials started" in status.stdout
    assert f"its driver (pid {pid} on " in status.stdout
    assert f"continue the study with `study resume {NAME}`" in status.stdout


def test_drivers_killed_before_ray_saved_anything_are_resumed_to_the_end(tmp_path):
    """Killed once the spec is saved (the stores may not exist yet), then its resume killed
    once it made the parent run, both before Ray saved any state; the next resume ends it."""
    root = tmp_path / "runs"
    driver = start(root)
    wait_for(driver, lambda: (root / "studies" / NAME / "spec.yaml").exists())
    kill(driver, root)
    assert_interrupted(root, driver.pid)
    again = study_cli("run", *[a for o in OVERRIDES for a in ("--set", o)], root=root)
    assert again.returncode == 2 and f"continue it with `study resume {NAME}`" in again.stderr

    resuming = start(root, command=("resume", NAME))
    made = "select count(*) from tags where key = 'study.role'"
    wait_for(resuming, lambda: count(root / "mlflow.db", made) >= 1)
    kill(resuming, root)
    assert_interrupted(root, resuming.pid)

    resumed = study_cli("resume", NAME, root=root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    check_exactly_once(root, NAME, SAMPLES, EPOCHS)
    status = study_cli("status", NAME, root=root)
    assert f"{NAME}: finished, {SAMPLES} of {SAMPLES} trials started" in status.stdout


def test_studies_started_together_on_a_new_root_all_finish_whole(tmp_path):
    root = tmp_path / "runs"  # does not exist yet: every store is made by one of them
    names = ["together-1", "together-2"]
    drivers = [start(root, f"name={name}", "search.num_samples=2") for name in names]
    # While the first runs, status says so and a second driver for it is refused.
    wait_for(drivers[0], lambda: (root / "studies" / names[0] / "driver.json").exists())
    status = study_cli("status", names[0], root=root)
    assert status.returncode == 0 and f"{names[0]}: running, " in status.stdout, status.stderr
    second = study_cli("resume", names[0], root=root)
    assert second.returncode == 2
    assert f"NAME: study '{names[0]}' is running (pid {drivers[0].pid} on " in second.stderr
    for name, driver in zip(names, drivers, strict=True):
        out, err = driver.communicate(timeout=600)
        assert driver.returncode == 0, (name, err[-3000:])
        assert "Traceback" not in out + err
    for name in names:
        check_exactly_once(root, name, 2, EPOCHS)
