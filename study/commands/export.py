"""Best trials of a finished study as bundles `study train` reproduces: the full config, the
seed, the code version, the MLflow run and the trial's last checkpoint; or the configs alone
as one JSON, YAML or CSV file."""

import importlib.metadata
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from study.commands.preflight import saved_spec
from study.core import Layout, results
from study.core.errors import UserError, missing_study
from study.core.record import TrialRecord, ranked
from study.spec import StudySpec
from trainables import METRICS
from trainables.hyperparameters import direction

FORMATS = ("bundle", "yaml", "json", "csv")


def load_trials(root: Path, name: str) -> tuple[list[TrialRecord], StudySpec]:
    """The trials (its results file) and saved spec of study `name`, or a UserError naming
    the fix."""
    spec = saved_spec(root, name)
    try:
        trials = results.load(spec.layout(root))
    except FileNotFoundError:
        raise UserError(missing_study(root, name)) from None
    return trials, spec


def code_version() -> dict[str, Any]:
    """The installed package version, and the git commit of the source when it is a checkout
    (`dirty` when it has uncommitted changes)."""
    version = {"package": importlib.metadata.version("regularization-study"), "git_commit": None}
    source = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10
        )
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=source, capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except OSError:  # no git on this machine
        return version
    if commit.returncode == 0:
        version["git_commit"] = commit.stdout.strip()
        version["dirty"] = bool(changes.stdout.strip())
    return version


def mlflow_run(tracking_uri: str, run_id: str) -> dict[str, Any]:
    """Where a trial's MLflow run is: the store, the run id, its UI page (on the tracking
    server, or on `study ui`'s port 5000 for a local store) and its Ray trial id."""
    from study.engines.records import RAY_TRIAL_TAG, reading_client
    from study.engines.views import run_link

    found = {"tracking_uri": tracking_uri, "run_id": run_id, "link": None, "ray_trial_id": None}
    try:
        run = reading_client(tracking_uri).get_run(run_id)
    except Exception:  # noqa: BLE001  (a store that is gone or unreachable: no link)
        return found
    found["link"] = run_link(tracking_uri, run.info.experiment_id, run_id)
    found["ray_trial_id"] = run.data.tags.get(RAY_TRIAL_TAG)
    return found


def document(
    name: str, record: TrialRecord, uri: str, version: dict[str, Any], metric: str, mode: str
) -> dict[str, Any]:
    """One exported trial: provenance (MLflow store `uri`, code `version`), the value to
    reproduce, and the config to train."""
    # An early-stopped trial: the same schedule, stopped where it stopped.
    trial = record.config.stopped_at(record.epochs)
    best_epoch = record.metrics.get("best_epoch")
    return {
        "study": name,
        "trial": record.label,
        "run_name": record.name,
        "outcome": record.outcome.value,
        "metric": metric,
        "mode": mode,
        "value": record.metrics[metric],
        **({"best_epoch": int(best_epoch)} if best_epoch is not None else {}),
        "seed": trial.run.seed,
        "code_version": version,
        "mlflow": mlflow_run(uri, record.run_id),
        "config": trial.flat(),
    }


def ranked_trials(root: Path, name: str, top: int, metric: str | None, mode: str | None):
    """The study's spec, the ranking metric and mode, and its `top` best trials."""
    trials, spec = load_trials(root, name)
    metric = metric or spec.metric
    if metric not in METRICS:
        raise UserError(f"--metric: unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    if mode is None:  # the study's for its metric; otherwise losses and the gap go down
        mode = spec.mode if metric == spec.metric else direction(metric)
    best = ranked(trials, metric, mode)[:top]
    if not best:
        raise UserError(f"NAME: study {name!r} has no trial with a {metric} value to export")
    return spec, metric, mode, best


def export(
    root: Path,
    name: str,
    top: int = 1,
    output: Path | None = None,
    metric: str | None = None,
    mode: str | None = None,
) -> list[tuple[Path, dict[str, Any]]]:
    """Write a bundle per trial of the `top` best of `name` (ranked by `metric`, `mode`): a
    folder with config.yaml and the last checkpoint, or one .yaml file for `-o x.yaml`."""
    spec, metric, mode, best = ranked_trials(root, name, top, metric, mode)
    layout: Layout = spec.layout(root)
    if output is None:
        output = layout.exports_dir
    single = top == 1 and output.suffix in (".yaml", ".yml")
    uri = layout.tracking_uri
    version = code_version()  # once: two git calls
    written = []
    for rank, record in enumerate(best, start=1):
        made = document(name, record, uri, version, metric, mode)
        folder = output.parent if single else output / f"rank{rank}-{record.label}"
        path = output if single else folder / "config.yaml"
        folder.mkdir(parents=True, exist_ok=True)
        state = None if single else layout.last_checkpoint(made["mlflow"]["ray_trial_id"])
        if state is not None:
            shutil.copyfile(state, folder / "checkpoint.pt")
            made["checkpoint"] = "checkpoint.pt"  # model, optimizer, epoch and RNG states
        path.write_text(
            f"# Exported by `study export {name}`; reproduce with `study train {path.name}`\n"
            + yaml.safe_dump(made, sort_keys=False)
        )
        written.append((path, made))
    return written


def export_configs(
    root: Path,
    name: str,
    fmt: str,
    top: int = 1,
    output: Path | None = None,
    metric: str | None = None,
    mode: str | None = None,
) -> str:
    """The configs alone of the `top` best trials as JSON, YAML or CSV text (also written to
    `output` when given); each entry has the trial, its value and the config."""
    _, metric, mode, best = ranked_trials(root, name, top, metric, mode)
    entries = [
        {"trial": r.label, metric: r.metrics[metric], "config": r.config.flat()} for r in best
    ]
    if fmt == "json":
        text = json.dumps(entries, indent=1)
    elif fmt == "yaml":
        text = yaml.safe_dump(entries, sort_keys=False)
    else:
        text = results.frame(entries).to_csv(index=False)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
    return text
