"""The stores teams run: a study with its Optuna storage on PostgreSQL and its MLflow records on
a tracking server whose backend store is the same PostgreSQL server, its driver killed with
SIGKILL mid-study, then resumed: exactly one run and one Optuna trial per trial in both. And
stores that go away mid-study and come back: the study waits for them."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy

from benchmarks.common import (
    mlflow_server,
    mlflow_service,
    postgres_bin,
    postgres_server,
    postgres_service,
)
from tests.conftest import on_head, study_cli
from tests.exactly_once import check_exactly_once

# The drivers run on the test worker's Ray head: the stores are the point here, not a Ray of the
# study's own (tests/test_resume.py kills a driver on its own local Ray).
NAME = "postgres-study"
SAMPLES, EPOCHS = 6, 4
# Long enough for several of the Optuna storage's retries (0.5, 1, 2, 4, 8 s apart) and
# MLflow's; the study waits for 300 s.
OUTAGE_S = 10


def ended_trials(engine: sqlalchemy.Engine) -> int:
    sql = "select count(*) from tags where key = 'outcome' and value != 'running'"
    try:
        with engine.connect() as connection:
            return connection.execute(sqlalchemy.text(sql)).scalar()
    except sqlalchemy.exc.SQLAlchemyError:  # the server has not made its tables yet
        return 0


def test_a_study_on_postgresql_killed_and_resumed_is_exactly_once(tmp_path, ray_head):
    if postgres_bin() is None and not os.environ.get("STUDY_REQUIRE_POSTGRES"):
        pytest.skip("no PostgreSQL server: apt-get install -y postgresql (.ci/run does)")
    with (
        postgres_server(("optuna", "mlflow")) as server,
        mlflow_server(tmp_path, backend=f"{server}/mlflow") as tracking_uri,
    ):
        storage_url = f"{server}/optuna"
        root = tmp_path / "runs"
        overrides = [
            f"name={NAME}",
            f"search.num_samples={SAMPLES}",
            f"scheduler.max_epochs={EPOCHS}",
            "scheduler.grace_period=1",
            "scheduler.reduction_factor=2",
            f"search.storage={storage_url}",
            f"tracking.uri={tracking_uri}",
        ]
        driver = subprocess.Popen(
            [sys.executable, "-m", "study", "run", *[a for o in overrides for a in ("--set", o)]],
            env={**on_head(ray_head), "STUDY_ROOT": str(root)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        engine = sqlalchemy.create_engine(f"{server}/mlflow")
        deadline = time.time() + 300
        while ended_trials(engine) < 2:
            assert driver.poll() is None, driver.stderr.read()[-3000:]
            assert time.time() < deadline
            time.sleep(0.1)
        driver.send_signal(signal.SIGKILL)
        assert driver.wait() == -signal.SIGKILL
        assert ended_trials(engine) < SAMPLES  # killed mid-study

        resumed = study_cli("resume", NAME, root=root, ray=ray_head["address"])
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        runs = check_exactly_once(root, NAME, SAMPLES, EPOCHS, tracking_uri, storage_url)
        assert any(r.data.tags["outcome"] == "early_stopped" for r in runs.values())
        assert not (root / "mlflow.db").exists() and not (root / "optuna.db").exists()
        engine.dispose()


def test_stores_that_blink_are_waited_for_and_said_in_one_line_each(tmp_path, ray_head):
    """The Optuna storage's PostgreSQL server stopped (immediate mode, as in a crash) for 10 s
    after the first trial ends, later the MLflow tracking server SIGKILLed for 10 s and started
    again on the same store: the study finishes without a resume, exactly once, and the console
    says each outage once and each return once, with no traceback."""
    if postgres_bin() is None and not os.environ.get("STUDY_REQUIRE_POSTGRES"):
        pytest.skip("no PostgreSQL server: apt-get install -y postgresql (.ci/run does)")
    name, samples, epochs = "blinking-stores", 6, 4
    with (
        postgres_service(("optuna",)) as postgres,
        mlflow_service(tmp_path) as tracking,
    ):
        storage_url = f"{postgres.url}/optuna"
        root = tmp_path / "runs"
        overrides = [
            f"name={name}",
            f"search.num_samples={samples}",
            f"scheduler.max_epochs={epochs}",
            "scheduler.grace_period=2",
            f"search.storage={storage_url}",
            f"tracking.uri={tracking.uri}",
        ]
        driver = subprocess.Popen(
            [sys.executable, "-m", "study", "run", *[a for o in overrides for a in ("--set", o)]],
            env={**on_head(ray_head), "STUDY_ROOT": str(root), "COLUMNS": "200"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(driver.stdout), daemon=True)
        reader.start()

        def ended() -> int:
            return sum(line.startswith(("completed", "early_stopped")) for line in lines)

        def wait_for(trials: int) -> None:
            deadline = time.time() + 300
            while ended() < trials:
                assert driver.poll() is None, "".join(lines)[-3000:]
                assert time.time() < deadline, "".join(lines)[-3000:]
                time.sleep(0.1)

        wait_for(1)
        postgres.stop("immediate")
        time.sleep(OUTAGE_S)
        postgres.start()
        wait_for(ended() + 1)
        tracking.kill()
        time.sleep(OUTAGE_S)
        tracking.start()
        assert driver.wait(timeout=600) == 0, "".join(lines)[-3000:]
        reader.join(timeout=10)
        console = "".join(lines)
        assert ended() == samples, console  # no resume was needed
        assert "Traceback" not in console, console
        assert "View run" not in console  # MLflow's own links (into its GenAI view), per trial
        for field in ("search.storage", "tracking.uri"):
            down = [line for line in lines if line.startswith(f"store down       {field}")]
            back = [line for line in lines if line.startswith(f"store back       {field}")]
            assert len(down) == 1 and len(back) == 1, console
        assert "postgresql://postgres@127.0.0.1" in console  # the store is named
        check_exactly_once(root, name, samples, epochs, tracking.uri, storage_url)


def test_a_storage_down_past_the_limit_stops_the_study_in_one_line_and_resume_ends_it(
    tmp_path, ray_head
):
    """The Optuna storage's server stopped for longer than the study waits (3 s here): the
    driver stops with one line naming the store and `study resume`, exit code 1; once the
    server is back, `study resume` ends the study exactly once."""
    if postgres_bin() is None and not os.environ.get("STUDY_REQUIRE_POSTGRES"):
        pytest.skip("no PostgreSQL server: apt-get install -y postgresql (.ci/run does)")
    name, samples, epochs = "storage-gone", 4, 3
    with postgres_service(("optuna",)) as postgres:
        storage_url = f"{postgres.url}/optuna"
        root = tmp_path / "runs"
        overrides = [
            f"name={name}",
            f"search.num_samples={samples}",
            f"scheduler.max_epochs={epochs}",
            "scheduler.grace_period=1",
            f"search.storage={storage_url}",
        ]
        driver = subprocess.Popen(
            [sys.executable, "-m", "study", "run", *[a for o in overrides for a in ("--set", o)]],
            env={**on_head(ray_head), "STUDY_ROOT": str(root), "STUDY_STORE_PATIENCE": "3"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        runs = root / "mlflow.db"
        deadline = time.time() + 300
        while not runs.exists() or count_ended(runs) < 1:
            assert driver.poll() is None, driver.stderr.read()[-3000:]
            assert time.time() < deadline
            time.sleep(0.1)
        postgres.stop("immediate")
        out, err = driver.communicate(timeout=300)
        assert driver.returncode == 1, out[-2000:] + err[-2000:]
        (line,) = [line for line in err.splitlines() if line.startswith("error:")]
        assert line.startswith(f"error: search.storage: {storage_url} did not answer for ")
        assert line.endswith(f"continue with `study resume {name}`")
        assert "Traceback" not in out + err
        assert f"store down       search.storage {storage_url}" in out + err

        postgres.start()
        resumed = study_cli("resume", name, root=root, ray=ray_head["address"])
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        check_exactly_once(root, name, samples, epochs, storage_url=storage_url)


def count_ended(db) -> int:
    """Trials with an outcome in a local MLflow store (0 while its tables are being made)."""
    import sqlite3

    sql = "select count(*) from tags where key = 'outcome' and value != 'running'"
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as connection:
            return connection.execute(sql).fetchone()[0]
    except sqlite3.Error:
        return 0
