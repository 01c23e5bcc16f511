"""`study train --register`: the registered model's input example is what the training loop
feeds the network (uint8 images divided by 255, then normalised), in memory and streamed."""

import sys

import mlflow
import numpy as np
import pytest
import torch
import yaml
from mlflow.models import Model
from mlflow.tracking import MlflowClient
from rich.console import Console

from study.commands.train import train
from tests.plugin_files import example_plugin, write_module

# A network that keeps every batch it is given, per network built, so the test sees what the
# loop fed it: fit's network is the first one built after the test starts.
RECORDER = """
import math

from torch import nn

INPUTS = []  # per network built, the batches it was given


class Recorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.index = len(INPUTS)
        INPUTS.append([])

    def forward(self, x):
        INPUTS[self.index].append(x.detach().clone())
        return x


def build(input_shape, num_classes, hp):
    return nn.Sequential(Recorder(), nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))
"""

# The example loader plug-in: scikit-learn's digits as uint8 (N, 1, 8, 8) images, as arrays
# (memory) or as torch Datasets (streamed).
LOADERS = {
    "memory": {"name": "my_data:load"},
    "stream": {"name": "my_data:load", "args": {"as_datasets": True}, "placement": "stream"},
}


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh MLflow SQLite store with one run, as a study's exported trial names it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("digits", artifact_location=str(tmp_path / "artifacts"))
    yield uri, client, client.create_run(experiment).info.run_id
    mlflow.set_tracking_uri(None)  # `study train` set it for this process; the env comes back


@pytest.mark.parametrize("placement", ["memory", "stream"])
def test_the_registered_input_example_is_what_the_loop_feeds_the_network(
    placement, store, tmp_path
):
    uri, client, run_id = store
    code = tmp_path / "code"
    example_plugin(code)
    recorder = f"input_recorder_{placement}"  # a module of its own: its first network is fit's
    write_module(code, recorder, RECORDER)
    config = {
        "dataset": {**LOADERS[placement], "source": {"file": str(code / "my_data.py")}},
        "model": {"name": f"{recorder}:build", "source": {"file": str(code / f"{recorder}.py")}},
        "epochs": 1,
        "seed": 0,
    }
    path = tmp_path / "best.yaml"
    path.write_text(
        yaml.safe_dump({"config": config, "mlflow": {"tracking_uri": uri, "run_id": run_id}})
    )
    train(path, Console(quiet=True), register=f"digits-{placement}")

    [version] = client.search_model_versions(f"name = 'digits-{placement}'")
    local = mlflow.artifacts.download_artifacts(version.source, dst_path=str(tmp_path / "model"))
    example = np.asarray(Model.load(local).load_input_example(local), dtype=np.float32)
    assert example.shape == (2, 1, 8, 8)
    # Normalised pixels (about -0.8..1.8 here), not uint8 values normalised (up to 677).
    assert example.min() > -1 and example.max() < 2
    fed = torch.cat(sys.modules[recorder].INPUTS[0]).flatten(1)  # every input of fit's network
    for row in torch.from_numpy(example).flatten(1):
        assert (fed == row).all(1).any(), "the input example is not an input the loop gave"
