"""Small functions (issue 35): none over 60 lines in the study's code and the benchmarks. Ruff
enforces the other half, McCabe complexity at most 12 (C90 in pyproject.toml)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("study", "trainables", "search_spaces", "benchmarks")
MOST_LINES = 60
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def lengths(source: str) -> list[tuple[int, str, int]]:
    """(line, name, length) of every function and method in `source`, nested ones too; a
    length counts from the `def` line (decorators excluded) to the body's last line."""
    return [
        (node.lineno, node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, FUNCTIONS)
    ]


def too_long(files: list[Path]) -> tuple[int, list[str]]:
    """How many functions `files` define, and 'file:line name (N lines)' for each too long."""
    count, offenders = 0, []
    for path in files:
        for line, name, length in lengths(path.read_text()):
            count += 1
            if length > MOST_LINES:
                where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                offenders.append(f"{where}:{line} {name} ({length} lines)")
    return count, offenders


def test_no_function_is_longer_than_60_lines():
    files = sorted(path for folder in FOLDERS for path in (ROOT / folder).rglob("*.py"))
    assert {path.relative_to(ROOT).parts[0] for path in files} == set(FOLDERS)
    count, offenders = too_long(files)
    assert count > 100, f"only {count} functions found under {', '.join(FOLDERS)}"
    assert not offenders, f"over {MOST_LINES} lines; split them:\n" + "\n".join(offenders)


def test_the_check_finds_a_long_function_and_counts_without_decorators(tmp_path):
    def body(lines: int, indent: str) -> str:
        return "".join(f"{indent}x{i} = {i}\n" for i in range(lines))

    fits = f"@staticmethod\n@property\ndef fits():\n{body(MOST_LINES - 1, '    ')}"
    long = f"class Holder:\n    async def long(self):\n{body(MOST_LINES, '        ')}"
    (tmp_path / "fits.py").write_text(fits)  # 60 lines from its def, 62 with its decorators
    (tmp_path / "long.py").write_text(long)  # a method of 61 lines
    assert lengths(fits) == [(3, "fits", MOST_LINES)]
    count, offenders = too_long([tmp_path / "fits.py", tmp_path / "long.py"])
    assert count == 2
    assert offenders == [f"{tmp_path / 'long.py'}:2 long ({MOST_LINES + 1} lines)"]
