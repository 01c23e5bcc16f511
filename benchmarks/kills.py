"""Kills at random moments: the driver of a small study (its whole process group) killed with
SIGKILL at seeded random moments, each driver that resumes it killed again, until one ends
the study; then its records hold exactly one MLflow run and one Optuna trial per trial, all
of them ended, and no lock is left held. The suite runs a handful (tests/test_resume.py); run
alone it kills 20 or more times and records each kill's moment and result (history/kills.md).

    python -m benchmarks.kills [--kills 24] [--seed 0] [--longest 20]
"""

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from benchmarks.common import arguments, record

NAME = "digits-regularization"
SAMPLES, EPOCHS = 6, 4
STUDY = [
    f"search.num_samples={SAMPLES}",
    f"scheduler.max_epochs={EPOCHS}",
    "scheduler.grace_period=1",
    "search.max_concurrent=2",
]


def driver(root: Path, command: list[str], env: dict[str, str]) -> subprocess.Popen:
    """A `study` driver in a process group of its own (its local Ray's processes with it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "study", *command],
        env={**env, "STUDY_ROOT": str(root)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def free(lock: Path) -> bool:
    """Whether no process holds `lock` now."""
    try:
        FileLock(lock).acquire(timeout=0)
    except Timeout:
        return False
    FileLock(lock).release()
    return True


def after_kill(root: Path) -> dict[str, Any]:
    """Where the study stood when its driver was killed, as its records say."""
    from study.commands.run import tune_saved
    from study.core import stage

    folder = root / "studies" / NAME
    state = stage.load(folder / "stage.json")
    locks = [folder / "driver.lock", root / ".study.lock"]
    return {
        "stage": state.stage.value if state else "none",
        "ended": state.ended if state else 0,
        "tune saved": tune_saved(str(root / "ray" / NAME)),
        "locks free": all(free(lock) for lock in locks if lock.exists()),
    }


def kill_and_resume(
    root: Path, rng: random.Random, kills: int, longest: float, env: dict[str, str]
) -> list[dict[str, Any]]:
    """Start the study under `root`, kill its driver after a random delay (uniform in 0 ..
    `longest` s), resume, kill again, `kills` times or until a driver ends the study first;
    then resume it to its end. Returns a row per kill."""
    run = ["run", *[a for o in STUDY for a in ("--set", o)]]
    command, rows = run, []
    for _ in range(kills):
        delay = rng.uniform(0.0, longest)
        started = driver(root, command, env)
        try:
            started.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.killpg(started.pid, signal.SIGKILL)
            started.wait()
            rows.append({"command": command[0], "after s": round(delay, 1), **after_kill(root)})
            if rows[-1]["stage"] == "finished":  # killed as Ray shut down: nothing to resume
                return rows
            # killed before it saved its spec, the study does not exist: a user runs it again
            exists = (root / "studies" / NAME / "spec.yaml").exists()
            command = ["resume", NAME] if exists else run
            continue
        assert started.returncode == 0, started.stderr.read()[-3000:]
        rows.append({"command": command[0], "after s": round(delay, 1), "stage": "ended first"})
        return rows
    last = driver(root, command, env)
    _, err = last.communicate(timeout=900)
    assert last.returncode == 0, err[-3000:]
    return rows


def check(root: Path) -> None:
    """The promise after the last resume: every trial once in MLflow and Optuna, all ended,
    no lock held, and `study status` says finished with every trial."""
    from tests.exactly_once import check_exactly_once

    check_exactly_once(root, NAME, SAMPLES, EPOCHS)
    folder = root / "studies" / NAME
    assert free(folder / "driver.lock") and free(root / ".study.lock")
    status = subprocess.run(
        [sys.executable, "-m", "study", "status", NAME],
        env={**os.environ, "STUDY_ROOT": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert f"{NAME}: finished, {SAMPLES} of {SAMPLES} trials started" in status.stdout, status


def main() -> None:
    def options(parser):
        parser.add_argument("--kills", type=int, default=24, help="kills in all (20 or more)")
        parser.add_argument("--per-study", type=int, default=4, help="kills of one study")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--longest", type=float, default=20.0, help="the latest kill, s")

    args = arguments("Kills at random moments, then resume: exactly once.", options)
    kills = 2 if args.quick else args.kills
    rng = random.Random(args.seed)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    rows, studies, started = [], 0, time.perf_counter()
    while sum(row["stage"] != "ended first" for row in rows) < kills:
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder) / "runs"
            made = kill_and_resume(root, rng, min(args.per_study, kills), args.longest, env)
            check(root)
        studies += 1
        rows += [{"study": studies, **row, "after the last resume": "exactly once"} for row in made]
        print(f"study {studies}: {made}", flush=True)
    headers = ["study", "driver", "killed after s", "stage recorded", "trials ended",
               "Tune saved a state", "locks free", "after the last resume"]  # fmt: skip
    table = [
        [row["study"], row["command"], row["after s"], row["stage"], row.get("ended", ""),
         row.get("tune saved", ""), row.get("locks free", ""), row["after the last resume"]]
        for row in rows
    ]  # fmt: skip
    landed = sum(row["stage"] != "ended first" for row in rows)
    notes = (
        f"{landed} kills (SIGKILL to the driver's process group, its local Ray with it) of "
        f"{studies} studies of {SAMPLES} trials x {EPOCHS} epochs, at moments drawn uniformly "
        f"from 0-{args.longest:.0f} s after each driver started (seed {args.seed}); a driver "
        "that ended its study before its moment ends that study's chain ('ended first'). "
        "Each study was then resumed to its end and checked: one MLflow run and one Optuna "
        "trial per trial, every one ended, gap-free metric histories, no lock held, `study "
        f"status` finished with every trial. {time.perf_counter() - started:.0f} s in all."
    )
    record("Kills at random moments", args, headers, table, notes)


if __name__ == "__main__":
    main()
