"""How a trial ended, decided once from its last result; every record reads this decision.

The searcher tells Optuna from it (COMPLETE, PRUNED, FAIL), the tracker tags the MLflow run
and sets its status, the console prints it, and results, status and the report count it.
"""

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Outcome(str, Enum):
    """A trial's outcome; its value is the word every record uses."""

    RUNNING = "running"
    COMPLETED = "completed"  # ran its epochs
    EARLY_STOPPED = "early_stopped"  # cut by ASHA at a rung
    PATIENCE_STOPPED = "patience_stopped"  # ended by its own early stopping (patience)
    FAILED = "failed"  # raised an error (after Ray's retries)
    DIVERGED = "diverged"  # its loss blew up, or the study metric was NaN or infinite

    def __str__(self) -> str:
        return self.value


ENDED = (
    Outcome.COMPLETED,
    Outcome.PATIENCE_STOPPED,
    Outcome.EARLY_STOPPED,
    Outcome.FAILED,
    Outcome.DIVERGED,
)
# Ranked by their study metric: a patience-stopped trial by the weights it ended with.
SCORED = (Outcome.COMPLETED, Outcome.PATIENCE_STOPPED, Outcome.EARLY_STOPPED)
FINISHED = (Outcome.COMPLETED, Outcome.PATIENCE_STOPPED)  # ended by their own rules: COMPLETE


@dataclass(frozen=True)
class Decision:
    """An outcome and, for a trial that did not end well, why."""

    outcome: Outcome
    error: str = ""


def finite(value: Any) -> bool:
    """Whether `value` is a finite number."""
    try:
        return math.isfinite(value)
    except TypeError:
        return False


def decide(
    last: dict[str, Any] | None, *, metric: str, last_epoch: int, error: str | None = None
) -> Decision:
    """The outcome of a trial whose last result is `last` (its last epoch's metrics) and that
    was to run to `last_epoch`; `error` when it raised one."""
    if error is not None:
        return Decision(Outcome.FAILED, error)
    if not last:
        return Decision(Outcome.FAILED, "ended without a result")
    epoch = int(last["epoch"])
    if last.get("diverged"):
        reason = f"training loss blew up (a batch NaN, inf or 100x chance) in epoch {epoch}"
        return Decision(Outcome.DIVERGED, reason)
    value = last.get(metric, 0.0)  # a result without the metric is judged on its epochs
    if not finite(value):
        return Decision(Outcome.DIVERGED, f"{metric} was {value} in epoch {epoch}")
    if last.get("patience_stopped"):  # its patience ran out before anything cut it
        return Decision(Outcome.PATIENCE_STOPPED)
    if epoch >= last_epoch:
        return Decision(Outcome.COMPLETED)
    return Decision(Outcome.EARLY_STOPPED)


def scored(outcome: str, value: Any) -> bool:
    """Whether a trial that ended with `outcome` and `value` of the metric is ranked."""
    return outcome in SCORED and finite(value)
