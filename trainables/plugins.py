"""Users' own code named as `module:callable`: found on the import path or in the study's code
folder (the spec file's folder), imported, and described (file, content hash) for exports."""

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


class PluginError(ValueError):
    """A plug-in that cannot be imported as named; the message says why in a few words."""


def is_plugin(name: str) -> bool:
    """Whether a model or data set name is an import path (`module:callable`)."""
    return ":" in name


def _split(name: str) -> tuple[str, str]:
    module, _, attribute = name.partition(":")
    if not module or not attribute:
        raise PluginError(f"{name!r} is not module:callable; write it as my_net:build")
    return module, attribute


def _search(code_dir: str | None) -> None:
    """Put the study's code folder on the import path (last, so installed modules win)."""
    if code_dir and Path(code_dir).is_dir() and code_dir not in sys.path:
        sys.path.append(code_dir)


def load_callable(name: str, code_dir: str | None = None) -> Callable[..., Any]:
    """The callable `module:callable` names, imported from the import path or `code_dir`."""
    module_name, attribute = _split(name)
    _search(code_dir)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            where = f" or in {code_dir}" if code_dir else ""
            raise PluginError(f"no module {module_name!r} on the import path{where}") from None
        raise PluginError(f"importing {module_name} failed: {brief(error)}") from None
    except Exception as error:  # noqa: BLE001  (the user's module may raise anything)
        raise PluginError(f"importing {module_name} failed: {brief(error)}") from None
    found: Any = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            public = [
                n for n in vars(module) if not n.startswith("_") and callable(vars(module)[n])
            ]
            raise PluginError(
                f"module {module_name} has no attribute {attribute!r} (it has: "
                f"{', '.join(public[:8]) or 'nothing callable'})"
            )
        found = getattr(found, part)
    if not callable(found):
        raise PluginError(f"{name} is a {type(found).__name__}, not a callable")
    return found


def source_file(name: str, code_dir: str | None = None) -> Path | None:
    """The file a plug-in's module is read from (its package's folder for a package)."""
    _search(code_dir)
    spec = importlib.util.find_spec(_split(name)[0].split(".")[0])
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        return None
    origin = Path(spec.origin)
    return origin.parent if origin.name == "__init__.py" else origin


def digest(path: Path) -> str:
    """The sha256 of a file, or of a package folder's .py files in order."""
    sha = hashlib.sha256()
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    for file in files:
        sha.update(file.relative_to(path.parent).as_posix().encode() + b"\0")
        sha.update(file.read_bytes())
    return sha.hexdigest()


def describe(name: str, code_dir: str | None = None) -> dict[str, str]:
    """Where a plug-in's code is and its content hash (recorded with the study)."""
    path = source_file(name, code_dir)
    if path is None:
        return {}
    return {"file": str(path), "sha256": digest(path)}


def code_dir(part: dict[str, Any]) -> str | None:
    """Where a `model` or `dataset` mapping's plug-in is found besides the import path: its
    `code_dir`, else the folder of the source file recorded when the study ran."""
    source = (part.get("source") or {}).get("file")
    return part.get("code_dir") or (str(Path(source).parent) if source else None)


def keywords(function: Callable[..., Any], skip: int = 0) -> tuple[str, ...]:
    """The argument names `function` takes by keyword, past its first `skip` (a catch-all
    **kwargs names none: it cannot tell a knob from a typo)."""
    try:
        parameters = list(inspect.signature(function).parameters.values())[skip:]
    except (TypeError, ValueError):  # a builtin without a signature
        return ()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(p.name for p in parameters if p.kind in kinds)


def taken(function: Callable[..., Any], knobs: dict[str, Any], skip: int = 0) -> dict[str, Any]:
    """The `knobs` that `function` takes by keyword (past its first `skip` arguments)."""
    names = keywords(function, skip)
    return {name: value for name, value in knobs.items() if name in names}


def brief(error: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:160]}" if text else type(error).__name__
