"""Reading a study's records makes nothing: no store where there is none."""

from study.core import Layout
from study.engines.records import StudyRecords


def test_reading_a_study_without_a_store_makes_none(tmp_path):
    """A root whose driver died before making the MLflow store: nothing to read, no file made."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    layout = Layout(tmp_path, "s", "s", uri, f"sqlite:///{tmp_path}/optuna.db", str(tmp_path))
    assert StudyRecords.reading(layout) is None
    assert list(tmp_path.iterdir()) == []
