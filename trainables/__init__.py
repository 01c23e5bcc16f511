"""Plain PyTorch training for regularization studies: no Ray, no MLflow, no study code."""

from trainables.data import DATASETS, KINDS, DataError, Dataset, load_dataset
from trainables.hyperparameters import CHOICES, DOMAINS, HYPERPARAMETERS, METRICS, Domain, resolve
from trainables.loop import build, fit
from trainables.models import MODELS

__all__ = [
    "CHOICES",
    "DATASETS",
    "DOMAINS",
    "DataError",
    "Domain",
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
