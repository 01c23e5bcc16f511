"""A driver killed before Ray saved anything, `study status` telling running from interrupted,
and several studies started at the same moment on a new root: each ends with its records whole."""

import glob
import os
import signal
import subprocess
import sys
import time

import pytest

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


def start(root, *overrides: str) -> subprocess.Popen:
    args = [a for o in [*OVERRIDES, *overrides] for a in ("--set", o)]
    return subprocess.Popen(
        [sys.executable, "-m", "study", "run", *args],
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


# Moments before Ray saved any experiment state: the driver has saved the study's spec (the
# stores may not exist yet), and its MLflow parent run exists.
MOMENTS = {
    "spec saved": lambda root: (root / "studies" / NAME / "spec.yaml").exists(),
    "parent run made": lambda root: count(root / "mlflow.db", "select count(*) from runs") >= 1,
}


@pytest.mark.parametrize("moment", MOMENTS)
def test_a_driver_killed_before_ray_saved_anything_is_resumed_to_the_end(moment, tmp_path):
    root = tmp_path / "runs"
    driver = start(root)
    wait_for(driver, lambda: MOMENTS[moment](root))
    driver.send_signal(signal.SIGKILL)
    assert driver.wait() == -signal.SIGKILL
    assert not glob.glob(str(root / "ray" / NAME / "experiment_state*")), "Ray saved its state"

    status = study_cli("status", NAME, root=root)
    assert status.returncode == 0, status.stderr
    assert f"{NAME}: interrupted, 0 of {SAMPLES} trials started" in status.stdout
    assert f"its driver (pid {driver.pid} on " in status.stdout
    assert f"continue the study with `study resume {NAME}`" in status.stdout
    if moment == "parent run made":
        again = study_cli("run", *[a for o in OVERRIDES for a in ("--set", o)], root=root)
        assert again.returncode == 2 and f"continue it with `study resume {NAME}`" in again.stderr

    resumed = study_cli("resume", NAME, root=root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    check_exactly_once(root, NAME, SAMPLES, EPOCHS)
    status = study_cli("status", NAME, root=root)
    assert f"{NAME}: finished, {SAMPLES} of {SAMPLES} trials started" in status.stdout


def test_studies_started_together_on_a_new_root_all_finish_whole(tmp_path):
    root = tmp_path / "runs"  # does not exist yet: every store is made by one of them
    names = ["together-1", "together-2", "together-3"]
    drivers = [start(root, f"name={name}", "search.max_concurrent=1") for name in names]
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
        check_exactly_once(root, name, SAMPLES, EPOCHS)
