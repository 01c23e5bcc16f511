"""Errors a user can cause: said in one line that names the field and the fix, exit code 2."""

from pathlib import Path

from study.core.layout import known_studies


class UserError(Exception):
    """Bad input from the user; the CLI prints the message and exits with code 2."""


def already_exists(name: str, root: Path, standing: str = "") -> str:
    """The message for a study name taken under the root; `standing`, where it stands (its
    state's word: finished, interrupted, ...), when it was recorded."""
    if standing == "finished":
        return (
            f"name: a study {name!r} already exists under {root} and finished; pick another "
            "name with --set name=NEW, or pass --replace to start it over"
        )
    where = f" ({standing})" if standing else ""
    return (
        f"name: a study {name!r} already exists under {root}{where}; continue it with `study "
        f"resume {name}`, pick another name with --set name=NEW, or pass --replace to start it "
        "over"
    )


def missing_study(root: Path, name: str) -> str:
    """The message for a study name with nothing under the root, naming the ones there are."""
    known = known_studies(root)
    hint = f"known studies: {', '.join(known)}" if known else "run `study run` first"
    return f"NAME: no study {name!r} under {root}; {hint}"
