"""The study's Optuna storage: an RDB storage that waits out a database server that stops
answering, SQLite in WAL mode, and what it says of a study's trials (for resume and
`run --replace`)."""

import contextlib
import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import TrialState

from study.core import Layout, from_optuna
from study.engines import outages
from study.engines.sampler import shown
from study.engines.terminate import TERMINATED


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
    trial (39 -> 20 ms, benchmarks/history/scale.md). A killed driver loses nothing (the writes
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


def scored_trials(layout: Layout) -> tuple[list[Any], Any] | None:
    """The study's trials with a value, as importance counts them (completed at their value,
    pruned ones at their last reported value), and its direction; None where the storage or
    the study does not exist. The storage is closed after (no connection left open)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    opened = reader(layout)
    if opened is None:
        return None
    try:
        study = optuna.load_study(study_name=layout.name, storage=opened)
        trials = study.get_trials(deepcopy=False)
        direction = study.direction
    except KeyError:
        return None
    finally:
        opened.engine.dispose()
    seen = [shown(trial) for trial in trials]
    scored = [
        optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=t.value)
        for t in seen
        if t is not None and t.state == TrialState.COMPLETE and math.isfinite(t.value)
    ]
    return scored, direction


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


def terminated(layout: Layout) -> dict[str, Any] | None:
    """What the study's stopping rule (search.terminate, study.engines.terminate) recorded on
    the Optuna study when it stopped it (after, of, line); None while it has not."""
    opened = reader(layout)
    if opened is None:
        return None
    try:
        study = optuna.load_study(study_name=layout.name, storage=opened)
        return study.user_attrs.get(TERMINATED)
    except KeyError:
        return None
    finally:
        opened.engine.dispose()
