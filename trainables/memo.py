"""This machine's cache: arrays that a library computes the same way every time, kept so that a
later process reads them instead of importing the library again.

scikit-learn makes the default data set and its splits: importing it (with SciPy) costs every
`study run`, `study train` and trial-loading process about 1.5 s of a core, against a few
milliseconds to read the arrays it returned last time. The key holds the library versions
whose results they are, so an upgrade computes them anew.
"""

import hashlib
import importlib.metadata
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The libraries whose results are kept: a new version of either makes new entries.
VERSIONED = ("scikit-learn", "numpy")


def cache_dir() -> Path:
    """This machine's cache of what any root may reuse (an empty MLflow store per version, data
    sets and splits): $XDG_CACHE_HOME/regularization-study, by default under ~/.cache."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "regularization-study"


def entry(name: str, key: dict[str, Any]) -> Path:
    """The file that holds the arrays of `name` for `key` and the libraries' versions."""
    versions = {package: importlib.metadata.version(package) for package in VERSIONED}
    text = json.dumps({"key": key, "versions": versions}, sort_keys=True, default=str)
    return cache_dir() / "arrays" / f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:20]}.npz"


def remembered(
    name: str, key: dict[str, Any], make: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """The arrays `make()` returns (a mapping of names to numpy arrays) for `key`: read from the
    cache when an earlier call kept them, else made and kept (written aside, then renamed, so a
    reader never sees half a file). A cache that cannot be read or written is passed by."""
    import numpy as np

    path = entry(name, key)
    try:
        with np.load(path, allow_pickle=False) as kept:
            return {k: kept[k] for k in kept.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        pass
    made = make()
    aside = path.with_name(f".{path.name}.{os.getpid()}.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(aside, **made)
        aside.replace(path)
    except OSError:
        aside.unlink(missing_ok=True)
    return made
