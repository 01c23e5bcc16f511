"""Search efficiency: how many training epochs each way of searching spends to find a good config.

On digits with the default study's space (lr, weight decay, dropout, BatchNorm), 24 trials of
up to 27 epochs, 2 at a time, for each of 5 seeds:
  random                  RandomSampler, every trial to the end
  random + ASHA           RandomSampler, ASHA (rungs at 3 and 9 epochs; --grace 1: 1, 3 and 9)
  TPE                     TPESampler, every trial to the end
  TPE + ASHA, stock       Ray's OptunaSearch: an early-stopped trial reaches Optuna as COMPLETE
                          with the score it had when stopped
  TPE + ASHA, ours        study.engines.search.PrunedAwareOptunaSearch: told as PRUNED, with its
                          curve
  GP + ASHA, ours         the study's default: GPSampler learning from the 4th trial, shown
                          early-stopped trials (search.sampler gp)
  GP + ASHA, stock        the same GPSampler behind Ray's OptunaSearch
Every epoch any trial reports is counted in the order the driver receives it. Reported: the
epochs spent until some trial is within 0.5 points of the best val_acc any method found with
that seed, and the best val_acc after a fixed budget of epochs. Trials run through Ray Tune as
in `study run`, without MLflow (it does not change what is searched).

    python -m benchmarks.search
    python -m benchmarks.search --methods tpe,tpe-asha,tpe-asha-stock,gp-asha,gp-asha-stock
    python -m benchmarks.search --quick         # TPE alone, the default through stock and ours
"""

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from benchmarks.common import arguments, record, timer
from study.commands.preflight import preflight
from study.core import Found
from study.engines import sampler as sampling
from study.engines.cluster import connect
from study.engines.sampler import DefineByRun
from study.engines.search import build_searcher
from study.engines.tuner import run_config, tune_config, with_data
from study.spec import SchedulerSpec, StudySpec

# key: (label, sampler, scheduler, searcher); each sampler with its default random start
METHODS = {
    "random": ("random", "random", "none", "ours"),
    "random-asha": ("random + ASHA", "random", "asha", "ours"),
    "tpe": ("TPE", "tpe", "none", "ours"),
    "tpe-asha-stock": ("TPE + ASHA, stock OptunaSearch", "tpe", "asha", "stock"),
    "tpe-asha": ("TPE + ASHA, ours (pruned)", "tpe", "asha", "ours"),
    "gp-asha": ("GP from the 4th trial + ASHA, ours (the default)", "gp", "asha", "ours"),
    "gp-asha-stock": ("GP from the 4th trial + ASHA, stock OptunaSearch", "gp", "asha", "stock"),
}
# What the target compares (and all --quick runs): TPE alone, the default through stock
# OptunaSearch and ours
TARGET = ("tpe", "gp-asha-stock", "gp-asha")
WITHIN = 0.005  # half a point of accuracy


class Epochs(tune.Callback):
    """Every epoch's metric in the order results reach the driver."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.values: list[float] = []

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        self.values += [m[self.metric] for m in result.get("history") or [result]]


def searcher(spec: StudySpec, root: Path, kind: str):
    """Our searcher, or Ray's stock OptunaSearch over the same define-by-run space, with the
    Optuna storage under `root`."""
    layout = spec.layout(root)
    if kind == "ours":
        return build_searcher(spec, layout, Found())
    sampler = sampling.sampler(spec)  # Optuna's own, as a user of the stock searcher has it
    sampler = sampler.inner if isinstance(sampler, sampling.LearnsFromEarlyStopped) else sampler
    return OptunaSearch(
        space=DefineByRun(spec.space, spec.trial_constants(), spec.context()),
        metric=spec.metric,
        mode=spec.mode,
        sampler=sampler,
        storage=optuna.storages.RDBStorage(layout.optuna_url),
        study_name=spec.name,
    )


def search(
    method: str,
    seed: int,
    trials: int,
    epochs: int,
    grace: int,
    root: Path,
    data,
    brackets: int = 1,
    at_once: int = 2,
) -> list[float]:
    """The val_acc of every epoch one method's study spent, in the order they came, `at_once`
    trials at a time."""
    _, sampler, scheduler, kind = METHODS[method]
    asha = {"brackets": brackets}
    spec = StudySpec.model_validate(
        {
            "name": f"bench-search-{seed}-{list(METHODS).index(method)}",
            "search": {
                "sampler": sampler,
                "num_samples": trials,
                "max_concurrent": at_once,
                "seed": seed,
            },
            "scheduler": {
                "name": scheduler,
                "max_epochs": epochs,
                "grace_period": grace,
                "reduction_factor": 3,
                **(asha if scheduler == "asha" else {}),
            },
        }
    )
    root.mkdir(parents=True, exist_ok=True)
    epochs_seen = Epochs(spec.metric)
    tuner = tune.Tuner(
        with_data(spec, data),
        tune_config=tune_config(spec, spec.layout(root), searcher(spec, root, kind)),
        run_config=run_config(spec, spec.name, str(root / "ray"), [epochs_seen]),
    )
    tuner.fit()
    return epochs_seen.values


def epochs_to(values: list[float], target: float) -> int | None:
    """Epochs spent until one reaches `target` (None: never)."""
    return next((i + 1 for i, value in enumerate(values) if value >= target), None)


def options(parser) -> None:
    """Search's own options: seeds, trials, ASHA's first rung and brackets, the methods."""
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument(
        "--grace",
        type=int,
        default=SchedulerSpec().grace_period,
        help="ASHA's first rung in epochs (default: the study's default)",
    )
    parser.add_argument(
        "--brackets",
        type=int,
        default=SchedulerSpec().brackets,
        help="ASHA's brackets (default: the study's default)",
    )
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated, of: {', '.join(METHODS)} (the target needs {', '.join(TARGET)})",
    )


def run_studies(
    methods: list[str],
    seeds: int,
    trials: int,
    epochs: int,
    grace: int,
    brackets: int,
    at_once: int,
) -> tuple[dict[str, list[list[float]]], dict[str, float]]:
    """Each method's study for each seed, seed by seed; each one's epochs and wall seconds."""
    runs: dict[str, list[list[float]]] = {method: [] for method in methods}
    seconds: dict[str, float] = dict.fromkeys(methods, 0.0)
    with tempfile.TemporaryDirectory() as folder:
        data = None
        for seed in range(seeds):
            for method in methods:
                root = Path(folder) / f"{seed}-{list(METHODS).index(method)}"
                if data is None:
                    spec = StudySpec()
                    data = preflight(spec, root).data
                    connect(spec)
                with timer() as elapsed:
                    runs[method].append(
                        search(method, seed, trials, epochs, grace, root, data, brackets, at_once)
                    )
                seconds[method] += elapsed[0]
    return runs, seconds


def search_rows(
    methods: list[str],
    runs: dict[str, list[list[float]]],
    seconds: dict[str, float],
    seeds: int,
    budget: int,
) -> tuple[list[list[str]], dict[str, float]]:
    """The table's row of each method, and its mean epochs to the target."""
    best = [max(max(runs[m][seed]) for m in methods) for seed in range(seeds)]
    rows, needed = [], {}
    for method in methods:
        reached = [epochs_to(runs[method][s], best[s] - WITHIN) for s in range(seeds)]
        spent = [len(values) for values in runs[method]]
        counted = [r if r is not None else n for r, n in zip(reached, spent, strict=True)]
        needed[method] = statistics.mean(counted)
        at_budget = [max(values[:budget]) for values in runs[method]]
        rows.append(
            [
                METHODS[method][0],
                f"{statistics.mean(counted):.0f}",
                f"{sum(r is not None for r in reached)}/{seeds}",
                f"{statistics.mean(at_budget):.4f}",
                f"{max(max(v) for v in runs[method]):.4f}",
                f"{statistics.mean(spent):.0f}",
                f"{seconds[method] / seeds:.0f}",
            ]
        )
    return rows, needed


def target_verdict(methods: list[str], needed: dict[str, float]) -> str:
    """Whether the default (ours) needs at most a third of TPE's epochs and no more than stock."""
    if set(TARGET) <= set(methods):
        tpe, stock, ours = (needed[method] for method in TARGET)
        met = "met" if ours <= tpe / 3 and ours <= stock else "NOT met"
        return f"{met} (ours {ours:.0f}, TPE {tpe:.0f}, stock {stock:.0f} epochs)"
    return f"not measured (needs {', '.join(TARGET)})"


def main() -> None:
    """Run each method's studies and record the epochs each spent to reach the target."""
    args = arguments(
        "Search efficiency: random, TPE, with and without ASHA, stock vs ours.", options
    )
    seeds = 1 if args.quick else args.seeds
    trials, epochs = (2, 2) if args.quick else (args.trials, 27)
    at_once = 1 if args.quick else 2  # --quick checks the wiring: one trial actor a study
    grace = min(args.grace, epochs)
    budget = trials * epochs // 3  # a third of what a search without early stopping spends
    methods = list(TARGET) if args.quick else args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        print(
            f"--methods: unknown {', '.join(unknown)}; known: {', '.join(METHODS)}", file=sys.stderr
        )
        raise SystemExit(2)
    runs, seconds = run_studies(methods, seeds, trials, epochs, grace, args.brackets, at_once)
    rows, needed = search_rows(methods, runs, seconds, seeds, budget)
    verdict = target_verdict(methods, needed)
    notes = (
        f"Digits, default space, {trials} trials of up to {epochs} epochs, {at_once} at a time, "
        f"ASHA's rungs from epoch {grace} (reduction factor 3, {args.brackets} bracket(s)), "
        f"seeds 0-{seeds - 1} (the seed drives the sampler and the training). Epochs to the "
        f"target: mean over seeds of the epochs spent until one is within {WITHIN * 100:.1f} "
        f"points of the best val_acc any method reached with that seed (all a method spent "
        f"when it never did). Budget: {budget} epochs. Target (the default, ours, <= TPE / 3 "
        f"and <= stock): {verdict}."
    )
    headers = [
        "method",
        "epochs to within 0.5 pt",
        "reached",
        f"best val_acc at {budget} epochs",
        "best val_acc",
        "epochs spent",
        "wall s per study",
    ]
    record("Search efficiency", args, headers, rows, notes)


if __name__ == "__main__":
    main()
