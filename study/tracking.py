"""MLflow records of a study: one parent run, one nested child run per Ray trial.

The tracker is a Ray Tune callback, so it runs in the driver: only one process writes to the
store, and each epoch costs one batched `log_batch` call.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

from trainables import METRICS

EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "ray.trial_id"
OUTCOMES = ("completed", "early_stopped", "failed", "diverged")
STATUS = {
    "completed": "FINISHED",
    "early_stopped": "KILLED",
    "failed": "FAILED",
    "diverged": "FAILED",
}
NAME_ORDER = ("lr", "weight_decay", "dropout", "batch_norm", "l1", "optimizer")
SHORT = {"weight_decay": "wd", "dropout": "p", "momentum": "m", "batch_norm": "bn"}


def store_uri(root: Path) -> str:
    """The default tracking URI: an SQLite file under the root folder."""
    return f"sqlite:///{root / 'mlflow.db'}"


def open_experiment(client: MlflowClient, name: str, root: Path) -> str:
    """The id of experiment `name`, created (artifacts under the root) and tagged if new."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    local = client.tracking_uri.startswith("sqlite:") or client.tracking_uri.startswith("file:")
    location = (root / "mlartifacts" / name).as_uri() if local else None
    return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)


def runs_link(base_url: str, experiment_id: str) -> str:
    """The MLflow UI page of an experiment's runs in the model-training view."""
    return (
        f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    )


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def short(value: Any) -> str:
    """A number as a human writes it in a run name: 3e-3, 1e-4, 0.13."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if value != 0 and abs(value) < 0.01:
        mantissa, exponent = f"{value:.0e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:.2g}"


def run_name(number: int, sampled: dict[str, Any], limit: int = 6) -> str:
    """`t007 lr=3e-3 wd=1e-4 p=0.13 bn`: the trial number and up to `limit` sampled values,
    the regularization knobs first."""
    first = [k for k in NAME_ORDER if k in sampled]
    words = [f"t{number:03d}"]
    for name in (first + [k for k in sampled if k not in first])[:limit]:
        value = sampled[name]
        if name == "batch_norm":
            words.append("bn" if value else "no-bn")
        else:
            words.append(f"{SHORT.get(name, name)}={short(value)}")
    return " ".join(words)


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    """Log a flat mapping as params, 100 at a time (MLflow's batch limit)."""
    items = [Param(k, str(v)) for k, v in flatten(params).items()]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start : start + 100])


@dataclass
class TrialRecord:
    """What the study knows of one trial: its run, config, outcome and metric history."""

    trial_id: str
    number: int
    run_id: str
    name: str
    config: dict[str, Any]
    outcome: str = "running"
    error: str = ""
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        return len(self.history)

    @property
    def last(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


class MlflowTracker(tune.Callback):
    """Records each Ray trial as a child run nested under the study's parent run."""

    def __init__(
        self, tracking_uri: str, experiment_id: str, parent_run_id: str, sampled: list[str]
    ) -> None:
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.sampled = sampled
        self.records: dict[str, TrialRecord] = {}

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles callbacks with the experiment
        return {k: v for k, v in self.__dict__.items() if k != "client"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, client=MlflowClient(state["tracking_uri"]))

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self.records:  # a restarted trial keeps its run
            return
        number = len(self.records) + 1
        name = run_name(number, {k: trial.config[k] for k in self.sampled if k in trial.config})
        tags = {PARENT_TAG: self.parent_run_id, TRIAL_TAG: trial.trial_id, "outcome": "running"}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        log_params(self.client, run.info.run_id, trial.config)
        self.records[trial.trial_id] = TrialRecord(
            trial.trial_id, number, run.info.run_id, name, dict(trial.config)
        )

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        record = self.records[trial.trial_id]
        epoch = int(result["epoch"])
        if epoch <= record.epochs:  # already logged (a retried trial replaying epochs)
            return
        record.history.append({k: float(result[k]) for k in (*METRICS, "diverged") if k in result})
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, epoch) for k, v in record.history[-1].items()]
        self.client.log_batch(record.run_id, metrics=metrics)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record = self.records[trial.trial_id]
        if record.last.get("diverged"):
            record.error = (
                f"training loss blew up (NaN, inf or 100x chance) in epoch {record.epochs}"
            )
            self._finish(record, "diverged")
        elif record.epochs >= trial.config["epochs"]:
            self._finish(record, "completed")
        else:
            self._finish(record, "early_stopped")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record = self.records[trial.trial_id]
        error = Path(trial.error_file).read_text() if trial.error_file else "unknown error"
        record.error = error.strip().splitlines()[-1][:500]
        self._finish(record, "failed")

    def _finish(self, record: TrialRecord, outcome: str) -> None:
        record.outcome = outcome
        tags = [RunTag("outcome", outcome)]
        if outcome == "early_stopped":
            tags.append(RunTag("early_stopped_epoch", str(record.epochs)))
        if record.error:
            tags.append(RunTag("error", record.error))
        self.client.log_batch(record.run_id, tags=tags)
        self.client.set_terminated(record.run_id, STATUS[outcome])
