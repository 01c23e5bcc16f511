"""Runs a study: data loaded once, Ray Tune trials proposed by Optuna, stopped by ASHA,
checkpointed at the rungs, recorded in MLflow; resumes one whose driver died."""

import contextlib
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import ray
import yaml
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.search import ConcurrencyLimiter
from rich.console import Console

from study import driver, results
from study.errors import UserError
from study.preflight import already_exists
from study.progress import Progress
from study.schedule import build_scheduler, rung_epochs
from study.search import Storage, build_searcher, optuna_storage_url
from study.spec import StudySpec
from study.tracking import (
    EXPERIMENT_KIND,
    STATUS,
    TRIAL_TAG,
    MlflowTracker,
    StudyStopper,
    child_runs,
    log_dataset,
    log_params,
    open_experiment,
    set_view,
    store_uri,
    trial_runs,
)
from study.trial import trainable
from trainables import Dataset, fit
from trainables.plugins import source_file


class _NoTrialList(logging.Filter):
    """Drops Tune's closing "Trials did not complete: [trainable_...]": Progress has said,
    trial by trial, which failed and why."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Trials did not complete")


_NO_TRIAL_LIST = _NoTrialList()


def trial_dirname(trial: Any) -> str:
    """A short folder name per trial (Ray's default spells out the whole config)."""
    return f"trial_{trial.trial_id}"


def tracking_uri(spec: StudySpec, root: Path) -> str:
    """The spec's tracking URI, or the SQLite store under the root folder."""
    return spec.tracking.uri or store_uri(root)


def storage_path(spec: StudySpec, root: Path) -> str:
    """Where Ray keeps experiment state and checkpoints: the spec's storage or <root>/ray."""
    return spec.cluster.storage or str(root / "ray")


def runtime_env(spec: StudySpec) -> dict[str, Any]:
    """Ray's runtime_env for the study's job: its plug-ins' modules (a file, or a package's
    folder) shipped to every worker, which imports them from there (`py_modules`)."""
    found = (source_file(name, spec.code_dir) for name in spec.plugins())
    modules = sorted({str(path) for path in found if path is not None})
    return {"py_modules": modules} if modules else {}


def connect(spec: StudySpec) -> None:
    """Attach to the spec's Ray cluster, or start a local Ray (once per process); the
    study's plug-ins travel with it to every node."""
    if ray.is_initialized():
        return
    options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    if env := runtime_env(spec):
        options["runtime_env"] = env
    if spec.cluster.address:
        ray.init(address=spec.cluster.address, **options)
    else:
        ray.init(address="local", include_dashboard=False, **options)


def with_data(spec: StudySpec, data: Dataset, train: Callable[..., Any] = fit) -> Any:
    """The trainable with the data set in the object store and its resources attached;
    `train` is the training loop (benchmarks swap in one that only sleeps)."""
    every = spec.cluster.checkpoint_every
    extra = range(every, spec.scheduler.max_epochs + 1, every) if every else ()
    checkpoints = frozenset(rung_epochs(spec)) | frozenset(extra)
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    wrapped = tune.with_parameters(trainable, data=data, checkpoint_epochs=checkpoints, train=train)
    return tune.with_resources(wrapped, resources)


def forget(spec: StudySpec, root: Path) -> None:
    """Drop a previous study of the same name: its Optuna trials, MLflow runs and files (not
    the driver's lock, which the caller holds)."""
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=spec.name, storage=optuna_storage_url(spec, root))
    client = MlflowClient(tracking_uri(spec, root))
    experiment = client.get_experiment_by_name(spec.tracking.experiment or spec.name)
    if experiment is not None:
        for run in client.search_runs([experiment.experiment_id], max_results=50000):
            client.delete_run(run.info.run_id)
    for path in results.study_dir(root, spec.name).iterdir():
        if path.name not in (driver.LOCK, driver.RECORD):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    shutil.rmtree(Path(storage_path(spec, root)) / spec.name, ignore_errors=True)


def run_study(
    spec: StudySpec,
    root: Path,
    data: Dataset,
    console: Console,
    train: Callable[..., Any] = fit,
    replace: bool = False,
) -> list[dict[str, Any]]:
    """Run the study `spec` describes on `data` under `root`; return its results, best first.
    `train` is the training loop each trial runs (trainables.fit); `replace` drops an earlier
    study of the same name first."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    with driver.driving(root, spec.name):
        with driver.root_lock(root):  # the name is claimed and the stores made one at a time
            folder = results.study_dir(root, spec.name)
            if replace:
                forget(spec, root)
            elif (folder / "spec.yaml").exists():
                raise UserError(already_exists(spec.name, root))
            (folder / "spec.yaml").write_text(spec_text(spec))
            client, experiment_id = open_records(spec, root)
        parent_id = new_parent(client, experiment_id, spec, data)
        return tune_study(spec, root, data, console, client, experiment_id, parent_id, train)


def spec_text(spec: StudySpec) -> str:
    """The resolved spec as YAML: saved in the study's folder and on its parent run."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)


def open_records(spec: StudySpec, root: Path) -> tuple[MlflowClient, str]:
    """The MLflow client and the study's experiment id, the stores made if new (call it under
    the root's lock)."""
    client = MlflowClient(tracking_uri(spec, root))
    experiment_id = open_experiment(client, spec.tracking.experiment or spec.name, root)
    Storage(optuna_storage_url(spec, root))  # creates the schema of a new storage
    return client, experiment_id


def new_parent(client: MlflowClient, experiment_id: str, spec: StudySpec, data: Any) -> str:
    """A new parent run for the study, holding its spec and its data set (as an MLflow
    dataset input); returns its id."""
    parent = client.create_run(
        experiment_id, run_name=spec.name, tags={"study.role": "parent", **EXPERIMENT_KIND}
    )
    parent_id = parent.info.run_id
    log_params(client, parent_id, {k: v for k, v in spec.model_dump().items() if k != "space"})
    client.log_text(parent_id, spec_text(spec), "spec.yaml")
    log_dataset(client, parent_id, spec.dataset.model_dump(exclude_none=True), data)
    return parent_id


def tune_study(
    spec: StudySpec,
    root: Path,
    data: Dataset,
    console: Console,
    client: MlflowClient,
    experiment_id: str,
    parent_id: str,
    train: Callable[..., Any] = fit,
    resumed: bool = False,
) -> list[dict[str, Any]]:
    """Run the study's trials with a new Tuner under the parent run `parent_id`; `resumed`
    when earlier drivers may have made trials (Optuna trials and MLflow runs are then looked
    up before new ones are made)."""
    sampled = list(spec.space.params)
    set_view(client, experiment_id, spec.metric, sampled)
    tracker = MlflowTracker(
        client.tracking_uri, experiment_id, parent_id, sampled, spec.metric, spec.mode, resumed
    )
    progress = Progress(tracker, spec.metric, spec.mode, spec.search.num_samples, console)
    storage_url = optuna_storage_url(spec, root)
    connect(spec)
    searcher = build_searcher(spec, storage_url, resumed)
    tuner = tune.Tuner(
        with_data(spec, data, train),
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode=spec.mode,
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=spec.search.max_concurrent),
            scheduler=build_scheduler(spec, storage_url),
            num_samples=spec.search.num_samples,
            reuse_actors=True,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=storage_path(spec, root),
            verbose=0,
            callbacks=[tracker, progress],
            stop=StudyStopper(tracker),
            failure_config=tune.FailureConfig(max_failures=spec.cluster.max_failures),
            # Two, not one: keeping one, Tune saves the whole experiment's state after each
            # trial's checkpoint (its state must not name a deleted one), which grows with the
            # trials: 303 saves in a 300-trial study, 24 ms each (benchmarks/RESULTS.md, scale).
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )
    return finish(tuner, spec, root, client, experiment_id, parent_id)


def parent_run(client: MlflowClient, experiment_id: str) -> str | None:
    """The id of the newest parent run of a study's experiment."""
    runs = client.search_runs(
        [experiment_id],
        filter_string="tags.`study.role` = 'parent'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def resume_study(
    spec: StudySpec, root: Path, data: Dataset, console: Console
) -> list[dict[str, Any]]:
    """Continue a study whose driver stopped: same Optuna study, same MLflow runs, each
    unfinished trial from its last checkpoint, ASHA's rungs rebuilt from the Optuna storage.
    A driver that died before Ray saved any state leaves nothing to restore: the trials then
    start anew under the same parent run and Optuna study, each still recorded once."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    with driver.driving(root, spec.name):
        with driver.root_lock(root):  # the driver may have died before making the stores
            client, experiment_id = open_records(spec, root)
        parent_id = parent_run(client, experiment_id)
        if parent_id is None:  # it died before making its parent run
            parent_id = new_parent(client, experiment_id, spec, data)
        client.update_run(parent_id, status="RUNNING")
        storage_url = optuna_storage_url(spec, root)
        repair_runs(client, experiment_id, parent_id, spec.name, storage_url)
        path = Path(storage_path(spec, root)) / spec.name
        if not tune.Tuner.can_restore(str(path)):
            return tune_study(
                spec, root, data, console, client, experiment_id, parent_id, resumed=True
            )
        connect(spec)
        tuner = tune.Tuner.restore(
            str(path), trainable=with_data(spec, data), resume_unfinished=True, resume_errored=False
        )
        return finish(tuner, spec, root, client, experiment_id, parent_id)


def repair_runs(
    client: MlflowClient, experiment_id: str, parent_id: str, name: str, storage_url: str
) -> None:
    """Close the runs of trials that Optuna saw end but whose MLflow run the dead driver did
    not get to close, with the outcome Optuna recorded."""
    try:
        trials = {
            t.number + 1: t for t in optuna.load_study(study_name=name, storage=storage_url).trials
        }
    except KeyError:
        return
    for run in child_runs(client, experiment_id, parent_id):
        trial = trials.get(int(run.data.tags[TRIAL_TAG]))
        if trial is None or not trial.state.is_finished() or run.info.status != "RUNNING":
            continue
        outcome = trial.user_attrs.get("outcome") or run.data.tags.get("outcome", "failed")
        epochs = str(len(trial.intermediate_values))
        client.set_tag(run.info.run_id, "outcome", outcome)
        client.set_tag(run.info.run_id, "epochs", epochs)
        if outcome == "early_stopped":
            client.set_tag(run.info.run_id, "early_stopped_epoch", epochs)
        client.set_terminated(run.info.run_id, STATUS[outcome])


def finish(
    tuner: tune.Tuner,
    spec: StudySpec,
    root: Path,
    client: MlflowClient,
    experiment_id: str,
    parent_id: str,
) -> list[dict[str, Any]]:
    """Fit, then write the results table (from MLflow, the record of every trial) and close
    the parent run; returns the trials best first."""
    # A failed trial gets one line from Progress, not Ray's traceback on the console: the
    # traceback stays in the trial's folder (error.txt) and on its MLflow run.
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    logging.getLogger("ray.tune.tune").addFilter(_NO_TRIAL_LIST)
    status = "FAILED"
    try:
        tuner.fit()
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        records = trial_runs(client, experiment_id, parent_id)
        table = results.rows(records, spec.metric)
        folder = results.study_dir(root, spec.name)
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
