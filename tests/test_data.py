"""Every data set through its real loading code: scikit-learn's sets and generators,
torchvision's MNIST / Fashion-MNIST / CIFAR-10 classes on files written in their on-disk
formats, and a user's CSV."""

import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from study.cli import app
from tests.data_files import fake_cifar10, fake_mnist
from trainables import DataError, fit, load_dataset


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_formats_load_through_torchvision(name, folder, tmp_path):
    fake_mnist(tmp_path, folder)
    data = load_dataset({"name": name, "root": str(tmp_path), "val_fraction": 0.25}, seed=0)
    assert data.x_train.shape == (90, 1, 28, 28) and data.x_train.dtype == torch.uint8
    assert data.x_val.shape == (30, 1, 28, 28)
    assert data.x_test.shape == (40, 1, 28, 28)  # the official t10k split, kept apart
    assert data.num_classes == 10 and data.mean is not None
    on_device = data.to("cpu")
    assert on_device.x_train.dtype == torch.float32 and on_device.x_train.max() <= 1.0
    # The bar position is learnable: the real loader gave the right pixels and labels.
    config = {"lr": 3e-3, "model": {"name": "mlp", "widths": [32]}, "epochs": 15, "seed": 0}
    assert fit(config, data, lambda m, s: None)["train_acc"] > 0.9


def test_cifar10_batches_load_through_torchvision(tmp_path):
    fake_cifar10(tmp_path)
    data = load_dataset({"name": "cifar10", "root": str(tmp_path)}, seed=0)
    assert data.x_train.shape == (80, 3, 32, 32) and data.x_val.shape == (20, 3, 32, 32)
    assert data.x_test.shape == (20, 3, 32, 32) and data.in_channels == 3
    assert data.mean == (0.4914, 0.4822, 0.4465)
    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes())
    first = raw["data"][0].reshape(3, 32, 32)
    assert torch.equal(data.x_test[0], torch.from_numpy(first))  # channels-first, same pixels


def fake_cifar100(root, n_train: int = 200, n_test: int = 50) -> None:
    """CIFAR-100's python format: `train` and `test` with fine and coarse labels, `meta`."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = [int(v) for v in rng.permutation(np.arange(n) % 100)]
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        entry = {"data": data, "fine_labels": fine, "coarse_labels": [v // 5 for v in fine]}
        (folder / name).write_bytes(pickle.dumps(entry))
    meta = {"fine_label_names": [f"c{i}" for i in range(100)]}
    (folder / "meta").write_bytes(pickle.dumps(meta))


def fake_svhn(root, n_train: int = 60, n_test: int = 20) -> None:
    """SVHN's format: MATLAB files with X (32, 32, 3, N) and y (N, 1) in 1..10 (10 is a 0)."""
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    for name, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.uint8)[:, None]
        savemat(root / f"{name}_32x32.mat", {"X": x, "y": y})


def test_cifar100_and_svhn_load_through_torchvision(tmp_path):
    fake_cifar100(tmp_path)
    data = load_dataset({"name": "cifar100", "root": str(tmp_path), "val_fraction": 0.5}, seed=0)
    assert data.num_classes == 100 and data.x_train.shape == (100, 3, 32, 32)
    assert data.x_test.shape == (50, 3, 32, 32) and data.mean[0] == 0.5071
    raw = pickle.loads((tmp_path / "cifar-100-python" / "test").read_bytes())
    assert torch.equal(data.x_test[0], torch.from_numpy(raw["data"][0].reshape(3, 32, 32)))
    assert data.y_test.tolist() == raw["fine_labels"]

    fake_svhn(tmp_path / "svhn")
    svhn = load_dataset({"name": "svhn", "root": str(tmp_path / "svhn")}, seed=0)
    assert svhn.num_classes == 10 and svhn.x_train.shape == (48, 3, 32, 32)
    assert svhn.x_test.shape == (20, 3, 32, 32)
    assert svhn.y_test.tolist() == [i % 10 for i in range(1, 21)]  # 10 read as the digit 0
    from scipy.io import loadmat

    first = loadmat(tmp_path / "svhn" / "test_32x32.mat")["X"][..., 0]  # (H, W, C)
    assert torch.equal(svhn.x_test[0], torch.from_numpy(first).permute(2, 0, 1))


@pytest.mark.parametrize(
    "name, expected",
    [("cifar10", "cifar-10-batches-py/"), ("cifar100", "cifar-100-python/"),
     ("svhn", "{train,test}_32x32.mat")],
)  # fmt: skip
def test_missing_image_files_name_the_root_and_the_files(name, expected, tmp_path):
    with pytest.raises(DataError, match=f"{re.escape(expected)}.*download: true"):
        load_dataset({"name": name, "root": str(tmp_path)})


def test_csv_is_standardised_with_training_statistics_and_split_stratified(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    label = np.where(np.arange(n) % 3 == 0, "rare", "common")
    rows = ["size,colour,score,label"] + [
        f"{rng.normal(50, 10):.3f},{'red' if i % 2 else 'blue'},{rng.normal(0, 1):.3f},{label[i]}"
        for i in range(n)
    ]
    path = tmp_path / "table.csv"
    path.write_text("\n".join(rows) + "\n")
    spec = {"name": "csv", "path": str(path), "target": "label", "test_fraction": 0.2}
    data = load_dataset(spec, seed=0)
    assert data.num_classes == 2 and data.num_features == 4  # size, score, one-hot colour x2
    assert len(data.x_test) == 60 and len(data.x_train) + len(data.x_val) == 240
    assert torch.allclose(data.x_train.mean(0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(data.x_train.std(0, unbiased=False), torch.ones(4), atol=1e-4)
    assert abs(data.y_val.float().mean().item() - data.y_train.float().mean().item()) < 0.05
    assert data.x_val.mean(0).abs().max() > 1e-4  # not standardised on its own statistics


def test_csv_errors_name_the_field(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,x\n,y\n")
    with pytest.raises(DataError, match="dataset.target: no column 'label'"):
        load_dataset({"name": "csv", "path": str(path), "target": "label"})
    with pytest.raises(DataError, match="column 'a' has missing values"):
        load_dataset({"name": "csv", "path": str(path), "target": "b"})


def test_circles_and_moons_follow_their_options():
    circles = load_dataset({"name": "circles", "n_samples": 500, "noise": 0.05, "factor": 0.3})
    assert len(circles.x_train) + len(circles.x_val) == 500 and circles.num_classes == 2
    moons = load_dataset({"name": "moons", "n_samples": 400, "train_size": 100})
    assert len(moons.x_train) == 100 and len(moons.x_val) == 80


def test_train_with_test_split_reports_test_accuracy(tmp_path):
    from typer.testing import CliRunner

    config = tmp_path / "c.yaml"
    config.write_text(
        "config: {lr: 0.003, epochs: 2, seed: 0, model: {name: mlp, widths: [16]},\n"
        "         dataset: {name: digits, test_fraction: 0.2}}\n"
    )
    result = CliRunner().invoke(app, ["train", str(config), "--test"])
    assert result.exit_code == 0, result.stderr
    assert "test_acc 0." in result.stdout
    bare = tmp_path / "bare.yaml"
    bare.write_text("config: {epochs: 1, seed: 0, model: {name: mlp}, dataset: {name: digits}}\n")
    refused = CliRunner().invoke(app, ["train", str(bare), "--test"])
    assert refused.exit_code == 2 and "test_fraction" in refused.stderr


def test_a_process_that_finds_digits_kept_does_not_import_scikit_learn(tmp_path, monkeypatch):
    """The point of the cache: `study run` on the default data set no longer pays scikit-learn's
    import (about 1.5 s of a core) once a process on this machine has loaded it."""
    from trainables.data import load_builtin

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    load_builtin({"name": "digits"}, seed=0)  # this process makes the entries
    code = (
        "import sys; from trainables.data import load_builtin; "
        "load_builtin({'name': 'digits'}, seed=0); print('sklearn' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=dict(os.environ), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
