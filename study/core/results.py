"""The results table of a study: one row per trial, saved in the study's folder."""

import json
from typing import TYPE_CHECKING, Any

from study.core import Layout, scored, write_whole

if TYPE_CHECKING:
    import pandas as pd

    from study.engines.records import TrialRecord


def rows(records: "list[TrialRecord]", metric: str) -> list[dict[str, Any]]:
    """A JSON-ready row per trial: identity, outcome, last-epoch metrics, full config."""
    return [
        {
            "trial": r.label,
            "number": r.number,
            "run_id": r.run_id,
            "run_name": r.name,
            "outcome": r.outcome,
            "epochs": r.epochs,
            metric: r.last.get(metric),
            "metrics": {k: v for k, v in r.last.items() if k != "best_so_far"},  # a curve
            "error": r.error,
            "config": r.config,
        }
        for r in records
    ]


def save(layout: Layout, table: list[dict[str, Any]]) -> None:
    """Write results.json (full) and results.csv (flat) in the study's folder."""
    layout.study_dir.mkdir(parents=True, exist_ok=True)
    write_whole(layout.results_json, json.dumps(table, indent=1, default=str))
    write_whole(layout.results_csv, frame(table).to_csv(index=False))


def frame(table: list[dict[str, Any]]) -> "pd.DataFrame":
    """The table flattened for reading: config and metrics as columns."""
    import pandas as pd

    return pd.json_normalize(table, sep=".")


def load(layout: Layout) -> list[dict[str, Any]]:
    """The saved results of the study, or FileNotFoundError."""
    return json.loads(layout.results_json.read_text())


def ranked(table: list[dict[str, Any]], metric: str, mode: str) -> list[dict[str, Any]]:
    """Trials with a value for `metric`, best first (ties: fewer epochs first)."""
    ranks = [row for row in table if scored(row["outcome"], row.get("metrics", {}).get(metric))]
    sign = -1 if mode == "max" else 1
    return sorted(ranks, key=lambda row: (sign * row["metrics"][metric], row["epochs"]))
