"""The named spaces shipped as YAML files beside this module, and loading a space by reference."""

from importlib import resources
from pathlib import Path
from typing import Any

from search_spaces.space import Space
from search_spaces.yamlfile import load_yaml, parse_yaml


class SpaceNotFound(ValueError):
    """A space reference that names neither a shipped space nor a readable YAML file."""


def names() -> list[str]:
    """The names of the shipped spaces, sorted."""
    files = resources.files("search_spaces").iterdir()
    return sorted(f.name.removesuffix(".yaml") for f in files if f.name.endswith(".yaml"))


def read(reference: str) -> dict[str, Any]:
    """The raw mapping of a shipped space's name or of a YAML file's path."""
    if reference in names():
        text = resources.files("search_spaces").joinpath(f"{reference}.yaml").read_text()
        return {"name": reference, **parse_yaml(text)}
    path = Path(reference)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        mapping = load_yaml(path)
        if not isinstance(mapping, dict):
            raise SpaceNotFound(f"{reference} holds no mapping; write `params:` at its top level")
        return {"name": path.stem, **mapping}
    raise SpaceNotFound(
        f"unknown space {reference!r}; use one of {', '.join(names())} (see `study spaces`) "
        "or the path of a YAML file"
    )


def load(reference: str) -> Space:
    """The space a shipped name or a YAML file's path refers to, validated."""
    return Space.model_validate(read(reference))
