"""Fixtures of the in-memory unit layer: no Ray cluster, no subprocess, stores in tmp_path."""

import sys

import optuna
import pytest


@pytest.fixture(autouse=True)
def quiet_optuna():
    """Optuna's INFO line per study and trial is noise here."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(autouse=True)
def no_ray_cluster():
    """A unit test never starts Ray (checked without importing it)."""
    yield
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized(), "a unit test started Ray; use fakes"


@pytest.fixture
def optuna_url(tmp_path) -> str:
    """An Optuna storage URL: an SQLite file of the test's own."""
    return f"sqlite:///{tmp_path / 'optuna.db'}"
