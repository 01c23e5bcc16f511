"""A store that stops answering: waited for with growing pauses, said once when it goes and once
when it is back, and past the limit one line naming the store and `study resume`."""

import errno
import logging
import sqlite3

import pytest
import requests
import sqlalchemy.exc

from benchmarks.common import free_port
from study.engines import outages
from study.engines.storage import Storage


@pytest.fixture
def said(monkeypatch):
    """The console lines the watch says."""
    lines: list[str] = []
    monkeypatch.setattr(outages.WATCH, "say", lines.append)
    monkeypatch.setattr(outages.WATCH, "since", {})
    monkeypatch.setattr(outages, "FIRST_WAIT_S", 0.01)
    return lines


def lost_connection() -> sqlalchemy.exc.OperationalError:
    """What SQLAlchemy raises when the database server is gone: its error from the driver's."""
    refused = ConnectionRefusedError("refused")
    try:
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, refused) from refused
    except sqlalchemy.exc.OperationalError as error:
        return error


def test_a_call_that_fails_on_a_lost_connection_is_tried_again_and_said_twice(said):
    tries = []

    def call() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise lost_connection()
        return "answer"

    assert outages.retry(outages.OPTUNA, "db://here", call, patience=5) == "answer"
    assert len(tries) == 3
    assert len(said) == 2
    assert said[0].startswith("store down       search.storage db://here does not answer")
    assert "ConnectionRefusedError: refused" in said[0]
    assert said[1].startswith("store back       search.storage db://here answers again after")


def test_other_errors_are_raised_at_once_and_say_nothing(said):
    tries = []

    def call() -> None:
        tries.append(1)
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        outages.retry(outages.OPTUNA, "db://here", call, patience=5)
    assert len(tries) == 1 and said == []


def test_optuna_wrapping_the_lost_connection_is_still_an_outage():
    """Optuna's RDBStorage says "exceeding max length" for any commit that fails: its cause
    tells a lost connection from bad data."""
    import optuna

    try:
        try:
            raise lost_connection()
        except sqlalchemy.exc.SQLAlchemyError as error:
            raise optuna.exceptions.StorageInternalError("invalid data, e.g. max length") from error
    except optuna.exceptions.StorageInternalError as wrapped:
        assert outages.transient(wrapped)
    assert not outages.transient(sqlalchemy.exc.IntegrityError("INSERT", {}, ValueError()))


def test_a_storage_that_never_answers_stops_with_the_store_and_how_to_go_on(said):
    """A real PostgreSQL URL on a port nothing listens on: refused until the patience ends."""
    url = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/optuna"
    with pytest.raises(outages.StoreDown) as stopped:
        Storage(url, patience=1.0)
    line = stopped.value.line("my-study")
    assert line.startswith("search.storage: postgresql://postgres:***@127.0.0.1:")
    assert "did not answer for" in line and "study resume my-study" in line
    assert "secret" not in line and all("secret" not in s for s in said)
    assert len(said) == 1 and said[0].startswith("store down       search.storage")


def test_a_first_try_slower_than_the_patience_still_says_the_store_went_down(said):
    """A server that takes longer to refuse than the study waits: the console hears it went
    down before the study stops (the down line is not skipped by the give-up)."""

    def call() -> None:
        import time

        time.sleep(0.05)
        raise lost_connection()

    with pytest.raises(outages.StoreDown):
        outages.retry(outages.OPTUNA, "db://here", call, patience=0.01)
    assert len(said) == 1 and said[0].startswith("store down       search.storage db://here")


def test_the_store_behind_what_tune_raised_is_found():
    """Ray Tune raises its own TuneError from what a callback raised; MLflow raises its own
    exception while handling requests' ConnectionError."""
    down = outages.StoreDown(outages.OPTUNA, "db://here", 300, lost_connection())
    try:
        raise RuntimeError("The Ray Tune run failed") from down
    except RuntimeError as tune_error:
        assert outages.store_down(tune_error, "http://mlflow") is down
    try:
        try:
            raise requests.exceptions.ConnectionError("Max retries exceeded")
        except requests.exceptions.ConnectionError:
            raise RuntimeError("API request to http://mlflow/api/2.0 failed") from None
    except RuntimeError as mlflow_error:
        assert outages.store_down(mlflow_error, "http://mlflow") is None  # `from None`: no cause
    try:
        try:
            raise requests.exceptions.ConnectionError("Max retries exceeded")
        except requests.exceptions.ConnectionError:
            raise RuntimeError("API request to http://mlflow/api/2.0 failed")  # noqa: B904
    except RuntimeError as mlflow_error:
        found = outages.store_down(mlflow_error, "http://mlflow")
        assert found.field == outages.TRACKING and found.where == "http://mlflow"
    assert outages.store_down(ValueError("a bug"), "http://mlflow") is None


def test_mlflow_retrying_a_request_is_said_once_and_not_printed(said):
    """urllib3 logs each retry of MLflow's HTTP client as a warning: the watch hears it instead
    of the console, and the tracker says when the server answered again."""
    outages.listen_to_tracking("http://127.0.0.1:5999")
    logger = logging.getLogger("urllib3.connectionpool")
    printed = []
    handler = logging.Handler()
    handler.emit = printed.append
    logger.addHandler(handler)
    try:
        for left in (6, 5):
            logger.warning(
                "Retrying (%r) after connection broken by '%r': %s",
                f"JitteredRetry(total={left})",
                "NewConnectionError('Failed to establish a new connection: Connection refused')",
                "/api/2.0/mlflow/runs/log-batch",
            )
        logger.warning("Connection pool is full, discarding connection: 127.0.0.1")
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in printed] == [
        "Connection pool is full, discarding connection: 127.0.0.1"
    ]
    assert len(said) == 1 and said[0].startswith(
        "store down       tracking.uri http://127.0.0.1:5999"
    )
    assert "Connection refused" in said[0]
    outages.WATCH.up(outages.TRACKING)
    assert said[1].startswith("store back       tracking.uri http://127.0.0.1:5999 answers again")


def disk_full_in_sqlite() -> sqlalchemy.exc.OperationalError:
    """What SQLAlchemy raises when SQLite finds no room for a write."""
    full = sqlite3.OperationalError("database or disk is full")
    try:
        raise sqlalchemy.exc.OperationalError("INSERT INTO tags", {}, full) from full
    except sqlalchemy.exc.OperationalError as error:
        return error


def test_a_disk_that_takes_no_write_is_no_outage_to_wait_for():
    """SQLite's full disk is an OperationalError, as a lost connection is: it is not waited
    for (five minutes of retries would change nothing)."""
    assert outages.disk_fault(disk_full_in_sqlite()) == ("full", "a SQLite store")
    assert not outages.transient(disk_full_in_sqlite())
    assert outages.transient(lost_connection())


def test_the_written_file_is_named_before_a_store_and_the_root_is_the_folder(tmp_path):
    written = str(tmp_path / "ray" / "s" / "checkpoint_000003" / "state.pt")
    try:
        try:
            raise disk_full_in_sqlite()
        except sqlalchemy.exc.OperationalError as store:
            raise OSError(errno.ENOSPC, "No space left on device", written) from store
    except OSError as error:
        assert outages.disk_fault(error) == ("full", written)
        line = outages.unwritable(error, tmp_path, "s")
    assert line.startswith(f"the disk under {tmp_path} is full (writing {written}); ")
    assert f"free space under {tmp_path} (" in line and " left)" in line
    assert line.endswith("then continue with `study resume s`")


def test_a_read_only_root_says_how_to_make_it_writable(tmp_path):
    error = OSError(errno.EROFS, "Read-only file system", str(tmp_path / "studies" / "x"))
    line = outages.unwritable(error, tmp_path, "s")
    assert f"the disk under {tmp_path} is read-only" in line
    assert f"make {tmp_path} writable again (it is mounted read-only)" in line
    assert outages.unwritable(ValueError("a bug"), tmp_path, "s") is None


@pytest.mark.parametrize(
    "count, said", [(0, "0 B"), (1023, "1023 B"), (2048, "2 KiB"), (3 * 2**20, "3.0 MiB")]
)
def test_sizes_read_as_a_person_reads_them(count, said):
    assert outages.size(count) == said


def test_a_folder_this_user_cannot_write_says_so(tmp_path):
    """A permission refused (root is never refused, so it is raised here as the OS would)."""
    written = tmp_path / "studies" / "s" / "stage.json"
    error = PermissionError(errno.EACCES, "Permission denied", str(written))
    line = outages.unwritable(error, tmp_path, "s")
    assert line.startswith(f"the disk under {tmp_path} is not writable (writing {written}); ")
    assert f"make {tmp_path} writable for this user, then continue" in line
