"""A store that stops answering in the middle of a study: the study waits for it, says so once
on the console, and once more when it answers again; past a limit it stops with one line.

The Optuna storage is retried here (`retry`, used by study.sampling.Storage); the MLflow
tracking server is retried by MLflow's own HTTP client (MLFLOW_HTTP_REQUEST_MAX_RETRIES, about
four minutes with its defaults), whose retries we only listen to (`RETRIES`). Either way
the console gets one line when a store goes away and one when it is back.
"""

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

# How long the study waits for an Optuna storage that does not answer before it stops.
PATIENCE_S = float(os.environ.get("STUDY_STORE_PATIENCE", 300))
FIRST_WAIT_S, LONGEST_WAIT_S = 0.5, 10.0  # the backoff between tries: doubling, capped

OPTUNA = "search.storage"
TRACKING = "tracking.uri"


class StoreDown(Exception):
    """A store that did not answer for longer than the study waits."""

    def __init__(self, field: str, where: str, waited: float, error: BaseException) -> None:
        self.field, self.where, self.waited, self.error = field, where, waited, error
        super().__init__(f"{field}: {where} did not answer for {waited:.0f} s ({brief(error)})")

    def line(self, name: str) -> str:
        """The one line the console gets: the store, the error, and how to go on."""
        return (
            f"{self} ; the study stopped, its records are kept: start the store, then continue "
            f"with `study resume {name}`"
        ).replace(" ;", ";")


def chain(error: BaseException) -> Iterator[BaseException]:
    """`error` and what caused it, as its traceback shows them: the direct cause, or else the
    exception being handled when it was raised."""
    seen: BaseException | None = error
    while seen is not None:
        yield seen
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)


def brief(error: BaseException) -> str:
    """The type and first line of the message of what first went wrong behind `error`."""
    *_, root = chain(error)
    text = str(root).strip().splitlines()
    return f"{type(root).__name__}: {text[0][:160]}" if text else type(root).__name__


def transient(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is a lost connection to a database server, as
    opposed to a mistake in what was asked. Optuna wraps these in StorageInternalError."""
    import sqlalchemy.exc

    lost = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)
    return any(
        isinstance(seen, lost)
        or (isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated)
        for seen in chain(error)
    )


def hidden(url: str) -> str:
    """A store's URL without its password, for the console."""
    try:
        import sqlalchemy

        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001  (not a database URL: an http:// server, say)
        return url


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Watch:
    """Which stores are down, since when, and where the console lines go (`say`)."""

    def __init__(self) -> None:
        self.since: dict[str, tuple[float, str]] = {}  # field -> (monotonic time, where)
        self.say: Callable[[str], None] = _stderr

    def down(self, field: str, where: str, error: BaseException, waits: str) -> None:
        """A store did not answer: said once, until it is back."""
        if field not in self.since:
            self.since[field] = (time.monotonic(), where)
            self.say(
                f"{'store down':<16} {field} {where} does not answer ({brief(error)}); the study "
                f"waits for it, {waits}"
            )

    def up(self, field: str) -> None:
        """A store answered: said once when it had been down."""
        if field in self.since:
            since, where = self.since.pop(field)
            seconds = time.monotonic() - since
            self.say(f"{'store back':<16} {field} {where} answers again after {seconds:.0f} s")

    def waited(self, field: str) -> float:
        """Seconds the store has been down (0 when it is not)."""
        return time.monotonic() - self.since[field][0] if field in self.since else 0.0


WATCH = Watch()


def retry(field: str, where: str, call: Callable[[], T], patience: float = PATIENCE_S) -> T:
    """`call()`, tried again with growing waits while it fails on a lost connection, for up to
    `patience` seconds; then StoreDown. Other errors are raised at once."""
    started, wait = time.monotonic(), FIRST_WAIT_S
    while True:
        try:
            result = call()
        except Exception as error:
            if not transient(error):
                raise
            WATCH.down(field, where, error, f"up to {patience:.0f} s")  # said before a give-up
            waited = time.monotonic() - started
            if waited + wait > patience:
                raise StoreDown(field, where, waited, error) from error
            time.sleep(wait)
            wait = min(2 * wait, LONGEST_WAIT_S)
            continue
        WATCH.up(field)
        return result


class MlflowRetries(logging.Filter):
    """Hears MLflow's HTTP client retry a request to the tracking server (urllib3 logs each
    retry as a warning) and tells the watch instead of the console."""

    def __init__(self) -> None:
        super().__init__()
        self.uri = ""
        self.count = 0  # retries heard so far: a request retried may have been done twice

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not (message.startswith("Retrying") and "/api/" in message):
            return True
        self.count += 1
        reason = message.partition("after ")[2].rpartition(": /")[0] or message
        WATCH.down(TRACKING, self.uri, ConnectionError(reason), "as MLflow retries (~4 min)")
        return False


RETRIES = MlflowRetries()


def listen_to_tracking(uri: str) -> None:
    """Watch the retries of MLflow's requests to the tracking server at `uri`."""
    RETRIES.uri = uri
    logger = logging.getLogger("urllib3.connectionpool")
    if RETRIES not in logger.filters:
        logger.addFilter(RETRIES)


def still_down() -> StoreDown | None:
    """A StoreDown for a store that has not answered since it went down, if any."""
    for field, (since, where) in WATCH.since.items():
        waited = time.monotonic() - since
        return StoreDown(field, where, waited, ConnectionError("no answer since"))
    return None


def store_down(error: BaseException, tracking_uri: str) -> StoreDown | None:
    """The StoreDown behind `error`, if a store's outage stopped the study: ours for the Optuna
    storage, or MLflow's HTTP client giving up on the tracking server (Ray Tune wraps what a
    callback raised; MLflow what requests raised)."""
    import requests

    for seen in chain(error):
        if isinstance(seen, StoreDown):
            return seen
        if isinstance(seen, requests.exceptions.ConnectionError):
            return StoreDown(TRACKING, tracking_uri, WATCH.waited(TRACKING), seen)
    return None
