"""Scale: a thousand trials on a simulated cluster, and what the driver costs them.

A Ray cluster of several nodes on this machine (`ray start`, one node after the other, each
with a few logical CPUs) runs `study run`'s code path (Optuna TPE, or GP with --sampler gp, in
SQLite, Ray Tune, MLflow in SQLite, every epoch recorded) over trials whose training loop only
sleeps 0.1 s per epoch for 10 epochs. The ideal wall time is the sleeping alone, spread over the
cluster's slots; what the run takes beyond it is the overhead: the trial actors' start (8
processes importing torch), then the driver's work per trial (Tune, Optuna, MLflow). The
driver's memory (resident set) is read at the start, at half time, at the end and once the
study has returned (and its objects are collected); its CPU time and when the first trial ran
are reported.

    python -m benchmarks.scale                              # 1,000 trials, 2 nodes x 4 CPUs
    python -m benchmarks.scale --trace-memory --trials 200  # what holds the heap's growth
    python -m benchmarks.scale --trials 300 --sampler gp    # what a GP's fit costs the driver
"""

import collections
import gc
import math
import re
import resource
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

from mlflow.tracking import MlflowClient
from rich.console import Console

from benchmarks.common import (
    arguments,
    free_port,
    ray_node,
    record,
    stop_node,
    timer,
    wait_for_nodes,
)
from study.commands.preflight import preflight
from study.commands.run import run_study
from study.spec import StudySpec

EPOCH_S = 0.1


def sleepy_fit(config: dict, data, report, state: dict | None = None) -> dict:
    """A training loop with fit's signature that only sleeps; val_acc depends on the config so
    that the search has something to find. (Defined in __main__, so Ray ships it by value.)"""
    first = (state or {}).get("epoch", 0) + 1
    metrics = {}
    for epoch in range(first, config["epochs"] + 1):
        time.sleep(EPOCH_S)
        quality = 1 - abs(math.log10(config["lr"]) + 2.5) / 3 - config["dropout"] / 2
        metrics = {"epoch": epoch, "val_acc": quality * (1 - 0.5**epoch), "epoch_time": EPOCH_S}
        report(metrics, {"epoch": epoch})
    return metrics


def resident_mib() -> float:
    """This process's resident memory in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def sample_memory(samples: list[float], snapshots: list, stop: threading.Event) -> None:
    """Every second until `stop` is set, append this process's resident MiB to `samples` and,
    every 10 s when tracemalloc traces, a snapshot of the Python heap to `snapshots`."""
    while not stop.wait(1.0):
        samples.append(resident_mib())
        if tracemalloc.is_tracing() and len(samples) % 10 == 0:
            snapshots.append(tracemalloc.take_snapshot())


# The libraries (and our packages) that heap growth is put down to: the nearest caller among them.
OWNERS = re.compile(
    r"site-packages/(ray/tune|ray|optuna|mlflow|sqlalchemy|torch|pandas)/|/(study|benchmarks)/"
)


def heap_growth(before, after) -> collections.Counter:
    """Bytes the Python heap grew by between two tracemalloc snapshots, by the library whose code
    (nearest the allocation) asked for them; "other" when none of OWNERS is on the stack."""
    growth = collections.Counter()
    for stat in after.compare_to(before, "traceback"):
        owner = "other"
        for frame in reversed(stat.traceback):  # the allocation's own frame first
            if found := OWNERS.search(frame.filename):
                owner = found.group(1) or found.group(2)
                break
        growth[owner] += stat.size_diff
    return growth


def cpu_seconds() -> float:
    """The CPU time (user + system) this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def first_run_start(spec: StudySpec, root: Path) -> float:
    """When the first trial's MLflow run began (its actor had started): epoch seconds."""
    client = MlflowClient(spec.layout(root).tracking_uri)
    experiment = client.get_experiment_by_name(spec.name)
    runs = client.search_runs([experiment.experiment_id], max_results=50000)
    return sorted(run.info.start_time for run in runs)[1] / 1000  # [0]: the parent run


def options(parser) -> None:
    """Scale's own options: the study's size, the cluster's shape, the sampler, the tracing."""
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--nodes", type=int, default=2, help="worker nodes")
    parser.add_argument("--cpus", type=int, default=4, help="logical CPUs per worker node")
    parser.add_argument(
        "--sampler",
        choices=["tpe", "gp"],
        default="tpe",
        help="search.sampler (gp: learning from the 4th trial, search.startup_trials 3)",
    )
    parser.add_argument(
        "--trace-memory",
        action="store_true",
        help="trace the driver's Python heap (tracemalloc; slows the driver)",
    )


def add_workers(nodes: list, address: str, workers: int, cpus: int) -> None:
    """Wait for the head in `nodes`, then start `workers` nodes of `cpus` CPUs one by one."""
    wait_for_nodes(address, 1)
    for count in range(2, workers + 2):
        nodes.append(ray_node(f"--address={address}", f"--num-cpus={cpus}"))
        wait_for_nodes(address, count)


def scale_spec(trials: int, epochs: int, slots: int, sampler: str, address: str) -> StudySpec:
    """The study: `trials` sleeping trials of two parameters, `slots` at a time, no scheduler."""
    return StudySpec.model_validate(
        {
            "name": "bench-scale",
            "space": {
                "params": {
                    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
                    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
                }
            },
            "search": {
                "num_samples": trials,
                "max_concurrent": slots,
                "sampler": sampler,
            },
            "scheduler": {"name": "none", "max_epochs": epochs},
            "cluster": {"address": address},
        }
    )


def measure(spec: StudySpec, trace_memory: bool) -> dict:
    """Run the study in a temporary root; its wall time, the driver's CPU and memory, and more."""
    with tempfile.TemporaryDirectory() as folder:
        checked = preflight(spec, Path(folder))  # connects to the cluster too
        memory_start, cpu_start, began = resident_mib(), cpu_seconds(), time.time()
        samples, snapshots = [memory_start], []
        blocks_start = sys.getallocatedblocks()
        stop = threading.Event()
        if trace_memory:
            tracemalloc.start(12)  # frames enough to reach the library that allocated
        sampler = threading.Thread(target=sample_memory, args=(samples, snapshots, stop))
        sampler.start()
        with timer() as elapsed:
            console = Console(quiet=True)
            ranked = run_study(spec, Path(folder), checked, console, train=sleepy_fit)
        stop.set()
        sampler.join()
        memory_end, driver_cpu = resident_mib(), cpu_seconds() - cpu_start
        memory_half = samples[len(samples) // 2]
        completed = sum(trial.outcome == "completed" for trial in ranked)
        growth = heap_growth(snapshots[len(snapshots) // 2], snapshots[-1]) if snapshots else {}
        del ranked, snapshots[:]
        tracemalloc.stop()
        gc.collect()
        memory_after, blocks_after = resident_mib(), sys.getallocatedblocks()
        first_trial = first_run_start(spec, Path(folder)) - began
    return {
        "elapsed": elapsed[0],
        "completed": completed,
        "first_trial": first_trial,
        "driver_cpu": driver_cpu,
        "memory_start": memory_start,
        "memory_half": memory_half,
        "memory_end": memory_end,
        "memory_after": memory_after,
        "blocks_start": blocks_start,
        "blocks_after": blocks_after,
        "growth": growth,
    }


def shut_down(nodes: list) -> None:
    """Disconnect from the cluster and kill its nodes, the workers first."""
    import ray

    ray.shutdown()
    for node in reversed(nodes):  # at once: a head sent SIGTERM takes 33 s to exit
        if node.poll() is None:
            stop_node(node, force=True)


def scale_notes(args, spec: StudySpec, trials: int, epochs: int, slots: int, figures: dict) -> str:
    """The notes under the table: the setup, the targets met or not, and the heap's growth."""
    elapsed, first_trial = figures["elapsed"], figures["first_trial"]
    driver_cpu = figures["driver_cpu"]
    memory_start, memory_half = figures["memory_start"], figures["memory_half"]
    memory_end, memory_after = figures["memory_end"], figures["memory_after"]
    blocks_start, blocks_after = figures["blocks_start"], figures["blocks_after"]
    ideal = math.ceil(trials / slots) * epochs * EPOCH_S
    overhead = elapsed / ideal - 1
    met = "met" if overhead <= 0.2 else "NOT met"
    notes = (
        f"{trials} trials x {epochs} epochs of {EPOCH_S} s sleep, sampler "
        f"{spec.search.sampler}, {slots} at a time on "
        f"{args.nodes} worker nodes (+ a head with no CPUs), all on this machine. Ideal = "
        f"ceil(trials / slots) x {epochs * EPOCH_S:.1f} s. Target (within 20% of ideal, memory "
        f"flat): time {met} ({overhead:+.0%}); driver memory {memory_start:.0f} -> "
        f"{memory_half:.0f} (half time) -> {memory_end:.0f} MiB, "
        f"{(memory_end - memory_half) * 2**10 / (trials / 2):.0f} KiB per trial in the second "
        f"half; {memory_after:.0f} MiB once the study returned and its objects were collected, "
        f"when Python's live objects numbered {blocks_after / blocks_start:.2f}x those at the "
        f"start. From the first trial on: "
        f"{(elapsed - first_trial) / ideal:.2f}x ideal; the driver was busy "
        f"{driver_cpu / elapsed:.0%} of the wall time."
    )
    if growth := figures["growth"]:
        owners = ", ".join(f"{name} {size / 2**20:+.1f}" for name, size in growth.most_common())
        notes += (
            f" Python heap (tracemalloc, a snapshot every 10 s) from the middle snapshot to "
            f"the last: {sum(growth.values()) / 2**20:+.1f} MiB, by whose code "
            f"allocated it: {owners} MiB."
        )
    return notes


def scale_row(args, trials: int, epochs: int, slots: int, figures: dict) -> list:
    """The table's one row: sizes, times against the ideal, the driver's CPU and memory."""
    ideal = math.ceil(trials / slots) * epochs * EPOCH_S
    elapsed, driver_cpu = figures["elapsed"], figures["driver_cpu"]
    return [
        trials,
        f"{args.nodes} x {args.cpus}",
        figures["completed"],
        f"{ideal:.0f}",
        f"{elapsed:.0f}",
        f"{elapsed / ideal:.2f}x",
        f"{(elapsed - ideal) * slots / trials * 1000:.0f}",
        f"{figures['first_trial']:.0f}",
        f"{driver_cpu:.0f} ({driver_cpu / trials * 1000:.0f} ms per trial)",
        f"{figures['memory_start']:.0f}",
        f"{figures['memory_half']:.0f}",
        f"{figures['memory_end']:.0f}",
        f"{figures['memory_after']:.0f}",
    ]


HEADERS = [
    "trials",
    "nodes x CPUs",
    "completed",
    "ideal s",
    "wall s",
    "wall / ideal",
    "overhead ms per trial-slot",
    "first trial ran after s",
    "driver CPU s",
    "driver MiB at start",
    "at half time",
    "at end",
    "after the study",
]


def main() -> None:
    """Start the cluster, run the study on it, tear it down and record what it cost."""
    args = arguments("Scale: 1,000 sleeping trials on a simulated cluster.", options)
    trials, epochs = (4, 2) if args.quick else (args.trials, args.epochs)
    if args.quick:  # one small worker: the smoke test checks it runs, not how it scales
        args.nodes, args.cpus = 1, 2
    slots = args.nodes * args.cpus
    address = f"127.0.0.1:{free_port()}"
    port = address.split(":")[1]
    nodes = [ray_node("--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false")]
    try:
        add_workers(nodes, address, args.nodes, args.cpus)
        spec = scale_spec(trials, epochs, slots, args.sampler, address)
        measured = measure(spec, args.trace_memory)
    finally:
        shut_down(nodes)
    rows = [scale_row(args, trials, epochs, slots, measured)]
    notes = scale_notes(args, spec, trials, epochs, slots, measured)
    record("Scale", args, HEADERS, rows, notes, variant=args.sampler)


if __name__ == "__main__":
    main()
