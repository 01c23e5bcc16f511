"""The private attributes of Ray, Optuna and MLflow our adapters reach, checked on real objects
built in memory: an upgrade that drops or reshapes one fails here, by name, not in a user's
study. pyproject.toml caps each engine at the series this file has passed on."""

import importlib.metadata
import inspect
import sqlite3
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Dataset
from optuna.trial import TrialState
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from study.engines.schedule import ResumableASHA
from study.engines.search import PrunedAwareOptunaSearch
from study.engines.storage import RETRIED, Storage
from study.engines.stores import dataset_input

ROOT = Path(__file__).resolve().parents[2]


def user(thing) -> str:
    """Where our code relies on an attribute: `study/engines/schedule.py ResumableASHA`."""
    path = Path(inspect.getsourcefile(thing)).resolve().relative_to(ROOT)
    return f"{path.as_posix()} {thing.__name__}"


def gone(name: str, relied: tuple, how: str = "is gone") -> str:
    """The failure message for `name`, an attribute of the engine that `relied` names
    (distribution, our class or function) which is not there as we use it."""
    distribution, used_by = relied
    version = importlib.metadata.version(distribution)
    return (
        f"{name} {how} in {distribution} {version}; {user(used_by)} relies on it: "
        "re-check it and move the cap in pyproject.toml"
    )


def private(obj, attribute: str, name: str, kind: type, relied: tuple):
    """`obj.attribute`, failing with `gone(...)` unless it exists as an instance of `kind`."""
    assert hasattr(obj, attribute), gone(name, relied)
    value = getattr(obj, attribute)
    assert isinstance(value, kind), gone(name, relied, f"is no longer a {kind.__name__}")
    return value


def expect(condition: bool, name: str, relied: tuple) -> None:
    """Fail with `gone(...)` when `condition`, the shape we rely on, does not hold."""
    assert condition, gone(name, relied, "changed shape")


# -- Ray Tune: ASHAScheduler ---------------------------------------------------------------------

ASHA = "ray.tune.schedulers.ASHAScheduler"
BY_ASHA = ("ray", ResumableASHA)


@pytest.fixture
def asha() -> ASHAScheduler:
    """Ray's own scheduler, its metric and mode set as TuneConfig sets them."""
    scheduler = ASHAScheduler(time_attr="epoch", max_t=9, grace_period=1, reduction_factor=3)
    scheduler.set_search_properties("val_acc", "min")
    return scheduler


def test_asha_brackets_hold_rungs_of_milestone_and_records(asha):
    """`_brackets`: a list of brackets; each `_rungs`: a list of (milestone, dict) pairs."""
    brackets = private(asha, "_brackets", f"{ASHA}._brackets", list, BY_ASHA)
    expect(len(brackets) == 1, f"{ASHA}._brackets", BY_ASHA)
    name = f"{ASHA}._brackets[0]._rungs"
    rungs = private(brackets[0], "_rungs", name, list, BY_ASHA)
    pairs = all(isinstance(r, tuple) and len(r) == 2 and isinstance(r[1], dict) for r in rungs)
    expect(pairs, f"{name} as (milestone, dict) pairs", BY_ASHA)
    expect(sorted(milestone for milestone, _ in rungs) == [1, 3, 9], f"{name} milestones", BY_ASHA)


def test_asha_records_a_result_by_trial_id_and_metric_sign(asha):
    """A rung's dict maps the Tune trial id to `_metric_op` * value, the shape `record` writes."""
    trial = Trial("unit", config={}, trial_id="t1", stub=True)
    asha.on_trial_add(None, trial)
    asha.on_trial_result(None, trial, {"epoch": 1, "val_acc": 0.25})
    recorded = {milestone: dict(r) for milestone, r in asha._brackets[0]._rungs}
    expect(recorded[1] == {"t1": -0.25}, f"{ASHA}._brackets[0]._rungs records", BY_ASHA)


def test_asha_metric_and_its_sign(asha):
    """`_metric` is the metric TuneConfig set; `_metric_op` is -1.0 for min, 1.0 for max."""
    metric = private(asha, "_metric", f"{ASHA}._metric", str, BY_ASHA)
    expect(metric == "val_acc", f"{ASHA}._metric", BY_ASHA)
    sign = private(asha, "_metric_op", f"{ASHA}._metric_op", float, BY_ASHA)
    maximizing = ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=9)
    expect((sign, maximizing._metric_op) == (-1.0, 1.0), f"{ASHA}._metric_op", BY_ASHA)


def test_asha_trial_info_holds_each_trials_bracket():
    """`_trial_info`: Tune trial id -> its bracket (one of `_brackets`), set by on_trial_add;
    we set it by the trial's number (ResumableASHA.bracket_of)."""
    asha = ASHAScheduler(time_attr="epoch", max_t=9, grace_period=1, brackets=2)
    asha.set_search_properties("val_acc", "max")
    trial = Trial("unit", config={}, trial_id="t1", stub=True)
    asha.on_trial_add(None, trial)
    info = private(asha, "_trial_info", f"{ASHA}._trial_info", dict, BY_ASHA)
    expect(info["t1"] in asha._brackets, f"{ASHA}._trial_info values", BY_ASHA)


# -- Ray Tune: OptunaSearch ----------------------------------------------------------------------

SEARCH = "ray.tune.search.optuna.OptunaSearch"
BY_SEARCH = ("ray", PrunedAwareOptunaSearch)


def space(trial: optuna.Trial) -> dict:
    """A define-by-run space of one parameter."""
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    return {}


@pytest.fixture
def searcher(optuna_url) -> OptunaSearch:
    """Ray's own searcher, define-by-run, on an Optuna RDB storage."""
    return OptunaSearch(
        space=space,
        metric="val_acc",
        mode="max",
        storage=optuna.storages.RDBStorage(optuna_url),
        study_name="internals",
    )


def test_optuna_search_keeps_its_space_and_study(searcher):
    """`_space` is the define-by-run function; `_ot_study` the Optuna study it asks."""
    expect(getattr(searcher, "_space", None) is space, f"{SEARCH}._space", BY_SEARCH)
    private(searcher, "_ot_study", f"{SEARCH}._ot_study", optuna.Study, BY_SEARCH)


def test_optuna_search_maps_tune_trials_to_optuna_trials(searcher):
    """`_ot_trials`: Tune trial id -> the optuna.Trial asked for it."""
    searcher.suggest("t1")
    trials = private(searcher, "_ot_trials", f"{SEARCH}._ot_trials", dict, BY_SEARCH)
    expect(isinstance(trials.get("t1"), optuna.Trial), f"{SEARCH}._ot_trials", BY_SEARCH)


def test_optuna_search_keeps_the_trials_it_told(searcher):
    """`_completed_trials`: the set of Tune trial ids told to Optuna."""
    searcher.suggest("t1")
    searcher.on_trial_complete("t1", {"val_acc": 0.5, "training_iteration": 1})
    name = f"{SEARCH}._completed_trials"
    expect(private(searcher, "_completed_trials", name, set, BY_SEARCH) == {"t1"}, name, BY_SEARCH)


# -- Optuna: trial ids and the study's storage ---------------------------------------------------

BY_OPTUNA = ("optuna", PrunedAwareOptunaSearch)


@pytest.fixture
def study(optuna_url) -> optuna.Study:
    """An Optuna study on an RDB storage, as the searcher's."""
    return optuna.create_study(storage=optuna_url, study_name="internals")


def test_trials_share_their_storage_id(study):
    """`Trial._trial_id` and `FrozenTrial._trial_id` are the storage's id of the same trial."""
    asked = study.ask()
    trial_id = private(asked, "_trial_id", "optuna.Trial._trial_id", int, BY_OPTUNA)
    (frozen,) = study.get_trials(deepcopy=False)
    name = "optuna.trial.FrozenTrial._trial_id"
    expect(private(frozen, "_trial_id", name, int, BY_OPTUNA) == trial_id, name, BY_OPTUNA)


def test_a_trial_is_rebuilt_from_its_study_and_storage_id(study):
    """`optuna.Trial(study, trial_id)` is the running trial again: its params come back."""
    asked = study.ask()
    lr = asked.suggest_float("lr", 1e-4, 1e-1, log=True)
    again = optuna.Trial(study, asked._trial_id)
    same = again.number == asked.number and again.params == {"lr": lr}
    expect(same, "optuna.Trial(study, trial_id)", BY_OPTUNA)


def test_the_study_storage_reads_a_trial_by_id(study):
    """`Study._storage.get_trial(trial_id)` gives the trial's stored state."""
    asked = study.ask()
    study.tell(asked, state=TrialState.PRUNED)
    name = "optuna.Study._storage"
    storage = private(study, "_storage", name, optuna.storages.BaseStorage, BY_OPTUNA)
    expect(storage.get_trial(asked._trial_id).state == TrialState.PRUNED, name, BY_OPTUNA)


def test_the_rdb_storage_exposes_its_engine(optuna_url):
    """`RDBStorage.engine` is the SQLAlchemy engine our storage sets the SQLite pragmas on."""
    storage = optuna.storages.RDBStorage(optuna_url)
    name, relied = "optuna.storages.RDBStorage.engine", ("optuna", Storage)
    engine = private(storage, "engine", name, sqlalchemy.engine.Engine, relied)
    expect(engine.name == "sqlite", name, relied)


def test_optuna_reaches_the_rdb_storage_through_the_private_methods_we_retry(optuna_url):
    """Optuna wraps every RDBStorage a study is given in a cache that calls its private
    `_create_new_trial`, `_set_trial_param`, `_get_trials` and `_get_best_trial_id`: our
    Storage retries those too while the database server does not answer."""
    private_ones = [name for name in RETRIED if name.startswith("_")]
    called = []

    def counted(name):
        method = getattr(Storage, name)

        def call(self, *args, **kwargs):
            called.append(name)
            return method(self, *args, **kwargs)

        return call

    counting = type("Counting", (Storage,), {n: counted(n) for n in private_ones})
    study = optuna.create_study(storage=counting(optuna_url), study_name="internals")
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    study.tell(trial, 0.5)
    study.ask()
    assert study.best_trial.number == 0
    for name in private_ones:
        relied = ("optuna", Storage)
        expect(name in called, f"optuna.storages.RDBStorage.{name} (called by its cache)", relied)


# -- MLflow --------------------------------------------------------------------------------------


def test_a_meta_dataset_becomes_an_mlflow_dataset_entity():
    """`MetaDataset._to_mlflow_entity()` gives the Dataset entity `log_inputs` takes."""
    meta = MetaDataset(CodeDatasetSource(tags={"loader": "unit"}), name="unit", digest="abc")
    name = "mlflow.data.meta_dataset.MetaDataset._to_mlflow_entity"
    relied = ("mlflow", dataset_input)
    expect(callable(getattr(meta, "_to_mlflow_entity", None)), name, relied)
    entity = meta._to_mlflow_entity()
    expect(isinstance(entity, Dataset) and entity.name == "unit", name, relied)


def schema(db: Path) -> list[tuple]:
    """Every table, index and trigger of an SQLite file, with its SQL's lines in order (MLflow's
    migrations rebuild tables with their constraints in the order of a Python set, which
    differs from one process to the next), and the alembic head."""
    with sqlite3.connect(db) as connection:
        made = connection.execute("select type, name, sql from sqlite_master order by name")
        rows = [(k, name, sorted((sql or "").replace(",", "\n").split())) for k, name, sql in made]
        return [*rows, *connection.execute("select * from alembic_version")]


def test_a_seeded_store_is_the_store_mlflow_makes(tmp_path):
    """`mlflow.store.db.utils._initialize_tables` makes an empty store's tables; the copy of it
    a new root gets opens in MLflow with the same schema, revision and Default experiment (this
    root's artifact path) as a store MLflow makes itself, and is made once per MLflow version."""
    import mlflow.store.db.utils
    from mlflow.tracking import MlflowClient

    from study.engines.stores import seed_local_store

    name, relied = "mlflow.store.db.utils._initialize_tables", ("mlflow", seed_local_store)
    expect(callable(getattr(mlflow.store.db.utils, "_initialize_tables", None)), name, relied)
    cache, made, seeded = tmp_path / "cache", tmp_path / "made", tmp_path / "seeded"
    seed_local_store(f"sqlite:///{seeded / 'mlflow.db'}", cache)
    assert [p.name for p in cache.iterdir()] == [f"mlflow-{mlflow.__version__}.db"]
    for root in (made, seeded):
        root.mkdir(exist_ok=True)
        client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
        (default,) = client.search_experiments()
        assert (default.experiment_id, default.name) == ("0", "Default")
        client.create_experiment("e", artifact_location=(root / "art").as_uri())
    expect(schema(made / "mlflow.db") == schema(seeded / "mlflow.db"), name, relied)

    with sqlite3.connect(cache / f"mlflow-{mlflow.__version__}.db") as connection:
        connection.execute("create table marker (x)")  # the cache is used, not made again
    again = tmp_path / "again" / "mlflow.db"
    seed_local_store(f"sqlite:///{again}", cache)
    assert ("table", "marker") in [row[:2] for row in schema(again)]
    again.write_bytes(b"kept")  # a store that exists is never replaced
    seed_local_store(f"sqlite:///{again}", cache)
    assert again.read_bytes() == b"kept"


# -- Ray: the local node whose logs a benchmark reads ---------------------------------------------


def test_the_local_node_names_its_session_folder():
    """benchmarks/tracking.py counts "database is locked" in the logs of the local Ray its
    study started: ray._private.worker._global_node is that node, and it names its folder."""
    import ray._private.node
    import ray._private.worker

    from benchmarks.tracking import locked_study

    relied = ("ray", locked_study)
    name = "ray._private.worker._global_node"
    expect(hasattr(ray._private.worker, "_global_node"), name, relied)
    method = getattr(ray._private.node.Node, "get_session_dir_path", None)
    expect(callable(method), "ray._private.node.Node.get_session_dir_path", relied)


# -- Ray Tune: the runtime_env of its trial actors -------------------------------------------------


def test_tune_builds_its_trial_actors_runtime_env_from_a_dict_we_can_empty(monkeypatch):
    """study.engines.cluster.trials_on_idle_workers empties Tune's DEFAULT_ENV_VARS so that Ray
    starts its trial actors on the workers it keeps idle: Tune must still read that dict each
    time it makes an actor class, and the actor class must then carry no runtime_env at all (Ray
    normalises {"env_vars": {}} to an empty one), as an actor on an idle worker needs."""
    from ray.tune.execution import class_cache

    from study.engines.cluster import trials_on_idle_workers

    relied = ("ray", trials_on_idle_workers)
    name = "ray.tune.execution.class_cache.DEFAULT_ENV_VARS"
    defaults = private(class_cache, "DEFAULT_ENV_VARS", name, dict, relied)
    monkeypatch.setattr(class_cache, "DEFAULT_ENV_VARS", dict(defaults))  # the test's own copy
    for variable in class_cache.ENV_VARS_TO_PROPAGATE:
        monkeypatch.delenv(variable, raising=False)

    class Trainable:
        pass

    trials_on_idle_workers()
    actor_class = class_cache._ActorClassCache().get(Trainable)
    options = private(actor_class, "_default_options", "ActorClass._default_options", dict, relied)
    expect(not options.get("runtime_env"), name, relied)


# -- Ray Tune: the controller's use of a scheduler's choose_trial_to_run --------------------------


def test_tune_starts_its_pending_trials_in_order_when_the_scheduler_picks_none():
    """study.engines.schedule.KeepNewActors returns None from choose_trial_to_run so that Tune's
    controller picks no trial ahead of the others: its actor-adding step must still skip the
    scheduler's pick when it is None and start its pending trials from their list, in order."""
    from ray.tune.execution.tune_controller import TuneController

    from study.engines.schedule import KeepNewActors

    relied = ("ray", KeepNewActors)
    name = "ray.tune.execution.tune_controller.TuneController._maybe_add_actors"
    step = private(TuneController, "_maybe_add_actors", name, type(lambda: None), relied)
    source = inspect.getsource(step)
    expect("self._scheduler_alg.choose_trial_to_run(" in source, name, relied)
    expect("if trial_to_run:" in source, name, relied)  # None: nothing started ahead
    expect("self._pending_trials_list" in source, name, relied)  # then the pending, in order


# -- torch: the compiler guard torch.optim puts on an optimizer's methods -------------------------


def test_torch_optim_guards_its_methods_with_a_cache_we_fill():
    """trainables.optim keeps torch._dynamo out of an optimizer's methods: it fills the cache
    torch's `_disable_dynamo` wrapper reads first (`__dynamo_disable` on the wrapped function)
    and runs the function under `step`'s wrapper itself. The optimizers' other methods must
    still be that wrapper, `step` a wrapper with `__wrapped__`, and the wrapper must call what
    the cache holds instead of importing torch._dynamo. torch is not capped: this is the pin."""
    import torch

    from trainables.optim import _kept_out

    relied = ("torch", _kept_out)
    name = "torch._disable_dynamo"
    wrap = private(torch, "_disable_dynamo", name, type(lambda: None), relied)
    marker = wrap(lambda: None).__code__
    for cls in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop):
        wrapped = {
            n
            for k in cls.__mro__
            for n, v in vars(k).items()
            if getattr(v, "__code__", None) is marker
        }
        expect(
            {"zero_grad", "state_dict"} <= wrapped, f"{cls.__name__}'s methods by {name}", relied
        )
        expect(inspect.unwrap(cls.step) is not cls.step, f"{cls.__name__}.step's wrapper", relied)

    calls = []

    def original() -> str:
        return "original"

    def cached() -> str:
        calls.append("cached")
        return "cached"

    guarded = wrap(original)
    original.__dynamo_disable = cached  # what trainables.optim sets (to the function itself)
    expect(guarded() == "cached" and calls == ["cached"], f"{name}'s cache", relied)
