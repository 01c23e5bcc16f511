"""The results table of a study: one row per trial, saved under the root folder."""

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from study.tracking import TrialRecord


def study_dir(root: Path, name: str) -> Path:
    """Where a study keeps its spec and results: <root>/studies/<name>."""
    return root / "studies" / name


def missing_study(root: Path, name: str) -> str:
    """The message for a study name with nothing under the root, naming the ones there are."""
    known = sorted(p.parent.name for p in (root / "studies").glob("*/spec.yaml"))
    hint = f"known studies: {', '.join(known)}" if known else "run `study run` first"
    return f"NAME: no study {name!r} under {root}; {hint}"


def rows(records: "list[TrialRecord]", metric: str) -> list[dict[str, Any]]:
    """A JSON-ready row per trial: identity, outcome, last-epoch metrics, full config."""
    return [
        {
            "trial": f"t{r.number:03d}",
            "run_id": r.run_id,
            "run_name": r.name,
            "outcome": r.outcome,
            "epochs": r.epochs,
            metric: r.last.get(metric),
            "metrics": {k: v for k, v in r.last.items() if not k.startswith("best_")},
            "error": r.error,
            "config": r.config,
        }
        for r in records
    ]


def save(root: Path, name: str, table: list[dict[str, Any]]) -> Path:
    """Write results.json (full) and results.csv (flat) for the study; return the json path."""
    folder = study_dir(root, name)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.json"
    path.write_text(json.dumps(table, indent=1, default=str))
    frame(table).to_csv(folder / "results.csv", index=False)
    return path


def frame(table: list[dict[str, Any]]) -> "pd.DataFrame":
    """The table flattened for reading: config and metrics as columns."""
    import pandas as pd

    return pd.json_normalize(table, sep=".")


def load(root: Path, name: str) -> list[dict[str, Any]]:
    """The saved results of study `name`, or FileNotFoundError."""
    return json.loads((study_dir(root, name) / "results.json").read_text())


def ranked(table: list[dict[str, Any]], metric: str, mode: str) -> list[dict[str, Any]]:
    """Trials with a value for `metric`, best first (ties: fewer epochs first)."""
    scored = [
        row
        for row in table
        if row["outcome"] in ("completed", "early_stopped")
        and math.isfinite(row.get("metrics", {}).get(metric, math.nan))
    ]
    sign = -1 if mode == "max" else 1
    return sorted(scored, key=lambda row: (sign * row["metrics"][metric], row["epochs"]))
