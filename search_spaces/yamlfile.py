"""Reading a YAML file a user wrote: UTF-8 text, no duplicate keys, every failure one line.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "s.yaml"
    >>> _ = path.write_text("a: 1\\na: 2\\n")
    >>> try:
    ...     load_yaml(path)
    ... except YamlFileError as error:
    ...     print(str(error).split(": ", 1)[1])
    duplicate key 'a' at line 2 (first at line 1); keep one of them
"""

from pathlib import Path
from typing import Any

import yaml


class YamlFileError(ValueError):
    """A file that cannot be read as YAML text; the message starts with the file's path."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that repeats a key (YAML keeps the last one,
    so a study would silently run with a setting its author did not mean)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise YamlFileError(
                    f"duplicate key {key!r} at line {line} (first at line {seen[key]}); "
                    "keep one of them"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    """The document in `text`, with duplicate keys refused (YamlFileError without a path)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: builds no Python objects


def load_yaml(path: Path) -> Any:
    """The document in the file at `path` (None when it holds nothing), or a YamlFileError
    that says in one line what is wrong: unreadable, not UTF-8 text, malformed, duplicate key."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise YamlFileError(f"{path}: cannot read it ({error.strerror}); check the path") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise YamlFileError(
            f"{path}: not UTF-8 text (byte {error.start} is 0x{data[error.start]:02x}); "
            "save it as a UTF-8 YAML file"
        ) from None
    if "\x00" in text:
        raise YamlFileError(f"{path}: a binary file, not YAML text; give the YAML file's path")
    try:
        return parse_yaml(text)
    except YamlFileError as error:
        raise YamlFileError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or getattr(error, "reason", "invalid YAML")
        raise YamlFileError(f"{path}: malformed YAML{where}: {problem}; fix the syntax") from None
