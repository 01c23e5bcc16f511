"""What every benchmark shares: its command line, the machine and versions, and a table that is
printed and appended to benchmarks/RESULTS.md."""

import argparse
import datetime
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("RESULTS.md")
ROOT = Path(__file__).resolve().parent.parent


def arguments(description: str, extra: Callable[[argparse.ArgumentParser], None] = None):
    """The benchmark's options: its own (`extra`), --quick (tiny sizes, for the smoke test) and
    --no-record (print only, leave RESULTS.md alone)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    parser.add_argument("--label", default="", help="words added to the title (e.g. 'before')")
    if extra:
        extra(parser)
    return parser.parse_args()


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (or the platform's word for it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float:
    """Physical memory in GiB."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def machine() -> str:
    """One line: cores, CPU, memory and GPU of this machine."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} cores ({cpu_name()}), {memory_gib():.0f} GiB, {gpu}"


def versions() -> str:
    """One line: Python and the versions of the libraries the numbers depend on, and our commit."""
    import mlflow
    import optuna
    import ray
    import torch

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        commit, dirty = "", ""
    code = f"{commit}{'+dirty' if dirty else ''}" or "unknown"
    return (
        f"Python {platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}, "
        f"optuna {optuna.__version__}, mlflow {mlflow.__version__}; code {code}"
    )


def markdown(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table (it reads as a plain table in a terminal too)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def record(
    title: str, args: argparse.Namespace, headers: list[str], rows: list[list[Any]], notes: str
) -> None:
    """Print the table and notes; append them to RESULTS.md with the date, machine, versions
    and the command that made them (unless --no-record or --quick)."""
    command = f"python -m benchmarks.{Path(sys.argv[0]).stem} {shlex.join(sys.argv[1:])}".strip()
    text = (
        f"## {title}{f' ({args.label})' if args.label else ''}\n\n"
        f"{datetime.date.today().isoformat()} · {machine()}  \n{versions()}  \n`{command}`\n\n"
        f"{markdown(headers, rows)}\n\n{notes.strip()}\n"
    )
    print(text)
    if args.quick or args.no_record:
        return
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nAppended by the scripts in this folder.\n")
    with RESULTS.open("a") as results:
        results.write("\n" + text)


@contextmanager
def timer() -> Iterator[list[float]]:
    """`with timer() as elapsed:` ... `elapsed[0]` holds the wall seconds afterwards."""
    elapsed = [0.0]
    started = time.perf_counter()
    try:
        yield elapsed
    finally:
        elapsed[0] = time.perf_counter() - started
