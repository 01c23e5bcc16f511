"""The repair after a crash: runs a dead driver left RUNNING get the outcome Optuna recorded.

A real MLflow SQLite store (copied from one made once per session: making its tables takes
seconds) and an Optuna SQLite storage, both in tmp_path; no Ray.
"""

import shutil
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from study.core import Layout
from study.engines.records import PARENT_TAG, TRIAL_TAG, StudyRecords
from study.engines.storage import ended_trials
from study.spec import StudySpec

STUDY = "unit-repair"


@pytest.fixture(scope="session")
def empty_mlflow_store(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables and nothing in them."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def layout(tmp_path) -> Layout:
    """The study's layout under tmp_path: mlflow.db and optuna.db there."""
    return Layout.of(StudySpec.model_validate({"name": STUDY}), tmp_path)


@pytest.fixture
def client(layout, empty_mlflow_store) -> MlflowClient:
    shutil.copy(empty_mlflow_store, layout.root / "mlflow.db")
    return MlflowClient(layout.tracking_uri)


@pytest.fixture
def experiment_id(client, layout) -> str:
    return client.create_experiment(STUDY, artifact_location=(layout.root / "art").as_uri())


@pytest.fixture
def parent_id(client, experiment_id) -> str:
    return client.create_run(experiment_id, run_name="parent").info.run_id


@pytest.fixture
def optuna_study(layout) -> optuna.Study:
    return optuna.create_study(storage=layout.optuna_url, study_name=STUDY)


@pytest.fixture
def repair(client, experiment_id, parent_id, layout):
    """The repair the runner makes when it resumes a study (from the Optuna storage)."""

    def run() -> None:
        StudyRecords(client, experiment_id, parent_id).repair(ended_trials(layout))

    return run


@pytest.fixture
def child(client, experiment_id, parent_id):
    """Makes the child run of trial `number` as the tracker does (outcome running)."""

    def make(number: int) -> str:
        tags = {PARENT_TAG: parent_id, TRIAL_TAG: str(number), "outcome": "running"}
        return client.create_run(experiment_id, tags=tags).info.run_id

    return make


def told(study: optuna.Study, state: TrialState, epochs: int, outcome: str | None) -> None:
    """A trial reporting `epochs` epochs, with user attr `outcome`, told `state` (or left
    RUNNING when `state` is RUNNING)."""
    trial = study.ask()
    for epoch in range(1, epochs + 1):
        trial.report(epoch / 10, epoch)
    if outcome is not None:
        trial.set_user_attr("outcome", outcome)
    if state == TrialState.COMPLETE:
        study.tell(trial, epochs / 10)
    elif state != TrialState.RUNNING:
        study.tell(trial, state=state)


@pytest.mark.parametrize(
    "state, outcome, epochs, status",
    [
        (TrialState.COMPLETE, "completed", 9, "FINISHED"),
        (TrialState.PRUNED, "early_stopped", 3, "FINISHED"),  # not red: ASHA meant it
        (TrialState.FAIL, "diverged", 2, "FAILED"),
        (TrialState.FAIL, "failed", 1, "FAILED"),
    ],
)
def test_a_run_left_running_gets_its_trials_outcome_epochs_and_status(
    client, optuna_study, child, repair, state, outcome, epochs, status
):
    """A RUNNING run whose Optuna trial ended gets the outcome tag, epochs and MLflow status."""
    run_id = child(1)
    told(optuna_study, state, epochs, outcome)
    repair()
    run = client.get_run(run_id)
    assert run.info.status == status
    assert run.data.tags["outcome"] == outcome
    assert run.data.tags["epochs"] == str(epochs)
    stopped_at = run.data.tags.get("early_stopped_epoch")
    assert stopped_at == (str(epochs) if outcome == "early_stopped" else None)


def test_each_run_gets_the_outcome_of_its_own_trial(client, optuna_study, child, repair):
    """Runs are matched to Optuna trials by trial number (Optuna's number + 1)."""
    second, first = child(2), child(1)
    told(optuna_study, TrialState.COMPLETE, 9, "completed")
    told(optuna_study, TrialState.PRUNED, 3, "early_stopped")
    repair()
    assert client.get_run(first).data.tags["outcome"] == "completed"
    assert client.get_run(second).data.tags["outcome"] == "early_stopped"
    assert client.get_run(second).data.tags["epochs"] == "3"


def test_the_run_of_an_unfinished_trial_stays_running(client, optuna_study, child, repair):
    """A trial still RUNNING in Optuna (it will resume) keeps its run open and untagged."""
    run_id = child(1)
    told(optuna_study, TrialState.RUNNING, 2, None)
    repair()
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING"
    assert run.data.tags["outcome"] == "running"
    assert "epochs" not in run.data.tags


def test_a_run_the_driver_closed_is_left_as_it_is(client, optuna_study, child, repair):
    """A run already closed keeps its tags and status whatever the storage says."""
    run_id = child(1)
    client.set_tag(run_id, "outcome", "completed")
    client.set_terminated(run_id, "FINISHED")
    told(optuna_study, TrialState.PRUNED, 3, "early_stopped")
    repair()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["outcome"] == "completed"
    assert "epochs" not in run.data.tags


def test_a_trial_that_ended_without_an_outcome_is_repaired_as_failed(
    client, optuna_study, child, repair
):
    """A trial Optuna saw end but whose outcome was never set closes as failed, not running."""
    run_id = child(1)
    told(optuna_study, TrialState.FAIL, 1, None)
    repair()
    run = client.get_run(run_id)
    assert run.data.tags["outcome"] == "failed"
    assert run.info.status == "FAILED"


def test_without_an_optuna_study_nothing_is_repaired(client, child, repair):
    """A study the Optuna storage does not hold yet leaves every run as it was."""
    run_id = child(1)
    repair()
    assert client.get_run(run_id).info.status == "RUNNING"
