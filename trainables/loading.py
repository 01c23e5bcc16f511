"""One entry point for every data set a spec names: a built-in (trainables.data), an image
folder or a loader plug-in (trainables.sources), in memory or streamed."""

from typing import Any

from trainables import sources
from trainables.data import load_builtin
from trainables.interface import Data
from trainables.plugins import is_plugin


def load_dataset(spec: dict[str, Any], seed: int = 0) -> Data:
    """Load the data set a study's `dataset` mapping describes and split it with `seed`:
    in memory (a Dataset), or, with placement `stream`, only its index (a Streamed set that
    each trial opens itself).

    Sets without an official test split keep `test_fraction` of the data apart first; the
    validation split (`val_fraction`) comes from what is left, `train_size` caps the training
    split. Tabular features are standardised with statistics of the training split only.
    """
    if spec["name"] == "image_folder" or is_plugin(spec["name"]):
        return sources.load(spec, seed)
    return load_builtin(spec, seed)
