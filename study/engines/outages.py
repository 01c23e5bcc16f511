"""A store that stops answering in the middle of a study: the study waits for it, says so once
on the console, and once more when it answers again; past a limit it stops with one line. A
disk that stops taking writes (full, read-only, not writable) is no outage to wait for: the
study stops at once, in one line that names the folder and the fix (`unwritable`).

The Optuna storage is retried here (`retry`, used by study.engines.storage.Storage); the MLflow
tracking server is retried by MLflow's own HTTP client (MLFLOW_HTTP_REQUEST_MAX_RETRIES, about
four minutes with its defaults), whose retries we only listen to (`RETRIES`). Either way
the console gets one line when a store goes away and one when it is back.
"""

import errno
import logging
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from study.core.layout import artifact_root

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
    opposed to a mistake in what was asked or a disk that takes no writes. Optuna wraps these
    in StorageInternalError."""
    import sqlalchemy.exc

    if disk_fault(error):
        return False
    lost = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)
    return any(
        isinstance(seen, lost)
        or (isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated)
        for seen in chain(error)
    )


# What a disk that takes no writes raises: the OS's errors, and SQLite's words for them.
DISK_ERRNOS = {errno.ENOSPC: "full", errno.EDQUOT: "full", errno.EROFS: "read-only"}
SQLITE_WORDS = {
    "database or disk is full": "full",
    "readonly database": "read-only",
    # SQLite's words where a journal could not be made: the folder tells which (`unwritable`)
    "disk I/O error": "unknown",
    "unable to open database file": "unknown",
}


def disk_fault(error: BaseException) -> tuple[str, str] | None:
    """How the disk behind `error` (or what caused it) took no write: ("full" | "read-only" |
    "not writable" | "unknown": SQLite's I/O errors, which the folder tells apart, what was
    being written, or "" where the errors do not tell). An error that names its file is
    preferred, then SQLite's (which name their store), then any."""
    faults: list[tuple[int, str, str]] = []
    for seen in chain(error):
        if isinstance(seen, OSError) and seen.errno in DISK_ERRNOS:
            faults.append((0 if seen.filename else 2, DISK_ERRNOS[seen.errno], seen.filename or ""))
        elif isinstance(seen, PermissionError) and seen.filename:
            faults.append((0, "not writable", seen.filename))
        faults += [
            (1, fault, store_file(error))
            for words, fault in SQLITE_WORDS.items()
            if words in str(seen)
        ]
    return min(faults)[1:] if faults else None


def store_file(error: BaseException) -> str:
    """Which SQLite store an error came from, as far as its chain tells: MLflow's or Optuna's."""
    modules = {type(seen).__module__.partition(".")[0] for seen in chain(error)}
    return "the MLflow store" if "mlflow" in modules else "a SQLite store"


def unwritable(error: BaseException, root: Path, name: str) -> str | None:
    """The one line for a study that stopped because its disk took no write, naming the
    folder, what was being written, and the fix; None for any other error."""
    fault = disk_fault(error)
    if fault is None:
        return None
    how, written = fault
    if how == "unknown":
        how = probed(root)
        if how is None:
            return None
    if not written and wrote_artifacts(error):  # MLflow copies them without naming the file
        written = str(artifact_root(root))
    folder = disk_folder(Path(written), root) if written.startswith("/") else root
    what = f" (writing {written})" if written else ""
    try:
        left = f"{size(shutil.disk_usage(folder).free)} left"
    except OSError:
        left = "its space unknown"
    fix = {
        "full": f"free space under {folder} ({left})",
        "read-only": f"make {folder} writable again (it is mounted read-only)",
        "not writable": f"make {folder} writable for this user",
    }[how]
    return (
        f"the disk under {folder} is {how}{what}; the study stopped, its records are kept: "
        f"{fix}, then continue with `study resume {name}`"
    )


def probed(folder: Path) -> str | None:
    """How the filesystem of `folder` takes no write now: "read-only", "full", or None."""
    try:
        found = os.statvfs(folder)
    except OSError:
        return None
    if found.f_flag & os.ST_RDONLY:
        return "read-only"
    return "full" if found.f_bavail == 0 else None


def wrote_artifacts(error: BaseException) -> bool:
    """Whether `error` (or what caused it) was raised writing a local MLflow artifact."""
    for seen in chain(error):
        frames = traceback.extract_tb(seen.__traceback__)
        if any("mlflow/store/artifact/" in frame.filename for frame in frames):
            return True
    return False


def disk_folder(written: Path, root: Path) -> Path:
    """The top folder of the filesystem `written` is on (its mount point), or the root folder
    where the root holds it and is on that filesystem."""
    folder = written
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    device = folder.stat().st_dev
    while folder != folder.parent and folder != root and folder.parent.stat().st_dev == device:
        folder = folder.parent
    return folder


def size(count: float) -> str:
    """A number of bytes as a person reads it: 0 B, 512 KiB, 3.2 MiB."""
    for unit in ("B", "KiB", "MiB"):
        if count < 1024:
            return f"{count:.1f} MiB" if unit == "MiB" else f"{count:.0f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


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
