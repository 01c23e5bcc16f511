"""Orchestration overhead: what Ray Tune, Optuna and MLflow add to the same training work.

The same grid of digits configurations (lr x dropout x BatchNorm, 20 epochs each, no early
stopping) runs three ways:
  (a) a plain loop in this process calling trainables.fit: the floor;
  (b) a plain in-process Optuna study (grid sampler, in-memory storage) that reports every
      epoch to its pruner (NopPruner: nothing is stopped);
  (c) `study run`'s code path (runner.run_study): Ray Tune trials on a new local Ray (as each
      `study run` process starts one), as many at a time as there are cores, Optuna in SQLite,
      every epoch recorded in MLflow (SQLite).
The ratio is (c) / ((a) / cores): 1.0 means the orchestration costs nothing. The per-trial
overhead is the core-seconds (c) spends beyond (a), per trial. Ray's start is timed apart:
it happens once per process.

Run at 12 and at 36 trials, the difference gives the overhead each extra trial costs apart
from the study's fixed start. The CPU (c) needs is accounted for too: the driver's own
core-seconds, and what one trial actor spends before its first epoch (importing study.engines.trial
and the first optimizer step, in a worker process Ray started idle with itself), against what
the 2.0x target allows.

    python -m benchmarks.overhead           # 12 and 36 trials x 20 epochs
"""

import io
import itertools
import os
import tempfile
import time
from pathlib import Path

import optuna
import ray
from ray.tune.execution.class_cache import DEFAULT_ENV_VARS
from rich.console import Console

from benchmarks.common import arguments, record, timer
from study.commands.preflight import preflight
from study.commands.run import run_study
from study.engines.cluster import connect
from study.spec import StudySpec
from trainables import fit

SMALL = {"lr": [1e-3, 3e-3, 1e-2], "dropout": [0.0, 0.2], "batch_norm": [True, False]}
LARGE = {**SMALL, "dropout": [0.0, 0.1, 0.2], "weight_decay": [0.0, 1e-4]}  # 36 trials


def study_spec(epochs: int, grid: dict[str, list], concurrency: int) -> StudySpec:
    """The digits study over `grid`, every trial to `epochs`, `concurrency` at a time."""
    space = {"params": {k: {"type": "categorical", "choices": v} for k, v in grid.items()}}
    return StudySpec.model_validate(
        {
            "name": "bench-overhead",
            "dataset": {"name": "digits"},
            "model": {"name": "mlp", "widths": [128, 128]},
            "space": space,
            "fixed": {"optimizer": "adam", "batch_size": 64},
            "search": {"sampler": "grid", "max_concurrent": concurrency, "seed": 0},
            "scheduler": {"name": "none", "max_epochs": epochs},
        }
    )


def configs(spec: StudySpec, grid: dict[str, list]) -> list[dict]:
    """The grid's trial configs exactly as the study's trials get them."""
    constants = spec.trial_constants()
    return [
        {**constants, **dict(zip(grid, values, strict=True))}
        for values in itertools.product(*grid.values())
    ]


def plain_loop(trials: list[dict], data) -> float:
    """(a): seconds to fit every config one after another."""
    with timer() as elapsed:
        for config in trials:
            fit(config, data, lambda metrics, state: None)
    return elapsed[0]


def plain_optuna(trials: list[dict], grid: dict[str, list], data) -> float:
    """(b): seconds for an in-process Optuna study over the same grid."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    constants = {k: v for k, v in trials[0].items() if k not in grid}

    def objective(trial: optuna.Trial) -> float:
        config = {**constants, **{k: trial.suggest_categorical(k, v) for k, v in grid.items()}}

        def report(metrics: dict, state: dict) -> None:
            trial.report(metrics["val_acc"], int(metrics["epoch"]))
            if trial.should_prune():
                raise optuna.TrialPruned()

        return fit(config, data, report)["val_acc"]

    sampler = optuna.samplers.GridSampler(grid, seed=0)
    study = optuna.create_study(
        direction="maximize", sampler=sampler, pruner=optuna.pruners.NopPruner()
    )
    with timer() as elapsed:
        study.optimize(objective, n_trials=len(trials))
    return elapsed[0]


def measure(grid: dict[str, list], epochs: int, cores: int) -> dict[str, float]:
    """Seconds of (a), (b) and (c) over one grid."""
    spec = study_spec(epochs, grid, cores)
    trials = configs(spec, grid)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        checked = preflight(spec, root)
        data = checked.data
        fit({**trials[0], "epochs": 1}, data, lambda metrics, state: None)  # warm up torch
        seconds = {"n": len(trials), "a": plain_loop(trials, data)}
        seconds["b"] = plain_optuna(trials, grid, data)
        cpu = time.process_time()
        with timer() as elapsed:
            ranked = run_study(spec, root, checked, Console(file=io.StringIO()))
        seconds["c"], seconds["driver"] = elapsed[0], time.process_time() - cpu
    done = sum(trial.outcome == "completed" for trial in ranked)
    if done != len(trials):
        raise SystemExit(f"study run completed {done} of {len(trials)} trials")
    return seconds


def actor_start_cost() -> list[float]:
    """What one new trial actor spends before its first epoch, in core-seconds: its worker
    process's start, importing what a trial imports, its first optimizer step (where torch imports
    torch._dynamo). The class is made here so that Ray ships it by value: its worker imports
    nothing of ours until it is asked."""

    class Probe:
        def start_cost(self) -> list[float]:
            import resource

            def cpu() -> float:
                usage = resource.getrusage(resource.RUSAGE_SELF)
                return usage.ru_utime + usage.ru_stime

            started = cpu()
            import torch

            import study.engines.trial  # noqa: F401
            from trainables import resolve
            from trainables.optim import build_optimizer

            imported = cpu()
            layer = torch.nn.Linear(4, 2)
            optimizer = build_optimizer(layer, resolve({}))  # as a trial builds it
            layer(torch.ones(1, 4)).sum().backward()
            optimizer.step()
            return [started, imported - started, cpu() - imported]

    # The runtime_env Tune's trial actors carry (none once study.engines.cluster.connect has emptied
    # it, when the actor takes one of the workers Ray started idle with itself).
    probe = ray.remote(runtime_env={"env_vars": DEFAULT_ENV_VARS})(Probe).remote()
    try:
        return ray.get(probe.start_cost.remote())
    finally:
        ray.kill(probe)


def options(parser) -> None:
    """Overhead's own option: the epochs a trial trains."""
    parser.add_argument("--epochs", type=int, default=20)


def measure_sizes(
    grids: list[dict[str, list]], epochs: int, cores: int
) -> tuple[list[dict[str, float]], list[float]]:
    """Each grid's three ways, each on a new local Ray; the figures and Ray's start times."""
    runs, ray_starts = [], []
    for grid in grids:  # each on a new local Ray, as each `study run` process starts its own
        ray.shutdown()
        with timer() as ray_start:
            connect(study_spec(epochs, grid, cores))
        ray_starts.append(ray_start[0])
        runs.append(measure(grid, epochs, cores))
    return runs, ray_starts


def cost_notes(small: dict[str, float], large: dict[str, float], cores: int, start: list) -> str:
    """What an extra trial and a study's start cost, and where (c)'s CPU time goes; the targets."""
    marginal = ((large["c"] - small["c"]) * cores - (large["a"] - small["a"])) / (
        large["n"] - small["n"]
    )
    fixed = large["c"] - large["a"] / cores - large["n"] * marginal / cores
    ratio = large["c"] / (large["a"] / cores)
    verdict = {True: "met", False: "NOT met"}
    notes = (
        f"\n\nBetween the two sizes each extra trial cost **{marginal:.3f} core-s** of "
        f"overhead; what is left is a fixed start of **{fixed:.1f} s** per study (MLflow's "
        f"and Optuna's stores, Tune's set-up, a worker process per concurrent trial "
        f"importing torch). Targets: <= 1.3x {verdict[ratio <= 1.3]} ({ratio:.2f}x at "
        f"{large['n']} trials); < 0.5 s per trial {verdict[marginal < 0.5]} ({marginal:.3f} s)."
    )
    # 2.0x allows (c) <= 2 (a) / cores: that many core-seconds, for the training, each
    # concurrent trial's actor start and the driver's work (Ray's own processes aside). The
    # actors take the worker processes Ray started idle with itself: their start is Ray's.
    slots = min(cores, large["n"])
    allowed, actors = 2 * large["a"], slots * sum(start[1:])
    needed = large["a"] + actors + large["driver"]
    notes += (
        f"\n\nCPU at {large['n']} trials: 2.0x allows {allowed:.1f} core-s; the training "
        f"takes {large['a']:.1f}, the driver {large['driver']:.1f} and {slots} "
        f"trial actors {actors:.1f} before their first epoch (each: {start[1]:.2f} importing "
        f"study.engines.trial, {start[2]:.2f} its first optimizer step; its worker process, "
        f"{start[0]:.2f}, is one Ray started idle with itself): **{needed:.1f} core-s "
        f"needed**, before Ray's own processes. Target 2.0x {verdict[ratio <= 2.0]} "
        f"({ratio:.2f}x)."
    )
    return notes


def main() -> None:
    """Time a plain loop, Optuna and `study run` at two sizes and record the overhead."""
    args = arguments("Orchestration overhead: plain loop vs Optuna vs study run.", options)
    cores = os.cpu_count() or 1
    epochs = 1 if args.quick else args.epochs
    grids = [SMALL, LARGE]
    if args.quick:
        grids = [{"lr": [1e-3], "batch_norm": [True]}, {"lr": [1e-3, 3e-3], "batch_norm": [True]}]
    runs, ray_starts = measure_sizes(grids, epochs, cores)
    start = actor_start_cost()
    rows = []
    for run in runs:
        n, a, b, c = run["n"], run["a"], run["b"], run["c"]
        per_core = f"{c / (a / cores):.2f}x"
        rows.append([n, a, b, f"{b / a:.2f}x", c, per_core, (c * cores - a) / n, run["driver"]])
    notes = (
        f"Digits MLP 128-128, {epochs} epochs a trial, no early stopping, {cores} cores, one "
        f"torch thread per trial. (b)/(a) is to one process, (c)/(a/{cores}) to (a) spread over "
        f"{cores} cores; overhead per trial = core-seconds of (c) beyond (a), per trial. Each "
        f"size runs on a new local Ray, as each `study run` starts one; Ray's start "
        f"({max(ray_starts):.1f} s at most, once per process) is in no column."
    )
    small, large = runs
    notes += cost_notes(small, large, cores, start)
    headers = [
        "trials",
        "(a) loop s",
        "(b) Optuna s",
        "(b)/(a)",
        "(c) study run s",
        f"(c)/((a)/{cores})",
        "overhead core-s/trial",
        "(c) driver core-s",
    ]
    record("Orchestration overhead", args, headers, rows, notes)


if __name__ == "__main__":
    main()
