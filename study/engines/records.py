"""A study's MLflow records, read and written without Ray: the experiment, the parent run,
one child run per trial (a `TrialRecord`), the crash repair and deletion. `study.engines.tracking`
writes the child runs while a study runs; `study status`, `report`, `export` read them here.
"""

import json
import math
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import mlflow.store.db.utils
import sqlalchemy
import yaml
from mlflow.entities import Param
from mlflow.exceptions import MlflowException
from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.tracking import MlflowClient

from study.core import Layout, Outcome, label
from study.core.driver import stores_made
from trainables.plugins import is_plugin

EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "trial"  # the trial number, stable across resumes
RAY_TRIAL_TAG = "ray.trial_id"
# The MLflow run status of each outcome.
STATUS = {
    Outcome.COMPLETED: "FINISHED",
    Outcome.PATIENCE_STOPPED: "FINISHED",
    Outcome.EARLY_STOPPED: "KILLED",
    Outcome.FAILED: "FAILED",
    Outcome.DIVERGED: "FAILED",
}
BEST_SO_FAR = "best_so_far"  # per child run and epoch: the best metric value up to that epoch
VIEW_KEY = "study"  # the experiment's shared MLflow UI view: mlflow.sharedViewState.<key>
NAME_ORDER = ("lr", "weight_decay", "dropout", "batch_norm", "l1", "optimizer")
SHORT = {"weight_decay": "wd", "dropout": "p", "momentum": "m", "batch_norm": "bn"}


def seed_local_store(tracking_uri: str, cache: Path) -> None:
    """Make a new local SQLite store as a copy of the empty one MLflow made once for this MLflow
    version, kept in `cache`. MLflow makes a store's tables by running every schema migration
    since its first: about a second of CPU and two of commits on every new root's first study;
    the copy takes milliseconds. The copy holds tables only; MLflow opens it before it is put in
    place and adds its Default experiment as it does to a store it made, so a reader never finds
    a store that its opening would change. Any failure leaves the making to MLflow (call it
    under the root's lock)."""
    path = tracking_uri.removeprefix("sqlite:///")
    if not tracking_uri.startswith("sqlite:///") or "?" in path or Path(path).exists():
        return
    store, empty = Path(path), cache / f"mlflow-{mlflow.__version__}.db"
    made = cache / f".{empty.name}.{os.getpid()}.new"
    aside = store.with_name(f".{store.name}.new")
    try:
        if not empty.exists():
            cache.mkdir(parents=True, exist_ok=True)
            engine = sqlalchemy.create_engine(f"sqlite:///{made}")
            try:  # MLflow's own table making (private: mlflow < 3.18, test_engine_internals)
                mlflow.store.db.utils._initialize_tables(engine)
            finally:
                engine.dispose()
            made.replace(empty)  # whole, or not there
        store.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(empty, aside)
        opened = SqlAlchemyStore(f"sqlite:///{aside}", DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)
        opened.engine.dispose()
        aside.replace(store)
    except (OSError, sqlalchemy.exc.SQLAlchemyError, MlflowException):
        pass
    finally:
        made.unlink(missing_ok=True)
        aside.unlink(missing_ok=True)


def open_experiment(client: MlflowClient, layout: Layout) -> str:
    """The id of the study's experiment, created (artifacts under the root) and tagged if new."""
    experiment = client.get_experiment_by_name(layout.experiment)
    if experiment is not None:
        return experiment.experiment_id
    location = layout.artifacts.as_uri() if layout.local_tracking else None
    return client.create_experiment(
        layout.experiment, artifact_location=location, tags=EXPERIMENT_KIND
    )


def find_experiment(client: MlflowClient, layout: Layout) -> str | None:
    """The id of the study's experiment, None when there is none yet."""
    experiment = client.get_experiment_by_name(layout.experiment)
    return experiment.experiment_id if experiment is not None else None


def better(old: float, new: float, mode: str) -> bool:
    """Whether `old` beats `new` under `mode` (max or min); NaN beats nothing."""
    return old > new if mode == "max" else old < new


def set_view(
    client: MlflowClient, experiment_id: str, metric: str, params: list[str], folds: bool = False
) -> None:
    """Store the study's runs-table view on the experiment, as MLflow's UI shares views: the
    outcome, the metric (with `folds`, its mean over the folds and their spread), its best so
    far, the early-stopped epoch and the sampled params as columns. `runs_link` opens it."""
    columns = [
        "tags.`outcome`",
        f"metrics.`{metric}`",
        *([f"metrics.`{metric}_std`"] if folds else []),
        f"metrics.`{BEST_SO_FAR}`",
        "tags.`early_stopped_epoch`",
        *(["metrics.`best_epoch`", "metrics.`stopped_epoch`"] if "patience" in params else []),
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


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """A run's page in the MLflow UI's model-training view (without `workflowType` MLflow 3
    opens it in its GenAI view): on the tracking server, or on `study ui`'s default port for a
    local store."""
    base = tracking_uri if tracking_uri.startswith("http") else "http://127.0.0.1:5000"
    page = f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{page}?workflowType=machine_learning"


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
    words = [label(number)]
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

    number: int  # study.core.from_optuna: the trial's name everywhere, across resumes
    run_id: str
    name: str
    config: dict[str, Any]
    outcome: str = Outcome.RUNNING.value
    error: str = ""
    epochs: int = 0
    last: dict[str, float] = field(default_factory=dict)
    node: str = ""
    best: float = math.nan  # the best value of the study's metric over the epochs so far
    sized: bool = False  # whether the run has its model's `num_params` param

    @property
    def label(self) -> str:
        return label(self.number)


def record_of(run: Any) -> TrialRecord:
    """The record a trial's child run holds."""
    tags = run.data.tags
    return TrialRecord(
        int(tags[TRIAL_TAG]),
        run.info.run_id,
        run.info.run_name,
        json.loads(tags["config"]),
        tags.get("outcome", Outcome.RUNNING.value),
        tags.get("error", ""),
        int(tags.get("epochs", 0)),
        dict(run.data.metrics),
        tags.get("node_id", ""),
        sized="num_params" in run.data.params,
    )


def child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[Any]:
    """Every trial's child run of a study's parent run (not the runs of `study ablate` and
    `study confirm` nested beside them, which carry no trial number)."""
    query = f"tags.`{PARENT_TAG}` = '{parent_run_id}'"
    runs = client.search_runs([experiment_id], filter_string=query, max_results=50000)
    return [run for run in runs if TRIAL_TAG in run.data.tags]


def trial_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[TrialRecord]:
    """Every child run of a study's parent run as a record, by trial number."""
    records = [record_of(run) for run in child_runs(client, experiment_id, parent_run_id)]
    return sorted(records, key=lambda r: r.number)


def parent_run(client: MlflowClient, experiment_id: str) -> str | None:
    """The id of the newest parent run of a study's experiment."""
    runs = client.search_runs(
        [experiment_id],
        filter_string="tags.`study.role` = 'parent'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def reading_client(tracking_uri: str) -> MlflowClient | None:
    """A client of the store at `tracking_uri`, None for a local store that does not exist
    (MLflow's client makes one when it opens it)."""
    store = tracking_uri.removeprefix("sqlite:///")
    if tracking_uri.startswith("sqlite:") and not Path(store).exists():
        return None
    return MlflowClient(tracking_uri)


def study_records(layout: Layout) -> tuple[MlflowClient | None, str | None, str | None]:
    """The client, the experiment id and the parent run id of a study, reading only: None
    where the study has none (yet). A local store that does not exist is not made (MLflow's
    client makes one when it opens it)."""
    with stores_made(layout):  # a store another driver is making is opened once made
        client = reading_client(layout.tracking_uri)
    if client is None:
        return None, None, None
    experiment_id = find_experiment(client, layout)
    parent_id = experiment_id and parent_run(client, experiment_id)
    return client, experiment_id, parent_id


def new_parent(
    client: MlflowClient,
    experiment_id: str,
    name: str,
    params: dict[str, Any],
    spec_text: str,
    found: dict[str, Any],
) -> str:
    """A new parent run for study `name`, holding its spec (`params` and the file) and what
    preflight found of its data and model; returns its id."""
    parent = client.create_run(
        experiment_id, run_name=name, tags={"study.role": "parent", **EXPERIMENT_KIND}
    )
    parent_id = parent.info.run_id
    log_params(client, parent_id, {**params, "found": found})
    client.log_text(parent_id, spec_text, "spec.yaml")
    client.log_text(parent_id, yaml.safe_dump(found, sort_keys=False), "found.yaml")
    return parent_id


def finish_parent(
    client: MlflowClient, parent_id: str, table: list[dict[str, Any]], best: list[dict], csv: Path
) -> None:
    """Log the results table, the trials per outcome and the best trial's metrics and config
    on the parent run."""
    client.log_artifact(parent_id, str(csv))
    outcomes = [row["outcome"] for row in table]
    for outcome in set(outcomes):
        client.log_metric(parent_id, f"trials_{outcome}", float(outcomes.count(outcome)))
    if not best:
        return
    top = best[0]
    for key, value in top["metrics"].items():
        client.log_metric(parent_id, f"best_{key}", value)
    client.set_tag(parent_id, "best_run_id", top["run_id"])
    client.set_tag(parent_id, "best_trial", top["run_name"])
    client.log_text(parent_id, yaml.safe_dump(top["config"], sort_keys=False), "best_config.yaml")


def repair_runs(
    client: MlflowClient, experiment_id: str, parent_id: str, ended: dict[int, tuple[str, int]]
) -> None:
    """Close the runs of trials that ended (`ended`: trial number -> outcome and epochs, as
    Optuna recorded them) whose MLflow run a dead driver did not get to close."""
    for run in child_runs(client, experiment_id, parent_id):
        number = int(run.data.tags[TRIAL_TAG])
        if number not in ended or run.info.status != "RUNNING":
            continue
        outcome, epochs = ended[number]
        outcome = Outcome(outcome or run.data.tags.get("outcome") or Outcome.FAILED)
        if outcome == Outcome.RUNNING:  # the driver died before Optuna knew why
            outcome = Outcome.FAILED
        client.set_tag(run.info.run_id, "outcome", outcome.value)
        client.set_tag(run.info.run_id, "epochs", str(epochs))
        if outcome == Outcome.EARLY_STOPPED:
            client.set_tag(run.info.run_id, "early_stopped_epoch", str(epochs))
        client.set_terminated(run.info.run_id, STATUS[outcome])


def delete_runs(layout: Layout) -> None:
    """Delete every run of the study's experiment (`run --replace`)."""
    client = MlflowClient(layout.tracking_uri)
    experiment_id = find_experiment(client, layout)
    if experiment_id is not None:
        for run in client.search_runs([experiment_id], max_results=50000):
            client.delete_run(run.info.run_id)
