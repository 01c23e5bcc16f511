"""Several studies started at the same moment on a new root: each ends with its records whole,
and while one runs `study status` says so and a second driver for it is refused. (Drivers
killed before Ray saved anything: tests/test_resume.py.)"""

import os
import subprocess
import sys
import time

from tests.conftest import study_cli, study_here
from tests.exactly_once import check_exactly_once

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


def test_studies_started_together_on_a_new_root_all_finish_whole(tmp_path):
    root = tmp_path / "runs"  # does not exist yet: every store is made by one of them
    names = ["together-1", "together-2"]
    drivers = [start(root, f"name={name}", "search.num_samples=2") for name in names]
    # While the first runs, status says so and a second driver for it is refused.
    # The driver claims the name (driver.json) before it saves the spec that status reads.
    wait_for(drivers[0], lambda: (root / "studies" / names[0] / "spec.yaml").exists())
    status = study_here("status", names[0], root=root)
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
