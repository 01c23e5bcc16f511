"""Optuna without Ray: the study's storage and sampler, the define-by-run space, the first
config preflight builds, and what the storage says of a study's trials (for resume and
`run --replace`)."""

import contextlib
from typing import Any

import optuna
import sqlalchemy

from search_spaces import Space
from study.core import Layout, TrialConfig


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
        self.constants = TrialConfig.parse(constants)
        self.context = context

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        self.space.suggest(trial, self.context)  # Ray captures the suggested values itself
        return self.constants.numbered(trial.number).flat()


def sampler(spec: Any) -> optuna.samplers.BaseSampler:
    """The study's Optuna sampler, seeded with `search.seed`."""
    seed = spec.search.seed
    if spec.search.sampler == "grid":
        return GridSampler(spec.grid(), seed=seed)
    if spec.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def first_config(spec: Any, found: Any = None) -> dict[str, Any]:
    """The config the study's first trial gets (its sampler asked once, in memory)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study(sampler=sampler(spec)).ask()
    return {**spec.trial_constants(found), **spec.space.suggest(trial, spec.context(found))}


def ended_trials(layout: Layout) -> dict[int, tuple[str, int]]:
    """Trial number -> (outcome, epochs) of every trial Optuna saw end (empty for a study the
    storage does not have)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=layout.name, storage=layout.optuna_url)
    except KeyError:
        return {}
    return {
        trial.number + 1: (trial.user_attrs.get("outcome", ""), len(trial.intermediate_values))
        for trial in study.get_trials(deepcopy=False)
        if trial.state.is_finished()
    }


def delete_study(layout: Layout) -> None:
    """Drop the study's Optuna trials (`run --replace`)."""
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=layout.name, storage=layout.optuna_url)
