"""`study train`: the same training loop as a trial, on one exported config, without Ray."""

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console

from study.core import RUN_KEYS, TrialConfig
from study.core.errors import UserError
from study.spec import DatasetSpec, ModelSpec, format_error, read_yaml, value_problem
from trainables import HYPERPARAMETERS, DataError, fit, load_dataset
from trainables.hyperparameters import DEFAULT_METRIC, own_knobs
from trainables.loading import trial_dataset
from trainables.models import BUILDER_POSITIONAL
from trainables.plugins import PluginError, code_dir, digest, is_plugin, keywords, load_callable


def read_config(path: Path) -> tuple[dict[str, Any], TrialConfig]:
    """The exported document and its `config` (a bare config file works too), checked."""
    document = read_yaml(path)
    config = document.get("config", document)
    plugins = [config.get(part, {}).get("name", "") for part in ("model", "dataset")]
    for key in config:
        # A plug-in's own knob: checked against its arguments once it is imported
        if key not in HYPERPARAMETERS and key not in RUN_KEYS and not any(map(is_plugin, plugins)):
            raise UserError(f"config.{key}: unknown key; remove it (see `study spaces`)")
        if key in HYPERPARAMETERS and (problem := value_problem(key, config[key])):
            raise UserError(f"config.{key}: {problem}")
    try:
        trial = TrialConfig.parse(config)
    except KeyError as error:
        raise UserError(
            f"config.{error.args[0]}: missing; export the config with `study export`"
        ) from None
    try:
        DatasetSpec.model_validate(config["dataset"])
        ModelSpec.model_validate(config["model"])
    except ValidationError as error:
        raise UserError(f"config.{format_error(error)}") from None
    return document, trial


def plugin_changes(trial: TrialConfig) -> list[str]:
    """Import the plug-in model and loader as the study did (each of the config's own knobs
    must be an argument of one); a warning for each whose source changed since."""
    said, takes = [], set()
    for field in ("model", "dataset"):
        part = getattr(trial.run, field)
        if not is_plugin(part["name"]):
            continue
        try:
            plugin = load_callable(part["name"], code_dir(part))
        except PluginError as error:
            raise UserError(f"config.{field}.name: {error}; fix the module or its path") from None
        takes |= set(keywords(plugin, BUILDER_POSITIONAL if field == "model" else 0))
        recorded = part.get("source") or {}
        if not recorded.get("sha256"):
            continue
        path = Path(recorded["file"])
        now = digest(path) if path.exists() else "gone"
        if now != recorded["sha256"]:
            said.append(
                f"warning: {path} changed since the study (sha256 {recorded['sha256'][:12]} "
                f"then, {now[:12]} now); the retrain may not reproduce the trial"
            )
    for key in own_knobs(trial.hyperparameters):
        if key not in takes:
            raise UserError(f"config.{key}: unknown key, and no plug-in of the config takes it")
    return said


def train(
    path: Path,
    console: Console,
    test: bool = False,
    seeds: int = 1,
    register: str | None = None,
    log: bool = True,
    refit: bool = False,
) -> list[dict[str, float]]:
    """Retrain the config in `path` with `seeds` training seeds (the config's first, so that
    one reproduces the trial; the data split stays the config's), print each epoch (one line
    per seed when several) and mean and std, log it all as one MLflow run in the study's
    experiment when the file names it, and register the first seed's model as `register`.
    `refit`: a cross-validated config trains one model on all its folds' data instead (see
    `refitted`). Returns the last epoch's metrics per seed (with test_* when `test`)."""
    document, trial = read_config(path)
    for line in plugin_changes(trial):
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    where = document.get("mlflow") or {}
    if register and not where.get("tracking_uri"):
        raise UserError("--register: the config names no MLflow store; use a `study export` file")
    data, trial = training_data(document, trial, console, test, register, refit)
    metric, tested = scored(document, data.task)
    kept: dict[str, Any] = {}
    report = epoch_printer(console, data.task, seeds, kept)
    runs = fit_seeds(trial, data, report, console, seeds, test, metric, tested)
    stats = print_scores(console, document, runs, metric, tested, test, refit)
    if log and where.get("tracking_uri"):
        link = log_retrain(document, trial, runs, stats, kept, data, register)
        console.print(f"MLflow run: {link}", soft_wrap=True, highlight=False)
    return runs


def training_data(
    document: dict[str, Any],
    trial: TrialConfig,
    console: Console,
    test: bool,
    register: str | None,
    refit: bool,
) -> tuple[Any, TrialConfig]:
    """Load the config's data, check it against the flags, and refit the config when asked."""
    try:
        data = load_dataset(trial_dataset(trial.flat()), seed=trial.run.seed)
    except DataError as error:
        raise UserError(str(error)) from None
    if test and "test" not in data.sizes():
        raise UserError("config.dataset.test_fraction: no test split kept; set it above 0")
    folds = data.sizes().get("folds")
    if refit:
        data, trial = refitted(document, trial, data, console)
    elif register and folds:
        raise UserError(
            f"--register: the config trains {folds} models, one per fold; add --refit to "
            "register one trained on all of the data"
        )
    return data, trial


def scored(document: dict[str, Any], task: str) -> tuple[str, str]:
    """The metric the retrain is judged by (the study's) and its test split's counterpart."""
    regression = task == "regression"
    metric = document.get("metric", DEFAULT_METRIC[task])
    tested = "test_rmse" if regression else "test_acc"
    return metric, tested


def epoch_printer(
    console: Console, task: str, seeds: int, kept: dict[str, Any]
) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    """The per-epoch callback of `fit`: keeps the first seed's model, prints epochs of one seed."""
    shown = EPOCH_LINE[task]

    def report(metrics: dict[str, Any], state: dict[str, Any]) -> None:
        if not kept:  # live references: the first seed's weights as its training ends
            kept["model"] = state.get("model")  # (a cross-validated run has one per fold)
        if seeds == 1:
            values = "  ".join(f"{k} {metrics[k]:.4f}" for k in shown)
            line = f"epoch {int(metrics['epoch']):>3}  {values}  gap {metrics['gap']:+.4f}"
            if "patience_stopped" in metrics:
                kept_epoch = metrics["best_epoch"] if "final" in metrics else metrics["epoch"]
                line += f"  (patience ran out: ends with epoch {int(kept_epoch)}'s weights)"
            console.print(line, highlight=False)

    return report


def fit_seeds(
    trial: TrialConfig,
    data: Any,
    report: Callable[[dict[str, Any], dict[str, Any]], None],
    console: Console,
    seeds: int,
    test: bool,
    metric: str,
    tested: str,
) -> list[dict[str, float]]:
    """Train one model per seed from the config's, printing each one's score when several."""
    runs = []
    for seed in range(trial.run.seed, trial.run.seed + seeds):
        last = fit(trial.seeded(seed).flat(), data, report, test=test)
        runs.append(last)
        if seeds > 1:
            extra = f"  {tested} {last[tested]:.4f}" if test else ""
            console.print(f"seed {seed}  {metric} {last[metric]:.4f}{extra}", highlight=False)
    return runs


def print_scores(
    console: Console,
    document: dict[str, Any],
    runs: list[dict[str, float]],
    metric: str,
    tested: str,
    test: bool,
    refit: bool,
) -> dict[str, tuple[float, float]]:
    """Print the first seed's score beside the trial's, then the spread over seeds; return it."""
    seeds = len(runs)
    first = runs[0][metric]
    line = f"{metric} {first:.4f}"
    if "value" in document and not refit:
        line += f" (the trial reported {document['value']:.4f}, "
        line += f"difference {first - document['value']:+.4f})"
    console.print(line, highlight=False)
    keys = [metric, *([tested] if test else [])]
    stats = {k: spread([r[k] for r in runs]) for k in keys}
    if seeds > 1:
        for key, (mean, std) in stats.items():
            console.print(f"{key} over {seeds} seeds: mean {mean:.4f}  std {std:.4f}")
    elif test:
        scores = [k for k in runs[0] if k.startswith("test_")]
        console.print("  ".join(f"{k} {runs[0][k]:.4f}" for k in scores), highlight=False)
    return stats


def refitted(
    document: dict[str, Any], trial: TrialConfig, data: Any, console: Console
) -> tuple[Any, TrialConfig]:
    """The data and config of a refit: one model on every example the folds shared (the test
    split still apart), for as many epochs as the folds' models trained (their best epoch's,
    when patience restored it), with the same schedule; no patience, since no validation
    split is left (the val_* columns are then the training data's own)."""
    if "folds" not in data.sizes():
        raise UserError(
            "--refit: the config is not cross-validated (no dataset.cv_folds); train it as it is"
        )
    restored = trial.hyperparameters.get("restore_best", True) and document.get("best_epoch")
    epochs = restored or trial.run.last_epoch
    console.print(
        f"refit: one model on all {data.whole.sizes()['train']} examples of the "
        f"{data.sizes()['folds']} folds for {epochs} epochs (the folds' models ended with epoch "
        f"{epochs}'s weights); val_* below are the training data's own, the test split scores it",
        highlight=False,
        soft_wrap=True,
    )
    refit = TrialConfig({**trial.hyperparameters, "patience": 0}, trial.run)
    refit = TrialConfig(refit.hyperparameters, replace(trial.run, stop_epoch=epochs))
    return data.whole, refit


# What `study train` prints for each epoch, besides the gap.
EPOCH_LINE = {
    "classification": ("train_loss", "train_acc", "val_loss", "val_acc"),
    "regression": ("train_loss", "train_rmse", "val_loss", "val_rmse", "val_r2"),
}


def spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def log_retrain(
    document: dict[str, Any],
    trial: TrialConfig,
    runs: list[dict[str, float]],
    stats: dict[str, tuple[float, float]],
    kept: dict[str, Any],
    data: Any,
    register: str | None,
) -> str:
    """One MLflow run in the study's experiment (beside, not under, the study's parent run):
    the config, each seed's metrics as steps, mean and std; the model when `register`."""
    import mlflow

    from study.engines.records import StudyRecords, flatten
    from study.engines.views import run_link

    where = document["mlflow"]
    try:
        records = StudyRecords.of_run(where["tracking_uri"], where["run_id"])
    except Exception as error:  # noqa: BLE001  (a store that moved or a server that is down)
        raise UserError(
            f"mlflow.tracking_uri: cannot reach the trial's run at {where['tracking_uri']} "
            f"({str(error).splitlines()[0][:150]}); start the server or pass --no-log"
        ) from None
    name = f"retrain {document.get('trial', '')} x{len(runs)} seeds".replace("  ", " ")
    config = trial.flat()
    params = {k: v for k, v in flatten(config).items() if k != "seed"}
    run_id = records.new_retrain(where["run_id"], name, params)
    steps = [
        {"seed": trial.run.seed + step, **{key: metrics[key] for key in stats}}
        for step, metrics in enumerate(runs)
    ]
    records.log_series(run_id, steps)
    totals = {
        f"{key}_{kind}": value
        for key, pair in stats.items()
        for kind, value in zip(("mean", "std"), pair, strict=True)
    }
    records.log_values(run_id, totals)
    if register:
        import torch

        from trainables.loop import build

        model = build(config, data).model
        model.load_state_dict(kept["model"])
        mlflow.set_tracking_uri(where["tracking_uri"])
        with mlflow.start_run(run_id=run_id):
            mlflow.pytorch.log_model(
                model,
                name="model",
                registered_model_name=register,
                input_example=data.examples(2).numpy(),  # as the loop feeds the network
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            )
    records.set_status(run_id, "FINISHED")
    return run_link(where["tracking_uri"], records.experiment_id, run_id)
