"""The stores teams run: a study with its Optuna storage on PostgreSQL and its MLflow records on
a tracking server whose backend store is the same PostgreSQL server, its driver killed with
SIGKILL mid-study, then resumed: exactly one run and one Optuna trial per trial in both."""

import os
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy

from benchmarks.common import mlflow_server, postgres_bin, postgres_server
from tests.conftest import study_cli
from tests.exactly_once import check_exactly_once

NAME = "postgres-study"
SAMPLES, EPOCHS = 6, 4


def ended_trials(engine: sqlalchemy.Engine) -> int:
    sql = "select count(*) from tags where key = 'outcome' and value != 'running'"
    try:
        with engine.connect() as connection:
            return connection.execute(sqlalchemy.text(sql)).scalar()
    except sqlalchemy.exc.SQLAlchemyError:  # the server has not made its tables yet
        return 0


def test_a_study_on_postgresql_killed_and_resumed_is_exactly_once(tmp_path):
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
            env={**os.environ, "STUDY_ROOT": str(root)},
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

        resumed = study_cli("resume", NAME, root=root)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        runs = check_exactly_once(root, NAME, SAMPLES, EPOCHS, tracking_uri, storage_url)
        assert any(r.data.tags["outcome"] == "early_stopped" for r in runs.values())
        assert not (root / "mlflow.db").exists() and not (root / "optuna.db").exists()
        engine.dispose()
