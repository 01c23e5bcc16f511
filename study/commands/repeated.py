"""Configs retrained over several training seeds, the part without Ray: what `study ablate`
and `study confirm` read of a study (its ranked trials, a trial's config as retrained), check of
their input, and their MLflow records: one run of the role (`study.role` ablation or confirm)
nested under the study's parent run, and a child run per group (a variant, a trial) and seed
nested under it. MLflow is the record: `settle` finds the finished child runs and deletes any
other of a wanted (group, seed), so that each ends with exactly one (study.engines.repeats trains
what is missing, through Ray)."""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from filelock import FileLock, Timeout
from mlflow.tracking import MlflowClient

from study.core import Layout, Outcome, TrialConfig, driver
from study.core.errors import UserError
from study.core.results import ranked, rows
from study.engines.records import PARENT_TAG, study_records, trial_runs
from study.spec import StudySpec

ROLE_TAG = "study.role"
GROUP_TAG = "repeat.group"  # an ablation's variant, a confirmation's trial
SEED_TAG = "repeat.seed"
# Outcomes a child run keeps: a run that raised (failed) is trained again by the next call.
KEPT = (Outcome.COMPLETED.value, Outcome.PATIENCE_STOPPED.value, Outcome.DIVERGED.value)


@dataclass(frozen=True)
class Repeat:
    """One training run: `group` with training seed `seed`, its flat config and run name."""

    group: str
    seed: int
    config: dict[str, Any]
    name: str

    @property
    def key(self) -> tuple[str, int]:
        return self.group, self.seed


class Interrupted(Exception):
    """The runs stopped before all were recorded (Ctrl-C): `done` of `wanted` are."""

    def __init__(self, done: int, wanted: int) -> None:
        super().__init__(f"{done} of {wanted} runs recorded")
        self.done, self.wanted = done, wanted


def check_seeds(seeds: int) -> None:
    """A confidence interval needs two seeds at least."""
    if seeds < 2:
        raise UserError(f"--seeds: {seeds} gives no confidence interval; use 2 or more (default 5)")


def ranked_trials(
    spec: StudySpec, layout: Layout
) -> tuple[MlflowClient, str, str, list[dict], list[dict]]:
    """The study's MLflow client, experiment id and parent run id, its results table (read
    from MLflow, by trial number) and the trials with a value of the metric, best first
    (study.core.results.ranked); a UserError when no trial has finished."""
    client, experiment_id, parent_id = study_records(layout)
    table = rows(trial_runs(client, experiment_id, parent_id), spec.metric) if parent_id else []
    best = ranked(table, spec.metric, spec.mode)
    if not best:
        raise UserError(
            f"NAME: study {spec.name!r} has no finished trial with a {spec.metric} yet; run or "
            f"resume it first (`study status {spec.name}`)"
        )
    return client, experiment_id, parent_id, table, best


def retrained(row: dict[str, Any]) -> TrialConfig:
    """A trial's config as it is retrained: the same schedule, stopped where ASHA stopped
    it (as `study export` writes it); a trial its patience stopped keeps its patience."""
    trial = TrialConfig.parse(row["config"])
    if row["outcome"] == Outcome.EARLY_STOPPED.value:
        return trial.stopped_at(row["epochs"])
    return trial


@contextlib.contextmanager
def holding(layout: Layout) -> Iterator[None]:
    """One `study ablate` or `study confirm` of a study at a time, and none while its
    driver runs (the trials it ranks would change under it); UserError otherwise."""
    if driver.is_driven(layout):
        raise UserError(
            f"NAME: study {layout.name!r} is running ({driver.who(layout)}); wait for it to end"
        )
    lock = FileLock(layout.repeats_lock)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserError(
            f"NAME: an ablation or confirmation of {layout.name!r} is running; wait for it"
        ) from None
    try:
        yield
    finally:
        lock.release()


def role_run(
    client: MlflowClient, experiment_id: str, parent_id: str, role: str, name: str, key: dict
) -> str:
    """The id of the run of `role` nested under the study's parent run with the tags `key`
    (the first made, when there are several), made if there is none."""
    query = " and ".join(
        [f"tags.`{PARENT_TAG}` = '{parent_id}'", f"tags.`{ROLE_TAG}` = '{role}'"]
        + [f"tags.`{k}` = '{v}'" for k, v in key.items()]
    )
    found = client.search_runs(
        [experiment_id], filter_string=query, order_by=["attributes.start_time ASC"]
    )
    if found:
        return found[0].info.run_id
    tags = {PARENT_TAG: parent_id, ROLE_TAG: role, **key}
    return client.create_run(experiment_id, run_name=name, tags=tags).info.run_id


def settle(
    client: MlflowClient,
    experiment_id: str,
    role_id: str,
    wanted: set[tuple[str, int]],
    keep_failed: bool,
) -> dict[tuple[str, int], Any]:
    """The finished child run of each wanted (group, seed) under the role's run; every other
    child run of a wanted key (left RUNNING by a driver that died, a second one, or failed
    unless `keep_failed`) is deleted. Runs of other keys (seeds beyond a smaller --seeds) are
    left as they are."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{role_id}'",
        order_by=["attributes.start_time ASC"],
        max_results=50000,
    )
    kept_outcomes = (*KEPT, Outcome.FAILED.value) if keep_failed else KEPT
    finished: dict[tuple[str, int], Any] = {}
    for run in runs:
        tags = run.data.tags
        key = (tags.get(GROUP_TAG, ""), int(tags.get(SEED_TAG, -1)))
        if key not in wanted:
            continue
        done = run.info.status != "RUNNING" and tags.get("outcome") in kept_outcomes
        if done and key not in finished:
            finished[key] = run
        else:
            client.delete_run(run.info.run_id)
    return finished
