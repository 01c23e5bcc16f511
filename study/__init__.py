"""Orchestration of regularization studies: core (the facts), engines (Ray, Optuna, MLflow),
commands (one per CLI command), evidence (statistics on records), the spec and the CLI."""

import os

# Quiet Ray before it is imported anywhere: our own progress line replaces its log flood.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # MLflow is our logger
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
# A trial's error is Tune's to handle (and ours to say, once); Ray's own "Unhandled error" at
# exit repeats it with a traceback.
os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
