"""Optuna without Ray: the study's storage and sampler, the define-by-run space, the first
config preflight builds, and what the storage says of a study's trials (for resume and
`run --replace`)."""

import contextlib
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import TrialState

from search_spaces import Space
from study.core import Layout, TrialConfig, from_optuna
from study.engines import outages


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


# The RDBStorage methods that talk to the database: each is tried again while the server does
# not answer (study.engines.outages.retry). A write whose commit reached the server just before the
# connection broke is sent twice: harmless for every method but `create_new_trial`, where the
# window is the moment between the server's commit and its reply.
RETRIED = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions",
    "get_study_user_attrs", "get_study_system_attrs", "get_all_studies", "create_new_trial",
    "set_trial_param", "get_trial_id_from_study_id_trial_number", "get_trial_param",
    "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
    "get_trial_user_attrs", "get_trial_system_attrs", "get_trial", "get_all_trials",
    "get_best_trial",
    # Optuna's cache in front of every RDBStorage a study is given calls these private ones
    # (optuna < 5.2; tests/unit/test_engine_internals.py names them).
    "_create_new_trial", "_set_trial_param", "_get_trials", "_get_best_trial_id",
)  # fmt: skip


def _retried(name: str) -> Callable[..., Any]:
    method = getattr(optuna.storages.RDBStorage, name)

    @functools.wraps(method)
    def call(self: "Storage", *args: Any, **kwargs: Any) -> Any:
        return outages.retry(
            outages.OPTUNA, self.where, lambda: method(self, *args, **kwargs), self.patience
        )

    return call


class Storage(optuna.storages.RDBStorage):
    """Optuna's RDB storage, waiting for a database server that stops answering (up to
    `patience` seconds, saying so once on the console; study.engines.outages) instead of failing.

    An SQLite file is opened in WAL mode, synced at its checkpoints rather than at every commit.
    A study commits each epoch of each trial; this halves what the driver spends in Optuna per
    trial (39 -> 20 ms, benchmarks/RESULTS.md, scale). A killed driver loses nothing (the writes
    are in the file); a power cut may lose the last commits. `create=False` opens a storage for
    reading: no table is made and no pragma set.
    """

    def __init__(
        self, url: str, *, create: bool = True, patience: float = outages.PATIENCE_S
    ) -> None:
        self.where, self.patience, self.create = outages.hidden(url), patience, create
        init = super().__init__
        outages.retry(
            outages.OPTUNA, self.where, lambda: init(url, skip_table_creation=not create), patience
        )
        self._no_sync_per_commit()

    def __setstate__(self, state: dict[Any, Any]) -> None:  # Ray pickles the searcher
        super().__setstate__(state)
        self._no_sync_per_commit()

    def _no_sync_per_commit(self) -> None:
        if self.engine.name == "sqlite" and self.create:
            sqlalchemy.event.listen(self.engine, "connect", _sqlite_pragmas)
            self.engine.dispose()  # the connections opened so far had no pragmas

    def set_trial_state_values(self, trial_id: int, state: Any, values: Any = None) -> bool:
        tries = 0
        parent = super().set_trial_state_values

        def tell() -> bool:
            nonlocal tries
            tries += 1
            try:
                return parent(trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                # A retry of a commit that went through before the connection broke.
                if (
                    tries > 1
                    and optuna.storages.RDBStorage.get_trial(self, trial_id).state == state
                ):
                    return True
                raise

        return outages.retry(outages.OPTUNA, self.where, tell, self.patience)


for _name in RETRIED:
    setattr(Storage, _name, _retried(_name))


def reader(layout: Layout) -> Storage | None:
    """The study's Optuna storage opened for reading, None where it was never made (a local
    SQLite file that does not exist: opening it would make it)."""
    url = layout.optuna_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    return Storage(url, create=False)


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


class LearnsFromEarlyStopped(optuna.samplers.BaseSampler):
    """A sampler (Optuna's GPSampler) that learns from the trials ASHA stopped as well: it is
    shown a copy of the study in memory in which each PRUNED trial is COMPLETE at its last
    reported value, what Ray's stock OptunaSearch tells Optuna. The study's own records keep
    them PRUNED. GPSampler reads COMPLETE trials only, so without this, behind ASHA it learns
    from the few trials that reach max_epochs (benchmarks/RESULTS.md, LCBench)."""

    def __init__(self, inner: optuna.samplers.BaseSampler) -> None:
        self.inner = inner

    def seen(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> tuple:
        """The copy of `study` the inner sampler sees, and `trial` in it."""
        copy = optuna.create_study(directions=study.directions)
        here = None
        for past in study.get_trials(deepcopy=False):
            state, value = past.state, past.value
            if state == TrialState.PRUNED and past.intermediate_values:
                state, value = (
                    TrialState.COMPLETE,
                    past.intermediate_values[max(past.intermediate_values)],
                )
            if state not in (TrialState.COMPLETE, TrialState.RUNNING) or (
                state == TrialState.COMPLETE and value is None
            ):
                continue
            copy.add_trial(
                optuna.trial.create_trial(
                    state=state, value=value, params=past.params, distributions=past.distributions
                )
            )
            if past.number == trial.number:
                here = copy.get_trials(deepcopy=False)[-1]
        return copy, here

    def infer_relative_search_space(self, study, trial):
        copy, _ = self.seen(study, trial)
        return self.inner.infer_relative_search_space(copy, trial)

    def sample_relative(self, study, trial, search_space):
        copy, here = self.seen(study, trial)
        return self.inner.sample_relative(copy, here, search_space) if here else {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial):
        self.inner.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


# The GP's random trials before it learns, unless search.startup_trials says: on LCBench 3 beat
# Optuna's 10 (benchmarks/RESULTS.md, "GP from the 4th trial").
GP_STARTUP = 3


def startup_trials(search: Any) -> int | None:
    """The random trials before the sampler learns: `search.startup_trials`, unset GP_STARTUP
    for the GP and None (Optuna's 10) for TPE."""
    return search.startup_trials or (GP_STARTUP if search.sampler == "gp" else None)


def sampler(spec: Any) -> optuna.samplers.BaseSampler:
    """The study's Optuna sampler, seeded with `search.seed`."""
    seed = spec.search.seed
    if spec.search.sampler == "grid":
        return GridSampler(spec.grid(), seed=seed)
    if spec.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = startup_trials(spec.search)
    if spec.search.sampler == "gp":  # Gaussian-process BO, shown early-stopped trials too
        import torch

        # The GP fits in the driver, beside the trials: on one thread, or torch's idle
        # threads spin against theirs (benchmarks/RESULTS.md, "the GP's fit on one thread")
        torch.set_num_threads(1)
        return LearnsFromEarlyStopped(
            optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
        )
    return optuna.samplers.TPESampler(
        seed=seed, **({"n_startup_trials": startup} if startup else {})
    )


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
        study = optuna.load_study(study_name=layout.name, storage=Storage(layout.optuna_url))
    except KeyError:
        return {}
    return {
        from_optuna(trial.number): (
            trial.user_attrs.get("outcome", ""),
            len(trial.intermediate_values),
        )
        for trial in study.get_trials(deepcopy=False)
        if trial.state.is_finished()
    }


def delete_study(layout: Layout) -> None:
    """Drop the study's Optuna trials (`run --replace`)."""
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=layout.name, storage=Storage(layout.optuna_url))
