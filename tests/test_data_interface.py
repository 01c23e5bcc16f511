"""The data interface both placements implement (trainables.interface): what each set says
about itself, and `examples(n)` being exactly what the loop feeds the network."""

import ast
from pathlib import Path

import pytest
import torch

import trainables
from tests.data_files import image_folder
from tests.plugin_files import example_plugin, write_module
from trainables import Data, DataError, Feed, load_dataset

# float64 images from a loader plug-in: the loop makes them float32, as examples() does
FLOAT64 = """
from sklearn.datasets import load_digits


def load():
    digits = load_digits()
    x = digits.images[:, None] / 16.0
    return x[:1400], digits.target[:1400], x[1400:], digits.target[1400:]
"""


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """One data set of each kind: built-in, plug-in arrays and Datasets, image folder."""
    tmp = tmp_path_factory.mktemp("interface")
    example_plugin(tmp / "code")
    write_module(tmp / "code", "float64_images", FLOAT64)
    folder = image_folder(tmp / "pets", per_class=12)
    code = str(tmp / "code")
    specs = {
        "digits": {"name": "digits"},
        "uint8 arrays": {"name": "my_data:load", "code_dir": code},
        "float64 arrays": {"name": "float64_images:load", "code_dir": code},
        "uint8 datasets, streamed": {
            "name": "my_data:load",
            "args": {"as_datasets": True},
            "placement": "stream",
            "code_dir": code,
        },
        "image folder": {"name": "image_folder", "root": str(folder), "image_size": 8},
        "image folder, streamed": {
            "name": "image_folder",
            "root": str(folder),
            "image_size": 8,
            "placement": "stream",
        },
    }
    return {name: load_dataset(spec, seed=0) for name, spec in specs.items()}


PLACEMENTS = {
    "digits": "memory",
    "uint8 arrays": "memory",
    "float64 arrays": "memory",
    "uint8 datasets, streamed": "stream",
    "image folder": "memory",
    "image folder, streamed": "stream",
}


@pytest.mark.parametrize("name", PLACEMENTS)
def test_every_set_implements_the_interface_and_says_its_placement(sets, name):
    data = sets[name]
    assert isinstance(data, Data) and data.placement == PLACEMENTS[name]
    assert data.is_image and data.input_shape[0] in (1, 3) and data.num_classes in (3, 10)
    assert set(data.sizes()) >= {"train", "val"} and len(data.digest()) == 16
    feed = data.feed(torch.device("cpu"), raw=True, seed=0, workers=0)
    assert isinstance(feed, Feed) and feed.has("val")


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "normalised once"])
@pytest.mark.parametrize("name", PLACEMENTS)
def test_examples_are_exactly_what_the_loop_feeds_the_network(sets, name, raw):
    data = sets[name]
    feed = data.feed(torch.device("cpu"), raw=raw, seed=0, workers=0)
    # One epoch in one batch: every training example, as the loop normalises it.
    [(x, _)] = list(feed.train(data.sizes()["train"], epoch=1))
    fed = feed.normalize(x).flatten(1)
    examples = data.examples(3)
    assert examples.dtype == fed.dtype == torch.float32
    assert examples.shape == (3, *data.input_shape)
    for row in examples.flatten(1):
        assert (fed == row).all(1).any()
    if data.mean is not None:  # images standardised per channel: within +-3, never 0..255
        assert examples.abs().max() < 3


def test_float64_images_train_as_float32(sets):
    reports = []
    config = {"model": {"name": "mlp", "widths": [8]}, "epochs": 1, "seed": 0}
    trainables.fit(config, sets["float64 arrays"], lambda metrics, state: reports.append(metrics))
    assert reports[0]["val_acc"] > 0.1


def test_data_error_is_one_class_wherever_it_is_imported_from():
    from trainables.data import DataError as from_data
    from trainables.interface import DataError as from_interface

    assert DataError is from_data is from_interface


def imports(module: str) -> set[str]:
    """The modules a trainables module imports at its top level, outside TYPE_CHECKING."""
    tree = ast.parse((Path(trainables.__file__).parent / f"{module}.py").read_text())
    found = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add(node.module)
    return found


def test_the_interface_imports_nothing_of_ours_and_data_not_sources():
    assert imports("interface") <= {"collections.abc", "typing"}
    assert "trainables.sources" not in imports("data")
    assert not {"trainables.data", "trainables.sources"} & imports("feed")
