"""`study train`: the same training loop as a trial, on one exported config, without Ray."""

from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console

from study.errors import UserError
from study.spec import DatasetSpec, ModelSpec, format_error, read_yaml
from trainables import HYPERPARAMETERS, DataError, fit, load_dataset

RUN_KEYS = {"dataset", "model", "epochs", "seed", "threads", "stop_epoch", "optuna_trial"}


def read_config(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The exported document and its `config` (a bare config file works too), checked."""
    document = read_yaml(path)
    config = document.get("config", document)
    for key in config:
        if key not in HYPERPARAMETERS and key not in RUN_KEYS:
            raise UserError(f"config.{key}: unknown key; remove it (see `study spaces`)")
    for key in ("dataset", "model", "epochs", "seed"):
        if key not in config:
            raise UserError(f"config.{key}: missing; export the config with `study export`")
    try:
        DatasetSpec.model_validate(config["dataset"])
        ModelSpec.model_validate(config["model"])
    except ValidationError as error:
        raise UserError(f"config.{format_error(error)}") from None
    return document, config


def train(path: Path, console: Console, test: bool = False) -> dict[str, float]:
    """Retrain the config in `path`, print each epoch, and return the last epoch's metrics
    (with test_loss and test_acc on the held-out test split when `test` is set)."""
    document, config = read_config(path)
    try:
        data = load_dataset(config["dataset"], seed=config["seed"])
    except DataError as error:
        raise UserError(str(error)) from None
    if test and data.x_test is None:
        raise UserError("config.dataset.test_fraction: no test split kept; set it above 0")

    def report(metrics: dict[str, float], state: dict[str, Any]) -> None:
        console.print(
            f"epoch {int(metrics['epoch']):>3}  train_loss {metrics['train_loss']:.4f}  "
            f"train_acc {metrics['train_acc']:.4f}  val_loss {metrics['val_loss']:.4f}  "
            f"val_acc {metrics['val_acc']:.4f}  gap {metrics['gap']:+.4f}",
            highlight=False,
        )

    last = fit(config, data, report, test=test)
    metric = document.get("metric", "val_acc")
    line = f"{metric} {last[metric]:.4f}"
    if "value" in document:
        line += f" (the trial reported {document['value']:.4f}, "
        line += f"difference {last[metric] - document['value']:+.4f})"
    console.print(line, highlight=False)
    if test:
        console.print(f"test_acc {last['test_acc']:.4f}  test_loss {last['test_loss']:.4f}")
    return last
