"""One entry point for every data set a spec names: a built-in (trainables.data), an image
folder or a loader plug-in (trainables.sources), in memory or streamed."""

from typing import Any

from trainables import sources
from trainables.data import load_builtin
from trainables.hyperparameters import own_knobs
from trainables.interface import Data
from trainables.plugins import code_dir, is_plugin, load_callable, taken


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


def trial_dataset(config: dict[str, Any]) -> dict[str, Any]:
    """The `dataset` mapping a trial's config loads: a loader plug-in's own knobs that the
    config sets are added to its `args`."""
    dataset = config["dataset"]
    knobs = own_knobs(config)
    if not knobs or not is_plugin(dataset["name"]):
        return dataset
    knobs = taken(load_callable(dataset["name"], code_dir(dataset)), knobs)
    return {**dataset, "args": {**(dataset.get("args") or {}), **knobs}} if knobs else dataset


def trial_data(config: dict[str, Any], data: Data) -> Data:
    """What a trial trains on: the study's `data`, or, when the config sets knobs of its
    loader plug-in, what the loader gives for them (split as the study's)."""
    dataset = trial_dataset(config)
    return data if dataset is config["dataset"] else load_dataset(dataset, seed=config["seed"])
