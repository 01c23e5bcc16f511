"""What `study ablate` and `study confirm` share before anything is trained: the check of their
seeds, and the study's trials ranked, read from its MLflow records. Their training runs
(through Ray) and their records are study.engines.repeats'."""

from study.core import Layout
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
