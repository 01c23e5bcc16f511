"""Configs retrained over several training seeds through Ray: what `study ablate` (a group per
variant) and `study confirm` (a group per trial) share.

The runs are a plain list of configs given to Ray Tune (its BasicVariantGenerator with the
configs as preset points: no searcher, no scheduler), trained by the study's own trainable on
the study's data, resources and cluster, as many at once as the cluster holds. Nothing is
added to the Optuna study. Each (group, seed) ends with exactly one child run under the role's
run (StudyRecords.role_run, settle): a second call trains only what is missing; a run a killed
driver left RUNNING, or one that failed, is deleted and trained again.
"""

import json
import math
import shutil
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.search import BasicVariantGenerator
from rich.console import Console
from rich.markup import escape

from study.core import Layout, driver
from study.core.record import TrialRecord
from study.core.repeat import Interrupted, Repeat, Role
from study.engines.cluster import connect
from study.engines.logs import console as wide_console
from study.engines.progress import COLOURS
from study.engines.records import (
    GROUP_TAG,
    PARENT_TAG,
    RAY_TRIAL_TAG,
    ROLE_TAG,
    SEED_TAG,
    StudyRecords,
)
from study.engines.tracking import MlflowTracker, RunningTrial, StudyStopper
from study.engines.tuner import on_console, quiet, run_config, trial_folder, with_data
from study.spec import StudySpec
from trainables import HYPERPARAMETERS, Data, resolve


def as_grid(configs: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Tune's param space for a plain list of flat configs, and the configs with one set of
    keys (a key some lack: its default, None for a run setting such as stop_epoch). Each
    config is a preset point of Tune's BasicVariantGenerator, which must find all its keys in
    the space: the space holds each key's value where the configs agree, and the choice of
    their values where they differ (every point sets every key: nothing is sampled)."""
    keys = list(dict.fromkeys(key for config in configs for key in config))
    full = [{key: config.get(key, HYPERPARAMETERS.get(key)) for key in keys} for config in configs]
    space: dict[str, Any] = {}
    for key in keys:
        values: list[Any] = []
        for config in full:
            if config[key] not in values:
                values.append(config[key])
        space[key] = values[0] if len(values) == 1 else tune.choice(values)
    return space, full


def config_key(config: dict[str, Any]) -> str:
    """A flat config as one string: how a Ray trial's config finds its repeat."""
    return json.dumps(config, sort_keys=True)


class RepeatTracker(MlflowTracker):
    """The study's tracker (per-epoch curves, outcome, status) for the repeats: each Ray
    trial's child run nested under the role's run (`role_id`), named and tagged by its group
    and seed (`repeats`: config_key -> (group, seed, run name))."""

    def __init__(
        self,
        records: StudyRecords,
        role_id: str,
        role: str,
        repeats: dict[str, tuple[str, int, str]],
        metric: str,
        mode: str,
    ) -> None:
        super().__init__(records, [], metric, mode)
        self.role_id, self.role, self.repeats = role_id, role, repeats

    def key(self, trial_id: str, config: dict[str, Any]) -> Any:
        """Repeats are keyed by Ray's trial id: several share the trial number they repeat."""
        return trial_id

    def running(self, trial: Any) -> RunningTrial:
        """`trial` as the tracker writes it, made with its child run when first seen."""
        key = self.key(trial.trial_id, trial.config)
        if key not in self.trials:
            self.trials[key] = self._make(trial)
        return self.trials[key]

    def _make(self, trial: Any) -> RunningTrial:
        config = trial.config
        group, seed, name = self.repeats[config_key(config)]
        tags = {
            PARENT_TAG: self.role_id,
            ROLE_TAG: self.role,
            GROUP_TAG: group,
            SEED_TAG: str(seed),
            RAY_TRIAL_TAG: trial.trial_id,
            "config": json.dumps(config),
        }
        run_id = self.records.new_run(name, tags, resolve(config))
        self._answered()
        return RunningTrial(0, run_id, name, dict(config))


class RepeatProgress(tune.Callback):
    """One console line per run as it ends: outcome, name, epochs and the metric."""

    def __init__(self, tracker: RepeatTracker, console: Console, total: int) -> None:
        self.tracker, self.console, self.total, self.ended = tracker, console, total, 0

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles callbacks with the experiment
        return {k: v for k, v in self.__dict__.items() if k != "console"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, console=wide_console())

    def _ended(self, trial: Any) -> None:
        record = self.tracker.running(trial)
        self.ended += 1
        value = record.metrics.get(self.tracker.metric)
        shown = (
            record.error if record.error or value is None else f"{self.tracker.metric}={value:.4f}"
        )
        self.console.print(
            f"[{COLOURS.get(record.outcome, 'white')}]{record.outcome:<16}[/] "
            f"{escape(record.name):<44} epochs={record.epochs:<3} {escape(shown)}  "
            f"[dim]({self.ended}/{self.total})[/]",
            highlight=False,
            soft_wrap=True,
        )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)


def train_missing(
    spec: StudySpec,
    layout: Layout,
    data: Data,
    records: StudyRecords,
    role: tuple[str, str],
    missing: list[Repeat],
    console: Console,
) -> None:
    """Train `missing` through Ray Tune, all of them at once as far as the cluster's
    resources go, each recorded as a child run of the role's run (`role`: its id and role)."""
    role_id, role_name = role
    space, configs = as_grid([r.config for r in missing])
    names = {
        config_key(c): (r.group, r.seed, r.name) for c, r in zip(configs, missing, strict=True)
    }
    tracker = RepeatTracker(records, role_id, role_name, names, spec.metric, spec.mode)
    # Ray's folder of the last call holds nothing a run needs (MLflow is the record, a
    # failure's traceback is on its run): started anew, so it does not grow call after call.
    experiment = layout.repeats_experiment(role_name)
    shutil.rmtree(Path(layout.ray_storage) / experiment, ignore_errors=True)
    connect(spec)
    # No ASHA here: checkpoints only at the end and every cluster.checkpoint_every epochs.
    unscheduled = spec.model_copy(
        update={"scheduler": spec.scheduler.model_copy(update={"name": "none"})}
    )
    callbacks = [tracker, RepeatProgress(tracker, console, len(missing))]
    tuner = tune.Tuner(
        with_data(unscheduled, data),
        param_space=space,
        tune_config=tune.TuneConfig(
            # A plain list: each point is one trial, no searcher and no scheduler decide.
            search_alg=BasicVariantGenerator(points_to_evaluate=configs),
            num_samples=len(missing),
            reuse_actors=True,
            trial_dirname_creator=trial_folder,
        ),
        run_config=run_config(
            spec, experiment, layout.ray_storage, callbacks, StudyStopper(tracker)
        ),
    )
    # Ctrl-C raises KeyboardInterrupt at once: the next call continues from MLflow.
    with quiet(layout):
        tuner.fit()


def value_of(record: TrialRecord, metric: str) -> float:
    """A repeat's value of the study metric; NaN for one that failed or diverged without one."""
    value = record.metrics.get(metric, math.nan)
    return value if math.isfinite(value) else math.nan


def run_repeats(
    spec: StudySpec,
    layout: Layout,
    data: Data,
    records: StudyRecords,
    role: tuple[str, str],
    repeats: list[Repeat],
    console: Console,
) -> dict[tuple[str, int], float]:
    """The study metric's value of each repeat, by (group, seed): read from the role's child
    runs that finished, the missing ones trained first. Interrupted when some are still
    missing after (Ctrl-C); NaN for a run that failed or diverged without a value."""
    on_console(console)
    role_id = role[0]
    wanted = {r.key for r in repeats}
    done = records.settle(role_id, wanted, keep_failed=False)
    missing = [r for r in repeats if r.key not in done]
    if done:
        console.print(
            f"{len(done)} of {len(repeats)} runs recorded already; training {len(missing)}"
        )
    try:
        if missing:
            train_missing(spec, layout, data, records, role, missing, console)
    except KeyboardInterrupt:  # Ctrl-C: said below, as runs recorded of those wanted
        pass
    finally:  # what is left RUNNING now is deleted, the rest kept
        done = records.settle(role_id, wanted, keep_failed=True)
    if len(done) < len(wanted):
        raise Interrupted(len(done), len(wanted))
    return {key: value_of(record, spec.metric) for key, record in done.items()}


def recorded(
    spec: StudySpec,
    layout: Layout,
    data: Data,
    records: StudyRecords,
    role: Role,
    repeats: list[Repeat],
    console: Console,
) -> tuple[str, dict[tuple[str, int], float]]:
    """`run_repeats` under the role's run (found by its `key` tags, or made) nested under the
    study's parent run, one caller at a time; returns the role's run id and the values. The
    role's run ends FINISHED, or KILLED when interrupted (the next call continues it)."""
    with driver.repeating(layout):
        role_id = records.role_run(role.role, role.name, role.key)
        records.set_status(role_id, "RUNNING")
        status = "KILLED"
        try:
            pair = (role_id, role.role)
            values = run_repeats(spec, layout, data, records, pair, repeats, console)
            status = "FINISHED"
        finally:
            records.set_status(role_id, status)
    return role_id, values
