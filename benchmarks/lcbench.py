"""Search on real learning curves: the YAHPO Gym surrogate of LCBench (arXiv 2109.03670).

LCBench trained an MLP (lr, weight decay, momentum, max dropout, layers, units, batch size)
for 52 epochs on each of 35 OpenML tasks; YAHPO's surrogate, an ONNX network, predicts its
curves. A method's studies run as a user's study runs (Ray Tune, our searcher, our ASHA, the
wiring of `study run`), 60 trials of up to 52 epochs, 2 at a time, each trial reporting the
surrogate's val_accuracy once per epoch and sleeping zero. Regret: accuracy points below the
best of 10,000 random configurations at epoch 52 (the same space, seed 0), of the best
val_accuracy a study had seen after B epochs, at B = 1/9, 1/3 and all of what TPE alone
spends (60 x 52 = 3,120 epochs); a study that spent less counts all it spent.

The files (model.onnx, config_space.json, encoding.json) are the folder `lcbench/` of the
public GitHub repository slds-lmu/yahpo_data; onnxruntime runs them (`pip install -e
".[bench]"`). The model is called as yahpo-gym calls it (yahpo_gym/benchmark_set.py): inputs
`x_cat` (int32: OpenML_task_id through encoding.json) and `x_cont` (float32, raw values in the
order epoch, batch_size, learning_rate, momentum, weight_decay, num_layers, max_units,
max_dropout); output columns time, val_accuracy (percent), val_cross_entropy, ...

    python -m benchmarks.lcbench --data DIR                   # the development instances
    python -m benchmarks.lcbench --data DIR --instances held-out
    python -m benchmarks.lcbench --data DIR --methods tpe,default --seeds 10

Each study's epochs are kept in --out (one JSON file per method, instance and seed, reused
when run again), so methods and seeds can be added to a table without rerunning the others.
"""

import json
import math
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from benchmarks.common import arguments, record, timer
from study.core import TrialConfig
from study.engines import sampler as sampling
from study.spec import SchedulerSpec, StudySpec

DEVELOPMENT = ("167149", "167168", "168330", "189862", "146212")
HELD_OUT = ("126026", "167190", "168910", "189906", "7593")  # looked at only at the end
EPOCHS, TRIALS, CONCURRENT = 52, 60, 2
WITHIN = 1.0  # accuracy points
WHERE = (
    "--data: give the folder of YAHPO Gym's LCBench surrogate (model.onnx, config_space.json, "
    "encoding.json): the folder lcbench/ of the GitHub repository slds-lmu/yahpo_data; and "
    'pip install -e ".[bench]" for onnxruntime'
)

# Our names for LCBench's knobs (yahpo's name, then its range as LCBench sampled it).
# max_dropout's range is [0, 1]; ours stops short of 1 (dropout takes [0, 1)).
SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},  # learning_rate
    "batch_size": {"type": "int", "low": 16, "high": 512, "log": True},
    "momentum": {"type": "float", "low": 0.1, "high": 0.99},
    "weight_decay": {"type": "float", "low": 1e-5, "high": 1e-1},
    "depth": {"type": "int", "low": 1, "high": 5},  # num_layers
    "width": {"type": "int", "low": 64, "high": 1024, "log": True},  # max_units
    "dropout": {"type": "float", "low": 0.0, "high": 0.99},  # max_dropout
}
INPUTS = ("batch_size", "lr", "momentum", "weight_decay", "depth", "width", "dropout")


class Surrogate:
    """YAHPO's LCBench surrogate for one OpenML task: a config's val_accuracy curve.

    Picklable (Ray ships it to the trials): the ONNX session is opened where it is first used.
    """

    def __init__(self, folder: str | Path, instance: str) -> None:
        self.folder = Path(folder)
        codes = json.loads((self.folder / "encoding.json").read_text())["OpenML_task_id"]
        if instance not in codes:
            raise ValueError(f"unknown LCBench instance {instance}")
        self.instance, self.code = instance, codes[instance]
        self._session = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_session": None}

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """val_accuracy (percent) of rows (epoch, then INPUTS in yahpo's order)."""
        if self._session is None:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.inter_op_num_threads = options.intra_op_num_threads = 1
            self._session = onnxruntime.InferenceSession(
                str(self.folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
            )
        x_cat = np.full((len(rows), 1), self.code, dtype=np.int32)
        out = self._session.run(["output"], {"x_cat": x_cat, "x_cont": rows.astype(np.float32)})
        return out[0][:, 1]

    def curve(self, config: dict[str, Any]) -> list[float]:
        """The config's val_accuracy (percent) at epochs 1..52."""
        return self.curves([config])[0]

    def curves(self, configs: list[dict[str, Any]], epochs: int = EPOCHS) -> list[list[float]]:
        """Many configs' curves in one call of the model."""
        values = [[config[name] for name in INPUTS] for config in configs]
        rows = [[epoch, *row] for row in values for epoch in range(1, epochs + 1)]
        return self.predict(np.array(rows)).reshape(len(configs), epochs).tolist()


@dataclass(frozen=True)
class Synthetic:
    """A tiny made-up benchmark with LCBench's shape, for tests: a fast learner (large lr)
    levels off low, a slow one ends high, so early rungs mislead as they do on LCBench."""

    epochs: int = EPOCHS

    def curve(self, config: dict[str, Any]) -> list[float]:
        rate = config["lr"] * 40  # 0.004 .. 4 per epoch
        top = 95 - 30 * math.log10(config["lr"] / 1e-4) / 3 - 10 * config["dropout"]
        return [top * (1 - math.exp(-rate * epoch)) for epoch in range(1, self.epochs + 1)]

    def curves(self, configs: list[dict[str, Any]], epochs: int = EPOCHS) -> list[list[float]]:
        return [self.curve(config)[:epochs] for config in configs]


def replay(config: dict[str, Any], curves: Any, report: Callable, state: Any = None) -> None:
    """A training loop (trainables.fit's signature) that trains nothing: it reports the
    benchmark's val_accuracy of `config` once per epoch, from where `state` left off."""
    values = curves.curve(config)
    for epoch in range(
        (state or {}).get("epoch", 0) + 1, TrialConfig.parse(config).run.last_epoch + 1
    ):
        report({"epoch": epoch, "val_acc": values[epoch - 1] / 100}, {"epoch": epoch})


@dataclass(frozen=True)
class Method:
    """One way to search: a sampler, a scheduler's settings and whose searcher tells Optuna."""

    sampler: str  # tpe, gp or random
    scheduler: dict[str, Any] = field(default_factory=lambda: {"name": "none"})
    searcher: str = "ours"  # ours, stock (Ray's OptunaSearch) or optuna (no Ray: Hyperband)
    startup: int | None = None  # search.startup_trials; None: Optuna's default

    @property
    def key(self) -> str:
        """A file name that changes whenever the settings do."""
        parts = [self.sampler, self.searcher, *(f"{k}{v}" for k, v in self.scheduler.items())]
        parts += [] if self.startup is None else [f"startup{self.startup}"]
        return "-".join(map(str, parts))


def default_scheduler() -> dict[str, Any]:
    """The study's default scheduler settings (study/spec.py), LCBench's epochs."""
    default = StudySpec().scheduler.model_dump()
    return {**default, "max_epochs": EPOCHS}


def asha(**settings: Any) -> dict[str, Any]:
    """ASHA's settings: the study's defaults, LCBench's epochs, `settings` changed."""
    return {**default_scheduler(), "name": "asha", **settings}


def default_method(searcher: str = "ours") -> Method:
    """The study's default search (study/spec.py), through `searcher`."""
    search = StudySpec().search
    return Method(search.sampler, default_scheduler(), searcher, sampling.startup_trials(search))


METHODS = {
    "random": Method("random"),
    "tpe": Method("tpe"),
    "random-asha": Method("random", asha(grace_period=1)),
    "ours-g3-b4": Method("tpe", asha(grace_period=3, brackets=4)),
    "optuna-hyperband": Method("tpe", asha(grace_period=1), "optuna"),
    "default": default_method(),
    "stock-default": default_method("stock"),
    "tpe-default": Method("tpe", default_scheduler()),
    "tpe-stock-default": Method("tpe", default_scheduler(), "stock"),
    "gp": Method("gp"),
    "ours-g9": Method("tpe", asha(grace_period=9)),
    "gp-s3": Method("gp", startup=3),
}
LABELS = {
    "random": "random, no early stopping",
    "tpe": "TPE alone, no early stopping",
    "random-asha": "random + ASHA (grace 1)",
    "ours-g3-b4": "TPE + ASHA (grace 3, 4 brackets), ours",
    "optuna-hyperband": "Optuna alone: TPE + HyperbandPruner (min 1, factor 3)",
    "default": "the study's default: GP from the 4th trial + ASHA (grace 3, factor 3), ours "
    "(GP shown early-stopped trials)",
    "stock-default": "the default's settings, stock OptunaSearch (Optuna's GPSampler)",
    "tpe-default": "TPE + ASHA (grace 3, factor 3), ours: the default before",
    "tpe-stock-default": "TPE + ASHA (grace 3, factor 3), stock OptunaSearch",
    "gp": "GP (Optuna's GPSampler) alone, no early stopping",
    "ours-g9": "TPE + ASHA (grace 9, factor 3), ours",
    "gp-s3": "GP alone, learning from the 4th trial on, no early stopping",
}


def study_spec(
    method: Method, instance: str, seed: int, trials: int, epochs: int, at_once: int = CONCURRENT
) -> StudySpec:
    """The study one method runs on one instance with one seed, `at_once` trials at a time."""
    scheduler = {**method.scheduler, "max_epochs": epochs}
    if scheduler["name"] == "asha":
        scheduler["grace_period"] = min(scheduler["grace_period"], epochs)
    scheduler = {k: v for k, v in scheduler.items() if k in SchedulerSpec.model_fields}
    return StudySpec.model_validate(
        {
            "name": f"lcbench-{instance}-{seed}-{method.key}",
            "space": {"params": SPACE},
            "search": {
                "sampler": method.sampler,
                "startup_trials": method.startup,
                "num_samples": trials,
                "max_concurrent": at_once,
                "seed": seed,
            },
            "scheduler": scheduler,
        }
    )


def tuned(spec: StudySpec, method: Method, curves: Any, root: Path) -> list[float]:
    """val_acc of every epoch a study spent, in the order the driver got them, through the
    searcher, scheduler and Tuner wiring of `study run` (no MLflow: it changes nothing here)."""
    from ray import tune  # here, as in main(): without --data the refusal takes a second

    from benchmarks.search import Epochs, searcher
    from study.engines.tuner import run_config, tune_config, with_data

    epochs_seen = Epochs(spec.metric)
    tuner = tune.Tuner(
        with_data(spec, curves, train=replay),
        tune_config=tune_config(spec, spec.layout(root), searcher(spec, root, method.searcher)),
        run_config=run_config(spec, spec.name, str(root / "ray"), [epochs_seen]),
    )
    tuner.fit()
    return epochs_seen.values


def optuna_hyperband(spec: StudySpec, curves: Any) -> list[float]:
    """The outside anchor: Optuna alone (no Ray), TPE with its HyperbandPruner, one trial at a
    time; val_acc of every epoch it spent."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    constants, context = spec.trial_constants(), spec.context()
    seen: list[float] = []

    def objective(trial: optuna.Trial) -> float:
        values = curves.curve({**constants, **spec.space.suggest(trial, context)})
        for epoch, value in enumerate(values[: spec.scheduler.max_epochs], start=1):
            seen.append(value / 100)
            trial.report(value / 100, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return seen[-1]

    pruner = optuna.pruners.HyperbandPruner(
        min_resource=spec.scheduler.grace_period,
        max_resource=spec.scheduler.max_epochs,
        reduction_factor=int(spec.scheduler.reduction_factor),
    )
    sampler = optuna.samplers.TPESampler(seed=spec.search.seed)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    study.optimize(objective, n_trials=spec.search.num_samples)
    return seen


def run_method(
    method: Method,
    instance: str,
    seed: int,
    curves: Any,
    trials: int,
    epochs: int,
    at_once: int = CONCURRENT,
) -> list[float]:
    """One study of `method`, `at_once` trials at a time; val_acc of every epoch it spent, in
    order."""
    spec = study_spec(method, instance, seed, trials, epochs, at_once)
    if method.searcher == "optuna":
        return optuna_hyperband(spec, curves)
    with tempfile.TemporaryDirectory() as folder:
        return tuned(spec, method, curves, Path(folder))


def reference(curves: Any, count: int = 10_000, epochs: int = EPOCHS) -> float:
    """The best val_accuracy (percent) of `count` random configs of the space at the last
    epoch (Optuna's random sampler, seed 0)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = StudySpec.model_validate({"space": {"params": SPACE}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    configs = [spec.space.suggest(study.ask(), spec.context()) for _ in range(count)]
    rows = [[epochs, *(config[name] for name in INPUTS)] for config in configs]
    if isinstance(curves, Surrogate):
        return float(curves.predict(np.array(rows)).max())
    return max(curves.curve(config)[epochs - 1] for config in configs)


def regret(values: list[float], best: float, budget: int) -> float:
    """Accuracy points below `best` of the best value seen within `budget` epochs."""
    return best - 100 * max(values[:budget])


def epochs_to(values: list[float], target: float) -> int:
    """Epochs spent until a value reaches `target` (percent); all spent when none did."""
    return next((i + 1 for i, v in enumerate(values) if 100 * v >= target), len(values))


def table(
    runs: dict[str, dict[tuple[str, int], list[float]]],
    best: dict[str, float],
    budgets: list[int],
) -> tuple[list[list[Any]], dict[str, dict[int, list[float]]]]:
    """One row per method: regret at each budget (mean over instances and seeds, and the
    spread across seeds), epochs to within a point of the best any method found, epochs
    spent. Also each method's regret per (instance, seed) at each budget, in one order."""
    keys = sorted(set.intersection(*(set(r) for r in runs.values())))
    found = {key: max(max(r[key]) for r in runs.values()) * 100 for key in keys}
    rows, regrets = [], {}
    for name, run in runs.items():
        regrets[name] = {b: [regret(run[k], best[k[0]], b) for k in keys] for b in budgets}
        spread = []
        for budget in budgets:
            by_seed = {}
            for key, value in zip(keys, regrets[name][budget], strict=True):
                by_seed.setdefault(key[1], []).append(value)
            means = [statistics.mean(v) for v in by_seed.values()]
            spread.append(statistics.stdev(means) if len(means) > 1 else 0.0)
        reached = [epochs_to(run[k], found[k] - WITHIN) for k in keys]
        row = [LABELS.get(name, name)]
        for budget, sd in zip(budgets, spread, strict=True):
            row.append(f"{statistics.mean(regrets[name][budget]):.2f} ± {sd:.2f}")
        row += [
            f"{statistics.mean(reached):.0f}",
            f"{statistics.mean(len(run[k]) for k in keys):.0f}",
        ]
        rows.append(row)
    return rows, regrets


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of a - b over paired runs and its standard error."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
    return statistics.mean(diffs), se


def verdict(regrets: dict[str, dict[int, list[float]]], budgets: list[int]) -> str:
    """The issue's target for the default, when the table has it, TPE and stock."""
    if not {"default", "tpe", "stock-default"} <= set(regrets):
        return "Target: not judged (run default, tpe and stock-default)."
    third, whole = budgets[1], budgets[-1]
    ours, tpe = statistics.mean(regrets["default"][third]), statistics.mean(regrets["tpe"][whole])
    first = ours <= tpe
    worse = []
    for budget in budgets:
        mean, se = paired(regrets["default"][budget], regrets["stock-default"][budget])
        if mean > 2 * se:
            worse.append(f"{budget} epochs (+{mean:.2f} ± {se:.2f})")
    second = f"NOT met at {', '.join(worse)}" if worse else "met"
    lines = [
        "Paired differences: mean over instances and seeds ± its standard error.",
        f"Target 1 (the default at {third} epochs no worse than TPE alone at {whole}): "
        f"{'met' if first else 'NOT met'} ({ours:.2f} vs {tpe:.2f} points).",
        "Target 2 (never worse than stock OptunaSearch + the same ASHA beyond seed noise, "
        f"paired difference > 2 standard errors): {second}.",
    ]
    for budget in budgets:
        mean, se = paired(regrets["default"][budget], regrets["stock-default"][budget])
        lines.append(f"default - stock at {budget} epochs: {mean:+.2f} ± {se:.2f} points")
    for name in regrets:
        if name not in ("default", "stock-default"):
            diffs = [paired(regrets[name][b], regrets["default"][b]) for b in budgets]
            words = ", ".join(f"{m:+.2f} ± {se:.2f}" for m, se in diffs)
            lines.append(f"{name} - default at {', '.join(map(str, budgets))} epochs: {words}")
    return "\n".join(lines)


def options(parser) -> None:
    """LCBench's own options: the surrogate's files, seeds, instances, methods, output folder."""
    parser.add_argument("--data", help="the folder of YAHPO's LCBench surrogate files")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--instances", default="development", help="development, held-out or ids")
    parser.add_argument("--methods", default=",".join(METHODS), help="names from METHODS")
    parser.add_argument("--out", default="runs/lcbench", help="where each study's epochs go")


def plan(args) -> tuple[list[str], list[str], int, int, int, int]:
    """The methods, instances, seeds, trials, epochs and trials at once (exits on bad options)."""
    names = args.methods.split(",")
    if unknown := [name for name in names if name not in METHODS]:
        sys.exit(f"error: --methods: unknown {', '.join(unknown)}; use {', '.join(METHODS)}")
    if args.quick:
        instances, seeds, trials, epochs = ["synthetic"], 1, 4, 4
        names = ["tpe", "default", "stock-default"]
        at_once = 1  # one trial actor a study to start: the wiring is what --quick checks
    else:
        if not args.data or not (Path(args.data) / "model.onnx").is_file():
            print(f"error: {WHERE}", file=sys.stderr)
            sys.exit(2)
        chosen = {"development": DEVELOPMENT, "held-out": HELD_OUT}
        instances = chosen.get(args.instances) or args.instances.split(",")
        seeds, trials, epochs, at_once = args.seeds, TRIALS, EPOCHS, CONCURRENT
    return names, instances, seeds, trials, epochs, at_once


Sizes = tuple[int, int, int]  # a study's trials, epochs per trial and trials at once


def kept_run(
    file: Path, quick: bool, method: Method, instance: str, seed: int, curves: Any, sizes: Sizes
) -> list[float]:
    """One study's values: read from `file` if a full run kept them there, else run (and kept)."""
    if file.exists() and not quick:
        return json.loads(file.read_text())
    values = run_method(method, instance, seed, curves, *sizes)
    if not quick:
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(values))
    return values


def run_all(args, out: Path, names: list[str], instances: list[str], seeds: int, sizes: Sizes):
    """Each instance's best random config, then each method's study per instance and seed."""
    epochs = sizes[1]
    benchmarks, best, runs = {}, {}, {name: {} for name in names}
    for instance in instances:
        benchmarks[instance] = Synthetic(epochs) if args.quick else Surrogate(args.data, instance)
        best[instance] = reference(benchmarks[instance], 200 if args.quick else 10_000, epochs)
    for seed in range(seeds):  # seed by seed: a partial run covers every instance
        for instance in instances:
            for name in names:
                file = out / METHODS[name].key / f"{instance}-{seed}.json"
                runs[name][(instance, seed)] = kept_run(
                    file, args.quick, METHODS[name], instance, seed, benchmarks[instance], sizes
                )
    return best, runs


def main() -> None:
    """Run every method on every instance and seed and record their regrets."""
    args = arguments("Search on YAHPO's LCBench surrogate, as a study runs.", options)
    names, instances, seeds, trials, epochs, at_once = plan(args)
    from study.engines.cluster import connect

    out = Path(args.out)
    connect(StudySpec())
    with timer() as elapsed:
        best, runs = run_all(args, out, names, instances, seeds, (trials, epochs, at_once))
    whole = trials * epochs
    budgets = [whole // 9, whole // 3, whole]
    rows, regrets = table(runs, best, budgets)
    headers = [
        "method",
        *(f"regret at {b} epochs" for b in budgets),
        f"epochs to within {WITHIN:g} pt",
        "epochs spent",
    ]
    notes = (
        f"LCBench (YAHPO surrogate), instances {', '.join(instances)}, seeds 0-{seeds - 1}, "
        f"{trials} trials of up to {epochs} epochs, {at_once} at a time (Optuna + Hyperband: "
        f"one at a time). Regret: accuracy points below the best of 10,000 random configs at "
        f"epoch {epochs} (per instance: "
        + ", ".join(f"{i} {b:.2f}" for i, b in best.items())
        + f"), mean over instances and seeds ± the std across seeds of the per-seed mean; "
        f"epochs to within {WITHIN:g} point of the best any method here found on the same "
        f"instance and seed. {elapsed[0]:.0f} s.\n\n" + verdict(regrets, budgets)
    )
    record("Search on LCBench", args, headers, rows, notes, variant=args.instances)


if __name__ == "__main__":
    main()
