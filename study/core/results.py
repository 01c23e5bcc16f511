"""The results file of a study: a row per trial (study.core.record.TrialRecord.row), written in
the study's folder as results.json (whole) and results.csv (flat), and read back as records."""

import json
from typing import TYPE_CHECKING, Any

from study.core.layout import Layout, write_whole
from study.core.record import TrialRecord

if TYPE_CHECKING:
    import pandas as pd


def save(layout: Layout, trials: list[TrialRecord], metric: str) -> None:
    """Write results.json (full) and results.csv (flat) in the study's folder."""
    table = [trial.row(metric) for trial in trials]
    layout.study_dir.mkdir(parents=True, exist_ok=True)
    write_whole(layout.results_json, json.dumps(table, indent=1, default=str))
    write_whole(layout.results_csv, frame(table).to_csv(index=False))


def frame(table: list[dict[str, Any]]) -> "pd.DataFrame":
    """Rows flattened for reading: config and metrics as columns."""
    import pandas as pd

    return pd.json_normalize(table, sep=".")


def load(layout: Layout) -> list[TrialRecord]:
    """The saved trials of the study, or FileNotFoundError."""
    return [TrialRecord.from_row(row) for row in json.loads(layout.results_json.read_text())]
