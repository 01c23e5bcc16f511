"""The Optuna searcher in memory: fake Tune results in, the Optuna study's trials checked."""

import math
import pickle

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search import Searcher

from study.engines.sampler import GridSampler, LearnsFromEarlyStopped, sampler
from study.engines.search import PrunedAwareOptunaSearch
from study.engines.storage import Storage
from study.spec import StudySpec

METRIC = "val_acc"
MAX_EPOCHS = 9
NUM_SAMPLES = 3
STUDY = "unit-search"


def space(trial: optuna.Trial) -> dict:
    """One sampled parameter, and the trial's number as the study's own space returns it."""
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    return {"optuna_trial": trial.number}


def result(epoch: int, value: float, **extra) -> dict:
    """A Tune result of one epoch."""
    return {"epoch": epoch, METRIC: value, **extra}


def history(first: int, last: int) -> list[dict]:
    """The per-epoch results from `first` to `last`, the metric rising 0.1 an epoch."""
    return [result(epoch, epoch / 10) for epoch in range(first, last + 1)]


@pytest.fixture
def storage(optuna_url):
    """A factory of the study's Optuna storage on the test's SQLite file (one per searcher, as
    each driver opens its own)."""
    return lambda: Storage(optuna_url)


@pytest.fixture
def make_searcher(storage):
    """A factory of searchers on the test's Optuna storage, made as `build_searcher` makes them."""

    def make(resumed: bool = False, sampler: optuna.samplers.BaseSampler | None = None):
        return PrunedAwareOptunaSearch(
            space=space,
            metric=METRIC,
            mode="max",
            sampler=sampler or optuna.samplers.RandomSampler(seed=0),
            storage=storage(),
            study_name=STUDY,
            max_epochs=MAX_EPOCHS,
            num_samples=NUM_SAMPLES,
            resumed=resumed,
        )

    return make


@pytest.fixture
def searcher(make_searcher) -> PrunedAwareOptunaSearch:
    """A searcher of a new study."""
    return make_searcher()


@pytest.fixture
def stored(optuna_url):
    """The trials the storage holds now, by number."""

    def trials() -> list[FrozenTrial]:
        return optuna.load_study(study_name=STUDY, storage=optuna_url).trials

    return trials


def run(searcher: PrunedAwareOptunaSearch, trial_id: str, last_epoch: int) -> dict:
    """Suggest a trial, report each epoch but the last, end it with the last; its config."""
    config = searcher.suggest(trial_id)
    for epoch in range(1, last_epoch):
        searcher.on_trial_result(trial_id, result(epoch, epoch / 10))
    searcher.on_trial_complete(trial_id, result(last_epoch, last_epoch / 10))
    return config


def test_a_trial_that_reaches_max_epochs_is_complete_with_its_value(searcher, stored):
    """A trial ended at max_epochs is COMPLETE, valued at its last metric, outcome completed."""
    run(searcher, "t1", MAX_EPOCHS)
    (trial,) = stored()
    assert trial.state == TrialState.COMPLETE
    assert trial.value == pytest.approx(MAX_EPOCHS / 10)
    assert trial.user_attrs["outcome"] == "completed"
    assert sorted(trial.intermediate_values) == list(range(1, MAX_EPOCHS + 1))


def test_a_trial_stopped_early_is_pruned_with_all_its_intermediate_values(searcher, stored):
    """A trial ended before max_epochs is PRUNED, never COMPLETE, every epoch's metric kept."""
    run(searcher, "t1", 3)
    (trial,) = stored()
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["outcome"] == "early_stopped"
    assert trial.intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3}


def test_every_epoch_of_a_result_history_is_reported(searcher, stored):
    """A result carrying `history` reports each of its epochs, the final result's too."""
    searcher.suggest("t1")
    searcher.on_trial_result("t1", result(2, 0.2, history=history(1, 2)))
    searcher.on_trial_complete("t1", result(4, 0.4, history=history(3, 4)))
    (trial,) = stored()
    assert trial.state == TrialState.PRUNED
    assert trial.intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_metric_fails_the_trial_as_diverged(searcher, stored, value):
    """A NaN or infinite last metric ends the trial FAIL, outcome diverged, and is not reported."""
    searcher.suggest("t1")
    searcher.on_trial_result("t1", result(1, 0.1))
    searcher.on_trial_complete("t1", result(2, value))
    (trial,) = stored()
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["outcome"] == "diverged"
    assert trial.intermediate_values == {1: 0.1}


def test_the_diverged_flag_fails_a_trial_with_a_finite_metric(searcher, stored):
    """`diverged` in the last result ends the trial FAIL and diverged, even at max_epochs."""
    searcher.suggest("t1")
    searcher.on_trial_complete("t1", result(MAX_EPOCHS, 0.5, diverged=True))
    (trial,) = stored()
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["outcome"] == "diverged"


def test_an_error_ends_the_trial_failed(searcher, stored):
    """A trial Ray ends with an error (and no result) is FAIL with outcome failed."""
    searcher.suggest("t1")
    searcher.on_trial_result("t1", result(1, 0.1))
    searcher.on_trial_complete("t1", None, error=True)
    (trial,) = stored()
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["outcome"] == "failed"


def test_a_trial_is_never_told_twice(searcher, stored):
    """Results and an end after the trial's end change nothing and raise nothing."""
    run(searcher, "t1", 3)
    searcher.on_trial_result("t1", result(4, 0.4))
    searcher.on_trial_complete("t1", result(MAX_EPOCHS, 0.9))
    (trial,) = stored()
    assert trial.state == TrialState.PRUNED
    assert trial.intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3}


def test_a_resumed_searcher_hands_a_running_trial_to_the_next_suggestion(make_searcher, stored):
    """An Optuna trial asked before the driver died, unknown to Ray, is the next trial's."""
    asked = make_searcher().suggest("before")
    resumed = make_searcher(resumed=True, sampler=optuna.samplers.RandomSampler(seed=1))
    assert resumed.suggest("after") == asked
    assert len(stored()) == 1
    assert resumed.suggest("new")["optuna_trial"] == 1  # no orphan left: a new trial


def test_a_fresh_searcher_asks_a_new_trial_beside_a_running_one(make_searcher, stored):
    """Without `resumed`, the storage is not searched for orphans."""
    make_searcher().suggest("before")
    assert make_searcher().suggest("after")["optuna_trial"] == 1
    assert len(stored()) == 2


def test_a_resumed_searcher_finishes_once_the_storage_holds_num_samples(make_searcher, stored):
    """Trials of earlier drivers count towards num_samples: then suggest says FINISHED."""
    first = make_searcher()
    for number in range(NUM_SAMPLES - 1):
        run(first, f"first-{number}", MAX_EPOCHS)
    resumed = make_searcher(resumed=True)
    assert resumed.suggest("last")["optuna_trial"] == NUM_SAMPLES - 1
    run(resumed, "last", MAX_EPOCHS)
    assert resumed.suggest("one-too-many") == Searcher.FINISHED
    assert len(stored()) == NUM_SAMPLES


@pytest.mark.parametrize("how", ["restore", "unpickle"])
def test_a_trial_finished_in_the_storage_is_not_told_again(make_searcher, stored, tmp_path, how):
    """A searcher brought back from a snapshot taken while a trial ran leaves it as it ended."""
    first = make_searcher()
    first.suggest("t1")
    first.save(str(tmp_path / "searcher.pkl"))
    snapshot = pickle.dumps(first)
    run(first, "t1", 3)  # the trial ends (pruned) after the snapshot; then the driver dies
    if how == "restore":
        again = make_searcher()
        again.restore(str(tmp_path / "searcher.pkl"))
    else:
        again = pickle.loads(snapshot)
    again.on_trial_result("t1", result(4, 0.4))
    again.on_trial_complete("t1", result(MAX_EPOCHS, 0.9))
    (trial,) = stored()
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["outcome"] == "early_stopped"
    assert trial.intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3}


def test_the_grid_sampler_lets_the_last_grid_point_end_pruned(make_searcher, stored):
    """Optuna's own GridSampler raises from `tell` once the grid is done; ours does not."""
    searcher = make_searcher(sampler=GridSampler({"lr": [0.1, 0.01]}, seed=0))
    run(searcher, "t1", MAX_EPOCHS)
    run(searcher, "t2", 3)
    states = [trial.state for trial in stored()]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED]
    assert {trial.params["lr"] for trial in stored()} == {0.1, 0.01}


def pragma(storage: Storage, name: str):
    """The value of an SQLite pragma on a new connection of the storage."""
    with storage.engine.connect() as connection:
        return connection.exec_driver_sql(f"PRAGMA {name}").scalar()


def test_the_sqlite_storage_writes_ahead_and_syncs_at_checkpoints(storage):
    """WAL journal, synchronous NORMAL (1), on every connection, after unpickling too."""
    opened = storage()
    assert pragma(opened, "journal_mode") == "wal"
    assert pragma(opened, "synchronous") == 1
    unpickled = pickle.loads(pickle.dumps(opened))  # Ray pickles the searcher with it
    assert pragma(unpickled, "synchronous") == 1


def test_the_gp_sampler_learns_from_what_the_searcher_tells_it(make_searcher, stored):
    """`search.sampler: gp` is Optuna's GPSampler: told each trial's value through our
    searcher, it proposes next to the best lr once its random start is over."""
    gp = sampler(StudySpec.model_validate({"search": {"sampler": "gp"}}))
    assert isinstance(gp, LearnsFromEarlyStopped)
    assert isinstance(gp.inner, optuna.samplers.GPSampler)
    searcher = make_searcher(sampler=optuna.samplers.GPSampler(seed=0, n_startup_trials=4))
    for number in range(12):
        searcher.suggest(f"t{number}")
        lr = stored()[-1].params["lr"]
        value = 1 - (math.log10(lr) + 2) ** 2 / 10  # the best at lr = 1e-2
        searcher.on_trial_complete(f"t{number}", result(MAX_EPOCHS, value))
    decades_off = [abs(math.log10(trial.params["lr"]) + 2) for trial in stored()]
    assert max(decades_off[-4:]) < 0.3, decades_off  # random: 1 in 600
    assert all(trial.state == TrialState.COMPLETE for trial in stored())


@pytest.mark.parametrize("kind", ["tpe", "gp"])
@pytest.mark.parametrize("startup", [None, 3])
def test_startup_trials_is_how_many_random_configs_come_before_the_sampler_learns(kind, startup):
    """`search.startup_trials`: the first N trials are the random sampler's draws (same seed),
    the next one is the model's; unset, TPE keeps Optuna's default (10) and GP learns from the
    4th trial on (study.engines.sampler.GP_STARTUP, as measured)."""
    spec = StudySpec.model_validate(
        {"search": {"sampler": kind, "seed": 7, "startup_trials": startup}}
    )
    ours, plain = (
        optuna.create_study(sampler=s, direction="maximize")
        for s in (sampler(spec), optuna.samplers.RandomSampler(seed=7))
    )
    same = []
    for study in (ours, plain):
        for _ in range(4):
            trial = study.ask()
            x = trial.suggest_float("x", 0.0, 1.0)
            study.tell(trial, -((x - 0.3) ** 2))
    for mine, random in zip(ours.trials, plain.trials, strict=True):
        same.append(mine.params == random.params)
    assert same == [True, True, True, kind == "tpe" and startup is None]


@pytest.mark.parametrize("shown", [True, False])
def test_the_gp_sampler_learns_from_trials_asha_stopped(make_searcher, stored, shown):
    """Every trial stopped early (PRUNED in Optuna, as recorded): the GP shown them at their
    last value proposes next to the best lr; Optuna's GPSampler alone, which reads COMPLETE
    trials only, keeps drawing at random."""
    gp = optuna.samplers.GPSampler(seed=0, n_startup_trials=4)
    searcher = make_searcher(sampler=LearnsFromEarlyStopped(gp) if shown else gp)
    for number in range(12):
        searcher.suggest(f"t{number}")
        lr = stored()[-1].params["lr"]
        value = 1 - (math.log10(lr) + 2) ** 2 / 10  # the best at lr = 1e-2
        searcher.on_trial_complete(f"t{number}", result(3, value))  # cut at epoch 3
    assert all(trial.state == TrialState.PRUNED for trial in stored())
    decades_off = [abs(math.log10(trial.params["lr"]) + 2) for trial in stored()]
    assert (max(decades_off[-4:]) < 0.3) is shown, decades_off  # random: 1 in 600


def test_the_gp_fits_on_one_thread_beside_the_trials():
    """The driver's GP fit on torch's default threads spun against the trials' (a 300-trial
    study: 459 ms of driver CPU a trial, 317 ms on one thread): the driver of a GP study sets
    one; building a sampler (as preflight does) sets none."""
    import torch

    from study.commands.run import driver_threads

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gp = StudySpec.model_validate({"search": {"sampler": "gp"}})
        sampler(gp)
        assert torch.get_num_threads() == 2  # the sampler is built without a side effect
        driver_threads(StudySpec.model_validate({"search": {"sampler": "tpe"}}))
        assert torch.get_num_threads() == 2  # TPE needs no torch
        driver_threads(gp)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_an_enqueued_trial_still_waiting_is_not_counted_as_asked():
    """A resumed study whose trials left to run are enqueued ones (search.enqueue) still in
    Optuna's queue asks them: they do not count toward num_samples until asked."""
    from types import SimpleNamespace

    from study.engines.search import PrunedAwareOptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0})
    study.enqueue_trial({"x": 2.0})
    study.ask()  # the first of them, asked by a driver that then died
    assert len(study.get_trials()) == 2
    assert PrunedAwareOptunaSearch._asked(SimpleNamespace(_ot_study=study)) == 1
