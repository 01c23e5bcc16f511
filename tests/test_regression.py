"""Regression: data sets whose target is a quantity (diabetes, a numeric CSV column, a loader's
float targets), standardised for training and scored in the target's own units."""

import numpy as np
import pytest
import torch
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from typer.testing import CliRunner

from study.cli import app
from trainables import DataError, fit, load_dataset
from trainables.loop import evaluate_regression, start

BASE = {
    "lr": 3e-3,
    "model": {"name": "mlp", "widths": [32]},
    "dataset": {"name": "diabetes"},
    "epochs": 3,
    "seed": 0,
    "loss": "mse",
}


@pytest.fixture(scope="module")
def diabetes():
    return load_dataset({"name": "diabetes"}, seed=0)


def test_diabetes_is_regression_standardised_on_the_training_split(diabetes):
    assert diabetes.task == "regression" and diabetes.num_classes == 1
    assert diabetes.sizes() == {"train": 353, "val": 89}
    assert diabetes.y_train.shape == (353, 1) and diabetes.y_train.dtype == torch.float32
    assert abs(diabetes.y_train.mean().item()) < 1e-5
    assert diabetes.y_train.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)
    assert 100 < diabetes.target_mean[0] < 200 and 50 < diabetes.target_std[0] < 100


def test_metrics_are_in_the_targets_own_units_as_scikit_learn_computes_them(diabetes):
    run = start({**BASE, "loss": "huber"}, diabetes)
    scores = evaluate_regression(run, "val")
    with torch.no_grad():
        predicted = run.setup.model(diabetes.x_val).numpy().ravel()
    mean, std = diabetes.target_mean[0], diabetes.target_std[0]
    truth = diabetes.y_val.numpy().ravel() * std + mean
    own = predicted * std + mean
    assert scores["rmse"] == pytest.approx(mean_squared_error(truth, own) ** 0.5, rel=1e-5)
    assert scores["mae"] == pytest.approx(mean_absolute_error(truth, own), rel=1e-5)
    assert scores["r2"] == pytest.approx(r2_score(truth, own), rel=1e-4, abs=1e-5)
    huber = torch.nn.functional.huber_loss(  # delta: one standard deviation of the target
        torch.tensor(own), torch.tensor(truth), delta=std
    )
    assert scores["loss"] == pytest.approx(huber.item(), rel=1e-4)


@pytest.mark.parametrize("loss", ["mse", "mae", "huber"])
def test_each_loss_trains_and_reports_the_regression_metrics(diabetes, loss):
    reports = []
    last = fit({**BASE, "loss": loss, "epochs": 5}, diabetes, lambda m, s: reports.append(m))
    assert reports[-1]["val_rmse"] < reports[0]["val_rmse"]
    for key in ("train_rmse", "train_mae", "train_r2", "val_rmse", "val_mae", "val_r2"):
        assert key in last
    assert "val_acc" not in last
    assert last["gap"] == pytest.approx(last["val_rmse"] - last["train_rmse"])
    if loss == "mse":
        assert last["val_loss"] == pytest.approx(last["val_rmse"] ** 2, rel=1e-5)
    if loss == "mae":
        assert last["val_loss"] == pytest.approx(last["val_mae"], rel=1e-5)


def test_mixup_blends_regression_targets_and_a_huge_step_diverges(diabetes):
    mixed = fit({**BASE, "mixup_alpha": 0.4}, diabetes, lambda m, s: None)
    plain = fit(BASE, diabetes, lambda m, s: None)
    assert mixed["val_rmse"] != plain["val_rmse"]
    blown = fit({**BASE, "optimizer": "sgd", "lr": 1e4}, diabetes, lambda m, s: None)
    assert blown.get("diverged") == 1.0


def test_a_numeric_csv_column_with_many_values_is_regression_and_says_why(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["x1,x2,price,grade"] + [
        f"{a:.3f},{b:.3f},{100 + 30 * a + rng.normal():.2f},{int(a > 0)}"
        for a, b in rng.normal(size=(200, 2))
    ]
    path = tmp_path / "houses.csv"
    path.write_text("\n".join(rows) + "\n")
    price = load_dataset({"name": "csv", "path": str(path), "target": "price"}, seed=0)
    assert price.task == "regression" and "200 distinct numbers" in price.task_note
    assert "set dataset.task: classification" in price.task_note
    assert price.sizes() == {"train": 160, "val": 40}  # a plain split, not stratified
    grade = load_dataset({"name": "csv", "path": str(path), "target": "grade"}, seed=0)
    assert grade.task == "classification" and grade.num_classes == 2
    forced = load_dataset({"name": "csv", "path": str(path), "target": "grade",
                           "task": "regression"}, seed=0)  # fmt: skip
    assert forced.task == "regression" and forced.task_note == ""


def test_targets_no_network_can_regress_are_refused_in_one_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("x,y,label\n" + "".join(f"{i},{'inf' if i == 3 else i},a\n" for i in range(30)))
    with pytest.raises(DataError, match="targets hold NaN or infinite values"):
        load_dataset({"name": "csv", "path": str(path), "target": "y", "task": "regression"})
    with pytest.raises(DataError, match="dataset.task: regression needs a numeric target"):
        load_dataset({"name": "csv", "path": str(path), "target": "label", "task": "regression"})
    flat = tmp_path / "flat.csv"
    flat.write_text("x,y\n" + "".join(f"{i},7.5\n" for i in range(30)))
    with pytest.raises(DataError, match="training target is constant"):
        load_dataset({"name": "csv", "path": str(flat), "target": "y", "task": "regression"})


def test_train_prints_regression_metrics_and_the_test_split(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "config: {lr: 0.003, epochs: 2, seed: 0, loss: mse, model: {name: mlp, widths: [16]},\n"
        "         dataset: {name: diabetes, test_fraction: 0.2}}\n"
    )
    result = CliRunner().invoke(app, ["train", str(config), "--test"])
    assert result.exit_code == 0, result.stderr
    assert "val_rmse" in result.stdout and "val_r2" in result.stdout
    assert "test_rmse " in result.stdout and "test_r2 " in result.stdout


def test_a_loaders_float_targets_are_regression_unless_the_spec_says_classes(tmp_path):
    (tmp_path / "quantity_loader.py").write_text(
        "import numpy as np\n\ndef load():\n"
        "    rng = np.random.default_rng(0)\n"
        "    x = rng.random((80, 3)).astype('float32')\n"
        "    y = (x @ np.array([1.0, 2.0, 3.0])).astype('float32')\n"
        "    return x[:60], y[:60], x[60:], y[60:]\n"
    )
    spec = {"name": "quantity_loader:load", "code_dir": str(tmp_path)}
    data = load_dataset(spec, seed=0)
    assert data.task == "regression" and data.sizes() == {"train": 60, "val": 20}
    with pytest.raises(DataError, match="labels must be integers.*dataset.task: regression"):
        load_dataset({**spec, "task": "classification"}, seed=0)
