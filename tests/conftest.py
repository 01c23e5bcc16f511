"""Shared fixtures: a real MLflow tracking server on 127.0.0.1 and one small finished study."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

SMALL_STUDY = [
    "search.num_samples=10",
    "search.max_concurrent=2",
    "scheduler.max_epochs=9",
    "scheduler.grace_period=1",
    "scheduler.reduction_factor=3",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def study_cli(*args: str, root: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed `study` command as a user would, in a clean environment."""
    env = {**os.environ, "STUDY_ROOT": str(root), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "study", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=root.parent,
    )


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real `mlflow server` with its own SQLite store and artifact folder."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(folder / "server.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError((folder / "server.log").read_text()[-3000:]) from None
            time.sleep(0.5)
    yield uri
    server.terminate()
    server.wait(timeout=30)
    log.close()


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str):
    """The default study, made small, run once through the CLI against the MLflow server."""
    root = tmp_path_factory.mktemp("study") / "runs"
    overrides = [*SMALL_STUDY, f"tracking.uri={mlflow_server}"]
    args = [a for o in overrides for a in ("--set", o)]
    done = study_cli("run", *args, root=root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"root": root, "stdout": done.stdout, "uri": mlflow_server, "num_samples": 10}
