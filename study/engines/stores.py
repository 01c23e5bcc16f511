"""A study's stores taken together: made when it starts (the MLflow experiment, the Optuna
schema, the parent run with the spec and what preflight found) and forgotten when
`run --replace` starts it over."""

import shutil

import yaml
from mlflow.tracking import MlflowClient

from study.core import Found, Layout, write_whole
from study.engines import records
from study.engines import sampler as sampling
from study.spec import StudySpec
from trainables import Data
from trainables.memo import cache_dir


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
    sampling.delete_study(layout)
    records.delete_runs(layout)
    for path in layout.study_dir.iterdir():
        if path not in (layout.driver_lock, layout.driver_record):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for folder in (layout.ray_experiment, *layout.repeats_dirs):
        shutil.rmtree(folder, ignore_errors=True)


def open_records(layout: Layout) -> tuple[MlflowClient, str]:
    """The MLflow client and the study's experiment id, the stores made if new (call it under
    the root's lock)."""
    records.seed_local_store(layout.tracking_uri, cache_dir())
    client = MlflowClient(layout.tracking_uri)
    experiment_id = records.open_experiment(client, layout)
    sampling.Storage(layout.optuna_url)  # creates the schema of a new storage
    return client, experiment_id


def new_parent(
    client: MlflowClient, experiment_id: str, spec: StudySpec, found: Found, data: Data
) -> str:
    """The study's parent run: its spec, what preflight found, its data set as an MLflow
    dataset input."""
    params = {k: v for k, v in spec.model_dump().items() if k != "space"}
    parent_id = records.new_parent(
        client, experiment_id, spec.name, params, spec_text(spec), found.as_dict()
    )
    records.log_dataset(client, parent_id, spec.recorded_dataset(found), data)
    return parent_id
