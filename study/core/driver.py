"""Who drives a study: one driver process at a time holds the study's lock (and one
`study ablate` or `study confirm` at a time the study's repeats lock), so that `study
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
from typing import Any

from filelock import FileLock, Timeout

from study.core import Layout, write_whole
from study.core.errors import UserError


@contextlib.contextmanager
def root_lock(layout: Layout) -> Iterator[None]:
    """Hold the root folder's lock for the block (waiting for it): MLflow and Optuna each
    create their SQLite schema on first use, and two processes doing so at once fail."""
    layout.root.mkdir(parents=True, exist_ok=True)
    with FileLock(layout.root_lock):
        yield


@contextlib.contextmanager
def stores_made(layout: Layout) -> Iterator[None]:
    """Hold the root folder's lock for the block if a driver ever took it: a reader opening a
    store that another driver is making meets half-made tables (MLflow then tries to make them
    too). No lock file is made where there was none."""
    if not layout.root_lock.exists():
        yield
        return
    with FileLock(layout.root_lock):
        yield


@contextlib.contextmanager
def held(path: Any, busy: str) -> Iterator[None]:
    """Hold the lock file `path` for the block without waiting; UserError(`busy`) when a live
    process holds it."""
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserError(busy) from None
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def driving(layout: Layout) -> Iterator[None]:
    """Hold the study's driver lock for the block, recording who holds it; a UserError when a
    live process drives the study already."""
    layout.study_dir.mkdir(parents=True, exist_ok=True)
    busy = (
        f"NAME: study {layout.name!r} is running ({who(layout)}); wait for it to end, or "
        "stop that process first"
    )
    with held(layout.driver_lock, busy):
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        write_whole(layout.driver_record, json.dumps(record))
        yield


@contextlib.contextmanager
def repeating(layout: Layout) -> Iterator[None]:
    """One `study ablate` or `study confirm` of a study at a time, and none while its driver
    runs (the trials it ranks would change under it); UserError otherwise."""
    if is_driven(layout):
        raise UserError(
            f"NAME: study {layout.name!r} is running ({who(layout)}); wait for it to end"
        )
    busy = f"NAME: an ablation or confirmation of {layout.name!r} is running; wait for it"
    with held(layout.repeats_lock, busy):
        yield


def is_driven(layout: Layout) -> bool:
    """Whether a live process holds the study's driver lock now."""
    if not layout.driver_lock.exists():
        return False
    lock = FileLock(layout.driver_lock)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def who(layout: Layout) -> str:
    """The study's last driver, as `pid 123 on host`."""
    try:
        record: dict[str, Any] = json.loads(layout.driver_record.read_text())
    except (OSError, ValueError):
        return "driver unknown"
    return f"pid {record['pid']} on {record['host']}"
