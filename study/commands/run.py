"""Runs a study: wires the core's layout and trial config, the searcher (Optuna), the
scheduler (ASHA), the tracker (MLflow) and the cluster (Ray) into one Tuner; resumes a study
whose driver died."""

import logging
import os
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

import pyarrow.fs
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.search import ConcurrencyLimiter
from rich.console import Console

from study.commands.preflight import Checked, check_resumable
from study.core import Layout, Stage, StudyState, driver, results, stage, standing, trial_dirname
from study.core.errors import UserError, already_exists
from study.engines import outages, records, stores
from study.engines import sampler as sampling
from study.engines.cluster import connect
from study.engines.logs import loud_engines, quiet_engines
from study.engines.progress import Progress
from study.engines.schedule import build_scheduler
from study.engines.search import build_searcher
from study.engines.tracking import MlflowTracker, StudyStopper
from study.engines.trial import trainable
from study.spec import StudySpec
from trainables import Data, fit


def trial_folder(trial: Any) -> str:
    """A short folder name per trial (Ray's default spells out the whole config)."""
    return trial_dirname(trial.trial_id)


def with_data(spec: StudySpec, data: Data, train: Callable[..., Any] = fit) -> Any:
    """The trainable with the data set in the object store and its resources attached;
    `train` is the training loop (benchmarks swap in one that only sleeps)."""
    every = spec.cluster.checkpoint_every
    extra = range(every, spec.scheduler.max_epochs + 1, every) if every else ()
    checkpoints = frozenset(spec.scheduler.rung_epochs()) | frozenset(extra)
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    wrapped = tune.with_parameters(trainable, data=data, checkpoint_epochs=checkpoints, train=train)
    return tune.with_resources(wrapped, resources)


def tune_config(spec: StudySpec, layout: Layout, searcher: Any) -> tune.TuneConfig:
    """How Tune runs a study's trials: `searcher` proposes them, the study's number at a time,
    its scheduler stops them, actors are reused (the benchmarks wire theirs here too)."""
    return tune.TuneConfig(
        metric=spec.metric,
        mode=spec.mode,
        search_alg=ConcurrencyLimiter(searcher, max_concurrent=spec.search.max_concurrent),
        scheduler=build_scheduler(spec, layout),
        num_samples=spec.search.num_samples,
        reuse_actors=True,
        trial_dirname_creator=trial_folder,
    )


def on_console(console: Console) -> None:
    """The study's console lines go to `console`: MLflow's own INFO lines stay off it, and a
    store that stops answering is said there (study.engines.outages)."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    outages.WATCH.say = lambda line: console.print(
        line, highlight=False, markup=False, soft_wrap=True
    )


def run_study(
    spec: StudySpec,
    root: Any,
    checked: Checked,
    console: Console,
    train: Callable[..., Any] = fit,
    replace: bool = False,
) -> list[dict[str, Any]]:
    """Run the study `spec` describes under `root` on the data preflight `checked`; return its
    results, best first. `train` is the training loop each trial runs (trainables.fit);
    `replace` drops an earlier study of the same name first."""
    on_console(console)
    layout = spec.layout(root)
    with driver.driving(layout):  # the name is this driver's: no other claims it meanwhile
        if replace:
            with driver.root_lock(layout):  # its stores may be new to this root
                stores.forget(layout)
        elif layout.spec_file.exists():
            raise UserError(already_exists(spec.name, root))
        state = StudyState(Stage.CREATED, spec.search.num_samples)
        stage.save(layout.stage_record, state)  # first: a saved spec always has a state
        stores.save_spec(layout, spec, checked.found)  # from here `study status` reads it
        with driver.root_lock(layout):  # the stores are made one at a time
            client, experiment_id = stores.open_records(layout)
        parent_id = stores.new_parent(client, experiment_id, spec, checked.found, checked.data)
        stage.save(layout.stage_record, state.at(Stage.STORES_MADE))
        return tune_study(spec, layout, checked, console, client, experiment_id, parent_id, train)


def tune_study(
    spec: StudySpec,
    layout: Layout,
    checked: Checked,
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
    records.set_view(client, experiment_id, spec.metric, sampled, bool(spec.dataset.cv_folds))
    tracker = MlflowTracker(
        client.tracking_uri, experiment_id, parent_id, sampled, spec.metric, spec.mode, resumed
    )
    progress = Progress(
        tracker, spec.metric, spec.mode, spec.search.num_samples, console, layout.stage_record
    )
    connect(spec)
    searcher = build_searcher(spec, layout, checked.found, resumed)
    tuner = tune.Tuner(
        with_data(spec, checked.data, train),
        tune_config=tune_config(spec, layout, searcher),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=layout.ray_storage,
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
    return finish(tuner, spec, layout, client, parent_id)


def resume_study(
    spec: StudySpec, root: Any, checked: Checked, console: Console
) -> list[dict[str, Any]]:
    """Continue a study whose driver stopped: same Optuna study, same MLflow runs, each
    unfinished trial from its last checkpoint, ASHA's rungs rebuilt from the Optuna storage.
    Where the study stands (its recorded state) decides how: a driver that died while Tune
    ran, after Tune saved its state, is restored from it; any other (before Tune saved a
    state, after its trials ended, a study that ended short) gets a new Tune run under the
    same parent run and Optuna study, which runs the trials still missing, each recorded
    once, up to the study's `search.num_samples`."""
    on_console(console)
    layout = spec.layout(root)
    with driver.driving(layout):
        state = check_resumable(spec, layout)
        with driver.root_lock(layout):  # the driver may have died before making the stores
            client, experiment_id = stores.open_records(layout)
        parent_id = records.parent_run(client, experiment_id)
        if parent_id is None:  # it died before making its parent run
            parent_id = stores.new_parent(client, experiment_id, spec, checked.found, checked.data)
        client.update_run(parent_id, status="RUNNING")
        records.repair_runs(client, experiment_id, parent_id, sampling.ended_trials(layout))
        path = str(layout.ray_experiment)
        restore = standing(spec.name, state, driven=False).resume == "restore"
        # a new step (no stop line); a driver killed before Tune starts leaves it restorable
        stage.save(
            layout.stage_record, state.at(Stage.TRIALS_STARTED if restore else Stage.STORES_MADE)
        )
        if not (restore and tune_saved(path)):
            return tune_study(
                spec, layout, checked, console, client, experiment_id, parent_id, resumed=True
            )
        connect(spec)
        trainable_ = with_data(spec, checked.data)
        tuner = tune.Tuner.restore(
            path, trainable=trainable_, resume_unfinished=True, resume_errored=False
        )
        return finish(tuner, spec, layout, client, parent_id)


def tune_saved(path: str) -> bool:
    """Whether Ray Tune saved a state of the experiment at `path` (a folder or a URI) that it
    can restore: its tuner and at least one experiment state. A tuner alone is what a driver
    killed before Tune's first save leaves; restoring it runs one trial and ends."""
    if "://" in path:
        filesystem, where = pyarrow.fs.FileSystem.from_uri(path)
    else:
        filesystem, where = pyarrow.fs.LocalFileSystem(), path
    found = filesystem.get_file_info(pyarrow.fs.FileSelector(where, allow_not_found=True))
    names = {PurePosixPath(info.path).name for info in found}
    return "tuner.pkl" in names and any(
        name.startswith("experiment_state-") and name.endswith(".json") for name in names
    )


def finish(
    tuner: tune.Tuner, spec: StudySpec, layout: Layout, client: MlflowClient, parent_id: str
) -> list[dict[str, Any]]:
    """Fit, then write the results table and close the parent run; returns the trials best
    first. The trials ended while a store is still down: StoreDown, the records kept as they
    are (`study resume` closes them once it answers)."""
    # A failed trial gets one line from Progress, not Ray's traceback on the console: the
    # traceback stays in the trial's folder (error.txt) and on its MLflow run. Ray's other
    # errors are one line each too, their tracebacks in the study's folder.
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    # Ctrl-C raises KeyboardInterrupt at once: the study is recorded as interrupted (Tune's
    # own handler would wind the trials down and return, as if the study had ended short).
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    quieted = quiet_engines(layout.errors_file)  # closing the study is quieted too
    try:
        try:
            tuner.fit()
        except BaseException as error:
            # A study stopped by a store that does not answer keeps the records it has:
            # `study resume` completes them (waiting here could be minutes of retries more).
            if not outages.WATCH.since:
                status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
                close(spec, layout, client, parent_id, status)
            raise
        stage.save(layout.stage_record, stage.load(layout.stage_record).at(Stage.TRIALS_ENDED))
        down = outages.still_down()
        if down is not None:
            raise down
        return close(spec, layout, client, parent_id, "FINISHED")
    finally:
        loud_engines(quieted)


def close(
    spec: StudySpec, layout: Layout, client: MlflowClient, parent_id: str, status: str
) -> list[dict[str, Any]]:
    """Write the results table (from MLflow, the record of every trial) and close the parent
    run as `status`; returns the trials best first. A study closed FINISHED is recorded as
    finished, or as ended short when fewer trials ended than it asked for."""
    experiment_id = client.get_run(parent_id).info.experiment_id
    trials = records.trial_runs(client, experiment_id, parent_id)
    table = results.rows(trials, spec.metric)
    results.save(layout, table)
    best = results.ranked(table, spec.metric, spec.mode)
    records.finish_parent(client, parent_id, table, best, layout.results_csv)
    client.set_terminated(parent_id, status)
    if status == "FINISHED":
        state = stage.counted(stage.load(layout.stage_record), trials, spec.metric, spec.mode)
        whole = state.ended >= spec.search.num_samples
        stage.save(layout.stage_record, state.at(Stage.FINISHED if whole else Stage.ENDED_SHORT))
    return best
