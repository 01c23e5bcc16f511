"""What `study ablate` and `study confirm` share before anything is trained: the check of their
seeds, and the study's trials ranked, read from its MLflow records. Their training runs
(through Ray) and their records are study.engines.repeats'."""

import re

from study.core import Layout, label
from study.core.errors import UserError
from study.core.record import TrialRecord, ranked
from study.engines.records import StudyRecords
from study.spec import StudySpec


def check_seeds(seeds: int) -> None:
    """A confidence interval needs two seeds at least."""
    if seeds < 2:
        raise UserError(f"--seeds: {seeds} gives no confidence interval; use 2 or more (default 5)")


def ranked_trials(spec: StudySpec, layout: Layout) -> tuple[StudyRecords, list[TrialRecord]]:
    """The study's records and its trials with a value of the metric, best first; a UserError
    when no trial has finished."""
    records = StudyRecords.reading(layout)
    best = ranked(records.trials(), spec.metric, spec.mode) if records else []
    if not best:
        raise UserError(
            f"NAME: study {spec.name!r} has no finished trial with a {spec.metric} yet; run or "
            f"resume it first (`study status {spec.name}`)"
        )
    return records, best


def pick(
    trials: list[TrialRecord],
    best: list[TrialRecord],
    name: str | None,
    study: str,
    metric: str,
    option: str = "--trial",
) -> TrialRecord:
    """Trial `name` (t007, 7), the best trial when None; a UserError naming `option` for a
    trial the study does not have, or one without a value of the metric."""
    if name is None:
        return best[0]
    match = re.fullmatch(r"t?0*(\d+)", name.strip())
    wanted = label(int(match[1])) if match else name
    known = {trial.label: trial for trial in trials}
    if wanted not in known:
        span = f"{trials[0].label}-{trials[-1].label}" if trials else "none"
        raise UserError(f"{option}: study {study!r} has no trial {name!r}; its trials: {span}")
    if all(trial.label != wanted for trial in best):
        raise UserError(
            f"{option}: {wanted} ended {known[wanted].outcome} without a {metric}; pick a trial "
            f"with one (the best is {best[0].label})"
        )
    return known[wanted]
