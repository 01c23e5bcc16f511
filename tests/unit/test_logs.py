"""Ray's console logs during a study: one line each, tracebacks in the study's folder."""

import io
import logging

import pytest

from study.engines.logs import loud_engines, quiet_engines


@pytest.fixture
def console():
    """What Ray's loggers print, as a handler on their common parent would."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    parent = logging.getLogger("ray")
    parent.addHandler(handler)
    yield out
    parent.removeHandler(handler)


@pytest.mark.parametrize(
    ("logger", "message", "error"),
    [  # Ray's failed experiment-state save; Tune's stop_trial meeting a store that went down
        (
            "ray.tune.execution.experiment_state",
            "Saving experiment state to storage at '/r' failed with exception: ",
            FileNotFoundError("[Errno 2] Failed to open local file '.tmp-searcher-state.pkl'"),
        ),
        (
            "ray.tune.execution.tune_controller",
            "Trial trainable_1: Error stopping trial.",
            ConnectionError("search.storage: postgresql://h/optuna did not answer for 3 s"),
        ),
    ],
)
def test_an_error_with_a_traceback_is_one_line_naming_the_file(
    tmp_path, console, logger, message, error
):
    """Any of Ray's loggers: one line with the error; the traceback in a file."""
    errors = tmp_path / "studies" / "s" / "errors.txt"
    attached = quiet_engines(errors)
    try:
        raise error
    except type(error):
        logging.getLogger(logger).error(message, exc_info=True)
    finally:
        loud_engines(attached)
    printed = console.getvalue()
    assert printed.count("\n") == 1 and "Traceback" not in printed
    assert message.rstrip(": ") in printed
    assert f"{type(error).__name__}: {error}" in printed
    assert f"traceback: {errors}" in printed
    assert "Traceback (most recent call last)" in errors.read_text()


def test_tunes_closing_trial_list_is_dropped_and_the_filters_come_off(tmp_path, console):
    """Progress has said which trials failed; after the study Ray logs as before."""
    tune = logging.getLogger("ray.tune.tune")
    attached = quiet_engines(tmp_path / "errors.txt")
    tune.error("Trials did not complete: [trainable_1]")
    tune.error("something else")
    loud_engines(attached)
    tune.error("Trials did not complete: [trainable_2]")
    assert console.getvalue().splitlines() == [
        "something else",
        "Trials did not complete: [trainable_2]",
    ]


def test_optunas_fallback_warning_after_a_lost_connection_is_dropped(tmp_path):
    """Optuna's storage warns, with the failed SQL, that it reads trials another way: during a
    study the outage is said once by study.engines.outages instead; other warnings still print."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)  # as Optuna's own console handler on "optuna"
    logging.getLogger("optuna").addHandler(handler)
    storage = logging.getLogger("optuna.storages._rdb.storage")
    try:
        attached = quiet_engines(tmp_path / "errors.txt")
        storage.warning("Caught an error from sqlalchemy: (psycopg.OperationalError) [SQL: ...]")
        storage.warning("a warning worth reading")
        loud_engines(attached)
        storage.warning("Caught an error from sqlalchemy: after the study")
    finally:
        logging.getLogger("optuna").removeHandler(handler)
    assert out.getvalue().splitlines() == [
        "a warning worth reading",
        "Caught an error from sqlalchemy: after the study",
    ]


def test_a_disk_that_takes_no_write_is_left_to_the_study_s_own_line(tmp_path, console):
    """Tune logs each trial it could not stop when the disk took no write (the SQL in the
    message): dropped, the study stops on it with its own one line; a message of several
    lines without a traceback is one line too."""
    errors = tmp_path / "errors.txt"
    attached = quiet_engines(errors)
    log = logging.getLogger("ray.tune.execution.tune_controller")
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError:
            log.exception("Trial trainable_1: Error stopping trial.")
        log.error("(sqlite3.OperationalError) disk I/O error\n[SQL: SELECT 1]")
        log.error("Trial trainable_2: something else\n  with its details")
    finally:
        loud_engines(attached)
    assert console.getvalue().splitlines() == [
        f"Trial trainable_2: something else (traceback: {errors})"
    ]
    assert "No space left on device" in errors.read_text()
