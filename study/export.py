"""Best configs of a finished study as YAML files that `study train` reproduces."""

from pathlib import Path
from typing import Any

import yaml

from study import results
from study.errors import UserError


def load_table(root: Path, name: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The results table and saved spec of study `name`, or a UserError naming the fix."""
    try:
        table = results.load(root, name)
        spec = yaml.safe_load((results.study_dir(root, name) / "spec.yaml").read_text())
    except FileNotFoundError:
        raise UserError(results.missing_study(root, name)) from None
    return table, spec


def bundle(name: str, row: dict[str, Any], metric: str, mode: str) -> dict[str, Any]:
    """One exported trial: provenance, the value to reproduce, and the config to train."""
    config = dict(row["config"])
    if row["epochs"] < config["epochs"]:  # early-stopped: same schedule, stop where it stopped
        config["stop_epoch"] = row["epochs"]
    return {
        "study": name,
        "trial": row["trial"],
        "run_name": row["run_name"],
        "mlflow_run_id": row["run_id"],
        "outcome": row["outcome"],
        "metric": metric,
        "mode": mode,
        "value": row["metrics"][metric],
        "config": config,
    }


def export(
    root: Path, name: str, top: int = 1, output: Path | None = None
) -> list[tuple[Path, dict[str, Any]]]:
    """Write the `top` best trials of `name`; one file, or one per rank in a folder."""
    table, spec = load_table(root, name)
    metric, mode = spec["metric"], spec["mode"]
    best = results.ranked(table, metric, mode)[:top]
    if not best:
        raise UserError(f"NAME: study {name!r} has no trial with a {metric} value to export")
    if output is None:
        output = root / "exports" / name
    single = top == 1 and output.suffix in (".yaml", ".yml")
    written = []
    for rank, row in enumerate(best, start=1):
        path = output if single else output / f"{name}-rank{rank}-{row['trial']}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        document = bundle(name, row, metric, mode)
        path.write_text(
            f"# Exported by `study export {name}`; reproduce with `study train {path.name}`\n"
            + yaml.safe_dump(document, sort_keys=False)
        )
        written.append((path, document))
    return written
