"""The ranking of a study's trials by its metric, from their records; the record's row of the
results file and back."""

import math

import pytest

from study.core import Outcome, TrialConfig
from study.core.record import TrialRecord, ranked

RUN = {"dataset": {"name": "digits"}, "model": {"name": "mlp"}, "epochs": 9, "seed": 0}


def row(trial: str, outcome: str, value: float | None, epochs: int = 9) -> TrialRecord:
    """A trial's record with `value` as its last val_acc and val_loss."""
    metrics = {} if value is None else {"val_acc": value, "val_loss": value}
    number = int(trial[1:])
    config = TrialConfig.parse({"lr": 0.01, **RUN, "optuna_trial": number - 1})
    return TrialRecord(number, Outcome(outcome), epochs, metrics, config, f"run{number}", trial)


def names(records: list[TrialRecord]) -> list[str]:
    return [r.label for r in records]


def test_only_completed_and_early_stopped_trials_are_ranked():
    """Failed, diverged and running trials are left out, whatever value they last had."""
    table = [
        row("t001", "failed", 0.99),
        row("t002", "completed", 0.5),
        row("t003", "diverged", 0.98),
        row("t004", "early_stopped", 0.4, epochs=3),
        row("t005", "running", 0.97),
    ]
    assert names(ranked(table, "val_acc", "max")) == ["t002", "t004"]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, None])
def test_a_trial_without_a_finite_value_is_not_ranked(value):
    """NaN, an infinity or no value at all: the trial has no rank."""
    table = [row("t001", "completed", value), row("t002", "completed", 0.5)]
    assert names(ranked(table, "val_acc", "max")) == ["t002"]


def test_max_ranks_the_highest_value_first():
    """mode max: descending."""
    table = [
        row("t001", "completed", 0.5),
        row("t002", "completed", 0.9),
        row("t003", "completed", 0.7),
    ]
    assert names(ranked(table, "val_acc", "max")) == ["t002", "t003", "t001"]


def test_min_ranks_the_lowest_value_first():
    """mode min: ascending."""
    table = [
        row("t001", "completed", 0.5),
        row("t002", "completed", 0.9),
        row("t003", "completed", 0.2),
    ]
    assert names(ranked(table, "val_loss", "min")) == ["t003", "t001", "t002"]


@pytest.mark.parametrize("mode", ["max", "min"])
def test_a_tie_goes_to_the_trial_with_fewer_epochs(mode):
    """Equal values: the trial that needed fewer epochs ranks first, in either mode."""
    table = [row("t001", "completed", 0.8, epochs=9), row("t002", "early_stopped", 0.8, epochs=3)]
    assert names(ranked(table, "val_acc", mode)) == ["t002", "t001"]


def test_an_empty_table_ranks_nothing():
    """No trials, no ranking (and no error)."""
    assert ranked([], "val_acc", "max") == []


def test_a_record_reads_back_from_its_row_of_the_results_file():
    """results.json holds a row per trial; the record it is read back as is the same."""
    record = row("t004", "early_stopped", 0.4, epochs=3)
    written = record.row("val_acc")
    assert written["trial"] == "t004" and written["val_acc"] == 0.4
    assert written["config"]["optuna_trial"] == 3
    assert TrialRecord.from_row(written) == record


def test_an_early_stopped_trial_is_retrained_to_where_it_stopped():
    """ASHA's cut is the retrain's end; a completed trial keeps its whole schedule."""
    assert row("t004", "early_stopped", 0.4, epochs=3).retrained().run.last_epoch == 3
    assert row("t005", "completed", 0.4, epochs=9).retrained().run.stop_epoch is None
