"""Plain PyTorch training for regularization studies: no Ray, no MLflow, no study code."""

from trainables.data import DATASETS, KINDS, DataError, Dataset, load_dataset
from trainables.hyperparameters import CHOICES, HYPERPARAMETERS, METRICS, resolve
from trainables.loop import build, fit
from trainables.models import MODELS

__all__ = [
    "CHOICES",
    "DATASETS",
    "DataError",
    "Dataset",
    "HYPERPARAMETERS",
    "KINDS",
    "METRICS",
    "MODELS",
    "build",
    "fit",
    "load_dataset",
    "resolve",
]
