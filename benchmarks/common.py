"""What every benchmark shares: its command line, the machine and versions, and a table that is
printed, appended to benchmarks/history/NAME.md and made NAME's current one in
benchmarks/RESULTS.md."""

import argparse
import contextlib
import datetime
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("RESULTS.md")
HISTORY = Path(__file__).with_name("history")  # NAME.md: every recorded run of benchmarks.NAME
ROOT = Path(__file__).resolve().parent.parent


def arguments(description: str, extra: Callable[[argparse.ArgumentParser], None] = None):
    """The benchmark's options: its own (`extra`), --quick (tiny sizes, for the smoke test) and
    --no-record (print only, leave RESULTS.md and history/ alone)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    parser.add_argument(
        "--no-record", action="store_true", help="print only: RESULTS.md and history/ untouched"
    )
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


def code_version() -> str:
    """Our commit, '+dirty' when tracked files differ from it (RESULTS.md and history/ aside)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        # RESULTS.md and history/ change with every run: they do not make the code dirty
        status = ["git", "status", "--porcelain", "--untracked-files=no"]
        dirty = subprocess.run(
            [*status, "--", f":!{RESULTS.relative_to(ROOT)}", f":!{HISTORY.relative_to(ROOT)}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        commit, dirty = "", ""
    return f"{commit}{'+dirty' if dirty else ''}" or "unknown"


def versions(code: str | None = None) -> str:
    """One line: Python and the versions of the libraries the numbers depend on, and our commit
    (`code`: code_version()'s, unless given)."""
    import mlflow
    import optuna
    import ray
    import torch

    code = code or code_version()
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
    title: str,
    args: argparse.Namespace,
    headers: list[str],
    rows: list[list[Any]],
    notes: str,
    variant: str = "",
) -> None:
    """Print the table and notes; unless --no-record or --quick, append them with the date,
    machine, versions and the command that made them to history/NAME.md (NAME: the benchmark's
    module) and make the table the current one of NAME (NAME-variant: one current table per
    variant, e.g. scale's sampler) at the top of RESULTS.md."""
    name = Path(sys.argv[0]).stem
    command = f"python -m benchmarks.{name} {shlex.join(sys.argv[1:])}".strip()
    heading = f"{title}{f' ({args.label})' if args.label else ''}"
    today, where, code = datetime.date.today().isoformat(), machine(), code_version()
    table = markdown(headers, rows)
    text = (
        f"## {heading}\n\n{today} · {where}  \n{versions(code)}  \n`{command}`\n\n"
        f"{table}\n\n{notes.strip()}\n"
    )
    print(text)
    if args.quick or args.no_record:
        return
    history = HISTORY / f"{name}.md"
    if not history.exists():
        HISTORY.mkdir(exist_ok=True)
        history.write_text(
            f"# benchmarks.{name}: history\n\nEvery recorded run of `python -m benchmarks.{name}`, "
            f"oldest first; the current figures are in [../RESULTS.md](../RESULTS.md).\n"
        )
    with history.open("a") as file:
        file.write("\n" + text)
    where_from = f'"{heading}" in [history/{name}.md](history/{name}.md)'
    current(
        f"{name}-{variant}" if variant else name,
        f"{title} ({variant})" if variant else title,
        f"{table}\n\n{today} · code {code} · {where} · {where_from}",
    )


UPDATED: set[str] = set()  # the current tables this process wrote: a second one joins the first


def current(key: str, title: str, block: str) -> None:
    """Put `block` between the lines <!-- current:KEY --> and <!-- /current:KEY --> of
    RESULTS.md, in place of what was there (after it, when this process wrote it: a benchmark
    that records several tables in one run keeps them all); a new section `title` at the end
    when RESULTS.md has no such lines."""
    start, end = f"<!-- current:{key} -->", f"<!-- /current:{key} -->"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if start in text and end in text.split(start, 1)[1]:
        head, rest = text.split(start, 1)
        old, tail = rest.split(end, 1)
        kept = f"{old.strip()}\n\n" if key in UPDATED else ""
        text = f"{head}{start}\n{kept}{block}\n{end}{tail}"
    else:
        text = f"{text.rstrip()}\n\n## {title}\n\n{start}\n{block}\n{end}\n"
    UPDATED.add(key)
    RESULTS.write_text(text)


@contextmanager
def timer() -> Iterator[list[float]]:
    """`with timer() as elapsed:` ... `elapsed[0]` holds the wall seconds afterwards."""
    elapsed = [0.0]
    started = time.perf_counter()
    try:
        yield elapsed
    finally:
        elapsed[0] = time.perf_counter() - started


# ----------------------------------------------------------------------------------------------
# Local services the benchmarks (and the tests) start on this machine.

RAY_ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
RAY = os.path.join(os.path.dirname(sys.executable), "ray")


# MLflow 3's server also starts job consumers (huey, for its GenAI features): 3 processes and
# their workers that no study uses.
SERVER_ENV = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 (its own process group), its artifact folder under
    `folder` and its store at `backend` (a database URL; default: an SQLite file in `folder`);
    `kill` and `start` again keep its store and port."""

    def __init__(self, folder: Path, backend: str | None = None) -> None:
        self.folder, self.port = folder, free_port()
        self.backend = backend or f"sqlite:///{folder / 'server.db'}"
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start it and wait until it answers."""
        log = (self.folder / "server.log").open("a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend,
             "--artifacts-destination", str(self.folder / "server-artifacts"),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, env=SERVER_ENV, start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=2)
                return
            except OSError:
                if self.process.poll() is not None or time.time() > deadline:
                    raise RuntimeError((self.folder / "server.log").read_text()[-3000:]) from None
                time.sleep(0.5)

    def kill(self) -> None:
        """SIGKILL the server and every process it started."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """Stop it as an operator would (SIGTERM), its workers with it."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)


@contextmanager
def mlflow_server(folder: Path, backend: str | None = None) -> Iterator[str]:
    """A running MlflowServer (see there) for the block; yields its URI."""
    with mlflow_service(folder, backend) as server:
        yield server.uri


@contextmanager
def mlflow_service(folder: Path, backend: str | None = None) -> Iterator[MlflowServer]:
    """A running MlflowServer for the block, to stop and start again within it."""
    server = MlflowServer(folder, backend)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (Debian's package), if installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    initdb = found[-1] if found else shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class Postgres:
    """A real PostgreSQL server on 127.0.0.1 and a free port, its cluster in a new temporary
    folder: `url` is `postgresql://postgres@127.0.0.1:PORT`; `stop` and `start` keep its data.
    The server refuses to run as root: as root, it runs as the `postgres` user Debian's
    package makes."""

    def __init__(self) -> None:
        self.programs = postgres_bin()
        self.folder = Path(tempfile.mkdtemp(prefix="study-postgres-"))
        self.as_owner = []
        if os.getuid() == 0:
            shutil.chown(self.folder, "postgres")
            self.as_owner = ["runuser", "-u", "postgres", "--"]
        self.data, self.port = self.folder / "data", free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}"
        self.run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def run(self, program: str, *args: str) -> None:
        subprocess.run([*self.as_owner, str(self.programs / program), *args], check=True,
                       capture_output=True, text=True)  # fmt: skip

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off"
        log = str(self.folder / "server.log")
        self.run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; `immediate` as a crash would (no clean shutdown)."""
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def create(self, database: str) -> None:
        self.run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", database)


@contextmanager
def postgres_service(databases: tuple[str, ...]) -> Iterator[Postgres]:
    """A running Postgres (see there) with `databases` made, for the block."""
    server = Postgres()
    server.start()
    try:
        for name in databases:
            server.create(name)
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # stopped already
            server.stop()
        shutil.rmtree(server.folder, ignore_errors=True)


@contextmanager
def postgres_server(databases: tuple[str, ...]) -> Iterator[str]:
    """A running Postgres with `databases` made, for the block; yields its URL."""
    with postgres_service(databases) as server:
        yield server.url


def ray_node(*args: str, cwd: Path | None = None, env: dict[str, str] = None) -> subprocess.Popen:
    """One Ray node in the foreground (--block) in its own process group, so that stopping it
    removes just that node; started in folder `cwd`, with `env` added to its environment."""
    return subprocess.Popen(
        [RAY, "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats", *args],
        env={**RAY_ENV, **(env or {})},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_node(node: subprocess.Popen, force: bool = False) -> None:
    """Stop a node `ray_node` started: as `ray stop` does (SIGTERM), or at once (`force`,
    SIGKILL to its whole process group: for tearing a test cluster down)."""
    os.killpg(node.pid, signal.SIGKILL if force else signal.SIGTERM)
    node.wait(timeout=60)


# Connects once (retrying until the head answers), then counts live nodes until there are
# enough: one process per wait, where a process per poll cost seconds of imports each.
_WAIT = """
import sys, time, ray
address, nodes, deadline = sys.argv[1], int(sys.argv[2]), time.time() + float(sys.argv[3])
while True:
    try:
        ray.init(address=address, logging_level="ERROR")
        break
    except Exception:
        if time.time() > deadline:
            sys.exit("the head did not answer")
        time.sleep(0.5)
while sum(node["Alive"] for node in ray.nodes()) < nodes:
    if time.time() > deadline:
        sys.exit("not enough nodes")
    time.sleep(0.5)
print(" ".join(node["NodeID"] for node in ray.nodes() if node["Alive"]))
"""


def wait_for_nodes(address: str, nodes: int, timeout: float = 180) -> set[str]:
    """Until `nodes` nodes are alive in the cluster at `address` (nodes started at the same
    moment on one machine trip over each other, so start them one after the other); the
    alive nodes' IDs."""
    done = subprocess.run(
        [sys.executable, "-c", _WAIT, address, str(nodes), str(timeout)],
        env=RAY_ENV, capture_output=True, text=True, timeout=timeout + 60,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(
            f"the cluster at {address} did not reach {nodes} nodes: {done.stderr[-500:]}"
        )
    return set(done.stdout.split())
