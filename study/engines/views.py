"""The study's view in the MLflow UI: the runs table's columns, shared on the experiment, and
links to it and to a run's page."""

import json
from typing import Any

from study.core.record import BEST_SO_FAR

VIEW_KEY = "study"  # the experiment's shared MLflow UI view: mlflow.sharedViewState.<key>


def set_view(records: Any, metric: str, params: list[str], folds: bool = False) -> None:
    """Store the study's runs-table view on the experiment of `records` (StudyRecords), as
    MLflow's UI shares views: the outcome, the metric (with `folds`, its mean over the folds
    and their spread), its best so far, the early-stopped epoch and the sampled params as
    columns. `runs_link` opens it."""
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
    key = f"mlflow.sharedViewState.{VIEW_KEY}"
    records.client.set_experiment_tag(records.experiment_id, key, state)


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
