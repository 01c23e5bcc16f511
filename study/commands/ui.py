"""`study ui`: the MLflow UI of a root folder's store, served on 127.0.0.1, with a link to each
study's runs in its shared view."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient
from rich.console import Console

from study.core.errors import UserError
from study.core.layout import artifact_root, mlflow_db, store_uri
from study.engines.views import runs_link


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def started(server: subprocess.Popen, base: str, port: int, log: str) -> None:
    """Wait for the server to answer; UserError when it exits first (a port in use)."""
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{base}/health", timeout=1)
            return
        except OSError:
            if server.poll() is not None:
                reason = f"did not start (see {log}); is port {port} in use?"
                raise UserError(f"--port: the MLflow server {reason}") from None
            time.sleep(0.5)


def print_links(uri: str, base: str, console: Console) -> None:
    """A line per study (experiment): its runs in the study's view."""
    for experiment in MlflowClient(uri).search_experiments():
        if experiment.name != "Default":
            view = any(k.startswith("mlflow.sharedViewState.") for k in experiment.tags)
            link = runs_link(base, experiment.experiment_id, view)
            console.print(f"{experiment.name}: {link}", soft_wrap=True)


def serve(folder: Path, port: int, console: Console) -> None:
    """Serve the UI of the store under `folder` until Ctrl-C (or SIGTERM)."""
    if not mlflow_db(folder).exists():
        raise UserError(f"--root: no MLflow store at {mlflow_db(folder)}; run `study run` first")
    uri = store_uri(folder)
    base = f"http://127.0.0.1:{port}"
    log = open(folder / "mlflow-ui.log", "a")  # noqa: SIM115  (open while the server runs)
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
         "--default-artifact-root", artifact_root(folder).as_uri(),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        # no job consumers (MLflow's GenAI jobs): three processes a study's UI never uses
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )  # fmt: skip
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        started(server, base, port, log.name)
        print_links(uri, base, console)
        console.print(
            f"MLflow UI at {base} (server log: {log.name}); Ctrl-C stops it.", soft_wrap=True
        )
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the workers it started
        server.wait()
