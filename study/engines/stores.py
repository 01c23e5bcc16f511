"""A study's stores taken together: made when it starts (the MLflow store and experiment, the
Optuna schema, the parent run with the spec, what preflight found and the data set) and
forgotten when `run --replace` starts it over."""

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import mlflow
import mlflow.store.db.utils
import sqlalchemy
import yaml
from mlflow.exceptions import MlflowException
from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from study.core import Found, Layout, write_whole
from study.engines import records, storage
from study.engines.records import StudyRecords
from study.spec import StudySpec
from trainables import Data
from trainables.memo import cache_dir
from trainables.plugins import is_plugin


def spec_text(spec: StudySpec) -> str:
    """The spec as YAML: saved in the study's folder and on its parent run."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)


def save_spec(layout: Layout, spec: StudySpec, found: Found) -> None:
    """Save what preflight found and the spec in the study's folder. The spec comes last and
    whole: once it is there, `study status` reads both."""
    layout.found_file.write_text(yaml.safe_dump(found.as_dict(), sort_keys=False))
    write_whole(layout.spec_file, spec_text(spec))


def forget(layout: Layout) -> None:
    """Drop a previous study of the same name: its Optuna trials, MLflow runs and files (not
    the driver's lock, which the caller holds)."""
    storage.delete_study(layout)
    records.delete_runs(layout)
    for path in layout.study_dir.iterdir():
        if path not in (layout.driver_lock, layout.driver_record):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for folder in (layout.ray_experiment, *layout.repeats_dirs):
        shutil.rmtree(folder, ignore_errors=True)


def open_records(layout: Layout) -> StudyRecords:
    """The study's records, its stores made if new (call it under the root's lock)."""
    seed_local_store(layout.tracking_uri, cache_dir())
    opened = StudyRecords.opened(layout)
    storage.Storage(layout.optuna_url)  # creates the schema of a new storage
    return opened


def new_parent(records: StudyRecords, spec: StudySpec, found: Found, data: Data) -> str:
    """The study's parent run: its spec, what preflight found, its data set as an MLflow
    dataset input."""
    params = {k: v for k, v in spec.model_dump().items() if k != "space"}
    parent_id = records.new_parent(spec.name, params, spec_text(spec), found.as_dict())
    records.log_inputs(parent_id, [dataset_input(spec.recorded_dataset(found), data)])
    return parent_id


def seed_local_store(tracking_uri: str, cache: Path) -> None:
    """Make a new local SQLite store as a copy of the empty one MLflow made once for this MLflow
    version, kept in `cache`. MLflow makes a store's tables by running every schema migration
    since its first: about a second of CPU and two of commits on every new root's first study;
    the copy takes milliseconds. The copy holds tables only; MLflow opens it before it is put in
    place and adds its Default experiment as it does to a store it made, so a reader never finds
    a store that its opening would change. Any failure leaves the making to MLflow (call it
    under the root's lock)."""
    path = tracking_uri.removeprefix("sqlite:///")
    if not tracking_uri.startswith("sqlite:///") or "?" in path or Path(path).exists():
        return
    store, empty = Path(path), cache / f"mlflow-{mlflow.__version__}.db"
    made = cache / f".{empty.name}.{os.getpid()}.new"
    aside = store.with_name(f".{store.name}.new")
    try:
        if not empty.exists():
            cache.mkdir(parents=True, exist_ok=True)
            engine = sqlalchemy.create_engine(f"sqlite:///{made}")
            try:  # MLflow's own table making (private: mlflow < 3.18, test_engine_internals)
                mlflow.store.db.utils._initialize_tables(engine)
            finally:
                engine.dispose()
            made.replace(empty)  # whole, or not there
        store.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(empty, aside)
        opened = SqlAlchemyStore(f"sqlite:///{aside}", DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)
        opened.engine.dispose()
        aside.replace(store)
    except (OSError, sqlalchemy.exc.SQLAlchemyError, MlflowException):
        pass
    finally:
        made.unlink(missing_ok=True)
        aside.unlink(missing_ok=True)


def dataset_input(dataset: dict[str, Any], data: Any) -> Any:
    """The study's data set as an MLflow dataset input: its name, where it comes from (a folder
    or file, else the loader), its split sizes and a digest."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    where = dataset.get("root") or dataset.get("path")
    if where:
        with warnings.catch_warnings():  # MLflow finds two names for a local path
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(str(Path(where).resolve()))
    else:
        name = dataset["name"]
        loader = name if is_plugin(name) else f"built-in {name}"
        source = CodeDatasetSource(tags={"loader": loader})
    sizes = data.sizes()
    meta = MetaDataset(source, name=dataset["name"], digest=data.digest())
    tags = [InputTag("mlflow.data.context", "training")]
    tags += [InputTag(f"{split}_examples", str(count)) for split, count in sizes.items()]
    if dataset.get("placement"):
        tags.append(InputTag("placement", dataset["placement"]))
    return DatasetInput(meta._to_mlflow_entity(), tags=tags)
