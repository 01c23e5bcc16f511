"""`search.terminate`: the study stops proposing trials once the room left for improvement is
below the metric's noise (Optuna's Terminator, arXiv 2104.08166: the regret bound of a Gaussian
process fitted to the trials, against an error estimate).

The trials judged are those the study's sampler learns from: each early-stopped one at its last
value, as the GP sampler sees it (study.engines.sampler.shown). The noise is the folds' spread
of the best trial when `dataset.cv_folds` is set (Optuna's cross-validation error: the scaled
standard deviation of its fold scores), else the jitter of the metric from epoch to epoch at
the end of the trials that ran to `max_epochs` (the median over them of sqrt(mean(s^2) / 6),
s the second differences of their last epochs' values), which benchmarks/start_stop.py measures
against the spread across seeds and folds."""

import math
import statistics
import warnings
from dataclasses import dataclass

from optuna.study import StudyDirection
from optuna.terminator import RegretBoundEvaluator
from optuna.trial import FrozenTrial, TrialState

from study.engines.sampler import shown

MIN_TRIALS = 20  # ended trials before the rule judges (Optuna's Terminator's default)
TAIL = 10  # the last epochs whose jitter is the noise
FOLDS = "folds"  # an ended trial's user attr: its fold scores of the metric, at its end
TERMINATED = "terminated"  # the Optuna study's user attr once the rule stopped it


@dataclass(frozen=True)
class Judgement:
    """What the rule found: the room left (the GP's regret bound), the noise, how the noise
    was estimated, and over how many trials."""

    room: float
    noise: float
    how: str
    trials: int

    @property
    def stop(self) -> bool:
        return self.room < self.noise

    def line(self, asked: int, wanted: int) -> str:
        """The console's, the record's and the report's words for a stop."""
        return (
            f"{stopped_after(asked, wanted)}: the room left for improvement "
            f"(at most {self.room:.4g}, the GP's regret bound over {self.trials} trials) is "
            f"below the metric's noise ({self.noise:.4g}, {self.how})"
        )


def stopped_after(asked: int, wanted: int) -> str:
    """A stop in a few words (`study status`): after how many of the study's trials."""
    return f"no gain expected after {asked} of {wanted} trials"


def folds_error(scores: list[float]) -> float:
    """Optuna's cross-validation error of a trial's `scores` (one per fold)."""
    k = len(scores)
    return math.sqrt((1 / k + 1 / (k - 1)) * statistics.pvariance(scores))


def jitter(values: list[float], tail: int = TAIL) -> float | None:
    """The epoch-to-epoch noise of a curve's last `tail` values: sqrt(mean(s^2) / 6) of their
    second differences s (white noise of variance v gives E[s^2] = 6v, and a straight trend
    adds nothing); None for a curve of fewer than 4 values."""
    last = values[-tail:]
    if len(last) < 4:
        return None
    bends = [a - 2 * b + c for a, b, c in zip(last, last[1:], last[2:], strict=False)]
    return math.sqrt(sum(s * s for s in bends) / len(bends) / 6)


def noise(trials: list[FrozenTrial], seen: list[FrozenTrial], maximize: bool) -> tuple:
    """The metric's noise and how it was estimated; (None, "") when nothing tells yet. `seen`:
    the judged trials (with their numbers' user attrs in `trials`)."""
    best = (max if maximize else min)(seen, key=lambda t: t.value)
    scores = best.user_attrs.get(FOLDS)
    if scores and len(scores) > 1:
        return folds_error(scores), f"the spread of the best trial's {len(scores)} folds"
    ran = [t for t in trials if t.state == TrialState.COMPLETE and t.intermediate_values]
    curves = [[t.intermediate_values[e] for e in sorted(t.intermediate_values)] for t in ran]
    found = [j for j in map(jitter, curves) if j is not None]
    if not found:
        return None, ""
    return statistics.median(found), f"its jitter from epoch to epoch in {len(found)} trials"


def judge(
    trials: list[FrozenTrial], direction: StudyDirection, min_trials: int = MIN_TRIALS, seed=0
) -> Judgement | None:
    """The rule's verdict on a study's `trials`; None while it cannot judge (fewer than
    `min_trials` ended, no estimate of the noise yet)."""
    seen = [t for t in map(shown, trials) if t is not None and t.state == TrialState.COMPLETE]
    if len(seen) < min_trials:
        return None
    error, how = noise(trials, seen, direction == StudyDirection.MAXIMIZE)
    if error is None:
        return None
    with warnings.catch_warnings():  # experimental in Optuna, its module deprecated in 4.9
        warnings.simplefilter("ignore")
        evaluator = RegretBoundEvaluator(min_n_trials=min_trials, seed=seed)
        room = evaluator.evaluate(seen, direction)
    return Judgement(room=float(room), noise=float(error), how=how, trials=len(seen))
