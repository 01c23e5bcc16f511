"""A team's MLflow server with authentication (MLflow's basic-auth app, started for real on
127.0.0.1): a user's credentials come from MLFLOW_TRACKING_USERNAME / _PASSWORD only; a study
runs and records with them, and the password is in no record, no saved spec and no console
line; a refused or missing credential, or one put in the URI, is refused in one line before
anything runs."""

from pathlib import Path

import mlflow.server
import pytest
from mlflow.tracking import MlflowClient

from benchmarks.common import MlflowServer
from tests.conftest import study_cli

ADMIN, USER, PASSWORD = "admin-password-0001", "ana", "ana-password-2718"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """An authenticated MLflow server with one user, `ana`."""
    made = MlflowServer(tmp_path_factory.mktemp("auth-server"), admin_password=ADMIN)
    made.start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        patch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN)
        mlflow.server.get_app_client("basic-auth", tracking_uri=made.uri).create_user(
            USER, PASSWORD
        )
    yield made.uri
    made.stop()


def as_user(password: str | None) -> dict[str, str]:
    return {"MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": password or ""}


def test_a_user_runs_a_study_and_the_password_is_recorded_nowhere(server, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    small = ["search.num_samples=2", "scheduler.max_epochs=2", "scheduler.grace_period=1"]
    overrides = [*small, f"tracking.uri={server}", "name=authed"]
    done = study_cli("run", *(a for o in overrides for a in ("--set", o)), root=root,
                     env=as_user(PASSWORD))  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert PASSWORD not in done.stdout + done.stderr

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("authed")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 3  # the parent and two trials, written with ana's credentials
    for run in runs:
        assert PASSWORD not in repr(run.data.params) + repr(run.data.tags)
    parent = next(r for r in runs if r.data.tags.get("study.role") == "parent")
    spec = client.download_artifacts(parent.info.run_id, "spec.yaml", str(tmp_path))
    assert PASSWORD not in Path(spec).read_text()
    saved = [path for path in root.rglob("*") if path.is_file()]  # spec, state, logs, Optuna
    assert saved and not any(PASSWORD.encode() in path.read_bytes() for path in saved)


@pytest.mark.parametrize(
    ("env", "said"),
    [
        (as_user("not-her-password"), "it refused user 'ana' (401): check MLFLOW_TRACKING_"
                                      "PASSWORD"),
        ({"MLFLOW_TRACKING_USERNAME": ""}, "it asks who you are (401): set MLFLOW_TRACKING_"
                                           "USERNAME and _PASSWORD"),
    ],
)  # fmt: skip
def test_a_refused_or_missing_credential_is_refused_before_anything_runs(
    server, tmp_path, env, said
):
    root = tmp_path / "runs"
    done = study_cli("run", "--set", f"tracking.uri={server}", root=root, env=env)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr == f"error: tracking.uri: the MLflow server at {server}: {said}\n"
    assert not root.exists()  # nothing launched, nothing recorded


def test_a_password_in_the_uri_is_refused(tmp_path):
    root = tmp_path / "runs"
    uri = f"http://{USER}:{PASSWORD}@127.0.0.1:5000"
    done = study_cli("run", "--set", f"tracking.uri={uri}", root=root)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: tracking.uri: the URI holds a user or password")
    assert PASSWORD not in line and not root.exists()
