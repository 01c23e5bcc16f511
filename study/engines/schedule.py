"""ASHA over epochs, able to pick up the rung records of a study that is being resumed; FIFO
when early stopping is off. Both leave the order of starting trials to Tune (see KeepNewActors)."""

from typing import Any

import numpy as np
import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from study.core import Layout, finite, from_optuna, label, trial_number
from study.engines.storage import Storage


class KeepNewActors:
    """Picks no trial for Tune to start first, so that Tune starts its pending trials in order.

    Tune gives the trial a scheduler picks the actor a finished trial left behind, and kills
    the new actor that was starting for it. When trials end more often than a new actor takes
    to start (a process importing torch: seconds), that slot's actor is killed again and again
    and the slot never runs a trial: at 300 one-second trials on 8 slots, 218 of 223 new actors
    were killed and 6 slots did the work (benchmarks/history/scale.md). Unpicked, a trial
    whose actor is starting keeps it and the next new trial takes the left-behind actor.
    """

    def choose_trial_to_run(self, tune_controller: Any) -> None:
        return None


class Fifo(KeepNewActors, FIFOScheduler):
    """Every trial to the end, started in order."""


class ResumableASHA(KeepNewActors, ASHAScheduler):
    """Ray's ASHAScheduler that, when first used, records in its rungs the values every earlier
    trial of the same Optuna study reached at each milestone. A fresh study has none; a resumed
    one gets back the cutoffs it had, which Ray does not checkpoint.

    With several brackets (Hyperband's hedge: bracket s starts judging at the s-th rung, the
    last may judge none), a trial's bracket is drawn with Ray's odds from the study's seed and
    the trial's number rather than from NumPy's global state, so a study picks the same
    brackets every time and a resumed one knows which bracket each earlier trial was in.

    Args:
        storage_url: The Optuna storage of the study.
        study_name: The Optuna study's name.
        seed: The study's seed (draws each trial's bracket).
        **kwargs: Passed to `ray.tune.schedulers.ASHAScheduler`.
    """

    def __init__(
        self,
        *,
        storage_url: str,
        study_name: str,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.storage_url = storage_url
        self.study_name = study_name
        self.seed = seed
        self.replayed = False

    def bracket_of(self, number: int) -> int:
        """The bracket of trial `number`: Ray's odds (e^-(rungs fewer than the first
        bracket's)), drawn from the seed and the number alone."""
        sizes = np.array([len(bracket._rungs) for bracket in self._brackets])
        odds = np.exp(sizes - sizes.max())
        draw = np.random.default_rng([self.seed % 2**32, number])
        return int(draw.choice(len(odds), p=odds / odds.sum()))

    def _replay(self) -> None:
        self.replayed = True
        try:
            study = optuna.load_study(study_name=self.study_name, storage=Storage(self.storage_url))
        except KeyError:  # a new study
            return
        for trial in study.get_trials(deepcopy=False):
            number = from_optuna(trial.number)
            self.record(label(number), trial.intermediate_values, number)

    def record(self, key: str, values: dict[int, float], number: int | None = None) -> None:
        """Put `values` (epoch -> metric) into every rung whose milestone they reached, in the
        bracket of trial `number` (every bracket when None)."""
        brackets = self._brackets if number is None else [self._brackets[self.bracket_of(number)]]
        for bracket in brackets:
            for milestone, recorded in bracket._rungs:
                reached = [epoch for epoch in values if epoch >= milestone]
                if reached and key not in recorded:
                    recorded[key] = self._metric_op * values[min(reached)]

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        # A non-finite value (a diverged trial) would move the rungs' cutoffs: an infinity
        # in a rung raises its cutoff past every finite value.
        if finite(result.get(self._metric, 0.0)):
            super().on_trial_complete(tune_controller, trial, result)

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        if not self.replayed:
            self._replay()
        super().on_trial_add(tune_controller, trial)
        number = trial_number(trial.config)
        self._trial_info[trial.trial_id] = self._brackets[self.bracket_of(number)]
        # A resumed trial owns the records it made before, so it is not judged twice.
        earlier = label(number)
        for bracket in self._brackets:
            for _, recorded in bracket._rungs:
                if earlier in recorded:
                    recorded[trial.trial_id] = recorded.pop(earlier)


def build_scheduler(spec: Any, layout: Layout) -> FIFOScheduler:
    """ASHA over epochs (each result's `epoch`), or FIFO when early stopping is off."""
    if spec.scheduler.name == "none":
        return Fifo()
    return ResumableASHA(
        storage_url=layout.optuna_url,
        study_name=layout.name,
        seed=spec.search.seed,
        time_attr="epoch",
        max_t=spec.scheduler.max_epochs,
        grace_period=spec.scheduler.grace_period,
        reduction_factor=spec.scheduler.reduction_factor,
        brackets=spec.scheduler.brackets,
    )
