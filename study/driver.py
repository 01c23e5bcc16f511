"""Who drives a study: one driver process at a time holds the study's lock, so that `study
status` tells a running study from one whose driver died, and a second driver (`resume`,
`run --replace`) never writes over a live one. Creating the root's stores takes the root's
lock, so that studies started at the same moment on a new root do not race to create them.

The locks are the operating system's file locks (filelock, which Ray already uses): the kernel
releases them when their process ends, SIGKILL included, so no stale lock outlives a driver.
"""

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from study import results
from study.errors import UserError

LOCK = "driver.lock"  # in the study's folder, held by its driver
RECORD = "driver.json"  # beside it: who holds it, for the messages


@contextlib.contextmanager
def root_lock(root: Path) -> Iterator[None]:
    """Hold the root folder's lock for the block (waiting for it): MLflow and Optuna each
    create their SQLite schema on first use, and two processes doing so at once fail."""
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(root / ".study.lock"):
        yield


@contextlib.contextmanager
def driving(root: Path, name: str) -> Iterator[None]:
    """Hold study `name`'s driver lock for the block, recording who holds it; a UserError
    when a live process drives the study already."""
    folder = results.study_dir(root, name)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / LOCK)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserError(
            f"NAME: study {name!r} is running ({who(root, name)}); wait for it to end, or "
            "stop that process first"
        ) from None
    try:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        (folder / RECORD).write_text(json.dumps(record))
        yield
    finally:
        lock.release()


def is_driven(root: Path, name: str) -> bool:
    """Whether a live process holds study `name`'s driver lock now."""
    path = results.study_dir(root, name) / LOCK
    if not path.exists():
        return False
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def who(root: Path, name: str) -> str:
    """The last driver of study `name`, as `pid 123 on host`."""
    try:
        record: dict[str, Any] = json.loads((results.study_dir(root, name) / RECORD).read_text())
    except (OSError, ValueError):
        return "driver unknown"
    return f"pid {record['pid']} on {record['host']}"
