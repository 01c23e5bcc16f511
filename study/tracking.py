"""MLflow records of a study: one parent run, one nested child run per Ray trial.

The tracker is a Ray Tune callback, so it runs in the driver: only one process writes to the
store, and each Tune result (one or more epochs) costs one batched `log_batch` call.
"""

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

from trainables import METRICS
from trainables.plugins import is_plugin

EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "trial"  # the trial number, stable across resumes
RAY_TRIAL_TAG = "ray.trial_id"
OUTCOMES = ("completed", "early_stopped", "failed", "diverged")
STATUS = {
    "completed": "FINISHED",
    "early_stopped": "KILLED",
    "failed": "FAILED",
    "diverged": "FAILED",
}
BEST_SO_FAR = "best_so_far"  # per child run and epoch: the best metric value up to that epoch
VIEW_KEY = "study"  # the experiment's shared MLflow UI view: mlflow.sharedViewState.<key>
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


def better(old: float, new: float, mode: str) -> bool:
    """Whether `old` beats `new` under `mode` (max or min); NaN beats nothing."""
    return old > new if mode == "max" else old < new


def set_view(client: MlflowClient, experiment_id: str, metric: str, params: list[str]) -> None:
    """Store the study's runs-table view on the experiment, as MLflow's UI shares views: the
    outcome, the metric, its best so far, the early-stopped epoch and the sampled params as
    columns. `runs_link` opens it."""
    columns = [
        "tags.`outcome`",
        f"metrics.`{metric}`",
        f"metrics.`{BEST_SO_FAR}`",
        "tags.`early_stopped_epoch`",
        "metrics.`gap`",
        *(f"params.`{p}`" for p in params),
    ]
    state = json.dumps({"selectedColumns": list(dict.fromkeys(columns))})
    client.set_experiment_tag(experiment_id, f"mlflow.sharedViewState.{VIEW_KEY}", state)


def runs_link(base_url: str, experiment_id: str, view: bool = True) -> str:
    """The MLflow UI page of an experiment's runs in the model-training view, with the study's
    columns when `view` (the experiment has the view `set_view` stores)."""
    query = f"viewStateShareKey={VIEW_KEY}&" if view else ""
    base = base_url.rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs?{query}workflowType=machine_learning"


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


def log_dataset(client: MlflowClient, run_id: str, dataset: dict[str, Any], data: Any) -> None:
    """Record the study's data set on `run_id` as an MLflow dataset input: its name, where it
    comes from (a folder or file, else the loader), its split sizes and a digest."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    where = dataset.get("root") or dataset.get("path")
    if where:
        with warnings.catch_warnings():  # MLflow finds two names for a local path
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(str(Path(where).resolve()))
    else:
        name = dataset["name"]
        loader = name if is_plugin(name) else f"built-in {name}"
        source = CodeDatasetSource(tags={"loader": loader})
    sizes = data.sizes()
    meta = MetaDataset(source, name=dataset["name"], digest=data.digest())
    tags = [InputTag("mlflow.data.context", "training")]
    tags += [InputTag(f"{split}_examples", str(count)) for split, count in sizes.items()]
    if dataset.get("placement"):
        tags.append(InputTag("placement", dataset["placement"]))
    client.log_inputs(run_id, datasets=[DatasetInput(meta._to_mlflow_entity(), tags=tags)])


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    """Log a flat mapping as params, 100 at a time (MLflow's batch limit)."""
    items = [Param(k, str(v)) for k, v in flatten(params).items()]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start : start + 100])


@dataclass
class TrialRecord:
    """What the study knows of one trial: its run, config, outcome and latest metrics."""

    number: int  # Optuna's trial number + 1: the trial's name everywhere, across resumes
    run_id: str
    name: str
    config: dict[str, Any]
    outcome: str = "running"
    error: str = ""
    epochs: int = 0
    last: dict[str, float] = field(default_factory=dict)
    node: str = ""
    best: float = math.nan  # the best value of the study's metric over the epochs so far
    sized: bool = False  # whether the run has its model's `num_params` param


def trial_number(trial: Any) -> int:
    """A Ray trial's number: its Optuna trial's number + 1."""
    return int(trial.config["optuna_trial"]) + 1


class MlflowTracker(tune.Callback):
    """Records each Ray trial as a child run nested under the study's parent run.

    A restored tracker (a resumed study) looks each trial's run up by the trial's number before
    it makes one, so a resumed trial keeps its run; epochs already logged are not logged again,
    and a trial that already ended is left as it ended. A new study's tracker (`resumed`
    False) has a parent run with no children yet, so it makes runs without looking.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        sampled: list[str],
        metric: str = "val_acc",
        mode: str = "max",
        resumed: bool = False,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.metric, self.mode = metric, mode
        self.client = MlflowClient(tracking_uri)
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.sampled = sampled
        self.records: dict[int, TrialRecord] = {}
        self.resumed = resumed

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles callbacks with the experiment
        return {k: v for k, v in self.__dict__.items() if k not in ("client", "records")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        client = MlflowClient(state["tracking_uri"])
        self.__dict__.update(state, client=client, records={}, resumed=True)

    def record(self, trial: Any) -> TrialRecord:
        """The record of `trial`: known, found in MLflow, or made with a new child run."""
        number = trial_number(trial)
        if number not in self.records:
            found = self._find(number) if self.resumed else None
            self.records[number] = found or self._create(number, trial)
        return self.records[number]

    def finished(self, trial: Any) -> bool:
        """Whether `trial` already has its outcome (a resumed trial Ray thought was running)."""
        return self.record(trial).outcome != "running"

    def _create(self, number: int, trial: Any) -> TrialRecord:
        config = trial.config
        name = run_name(number, {k: config[k] for k in self.sampled if k in config})
        tags = {
            PARENT_TAG: self.parent_run_id,
            TRIAL_TAG: str(number),
            RAY_TRIAL_TAG: trial.trial_id,
            "outcome": "running",
            "config": json.dumps(config),
        }
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        log_params(self.client, run.info.run_id, config)
        return TrialRecord(number, run.info.run_id, name, dict(config))

    def _find(self, number: int) -> TrialRecord | None:
        query = f"tags.`{PARENT_TAG}` = '{self.parent_run_id}' and tags.`{TRIAL_TAG}` = '{number}'"
        runs = self.client.search_runs([self.experiment_id], filter_string=query, max_results=1)
        if not runs:
            return None
        record = record_of(runs[0])
        if len(runs[0].data.params) < len(flatten(record.config)):
            # The driver died between making the run and logging its params.
            log_params(self.client, record.run_id, record.config)
        # The epochs logged so far (the `epochs` tag is written only when the trial ends).
        steps = [m.step for m in self.client.get_metric_history(record.run_id, "val_acc")]
        record.epochs = max(steps, default=0)
        record.best = record.last.get(BEST_SO_FAR, math.nan)
        return record

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.record(trial)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        record = self.record(trial)
        # A result carries the epochs since the previous one (`history`); epochs replayed
        # from a checkpoint were logged already, and an ended trial is left as it ended.
        epochs = [m for m in result.get("history") or [result] if int(m["epoch"]) > record.epochs]
        if record.outcome != "running" or not epochs:
            return
        metrics = []
        for epoch_metrics in epochs:
            epoch = int(epoch_metrics["epoch"])
            record.epochs = epoch
            record.last = {
                k: float(epoch_metrics[k]) for k in (*METRICS, "diverged") if k in epoch_metrics
            }
            value = record.last.get(self.metric, math.nan)
            if math.isfinite(value) and not (better(record.best, value, self.mode)):
                record.best = value
            when = int(epoch_metrics.get("wall_time", time.time()) * 1000)
            metrics += [Metric(k, v, when, epoch) for k, v in record.last.items()]
            if math.isfinite(record.best):
                metrics.append(Metric(BEST_SO_FAR, record.best, when, epoch))
        params = []
        if "num_params" in result and not record.sized:  # the trial built its model
            params, record.sized = [Param("num_params", str(int(result["num_params"])))], True
        tags = []
        if result.get("node_id") and result["node_id"] != record.node:
            record.node = result["node_id"]
            tags = [
                RunTag("node_id", record.node),
                RunTag("node_ip", str(result.get("node_ip", ""))),
                RunTag("hostname", str(result.get("hostname", ""))),
                RunTag("device", str(result.get("device", ""))),
            ]
        for start in range(0, len(metrics), 1000):  # MLflow's limit per batch
            first = not start
            self.client.log_batch(
                record.run_id,
                metrics=metrics[start : start + 1000],
                params=params if first else [],
                tags=tags if first else [],
            )

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record = self.record(trial)
        self.client.set_tag(record.run_id, "retries", str(trial.num_failures))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record = self.record(trial)
        if record.outcome != "running":
            return
        value = record.last.get(self.metric, 0.0)
        if record.last.get("diverged"):
            record.error = (
                f"training loss blew up (a batch NaN, inf or 100x chance) in epoch {record.epochs}"
            )
            self._finish(record, "diverged")
        elif not math.isfinite(value):
            record.error = f"{self.metric} was {value} in epoch {record.epochs}"
            self._finish(record, "diverged")
        elif record.epochs >= trial.config["epochs"]:
            self._finish(record, "completed")
        else:
            self._finish(record, "early_stopped")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record = self.record(trial)
        if record.outcome != "running":
            return
        record.error = last_error(trial)
        if trial.error_file and Path(trial.error_file).exists():
            # the full traceback stays in the trial's folder and goes on its run
            self.client.log_artifact(record.run_id, trial.error_file)
        self._finish(record, "failed")

    def _finish(self, record: TrialRecord, outcome: str) -> None:
        record.outcome = outcome
        tags = [RunTag("outcome", outcome), RunTag("epochs", str(record.epochs))]
        if outcome == "early_stopped":
            tags.append(RunTag("early_stopped_epoch", str(record.epochs)))
        if record.error:
            tags.append(RunTag("error", record.error))
        self.client.log_batch(record.run_id, tags=tags)
        self.client.set_terminated(record.run_id, STATUS[outcome])


def last_error(trial: Any) -> str:
    """The error type and message of a Ray trial's last failure (its traceback's last line)."""
    if not trial.error_file or not Path(trial.error_file).exists():
        return "unknown error"
    lines = Path(trial.error_file).read_text().strip().splitlines()
    return lines[-1][:500] if lines else "unknown error"


def record_of(run: Any) -> TrialRecord:
    """The record a trial's child run holds."""
    tags = run.data.tags
    return TrialRecord(
        int(tags[TRIAL_TAG]),
        run.info.run_id,
        run.info.run_name,
        json.loads(tags["config"]),
        tags.get("outcome", "running"),
        tags.get("error", ""),
        int(tags.get("epochs", 0)),
        dict(run.data.metrics),
        tags.get("node_id", ""),
        sized="num_params" in run.data.params,
    )


def child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[Any]:
    """Every child run of a study's parent run."""
    query = f"tags.`{PARENT_TAG}` = '{parent_run_id}'"
    return client.search_runs([experiment_id], filter_string=query, max_results=50000)


def trial_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[TrialRecord]:
    """Every child run of a study's parent run as a record, by trial number."""
    records = [record_of(run) for run in child_runs(client, experiment_id, parent_run_id)]
    return sorted(records, key=lambda r: r.number)


class StudyStopper(tune.Stopper):
    """Stops a trial whose study metric is not finite (NaN or infinity: it ends as diverged),
    and, at its first result, a trial that had already ended before a resume."""

    def __init__(self, tracker: MlflowTracker) -> None:
        self.tracker = tracker

    def __call__(self, trial_id: str, result: dict) -> bool:
        if not math.isfinite(result.get(self.tracker.metric, 0.0)):
            return True
        number = int(result["config"]["optuna_trial"]) + 1
        record = self.tracker.records.get(number)
        return record is not None and record.outcome != "running"

    def stop_all(self) -> bool:
        return False
