"""Optuna behind Ray Tune: TPE (or random) proposals, with early-stopped trials told as PRUNED."""

from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from search_spaces import Space
from study.spec import StudySpec


class PrunedAwareOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, except that a trial stopped before `max_epochs` reaches Optuna as
    PRUNED with all its intermediate values, never as a COMPLETE trial with a partial score.

    Args:
        max_epochs: The epoch budget of a trial that runs to the end.
        **kwargs: Passed to `ray.tune.search.optuna.OptunaSearch`.
    """

    def __init__(self, *, max_epochs: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_epochs = max_epochs

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if result and not error and trial_id not in self._completed_trials:
            trial = self._ot_trials[trial_id]
            # Ray hands the last result to on_trial_complete only: record it as a step too.
            trial.report(result[self.metric], result["training_iteration"])
            if result["epoch"] < self.max_epochs:
                self._ot_study.tell(trial, state=TrialState.PRUNED)
                self._completed_trials.add(trial_id)
                return
        super().on_trial_complete(trial_id, result, error)


class DefineByRun:
    """The space suggested on an Optuna trial, plus the constants every trial config holds.

    A class rather than a closure because Ray pickles the searcher to checkpoint it.
    """

    def __init__(self, space: Space, constants: dict[str, Any]) -> None:
        self.space = space
        self.constants = constants

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        self.space.suggest(trial)  # Ray captures the suggested values itself
        return self.constants


def optuna_storage_url(root: Any) -> str:
    """The default Optuna storage: an SQLite file under the root folder."""
    return f"sqlite:///{root}/optuna.db"


def build_searcher(spec: StudySpec, storage_url: str) -> PrunedAwareOptunaSearch:
    """The searcher for `spec`: its space define-by-run, the trial constants, seeded sampler."""
    seed = spec.search.seed
    sampler = (
        optuna.samplers.TPESampler(seed=seed)
        if spec.search.sampler == "tpe"
        else optuna.samplers.RandomSampler(seed=seed)
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return PrunedAwareOptunaSearch(
        space=DefineByRun(spec.space, spec.trial_constants()),
        metric=spec.metric,
        mode=spec.mode,
        sampler=sampler,
        storage=optuna.storages.RDBStorage(storage_url),
        study_name=spec.name,
        max_epochs=spec.scheduler.max_epochs,
    )
