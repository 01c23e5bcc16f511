"""Plain PyTorch training for regularization studies: no Ray, no MLflow, no study code.

Importing the package loads no torch or numpy: the names a study spec is checked against
come from torch-free modules, and the training names (`fit`, `build`, `Dataset`,
`load_dataset`) are imported on first use (PEP 562), so `study status` starts fast.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from trainables.catalog import DATASETS, KINDS, MODELS, TORCHVISION_SETS
from trainables.hyperparameters import DOMAINS, HYPERPARAMETERS, METRICS, Domain, resolve
from trainables.interface import Data, DataError, Feed

if TYPE_CHECKING:
    from trainables.data import Dataset
    from trainables.loading import load_dataset
    from trainables.loop import build, fit

# name -> the module that defines it, imported when the name is first asked for
LAZY = {
    "Dataset": "trainables.data",
    "load_dataset": "trainables.loading",
    "build": "trainables.loop",
    "fit": "trainables.loop",
}


def __getattr__(name: str) -> Any:
    """A torch-heavy name, imported from its module on first use."""
    if name not in LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(LAZY[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


__all__ = [
    "DATASETS",
    "DOMAINS",
    "Data",
    "DataError",
    "Dataset",
    "Domain",
    "Feed",
    "HYPERPARAMETERS",
    "KINDS",
    "METRICS",
    "MODELS",
    "TORCHVISION_SETS",
    "build",
    "fit",
    "load_dataset",
    "resolve",
]
