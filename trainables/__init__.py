"""Plain PyTorch training for regularization studies: no Ray, no MLflow, no study code."""

from trainables.data import DATASETS, Dataset, load_dataset
from trainables.hyperparameters import HYPERPARAMETERS, METRICS, resolve
from trainables.loop import fit
from trainables.models import ACTIVATIONS, MODELS
from trainables.optim import OPTIMIZERS

__all__ = [
    "ACTIVATIONS",
    "DATASETS",
    "Dataset",
    "HYPERPARAMETERS",
    "METRICS",
    "MODELS",
    "OPTIMIZERS",
    "fit",
    "load_dataset",
    "resolve",
]
