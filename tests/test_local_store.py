"""The zero-setup path: a study on the default SQLite store under the root, served by `study ui`."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.request

from mlflow.tracking import MlflowClient

from tests.conftest import free_port, study_cli

TINY = ["search.num_samples=3", "scheduler.max_epochs=2", "scheduler.grace_period=1"]


def test_default_store_then_study_ui_serves_it(tmp_path):
    root = tmp_path / "runs"
    done = study_cli("run", *[a for o in TINY for a in ("--set", o)], root=root)
    assert done.returncode == 0, done.stderr[-2000:]
    assert {"mlflow.db", "optuna.db", "mlartifacts", "ray", "studies"} <= set(os.listdir(root))

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("digits-regularization")
    assert experiment.artifact_location.startswith((root / "mlartifacts").as_uri())
    assert len(client.search_runs([experiment.experiment_id])) == 4  # parent + 3 trials

    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "study", "ui", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "STUDY_ROOT": str(root)},
    )
    try:
        line = ""
        deadline = time.time() + 120
        while "digits-regularization:" not in line and time.time() < deadline:
            line = ui.stdout.readline()
        link = re.search(r"http://127\.0\.0\.1:\d+/#/experiments/(\d+)/runs\S*", line)
        assert link and link.group(0).endswith("?workflowType=machine_learning"), line
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search",
            data=json.dumps({"experiment_ids": [link.group(1)]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        found = json.load(urllib.request.urlopen(request, timeout=10))["runs"]
        names = sorted(r["info"]["run_name"] for r in found)
        assert names[0] == "digits-regularization" and len(names) == 4
    finally:
        ui.terminate()
        ui.wait(timeout=30)
