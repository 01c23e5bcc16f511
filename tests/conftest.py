"""Shared fixtures: a real MLflow tracking server on 127.0.0.1 and one small finished study."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.common import free_port, ray_node, stop_node, wait_for_nodes
from benchmarks.common import mlflow_server as start_mlflow_server

SMALL_STUDY = [
    "search.num_samples=10",
    "search.max_concurrent=2",
    "scheduler.max_epochs=9",
    "scheduler.grace_period=1",
    "scheduler.reduction_factor=3",
]


def study_cli(
    *args: str, root: Path, timeout: float = 600, ray: str | None = None
) -> subprocess.CompletedProcess:
    """Run the installed `study` command as a user would, in a clean environment (Ray's token
    auth off, as on a machine without ~/.ray/auth_token); with `ray` (the `ray_head`
    fixture's address) as `RAY_ADDRESS`, as `ray job submit` sets it."""
    env = {**os.environ, "STUDY_ROOT": str(root), "COLUMNS": "200", "RAY_AUTH_MODE": "disabled"}
    if ray:
        env["RAY_ADDRESS"] = ray
    return subprocess.run(
        [sys.executable, "-m", "study", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=root.parent,
    )


def on_head(ray_head: dict) -> dict[str, str]:
    """The environment of a process that runs on the `ray_head` fixture's head: its address as
    `RAY_ADDRESS` (as `ray job submit` sets it), Ray's token auth off."""
    return {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": ray_head["address"]}


def study_here(*args: str, root: Path) -> subprocess.CompletedProcess:
    """A reading command (status, export, report) or a refusal through the CLI's own entry
    point in this process: its exit code and streams as `study_cli` gives them, without a
    Python start and MLflow's import per call. Commands that train or launch run as
    subprocesses."""
    from typer.testing import CliRunner

    from study import cli

    width, cli.console.width = cli.console.width, 200
    try:
        done = CliRunner().invoke(cli.app, list(args), env={"STUDY_ROOT": str(root)})
    finally:
        cli.console.width = width
    error = done.exception  # one the CLI let through (a refusal is a SystemExit)
    failed = (
        "" if error is None or isinstance(error, SystemExit) else f"{type(error).__name__}: {error}"
    )
    return subprocess.CompletedProcess(args, done.exit_code, done.stdout, done.stderr + failed)


def files(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative path) and the sha256 of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `cuda` are skipped where torch sees no CUDA GPU."""
    marked = [item for item in items if item.get_closest_marker("cuda")]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    for item in marked:
        item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture(scope="session", name="mlflow_server")
def mlflow_server_fixture(tmp_path_factory: pytest.TempPathFactory):
    """A real `mlflow server` with its own SQLite store and artifact folder."""
    with start_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as uri:
        yield uri


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str):
    """The default study, made small, run once through the CLI against the MLflow server."""
    root = tmp_path_factory.mktemp("study") / "runs"
    overrides = [*SMALL_STUDY, f"tracking.uri={mlflow_server}"]
    args = [a for o in overrides for a in ("--set", o)]
    done = study_cli("run", *args, root=root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"root": root, "stdout": done.stdout, "uri": mlflow_server, "num_samples": 10}


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory):
    """One Ray head per test worker (xdist), with this machine's CPUs and GPUs as a local Ray
    has them, for the studies whose own local Ray is not the point: every local start costs
    its helper processes again (about 5 s of a core). Yields its address and node ID."""
    port = free_port()
    folder = tmp_path_factory.mktemp("ray-head")
    head = ray_node("--head", f"--port={port}", "--include-dashboard=false", cwd=folder)
    address = f"127.0.0.1:{port}"
    try:
        (node_id,) = wait_for_nodes(address, 1)
        yield {"address": address, "node_id": node_id}
    finally:
        stop_node(head, force=True)
