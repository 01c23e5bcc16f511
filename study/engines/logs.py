"""The study's console: as wide as its lines when it is not a terminal, and what Ray and Optuna
log on it, one line per message, never a traceback (it goes to a file in the study's folder,
which the line names)."""

import logging
import os
import sys
import traceback
from pathlib import Path

from rich.console import Console

from study.engines.outages import disk_fault

Filterer = logging.Logger | logging.Handler

# The loggers whose console handlers print the engines' records (Ray's and Optuna's own, which
# do not propagate to the root): a record with a traceback becomes one line at those handlers,
# whichever of their child loggers made it (Tune's failed experiment-state save, its "Error
# stopping trial" when a store went down in a searcher's callback, ...).
CONSOLE_LOGGERS = ("ray", "optuna")


# The width of a console that is not a terminal (a file, a pipe, a CI log): rich would wrap
# tables at 80 columns there; as wide as this, a table takes the width its cells need.
UNBOUNDED = 400


def console(stderr: bool = False) -> Console:
    """A console for the study's lines: a terminal's own width, else (piped to a file or a
    CI log, and no COLUMNS set) wide enough that no table wraps or is cut."""
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=UNBOUNDED if wide else None)


class NoTrialList(logging.Filter):
    """Drops Tune's closing "Trials did not complete: [trainable_...]": Progress has said,
    trial by trial, which failed and why."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Trials did not complete")


class NoReconnectNoise(logging.Filter):
    """Drops Optuna's warning (with the failed SQL) that it reads trials another way after a
    database error: a lost connection is said once by study.engines.outages, and retried there."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Caught an error from sqlalchemy")


class RaisedAfter(logging.Filter):
    """Drops MLflow's log of a database error it raises right after (with the failed SQL and
    a traceback): the study says the raised error once, in its own line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("SQLAlchemy database error")


def keep_traceback(path: Path, text: str) -> bool:
    """Append a traceback (`text`, with what led to it) to the study's errors file `path`;
    False where the disk takes no write (full, read-only), which the console says instead."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as file:
            file.write(f"{text}\n")
    except OSError:
        return False
    return True


class OneLine(logging.Filter):
    """A record with a traceback, or of several lines, becomes one line: its first line, the
    error's last line and the file (`path`) its traceback is appended to. A record of a disk
    that takes no write is dropped: the study stops on it and says so in its own line."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not record.exc_info and "\n" not in message:
            return True
        text = "".join(traceback.format_exception(*record.exc_info)) if record.exc_info else ""
        kept = keep_traceback(self.path, f"{message}\n{text}")
        error = record.exc_info[1] if record.exc_info else None
        if (error is not None and disk_fault(error)) or disk_fault(Exception(message)):
            return False
        first = message.strip().splitlines()[0].rstrip(": ") if message.strip() else "error"
        last = text.strip().splitlines()[-1][:200] + "; " if text else ""
        where = f"traceback: {self.path}" if kept else "no room for its traceback"
        record.msg, record.args = f"{first} ({last}{where})", ()
        record.exc_info, record.exc_text = None, None
        return True


def quiet_engines(errors_file: Path) -> list[tuple[Filterer, logging.Filter]]:
    """Filter Ray's and Optuna's console logs for a study; returns what was attached, for
    `loud_engines`."""
    attached: list[tuple[Filterer, logging.Filter]] = [
        (logging.getLogger("ray.tune.tune"), NoTrialList())
    ]
    attached += [
        (handler, OneLine(errors_file))
        for name in CONSOLE_LOGGERS
        for handler in logging.getLogger(name).handlers
    ]
    # Optuna's storage logs on a module's logger; its console handler sits on "optuna"
    attached += [(handler, NoReconnectNoise()) for handler in logging.getLogger("optuna").handlers]
    attached.append((logging.getLogger("mlflow.store.db.utils"), RaisedAfter()))
    for where, log_filter in attached:
        where.addFilter(log_filter)
    return attached


def loud_engines(attached: list[tuple[Filterer, logging.Filter]]) -> None:
    """Take the filters `quiet_engines` attached off again."""
    for where, log_filter in attached:
        where.removeFilter(log_filter)
