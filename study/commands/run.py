"""`study run` and `study resume`: the core's layout and trial config, the searcher (Optuna),
the scheduler (ASHA), the tracker (MLflow) and the cluster (Ray) wired into one Tuner; a study
whose driver stopped is resumed from where its recorded state says it stands."""

import pickle
from collections.abc import Callable
from dataclasses import replace
from pathlib import PurePosixPath
from typing import Any

import pyarrow.fs
from ray import tune
from rich.console import Console

from study.commands.preflight import Checked, check_resumable
from study.core import Layout, Stage, StudyState, driver, results, stage, standing
from study.core.errors import UserError, already_exists
from study.core.record import TrialRecord, ranked
from study.engines import outages, storage, stores, warm_start
from study.engines.cluster import connect
from study.engines.outages import brief
from study.engines.progress import Progress
from study.engines.records import StudyRecords
from study.engines.search import build_searcher
from study.engines.terminate import stopped_after
from study.engines.tracking import MlflowTracker, StudyStopper
from study.engines.tuner import on_console, quiet, run_config, tune_config, with_data
from study.engines.views import set_view
from study.spec import StudySpec
from trainables import fit


def run_study(
    spec: StudySpec,
    root: Any,
    checked: Checked,
    console: Console,
    train: Callable[..., Any] = fit,
    replace: bool = False,
) -> list[TrialRecord]:
    """Run the study `spec` describes under `root` on the data preflight `checked`; return its
    trials, best first. `train` is the training loop each trial runs (trainables.fit);
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
            records = stores.open_records(layout)
        stores.new_parent(records, spec, checked.found, checked.data)
        stage.save(layout.stage_record, state.at(Stage.STORES_MADE))
        return tune_study(spec, layout, checked, console, records, train)


def tune_study(
    spec: StudySpec,
    layout: Layout,
    checked: Checked,
    console: Console,
    records: StudyRecords,
    train: Callable[..., Any] = fit,
    resumed: bool = False,
) -> list[TrialRecord]:
    """Run the study's trials with a new Tuner under its parent run; `resumed` when earlier
    drivers may have made trials (Optuna trials and MLflow runs are then looked up before new
    ones are made)."""
    sampled = list(spec.space.params)
    set_view(records, spec.metric, sampled, bool(spec.dataset.cv_folds))
    tracker = MlflowTracker(records, sampled, spec.metric, spec.mode, resumed)
    progress = Progress(
        tracker, spec.metric, spec.mode, spec.search.num_samples, console, layout.stage_record
    )
    connect(spec)
    driver_threads(spec)
    earlier = warm_start.prior(layout, spec.search.warm_start, spec.space)
    if earlier.trials and records.parent_id:  # which studies and how many, on the parent
        records.tag(records.parent_id, "warm_start_trials", str(len(earlier.trials)))
    searcher = build_searcher(spec, layout, checked.found, resumed, earlier.trials)
    tuner = tune.Tuner(
        with_data(spec, checked.data, train),
        tune_config=tune_config(spec, layout, searcher),
        run_config=run_config(
            spec, spec.name, layout.ray_storage, [tracker, progress], StudyStopper(tracker)
        ),
    )
    return finish(tuner, spec, layout, records)


def driver_threads(spec: StudySpec) -> None:
    """A GP sampler fits in the driver, beside the trials: on one thread, or torch's idle
    threads spin against theirs (benchmarks/history/scale.md, "its fit on one thread")."""
    if spec.search.sampler == "gp":
        import torch

        torch.set_num_threads(1)


def resume_study(spec: StudySpec, root: Any, checked: Checked, console: Console) -> list:
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
            records = stores.open_records(layout)
        if records.parent_id is None:  # it died before making its parent run
            stores.new_parent(records, spec, checked.found, checked.data)
        records.set_status(records.parent_id, "RUNNING")
        records.repair(storage.ended_trials(layout))
        path = str(layout.ray_experiment)
        restore = standing(spec.name, state, driven=False).resume == "restore"
        # a new step (no stop line); a driver killed before Tune starts leaves it restorable
        stage.save(
            layout.stage_record, state.at(Stage.TRIALS_STARTED if restore else Stage.STORES_MADE)
        )
        tuner = restored(spec, path, checked, console) if restore and tune_saved(path) else None
        if tuner is None:
            return tune_study(spec, layout, checked, console, records, resumed=True)
        return finish(tuner, spec, layout, records)


def restored(spec: StudySpec, path: str, checked: Checked, console: Console) -> Any:
    """Ray Tune's saved run of the study, its unfinished trials to continue; None where that
    state does not load in this version of the code (it names classes by their modules: a
    study interrupted before an upgrade), said in one line: the study then goes on with a new
    Tune run under the same records, which runs the trials still missing, each once."""
    connect(spec)
    try:
        return tune.Tuner.restore(
            path,
            trainable=with_data(spec, checked.data),
            resume_unfinished=True,
            resume_errored=False,
        )
    except (ImportError, AttributeError, pickle.UnpicklingError) as error:
        console.print(
            f"Ray Tune's saved state does not load in this version ({brief(error)}); the "
            "trials still missing run in a new Tune run, each recorded once",
            highlight=False,
            soft_wrap=True,
        )
        return None


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
    tuner: tune.Tuner, spec: StudySpec, layout: Layout, records: StudyRecords
) -> list[TrialRecord]:
    """Fit, then write the results table and close the parent run; returns the trials best
    first. The trials ended while a store is still down: StoreDown, the records kept as they
    are (`study resume` closes them once it answers)."""
    with quiet(layout):  # closing the study is quieted too
        try:
            tuner.fit()
        except BaseException as error:
            # A study stopped by a store that does not answer keeps the records it has:
            # `study resume` completes them (waiting here could be minutes of retries more).
            if not outages.WATCH.since:
                status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
                close(spec, layout, records, status)
            raise
        stage.save(layout.stage_record, stage.load(layout.stage_record).at(Stage.TRIALS_ENDED))
        down = outages.still_down()
        if down is not None:
            raise down
        return close(spec, layout, records, "FINISHED")


def close(spec: StudySpec, layout: Layout, records: StudyRecords, status: str) -> list[TrialRecord]:
    """Write the results table (from MLflow, the record of every trial) and close the parent
    run as `status`; returns the trials best first. A study closed FINISHED is recorded as
    finished, or as ended short when fewer trials ended than it asked for."""
    trials = records.trials()
    results.save(layout, trials, spec.metric)
    best = ranked(trials, spec.metric, spec.mode)
    records.finish_parent(trials, best, spec.metric, layout.results_csv)
    records.set_status(records.parent_id, status)
    if status == "FINISHED":
        state = stage.counted(stage.load(layout.stage_record), trials, spec.metric, spec.mode)
        stop = storage.terminated(layout) if spec.search.terminate else None
        if stop:  # search.terminate stopped it: every trial it asked has ended
            records.tag(records.parent_id, "terminated", stop["line"])
            state = replace(state, terminated=stopped_after(stop["after"], stop["of"]))
        whole = state.ended >= spec.search.num_samples or (bool(stop) and state.running == 0)
        stage.save(layout.stage_record, state.at(Stage.FINISHED if whole else Stage.ENDED_SHORT))
    return best


def print_best(
    ranked: list[TrialRecord], spec: StudySpec, elapsed: float, console: Console
) -> bool:
    """The study's five best trials and the best config on the console, and what to do next;
    False when no trial produced a result."""
    from rich.table import Table

    from study.core.names import SHORT

    metric, space = spec.metric, list(spec.space.params)
    sampled = space if len(space) <= 5 else []  # wide spaces: the config is printed below
    table = Table(title=f"best trials of {spec.name} ({elapsed:.0f} s)")
    for column in ("trial", "outcome", "epochs", metric, *(SHORT.get(p, p) for p in sampled)):
        table.add_column(column, no_wrap=True)
    for trial in ranked[:5]:
        values = [trial.config.hyperparameters.get(p) for p in sampled]
        cells = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in values]
        table.add_row(
            trial.label,
            trial.outcome.value,
            str(trial.epochs),
            f"{trial.metrics[metric]:.4f}",
            *cells,
        )
    console.print(table)
    if not ranked:
        return False
    best, chosen = ranked[0], ranked[0].config.hyperparameters
    console.print(f"best {metric} {best.metrics[metric]:.4f}: {best.name}")
    config = ", ".join(f"{p}={chosen[p]!r}" for p in space if p in chosen)
    console.print(f"best config: {config}", highlight=False)
    console.print(f"next: study export {spec.name} -o best.yaml && study train best.yaml; study ui")
    return True
