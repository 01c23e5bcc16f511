"""Start from what you know, stop when you know enough: warm starts, an enqueued recipe and the
stopping rule (search.warm_start, search.enqueue, search.terminate), against a cold start.

On LCBench's development instances (YAHPO's surrogate, as benchmarks/lcbench.py replays it) and
on digits (real training, the default study's space), 5 seeds each, every study the default
search (GP + ASHA) through Ray Tune as `study run` wires it, 40 trials, 2 at a time:
  cold        no earlier knowledge
  warm same   search.warm_start from the cold study of the same instance with the next seed
              (a user who runs again with a larger budget)
  transfer    search.warm_start from the cold study of the next instance, same seed (LCBench:
              another data set, the same space; digits has no other instance)
  recipe      search.enqueue: the best config of the cold study with the next seed, run first
Measured: epochs until a trial is within 1 point of the best any of them found on that instance
and seed (the warm-started studies do not count their earlier studies' epochs); for the recipe,
epochs until the cold study's final best is reached. The stopping rule is judged on each cold
study's own record (its Optuna trials, with their start and end times): at each trial's start,
on the trials ended by then, as the searcher judges it; a stop there saves every epoch of that
trial and the later ones, and loses what they found (regret lost, points). Digits also gets 5
cold studies of 120 trials, where the rule has more to judge.

The metric's noise without folds (the rule's error estimate) is measured on digits too: for the
best config of each cold study, the spread of its final val_acc across 5 seeds, the epoch-to-
epoch jitter of those runs (what the rule uses) and the folds' error of one 5-fold run.

    python -m benchmarks.start_stop --data ../shared/data/yahpo-lcbench
    python -m benchmarks.start_stop --data DIR --seeds 3 --out runs/start_stop

Each study's epochs (out/values/NAME.json) and Optuna trials (out/optuna.db) are kept and
reused when run again.
"""

import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import optuna

from benchmarks.common import arguments, record, timer
from benchmarks.lcbench import DEVELOPMENT, EPOCHS, SPACE, WHERE, Surrogate, Synthetic, replay
from benchmarks.search import Epochs
from study.core import Found
from study.engines import terminate, warm_start
from study.engines.sampler import shown
from study.engines.search import build_searcher, fold_scores
from study.spec import StudySpec

TRIALS, AT_ONCE, WITHIN = 40, 2, 1.0
LONG = 120  # digits' longer cold studies, where the stopping rule has more trials to judge
KINDS = ("cold", "same", "transfer", "recipe")
LABELS = {
    "cold": "cold start",
    "same": "warm start, same instance (other seed)",
    "transfer": "warm start, another instance",
    "recipe": "enqueued recipe (best of another seed)",
}


def spec_of(instance: str, kind: str, seed: int, sizes: tuple, storage: str) -> StudySpec:
    """The study of `kind` on `instance` with `seed` (its sources named, not yet resolved)."""
    trials, epochs, seeds, instances = sizes
    lcbench = instance != "digits"
    search: dict[str, Any] = {"num_samples": trials, "max_concurrent": AT_ONCE, "seed": seed,
                              "storage": storage}  # fmt: skip
    if kind == "same":
        search["warm_start"] = [name_of(instance, "cold", (seed + 1) % seeds)]
    elif kind == "transfer":
        other = instances[(instances.index(instance) + 1) % len(instances)]
        search["warm_start"] = [name_of(other, "cold", seed)]
    raw: dict[str, Any] = {"name": name_of(instance, kind, seed), "search": search}
    if lcbench:  # digits: the default study's space and scheduler
        raw["space"] = {"params": SPACE}
        raw["scheduler"] = {"max_epochs": epochs, "grace_period": min(3, epochs)}
    return StudySpec.model_validate(raw)


def name_of(instance: str, kind: str, seed: int) -> str:
    return f"{instance}-{kind}-{seed}"


def trials_of(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    opened = optuna.storages.RDBStorage(storage)
    try:
        return optuna.load_study(study_name=name, storage=opened).trials
    finally:
        opened.engine.dispose()


def best_config(storage: str, name: str, maximize: bool = True) -> dict[str, Any]:
    """The params of the study's best trial (early-stopped ones at their last value)."""
    seen = [t for t in map(shown, trials_of(storage, name)) if t and t.value is not None]
    best = (max if maximize else min)(seen, key=lambda t: t.value)
    return {**best.params, "label": f"best of {name}"}


def run_study(spec: StudySpec, data: Any, train: Any, root: Path) -> list[float]:
    """One study as `study run` wires it (no MLflow); its metric at every epoch, in order."""
    from ray import tune

    from study.engines.tuner import run_config, tune_config, with_data

    layout = spec.layout(root)
    prior = warm_start.prior(layout, spec.search.warm_start, spec.space).trials
    searcher = build_searcher(spec, layout, Found(), prior=prior)
    seen = Epochs(spec.metric)
    tuner = tune.Tuner(
        with_data(spec, data, train=train),
        tune_config=tune_config(spec, layout, searcher),
        run_config=run_config(spec, spec.name, str(root / "ray"), [seen]),
    )
    tuner.fit()
    return seen.values


def kept(out: Path, spec: StudySpec, data: Any, train: Any, quick: bool) -> list[float]:
    """The study's epochs: read when a full run kept them, else run (its Optuna study made
    anew) and kept."""
    file = out / "values" / f"{spec.name}.json"
    if file.exists() and not quick:
        return json.loads(file.read_text())
    opened = optuna.storages.RDBStorage(spec.search.storage)
    try:
        optuna.delete_study(study_name=spec.name, storage=opened)
    except KeyError:
        pass
    finally:
        opened.engine.dispose()
    values = run_study(spec, data, train, out / "root")
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(values))
    return values


def with_recipe(spec: StudySpec, storage: str, seeds: int, seed: int, instance: str) -> StudySpec:
    """The recipe study: the best config of the cold study with the next seed enqueued."""
    source = name_of(instance, "cold", (seed + 1) % seeds)
    search = spec.search.model_copy(update={"enqueue": [best_config(storage, source)]})
    return spec.model_copy(update={"search": search})


def studies(args, out: Path, instances: list[str], sizes: tuple) -> dict:
    """Every study's epochs by (instance, kind, seed): cold ones first (the sources)."""
    from study.commands.preflight import preflight
    from study.engines.cluster import connect
    from trainables import fit

    trials, epochs, seeds, _ = sizes
    storage = f"sqlite:///{(out / 'optuna.db').resolve()}"
    out.mkdir(parents=True, exist_ok=True)
    connect(StudySpec())
    sources: dict[str, Any] = {}
    for instance in instances:
        if instance == "digits":
            sources[instance] = (preflight(StudySpec(), out / "root").data, fit)
        elif args.quick:
            sources[instance] = (Synthetic(epochs), replay)
        else:
            sources[instance] = (Surrogate(args.data, instance), replay)
    runs = {}
    for kind in KINDS:
        for instance in instances:
            if kind == "transfer" and (instance == "digits" or len(instances) < 2):
                continue
            data, train = sources[instance]
            for seed in range(seeds):
                spec = spec_of(instance, kind, seed, sizes, storage)
                if kind == "recipe":
                    spec = with_recipe(spec, storage, seeds, seed, instance)
                runs[(instance, kind, seed)] = kept(out, spec, data, train, args.quick)
    if "digits" in instances:  # longer cold studies, for the stopping rule only
        for seed in range(seeds):
            spec = spec_of("digits", "long", seed, (LONG, *sizes[1:]), storage)
            kept(out, spec, *sources["digits"], args.quick)
    return runs


def epochs_to(values: list[float], target: float) -> int:
    """Epochs spent until a value reaches `target` (points); all spent when none did."""
    return next((i + 1 for i, v in enumerate(values) if 100 * v >= target), len(values))


def start_rows(runs: dict, instances: list[str], seeds: int) -> tuple[list, dict]:
    """One row per kind: mean epochs to within a point, to the cold final best, and spent,
    by instance; and the per-(instance, seed) epochs to within a point of each kind."""
    reached: dict[str, dict[tuple, int]] = {kind: {} for kind in KINDS}
    rows = []
    for instance in instances:
        for seed in range(seeds):
            kinds = [k for k in KINDS if (instance, k, seed) in runs]
            found = max(100 * max(runs[(instance, k, seed)]) for k in kinds)
            for kind in kinds:
                values = runs[(instance, kind, seed)]
                reached[kind][(instance, seed)] = epochs_to(values, found - WITHIN)
    for kind in KINDS:
        keys = sorted(reached[kind])
        if not keys:
            continue
        cold_best = [100 * max(runs[(i, "cold", s)]) for i, s in keys]
        to_cold = [
            epochs_to(runs[(i, kind, s)], b) for (i, s), b in zip(keys, cold_best, strict=True)
        ]
        spent = [len(runs[(i, kind, s)]) for i, s in keys]
        ratio = statistics.mean(reached["cold"][k] for k in keys) / statistics.mean(
            reached[kind][k] for k in keys
        )
        rows.append([LABELS[kind], f"{statistics.mean(reached[kind][k] for k in keys):.0f}",
                     f"{ratio:.2f}x", f"{statistics.mean(to_cold):.0f}",
                     f"{statistics.mean(spent):.0f}"])  # fmt: skip
    return rows, reached


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else 0.0
    return statistics.mean(diffs), se


def start_verdict(reached: dict, instances: list[str], seeds: int) -> str:
    """Warm start's targets: 2x fewer epochs on the same instance; transfer never worse than
    cold beyond seed noise on any instance (paired over seeds: more than 2 standard errors)."""
    keys = sorted(reached["same"])
    cold = statistics.mean(reached["cold"][k] for k in keys)
    same = statistics.mean(reached["same"][k] for k in keys)
    met = "met" if cold >= 2 * same else "NOT met"
    lines = [f"Target 1 (warm start, same instance, >= 2x fewer epochs to within {WITHIN:g} "
             f"point): {met} ({cold:.0f} vs {same:.0f})."]  # fmt: skip
    worse = []
    for instance in instances:
        pairs = [(instance, s) for s in range(seeds) if (instance, s) in reached["transfer"]]
        if not pairs:
            continue
        mean, se = paired([reached["transfer"][k] for k in pairs],
                          [reached["cold"][k] for k in pairs])  # fmt: skip
        lines.append(f"transfer - cold on {instance}: {mean:+.0f} ± {se:.0f} epochs")
        if mean > 2 * se and mean > 0:
            worse.append(instance)
    if len(lines) > 1:
        lines.insert(1, "Target 2 (transfer never worse than cold beyond seed noise): "
                     + (f"NOT met on {', '.join(worse)}." if worse else "met."))  # fmt: skip
    return "\n".join(lines)


def stop_point(trials: list, min_trials: int) -> int | None:
    """The number of the first trial the rule would not have started (None: it never
    stopped), judged at each trial's start on the trials ended by then."""
    judged = -1
    for trial in trials:
        ended = [
            t for t in trials if t.datetime_complete and t.datetime_complete <= trial.datetime_start
        ]
        if len(ended) == judged:
            continue
        judged = len(ended)
        verdict = terminate.judge(ended, optuna.study.StudyDirection.MAXIMIZE, min_trials)
        if verdict is not None and verdict.stop:
            return trial.number
    return None


def stop_rows(storage: str, names: dict[str, list[str]], rules: list[int]) -> tuple[list, list]:
    """For each data set and rule (its min trials): epochs saved (%), regret lost (points),
    how often it stopped; and the judged (name, rule, saved, lost) of every study."""
    rows, each = [], []
    for where, studies_ in names.items():
        for rule in rules:
            saved, lost, stops = [], [], 0
            for name in studies_:
                trials = sorted(trials_of(storage, name), key=lambda t: t.number)
                epochs = [len(t.intermediate_values) for t in trials]
                best = [max(t.intermediate_values.values(), default=0.0) for t in trials]
                at = stop_point(trials, rule)
                cut = len(trials) if at is None else at
                stops += at is not None
                saved.append(100 * sum(epochs[cut:]) / sum(epochs))
                lost.append(100 * (max(best) - max(best[:cut], default=0.0)))
                each.append((name, rule, saved[-1], lost[-1]))
            mean_saved, mean_lost = statistics.mean(saved), statistics.mean(lost)
            rows.append([where, rule, f"{stops}/{len(studies_)}", f"{mean_saved:.0f}%",
                         f"{mean_lost:.2f}"])  # fmt: skip
    return rows, each


def trained(fit: Any, config: dict[str, Any], data: Any) -> list[dict[str, float]]:
    """Every epoch's metrics of one training run, in this process."""
    epochs: list[dict[str, float]] = []
    fit(config, data, lambda metrics, *_, **__: epochs.append(metrics))
    return epochs


def noise_rows(storage: str, names: list[str], seeds: int, quick: bool) -> list[list[str]]:
    """For the best config of each named digits study: its final val_acc's spread across
    seeds, the median jitter of those runs (the rule's estimate) and one 5-fold run's error."""
    from study.commands.preflight import preflight
    from study.core import TrialConfig
    from trainables import fit

    spec = StudySpec.model_validate({"scheduler": {"max_epochs": 4 if quick else 27}})
    folded = spec.model_copy(update={"dataset": spec.dataset.model_copy(update={"cv_folds": 5})})
    root, found = Path(tempfile.mkdtemp()), None
    data, folds_data = preflight(spec, root).data, preflight(folded, root).data
    rows = []
    for name in names:
        params = {k: v for k, v in best_config(storage, name).items() if k != "label"}
        config = TrialConfig.parse({**spec.trial_constants(found), **params})
        finals, jitters = [], []
        for seed in range(seeds):
            curve = [m["val_acc"] for m in trained(fit, config.seeded(seed).flat(), data)]
            finals.append(curve[-1])
            jitters.append(terminate.jitter(curve))
        folded_config = TrialConfig.parse({**folded.trial_constants(found), **params})
        folds = fold_scores(trained(fit, folded_config.flat(), folds_data)[-1], "val_acc")
        rows.append([name, f"{100 * statistics.stdev(finals):.2f}",
                     f"{100 * statistics.median(j for j in jitters if j is not None):.2f}",
                     f"{100 * terminate.folds_error(folds):.2f}"])  # fmt: skip
    return rows


def options(parser) -> None:
    parser.add_argument("--data", help="the folder of YAHPO's LCBench surrogate files")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default="runs/start_stop", help="kept epochs and trials")
    parser.add_argument("--instances", default=",".join([*DEVELOPMENT, "digits"]))


def main() -> None:
    args = arguments("Warm starts, an enqueued recipe and the stopping rule.", options)
    if args.quick:
        instances, sizes, rules = ["synthetic"], (3, 3, 1, ["synthetic"]), [2]
    else:
        if not args.data or not (Path(args.data) / "model.onnx").is_file():
            print(f"error: {WHERE}", file=sys.stderr)
            sys.exit(2)
        instances = args.instances.split(",")
        sizes, rules = (TRIALS, EPOCHS, args.seeds, instances), [terminate.MIN_TRIALS, 10]
    out = Path(tempfile.mkdtemp() if args.quick else args.out).resolve()
    with timer() as elapsed:
        runs = studies(args, out, instances, sizes)
    seeds, storage = sizes[2], f"sqlite:///{out / 'optuna.db'}"
    record_start(args, runs, instances, sizes, elapsed[0])
    names = {}
    for group, label, kind in (
        ([i for i in instances if i != "digits"], "lcbench", "cold"),
        (["digits"], "digits", "cold"),
        (["digits"], f"digits, {LONG} trials", "long"),
    ):
        found = [name_of(i, kind, s) for i in group if i in instances for s in range(seeds)]
        if found:
            names[label] = found
    record_stop(args, storage, names, rules)
    if "digits" in instances:
        rows = noise_rows(storage, names["digits"], seeds, args.quick)
        headers = ["best config of", "spread across seeds", "jitter (the rule's)", "folds' error"]
        notes = "Points of val_acc. Target: the jitter within 2x of the spread across seeds."
        record("The metric's noise on digits", args, headers, rows, notes, variant="noise")


def record_start(args, runs: dict, instances: list[str], sizes: tuple, seconds: float) -> None:
    """The warm starts' and the recipe's table, LCBench's and digits'."""
    seeds = sizes[2]
    for group in (["digits"], [i for i in instances if i != "digits"]):
        group = [i for i in group if i in instances]
        if not group:
            continue
        rows, reached = start_rows({k: v for k, v in runs.items() if k[0] in group}, group, seeds)
        headers = ["study", f"epochs to within {WITHIN:g} pt", "cold / this",
                   "epochs to the cold final best", "epochs spent"]  # fmt: skip
        where = "digits" if group == ["digits"] else "lcbench"
        notes = (f"{where}: instances {', '.join(group)}, seeds 0-{seeds - 1}, {sizes[0]} trials "
                 f"of up to {sizes[1] if where == 'lcbench' else 27} epochs, {AT_ONCE} at a time, "
                 f"the default search (GP + ASHA); {seconds:.0f} s for every study.\n\n"
                 + start_verdict(reached, group, seeds))  # fmt: skip
        record("Warm start and enqueued recipe", args, headers, rows, notes, variant=where)


def record_stop(args, storage: str, names: dict[str, list[str]], rules: list[int]) -> None:
    """The stopping rule's table: epochs saved and regret lost on the cold studies."""
    rows, _ = stop_rows(storage, names, rules)
    default = [r for r in rows if r[1] == rules[0]]
    met = all(float(r[3].rstrip("%")) >= 30 and float(r[4]) <= 0.5 for r in default)
    notes = ("The rule judged at each trial's start on each cold study's record. Target: >= 30% "
             "of epochs saved with <= 0.5 points of regret lost, on average: "
             f"{'met' if met else 'NOT met'} at min {rules[0]} trials.")  # fmt: skip
    headers = ["data", "min trials", "stopped", "epochs saved", "regret lost (points)"]
    record("Stopping rule", args, headers, rows, notes, variant="stop")


if __name__ == "__main__":
    main()
