"""A disk that stops taking writes, on a real small filesystem (a tmpfs the test mounts): the
root filling up during a study, the root turning read-only, the MLflow artifact folder full.
Each stops the study with one line that names the folder and the fix, exit code 1; once the
root takes writes again, `study resume` ends the study with every trial recorded once."""

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import study_cli, study_here
from tests.exactly_once import check_exactly_once
from tests.test_resume import ENDED, count

NAME = "digits-regularization"
SAMPLES, EPOCHS = 8, 6
# Checkpoints of about 4 MB each (two kept per trial): a few trials fill 24 MB.
OVERRIDES = [
    f"search.num_samples={SAMPLES}",
    f"scheduler.max_epochs={EPOCHS}",
    "scheduler.grace_period=2",
    "model.widths=[512, 512]",
]


def mount(folder: Path, *options: str) -> None:
    """`mount OPTIONS FOLDER`, tried again a few times: a remount can fail for a moment (exit
    32) while the other test worker mounts or unmounts its own tmpfs."""
    for attempt in range(5):
        done = subprocess.run(["mount", *options, str(folder)], capture_output=True, text=True)
        if done.returncode == 0:
            return
        time.sleep(0.5 * (attempt + 1))
    raise AssertionError(f"mount {' '.join(options)} {folder}: {done.stderr.strip()}")


@contextmanager
def small_disk(folder: Path, megabytes: int):
    """A tmpfs of `megabytes` at `folder`, unmounted afterwards (lazily: Ray's processes may
    still hold a file there)."""
    folder.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if made.returncode:  # CI runs as root: there it must mount (STUDY_REQUIRE_MOUNT)
        message = f"mounting a tmpfs needs root: {made.stderr.strip()}"
        pytest.fail(message) if os.environ.get("STUDY_REQUIRE_MOUNT") else pytest.skip(message)
    try:
        yield folder
    finally:
        for _ in range(3):  # the tmpfs and a read-only view of it mounted on top
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def one_line(done: subprocess.CompletedProcess) -> str:
    """The study's stderr, checked to be one line with no traceback; that line."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stdout + done.stderr, done.stderr[:6000]
    return lines[0]


def resume_to_the_end(root: Path) -> None:
    resumed = study_cli("resume", NAME, root=root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    check_exactly_once(root, NAME, SAMPLES, EPOCHS)
    status = study_here("status", NAME, root=root)
    assert f"{NAME}: finished, {SAMPLES} of {SAMPLES} trials started" in status.stdout


def test_a_root_that_fills_up_stops_the_study_in_one_line_and_resume_ends_it(tmp_path):
    with small_disk(tmp_path / "disk", 24) as disk:
        root = disk / "runs"
        done = study_cli("run", *[a for o in OVERRIDES for a in ("--set", o)], root=root)
        assert done.returncode == 1
        line = one_line(done)
        assert line.startswith(f"error: the disk under {root} is full"), line
        assert f"free space under {root} (" in line
        assert f"then continue with `study resume {NAME}`" in line
        mount(disk, "-o", "remount,size=400m")  # space freed
        resume_to_the_end(root)


def test_a_root_that_turns_read_only_stops_the_study_in_one_line(tmp_path):
    with small_disk(tmp_path / "disk", 400) as disk:
        root = disk / "runs"
        args = [a for o in OVERRIDES for a in ("--set", o)]
        driver = subprocess.Popen(
            [sys.executable, "-m", "study", "run", *args],
            env={**os.environ, "STUDY_ROOT": str(root), "RAY_AUTH_MODE": "disabled"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.time() + 300
        while count(root / "mlflow.db", ENDED) < 1:  # a trial ended: the study is under way
            assert driver.poll() is None, driver.stderr.read()[-3000:]
            assert time.time() < deadline
            time.sleep(0.05)
        # Read-only from now on: a read-only view of the folder over it (a tmpfs in use cannot
        # be remounted read-only); files the driver holds open still take writes, as on a
        # filesystem the kernel turns read-only after an error they would not.
        mount(disk, "--bind", str(disk))
        mount(disk, "-o", "remount,bind,ro")
        out, err = driver.communicate(timeout=300)
        assert driver.returncode == 1
        line = one_line(subprocess.CompletedProcess([], 1, out, err))
        assert line.startswith(f"error: the disk under {root} is read-only"), line
        assert f"make {root} writable again" in line and f"`study resume {NAME}`" in line
        subprocess.run(["umount", str(disk)], check=True)  # writable again
        resume_to_the_end(root)


def test_a_full_artifact_folder_stops_the_study_in_one_line(tmp_path):
    root = tmp_path / "runs"
    with small_disk(root / "mlartifacts", 1) as artifacts:
        with (artifacts / "filler").open("wb", buffering=0) as filler:  # full from the start
            while True:
                try:
                    filler.write(b"x" * 4096)
                except OSError:
                    break
        done = study_cli("run", *[a for o in OVERRIDES for a in ("--set", o)], root=root)
        assert done.returncode == 1
        line = one_line(done)
        assert line.startswith(f"error: the disk under {artifacts} is full (writing "), line
        assert f"free space under {artifacts} (" in line  # the resume: the tests above
