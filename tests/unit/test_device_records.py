"""What a trial's MLflow run records of its device: the tracker given the results a GPU trial
and a CPU trial send (study.engines.trial adds the fields), with a real MLflow SQLite store; no
Ray."""

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mlflow.tracking import MlflowClient

from study.engines.records import StudyRecords
from study.engines.tracking import MlflowTracker
from study.engines.trial import GPU_PEAK, GPU_TAG, device_tags, gpu_memory


@pytest.fixture(scope="session")
def empty_mlflow_store(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables and nothing in them (made once: seconds)."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracker(tmp_path, empty_mlflow_store) -> MlflowTracker:
    """A new study's tracker over a copy of the empty store, with an experiment and parent."""
    shutil.copy(empty_mlflow_store, tmp_path / "mlflow.db")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    parent_id = client.create_run(experiment_id).info.run_id
    return MlflowTracker(StudyRecords(client, experiment_id, parent_id), sampled=["lr"])


def result(epoch: int, **where) -> dict:
    """A Tune result of one epoch, with what study.engines.trial adds (`where`)."""
    metrics = {"epoch": epoch, "train_loss": 1.0 / epoch, "train_acc": 0.5, "val_loss": 1.1,
               "val_acc": 0.4 + 0.1 * epoch, "gap": 0.1, "lr": 0.01, "epoch_time": 0.5}  # fmt: skip
    return {**metrics, "node_id": "node-1", **where, "history": [metrics]}


def trial() -> SimpleNamespace:
    """What the tracker reads of a Ray trial."""
    return SimpleNamespace(config={"optuna_trial": 0, "lr": 0.01}, trial_id="abc_00000")


def test_a_gpu_trial_records_its_gpu_and_peak_memory(tracker):
    """The GPU's model is a tag; its peak memory a metric at each result's last epoch."""
    gpu = {"device": "cuda", GPU_TAG: "NVIDIA H200"}
    tracker.on_trial_start(0, [], trial())
    tracker.on_trial_result(0, [], trial(), result(1, **gpu, **{GPU_PEAK: 812.5}))
    tracker.on_trial_result(0, [], trial(), result(2, **gpu, **{GPU_PEAK: 901.25}))
    run_id = tracker.running(trial()).run_id
    run = tracker.records.client.get_run(run_id)
    assert run.data.tags["device"] == "cuda" and run.data.tags[GPU_TAG] == "NVIDIA H200"
    history = tracker.records.client.get_metric_history(run_id, GPU_PEAK)
    assert [(m.step, m.value) for m in history] == [(1, 812.5), (2, 901.25)]
    assert run.data.metrics[GPU_PEAK] == 901.25


def test_a_cpu_trial_records_the_cpu_and_no_gpu_fields(tracker):
    """On the CPU the run says `device: cpu`, with no GPU tag and no peak-memory metric."""
    tracker.on_trial_start(0, [], trial())
    tracker.on_trial_result(0, [], trial(), result(1, **device_tags(torch.device("cpu"))))
    run = tracker.records.client.get_run(tracker.running(trial()).run_id)
    assert run.data.tags["device"] == "cpu"
    assert GPU_TAG not in run.data.tags and GPU_PEAK not in run.data.metrics
    assert run.data.metrics["val_acc"] == 0.5  # the epoch itself is recorded as before


def test_the_trial_adds_no_gpu_fields_on_the_cpu():
    """study.engines.trial's additions to a CPU trial's results: the device alone."""
    assert device_tags(torch.device("cpu")) == {"device": "cpu"}
    assert gpu_memory(torch.device("cpu")) == {}
