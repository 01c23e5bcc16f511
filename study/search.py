"""Optuna behind Ray Tune: TPE, random or grid proposals; early-stopped trials told as PRUNED."""

import math
import warnings
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from search_spaces import Space
from study.spec import StudySpec


class PrunedAwareOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, except that a trial stopped before `max_epochs` reaches Optuna as
    PRUNED with all its intermediate values, never as a COMPLETE trial with a partial score,
    and a diverged trial as FAIL. Each trial carries its outcome as the user attr `outcome`.

    It is also safe to resume: a trial Optuna already finished is never told twice, and Optuna
    trials asked before the driver died but unknown to Ray's restored state are handed to the
    next Ray trials instead of asking new ones, so the study keeps one Optuna trial per trial.

    Args:
        max_epochs: The epoch budget of a trial that runs to the end.
        num_samples: The study's number of trials, those of earlier drivers included.
        resumed: Whether earlier drivers of the study may have asked trials already (set by
            itself when Ray unpickles or restores it).
        **kwargs: Passed to `ray.tune.search.optuna.OptunaSearch`.
    """

    def __init__(
        self, *, max_epochs: int, num_samples: int, resumed: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.max_epochs = max_epochs
        self.num_samples = num_samples
        # Only in a resumed study can the storage hold trials Ray does not know of, or ended
        # ones it thinks are running. A resumed searcher is unpickled (with the Tuner), then
        # maybe restored from a later snapshot, or made anew when Ray saved no state.
        self._resumed = resumed

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _resumed=True)

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self._resumed = True

    def _finished(self, trial_id: str) -> bool:
        """Whether Optuna has the trial's end: told by us (Ray's OptunaSearch keeps those in
        `_completed_trials`) or, in a resumed study, found finished in the storage."""
        if trial_id in self._completed_trials:
            return True
        trial = self._ot_trials[trial_id]
        return (
            self._resumed and self._ot_study._storage.get_trial(trial._trial_id).state.is_finished()
        )

    def _orphan(self) -> optuna.Trial | None:
        known = {trial._trial_id for trial in self._ot_trials.values()}
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen._trial_id not in known:
                return optuna.Trial(self._ot_study, frozen._trial_id)
        return None

    def suggest(self, trial_id: str) -> dict | None:
        if self._resumed and callable(self._space) and trial_id not in self._ot_trials:
            orphan = self._orphan()
            if orphan is not None:
                self._ot_trials[trial_id] = orphan  # its params come back as they were
            elif len(self._ot_study.get_trials(deepcopy=False)) >= self.num_samples:
                # Trials that ended after Ray's last saved state count too: no more to ask.
                return Searcher.FINISHED
        return super().suggest(trial_id)

    def _report(self, trial_id: str, result: dict) -> None:
        """Tell Optuna the metric of every epoch the result carries, by epoch."""
        trial = self._ot_trials[trial_id]
        with warnings.catch_warnings():  # a retried trial re-reports steps it had
            warnings.simplefilter("ignore")
            for metrics in result.get("history") or [result]:
                if math.isfinite(metrics[self.metric]):
                    trial.report(metrics[self.metric], int(metrics["epoch"]))

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._ot_trials and not self._finished(trial_id):
            self._report(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id not in self._ot_trials or self._finished(trial_id):
            self._completed_trials.add(trial_id)
            return
        trial = self._ot_trials[trial_id]
        if error:  # Ray gives a failed trial's end with no result
            trial.set_user_attr("outcome", "failed")
            return super().on_trial_complete(trial_id, result, error)
        if not result:
            return super().on_trial_complete(trial_id, result, error)
        # Ray hands the last result to on_trial_complete only: record its epochs too.
        self._report(trial_id, result)
        if result.get("diverged") or not math.isfinite(result.get(self.metric, 0.0)):
            trial.set_user_attr("outcome", "diverged")
            self._tell(trial_id, TrialState.FAIL)
        elif result["epoch"] < self.max_epochs:
            trial.set_user_attr("outcome", "early_stopped")
            self._tell(trial_id, TrialState.PRUNED)
        else:
            trial.set_user_attr("outcome", "completed")
            super().on_trial_complete(trial_id, result, error)

    def _tell(self, trial_id: str, state: TrialState) -> None:
        self._ot_study.tell(self._ot_trials[trial_id], state=state)
        self._completed_trials.add(trial_id)


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without the `study.stop()` it calls once the last grid point ends.
    Optuna allows that only inside `optimize()`, which a Tune study never runs: from `tell` it
    raised after the trial's state was stored, so the trial seemed untold and was told again
    (a study whose last trial ended pruned or diverged crashed). Tune ends the study instead:
    its `num_samples` is the grid's size."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        pass


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")


class Storage(optuna.storages.RDBStorage):
    """Optuna's RDB storage; an SQLite file is opened in WAL mode, synced at its checkpoints
    rather than at every commit. A study commits each epoch of each trial; this halves what
    the driver spends in Optuna per trial (39 -> 20 ms, benchmarks/RESULTS.md, scale). A killed
    driver loses nothing (the writes are in the file); a power cut may lose the last commits.
    """

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._no_sync_per_commit()

    def __setstate__(self, state: dict[Any, Any]) -> None:  # Ray pickles the searcher
        super().__setstate__(state)
        self._no_sync_per_commit()

    def _no_sync_per_commit(self) -> None:
        if self.engine.name == "sqlite":
            sqlalchemy.event.listen(self.engine, "connect", _sqlite_pragmas)
            self.engine.dispose()  # the connections opened so far had no pragmas


class DefineByRun:
    """The space suggested on an Optuna trial, plus the constants every trial config holds and
    the Optuna trial's number (which names the trial everywhere, across resumes).

    A class rather than a closure because Ray pickles the searcher to checkpoint it.
    """

    def __init__(self, space: Space, constants: dict[str, Any], context: dict[str, Any]) -> None:
        self.space = space
        self.constants = constants
        self.context = context

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        self.space.suggest(trial, self.context)  # Ray captures the suggested values itself
        return {**self.constants, "optuna_trial": trial.number}


def optuna_storage_url(spec: StudySpec, root: Any) -> str:
    """The spec's Optuna storage URL, or an SQLite file under the root folder."""
    return spec.search.storage or f"sqlite:///{root}/optuna.db"


def sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """The study's Optuna sampler, seeded with `search.seed`."""
    seed = spec.search.seed
    if spec.search.sampler == "grid":
        return GridSampler(spec.grid(), seed=seed)
    if spec.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def first_config(spec: StudySpec) -> dict[str, Any]:
    """The config the study's first trial gets (its sampler asked once, in memory)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study(sampler=sampler(spec)).ask()
    return {**spec.trial_constants(), **spec.space.suggest(trial, spec.context())}


def build_searcher(
    spec: StudySpec, storage_url: str, resumed: bool = False
) -> PrunedAwareOptunaSearch:
    """The searcher for `spec`: its space define-by-run, the trial constants, seeded sampler;
    `resumed` when earlier drivers of the study may have asked trials already."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return PrunedAwareOptunaSearch(
        space=DefineByRun(spec.space, spec.trial_constants(), spec.context()),
        metric=spec.metric,
        mode=spec.mode,
        sampler=sampler(spec),
        storage=Storage(storage_url),
        study_name=spec.name,
        max_epochs=spec.scheduler.max_epochs,
        num_samples=spec.search.num_samples,
        resumed=resumed,
    )
