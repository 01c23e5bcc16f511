"""Runs a study: data loaded once, Ray Tune trials proposed by Optuna, stopped by ASHA,
recorded in MLflow; returns the results table and writes it under the root folder."""

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any

import optuna
import ray
import yaml
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter
from rich.console import Console

from study import results
from study.progress import Progress
from study.search import build_searcher, optuna_storage_url
from study.spec import StudySpec
from study.tracking import (
    EXPERIMENT_KIND,
    MlflowTracker,
    log_params,
    open_experiment,
    store_uri,
)
from trainables import Dataset, fit


def trainable(config: dict[str, Any], data: Dataset) -> None:
    """One Ray trial: the plain training loop, reporting each epoch to Tune."""
    fit(config, data, lambda metrics, state: tune.report(metrics))


def trial_dirname(trial: Any) -> str:
    """A short folder name per trial (Ray's default spells out the whole config)."""
    return f"trial_{trial.trial_id}"


def tracking_uri(spec: StudySpec, root: Path) -> str:
    """The spec's tracking URI, or the SQLite store under the root folder."""
    return spec.tracking.uri or store_uri(root)


def scheduler(spec: StudySpec) -> FIFOScheduler:
    """ASHA over epochs (`training_iteration`), or FIFO when early stopping is off."""
    if spec.scheduler.name == "none":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=spec.scheduler.max_epochs,
        grace_period=spec.scheduler.grace_period,
        reduction_factor=spec.scheduler.reduction_factor,
    )


def forget(spec: StudySpec, root: Path) -> None:
    """Drop a previous study of the same name: its Optuna trials, MLflow runs and files."""
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=spec.name, storage=optuna_storage_url(root))
    client = MlflowClient(tracking_uri(spec, root))
    experiment = client.get_experiment_by_name(spec.tracking.experiment or spec.name)
    if experiment is not None:
        for run in client.search_runs([experiment.experiment_id], max_results=50000):
            client.delete_run(run.info.run_id)
    shutil.rmtree(results.study_dir(root, spec.name), ignore_errors=True)
    shutil.rmtree(root / "ray" / spec.name, ignore_errors=True)


def run_study(spec: StudySpec, root: Path, data: Dataset, console: Console) -> list[dict[str, Any]]:
    """Run the study `spec` describes on `data` under `root`; return its results, best first."""
    root.mkdir(parents=True, exist_ok=True)
    folder = results.study_dir(root, spec.name)
    folder.mkdir(parents=True, exist_ok=True)
    spec_yaml = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    (folder / "spec.yaml").write_text(spec_yaml)

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    client = MlflowClient(tracking_uri(spec, root))
    experiment_id = open_experiment(client, spec.tracking.experiment or spec.name, root)
    parent = client.create_run(
        experiment_id, run_name=spec.name, tags={"study.role": "parent", **EXPERIMENT_KIND}
    )
    parent_id = parent.info.run_id
    log_params(client, parent_id, {k: v for k, v in spec.model_dump().items() if k != "space"})
    client.log_text(parent_id, spec_yaml, "spec.yaml")

    tracker = MlflowTracker(
        client.tracking_uri, experiment_id, parent_id, sampled=list(spec.space.params)
    )
    progress = Progress(tracker, spec.metric, spec.mode, spec.search.num_samples, console)
    searcher = build_searcher(spec, optuna_storage_url(root))

    if not ray.is_initialized():
        ray.init(
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, data=data), resources),
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode=spec.mode,
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=spec.search.max_concurrent),
            scheduler=scheduler(spec),
            num_samples=spec.search.num_samples,
            reuse_actors=True,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=str(root / "ray"),
            verbose=0,
            callbacks=[tracker, progress],
        ),
    )
    status = "FAILED"
    try:
        tuner.fit()
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        table = results.rows(sorted(tracker.records.values(), key=lambda r: r.number), spec.metric)
        results.save(root, spec.name, table)
        finish_parent(client, parent_id, table, spec, folder)
        client.set_terminated(parent_id, status)
    return results.ranked(table, spec.metric, spec.mode)


def finish_parent(
    client: MlflowClient, parent_id: str, table: list[dict[str, Any]], spec: StudySpec, folder: Path
) -> None:
    """Log the best trial's metrics and config, and the results table, on the parent run."""
    client.log_artifact(parent_id, str(folder / "results.csv"))
    best = results.ranked(table, spec.metric, spec.mode)
    outcomes = [row["outcome"] for row in table]
    counts = {f"trials_{o}": float(outcomes.count(o)) for o in set(outcomes)}
    for key, value in counts.items():
        client.log_metric(parent_id, key, value)
    if not best:
        return
    top = best[0]
    for key, value in top["metrics"].items():
        client.log_metric(parent_id, f"best_{key}", value)
    client.set_tag(parent_id, "best_run_id", top["run_id"])
    client.set_tag(parent_id, "best_trial", top["run_name"])
    client.log_text(parent_id, yaml.safe_dump(top["config"], sort_keys=False), "best_config.yaml")
