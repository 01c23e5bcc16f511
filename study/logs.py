"""What Ray logs on the study's console: one line per message, never a traceback (it goes to
a file in the study's folder, which the line names)."""

import logging
import traceback
from pathlib import Path

# Ray's loggers whose errors come with tracebacks during a study: saving the experiment's
# state to its storage (a copy of the driver's files; one save that meets a file being
# renamed fails, and the next save copies it again).
TRACEBACK_LOGGERS = ("ray.tune.execution.experiment_state",)


class NoTrialList(logging.Filter):
    """Drops Tune's closing "Trials did not complete: [trainable_...]": Progress has said,
    trial by trial, which failed and why."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Trials did not complete")


class OneLine(logging.Filter):
    """A record with a traceback becomes one line: its message, the error's last line and the
    file (`path`) its traceback is appended to."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info:
            return True
        message = record.getMessage().rstrip(": ")
        text = "".join(traceback.format_exception(*record.exc_info))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as file:
            file.write(f"{message}\n{text}\n")
        error = text.strip().splitlines()[-1][:200]
        record.msg, record.args = f"{message} ({error}; traceback: {self.path})", ()
        record.exc_info, record.exc_text = None, None
        return True


def quiet_ray(errors_file: Path) -> list[tuple[logging.Logger, logging.Filter]]:
    """Filter Ray's console logs for a study; returns what was attached, for `loud_ray`."""
    attached: list[tuple[logging.Logger, logging.Filter]] = [
        (logging.getLogger("ray.tune.tune"), NoTrialList())
    ]
    attached += [(logging.getLogger(name), OneLine(errors_file)) for name in TRACEBACK_LOGGERS]
    for logger, log_filter in attached:
        logger.addFilter(log_filter)
    return attached


def loud_ray(attached: list[tuple[logging.Logger, logging.Filter]]) -> None:
    """Take the filters `quiet_ray` attached off again."""
    for logger, log_filter in attached:
        logger.removeFilter(log_filter)
