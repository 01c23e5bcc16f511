"""`study ablate` through Ray against the same runs made one after another by `study train
--seeds`: the wall time of each, as a user runs them, and whether they give the same values.

The default study (24 trials of up to 27 epochs) is run once under a temporary root; then,
`--repeats` times, interleaved:
  ray         `study ablate NAME --seeds N` (the config and each regularizer switched off,
              N seeds each, as many at once as the cores hold: 2 trials of 1 CPU on 2 cores),
              Python's start, Ray's start and the MLflow records included; its runs are
              deleted after each repeat so the next trains them all again
  sequential  for each variant, `study train VARIANT.yaml --seeds N --no-log`, one process
              after another (the same configs, seeds and split)
and the training alone: the sum of the runs' epoch times, from the ablation's MLflow runs.

    python -m benchmarks.ablation
"""

import io
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient
from rich.console import Console

from benchmarks.common import ROOT, arguments, record, timer
from study.commands import ablate
from study.commands.preflight import preflight, saved_spec
from study.commands.run import run_study
from study.spec import StudySpec, load_spec

QUICK = {
    "search": {"num_samples": 2, "max_concurrent": 1},
    "scheduler": {"max_epochs": 3, "grace_period": 1},
}


def the_study(quick: bool) -> StudySpec:
    """The default study (tiny with --quick)."""
    raw = load_spec(None).model_dump(exclude={"code_dir"})
    if quick:  # and two knobs of its space: fewer variants
        for key, values in QUICK.items():
            raw[key] = {**raw[key], **values}
        raw["space"] = {"params": {k: raw["space"]["params"][k] for k in ("lr", "dropout")}}
    return StudySpec.model_validate(raw)


def cli(*args: str) -> tuple[float, str]:
    """Run `study ARGS` as a user would; its wall seconds and standard output."""
    with timer() as elapsed:
        done = subprocess.run(
            [sys.executable, "-m", "study", *args], capture_output=True, text=True, cwd=ROOT
        )
    if done.returncode != 0:
        raise RuntimeError(f"study {' '.join(args)}: {done.stderr[-2000:]}")
    return elapsed[0], done.stdout


def forget_ablation(plan: ablate.Plan) -> dict[tuple[str, int], tuple[float, float]]:
    """Delete the ablation's runs (the next repeat trains them all again); return each run's
    value of the metric and its training seconds (the sum of its epoch times)."""
    client: MlflowClient = plan.records.client
    metric, experiment_id = plan.spec.metric, plan.records.experiment_id
    (role,) = client.search_runs(
        [experiment_id], filter_string=f"tags.`ablation.trial` = '{plan.chosen.label}'"
    )
    children = client.search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{role.info.run_id}'"
    )
    found = {}
    for run in children:
        key = (run.data.tags["repeat.group"], int(run.data.tags["repeat.seed"]))
        times = client.get_metric_history(run.info.run_id, "epoch_time")
        found[key] = (run.data.metrics[metric], sum(m.value for m in times))
        client.delete_run(run.info.run_id)
    client.delete_run(role.info.run_id)
    return found


def sequential(plan: ablate.Plan, seeds: int, folder: Path) -> tuple[float, dict]:
    """Each variant's config through `study train --seeds`, one process after another: the
    total wall seconds and each (variant, seed)'s value."""
    total, values = 0.0, {}
    metric = plan.spec.metric
    for variant in plan.variants:
        path = folder / f"{ablate.slug(variant.name)}.yaml"
        config = variant.apply(plan.trial).flat()
        path.write_text(yaml.safe_dump({"metric": metric, "config": config}, sort_keys=False))
        seconds, out = cli("train", str(path), "--seeds", str(seeds), "--no-log")
        total += seconds
        for seed, value in re.findall(rf"^seed (\d+)\s+{metric} ([0-9.]+)", out, re.M):
            values[(variant.name, int(seed))] = float(value)
    return total, values


def main() -> None:
    def options(parser):
        parser.add_argument("--seeds", type=int, default=5)
        parser.add_argument("--repeats", type=int, default=2)

    args = arguments("study ablate through Ray vs the same runs one after another.", options)
    seeds, repeats = (2, 1) if args.quick else (args.seeds, args.repeats)
    spec = the_study(args.quick)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "runs"
        checked = preflight(spec, root)
        run_study(checked.spec, root, checked, Console(file=io.StringIO()))
        plan = ablate.plan(saved_spec(root, spec.name), root, seeds=seeds)
        runs = len(plan.variants) * seeds
        walls = {"ray": [], "sequential": []}
        training, same = [], True
        for _ in range(repeats):
            seconds, _ = cli("ablate", spec.name, "--seeds", str(seeds), "--root", str(root))
            walls["ray"].append(seconds)
            found = forget_ablation(plan)
            training.append(sum(t for _, t in found.values()))
            seconds, values = sequential(plan, seeds, Path(folder))
            walls["sequential"].append(seconds)
            same &= {k: round(v, 4) for k, (v, _) in found.items()} == values
    base = statistics.mean(walls["sequential"])
    rows = [
        ["`study ablate` through Ray (2 at once)", runs, *[f"{w:.1f}" for w in walls["ray"]],
         f"{statistics.mean(walls['ray']) / base:.2f}x"],
        ["`study train --seeds`, one variant after another", runs,
         *[f"{w:.1f}" for w in walls["sequential"]], "1.00x"],
        ["the training alone (sum of epoch times)", runs, *[f"{t:.1f}" for t in training],
         f"{statistics.mean(training) / base:.2f}x"],
    ]  # fmt: skip
    faster = statistics.mean(walls["ray"]) < base
    notes = (
        f"The {'tiny' if args.quick else 'default'} study's best trial "
        f"({plan.chosen.name}, {plan.trial.run.last_epoch} epochs): {len(plan.variants)} "
        f"variants x {seeds} seeds; wall seconds per repeat, interleaved, each command as a user "
        "runs it (Python's start and imports included: a `study train` process per variant, "
        "one `study ablate` with Ray's start and its MLflow records). The same values per "
        f"variant and seed by both paths: {'yes' if same else 'NO'}. The cores are shared with "
        f"other engineers' work. Target (through Ray faster than one after another): "
        f"{'met' if faster else 'NOT met'}."
    )
    headers = [
        "runs made by",
        "runs",
        *[f"wall s #{i + 1}" for i in range(repeats)],
        "vs sequential",
    ]
    record("study ablate through Ray vs one after another", args, headers, rows, notes)


if __name__ == "__main__":
    main()
