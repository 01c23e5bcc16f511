"""The facts every part of a study shares, written once: where its files live (layout), what a
trial runs (config), how a trial ended (outcome), where the study stands (stage). Imports no
Ray, Optuna, MLflow or torch."""

from study.core.config import RUN_KEYS, RunSettings, TrialConfig, from_optuna, label, trial_number
from study.core.found import Found
from study.core.layout import (
    STATE_FILE,
    Layout,
    store_uri,
    trial_dirname,
    write_whole,
)
from study.core.outcome import (
    ENDED,
    FINISHED,
    SCORED,
    Decision,
    Outcome,
    decide,
    finite,
    scored,
)
from study.core.stage import Stage, Standing, StudyState, standing

__all__ = [
    "ENDED",
    "FINISHED",
    "RUN_KEYS",
    "SCORED",
    "Stage",
    "Standing",
    "StudyState",
    "STATE_FILE",
    "Decision",
    "Found",
    "Layout",
    "Outcome",
    "RunSettings",
    "TrialConfig",
    "decide",
    "finite",
    "from_optuna",
    "label",
    "scored",
    "standing",
    "store_uri",
    "trial_dirname",
    "trial_number",
    "write_whole",
]
