"""Plug-in folders the tests write: the README's example (examples/plugin), copied into a
temporary folder that is not a package and not installed, and small nets of the tests' own."""

import shutil
import textwrap
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "plugin"

# Refuses to be imported from its original folder by a process that has PLUGIN_ORIGINAL set
# to that folder (the test cluster's nodes): there, only a copy shipped by Ray may be used.
GUARD = """
import os as _os

if _os.environ.get("PLUGIN_ORIGINAL") == _os.path.dirname(_os.path.abspath(__file__)):
    raise ImportError("imported from the user's folder, not from Ray's runtime_env")
"""


def example_plugin(folder: Path, guard: bool = False, study: str = "my_study.yaml") -> Path:
    """The example plug-ins (my_net.py, my_data.py) and their studies in `folder`, guarded
    when `guard`; returns the study file `study`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("my_net.py", "my_data.py", "my_study.yaml", "my_data_study.yaml"):
        shutil.copyfile(EXAMPLE / name, folder / name)
        if guard and name.endswith(".py"):
            with open(folder / name, "a") as f:
                f.write(GUARD)
    return folder / study


def write_module(folder: Path, name: str, source: str) -> Path:
    """A module `name`.py holding `source` in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path
