"""`study ablate NAME`: what each regularizer of the best trial (or `--trial`) is worth. The
config itself and a variant per regularizer on in it, switched off (BatchNorm also switched on
where it is off), each trained with seeds s, s+1, ..., s+N-1 on the study's fixed split for
the trial's epochs (study.engines.repeats); per regularizer, the mean change in the study's metric
paired by seed with its 95% t-interval, and a verdict (study.evidence.intervals)."""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.tracking import MlflowClient
from rich import box
from rich.console import Console
from rich.table import Table

from study.commands import repeated as seeded
from study.commands import report
from study.commands.preflight import Checked, prepare_resume
from study.core import TrialConfig, label
from study.core.errors import UserError
from study.evidence.intervals import paired_interval, t_interval, verdict
from study.evidence.variants import BASE, Variant, variants
from study.spec import StudySpec

ROLE = "ablation"  # its MLflow role (study.core.layout.REPEAT_ROLES)
TRIAL_KEY = "ablation.trial"  # the ablation run's tag: the trial it ablates


@dataclass(frozen=True)
class Plan:
    """An ablation checked and ready to run: nothing has run or been recorded yet."""

    spec: StudySpec
    root: Path
    checked: Checked
    client: MlflowClient
    experiment_id: str
    parent_id: str
    row: dict[str, Any]  # the trial's row of the results table
    trial: TrialConfig  # its config, as retrained
    variants: list[Variant]
    skipped: list[str]  # regularizers already off in it
    seeds: list[int]


def pick(table: list[dict], best: list[dict], name: str | None, study: str, metric: str) -> dict:
    """The row of trial `name` (t007, 7), the best trial's when None; a UserError for a
    trial the study does not have, or one without a value of the metric."""
    if name is None:
        return best[0]
    match = re.fullmatch(r"t?0*(\d+)", name.strip())
    wanted = label(int(match[1])) if match else name
    rows = {row["trial"]: row for row in table}
    if wanted not in rows:
        known = f"{table[0]['trial']}-{table[-1]['trial']}" if table else "none"
        raise UserError(f"--trial: study {study!r} has no trial {name!r}; its trials: {known}")
    if all(row["trial"] != wanted for row in best):
        raise UserError(
            f"--trial: {wanted} ended {rows[wanted]['outcome']} without a {metric}; pick a trial "
            f"with one (the best is {best[0]['trial']})"
        )
    return rows[wanted]


def plan(spec: StudySpec, root: Path, trial: str | None = None, seeds: int = 5) -> Plan:
    """Check the ablation's input and load the study's data; UserError (exit 2) before
    anything runs."""
    seeded.check_seeds(seeds)
    layout = spec.layout(root)
    client, experiment_id, parent_id, table, best = seeded.ranked_trials(spec, layout)
    row = pick(table, best, trial, spec.name, spec.metric)
    config = seeded.retrained(row)
    made, skipped = variants(config)
    checked = prepare_resume(spec, root)
    first = config.run.seed
    return Plan(checked.spec, root, checked, client, experiment_id, parent_id, row, config,
                made, skipped, list(range(first, first + seeds)))  # fmt: skip


def runs_of(plan: Plan) -> list[seeded.Repeat]:
    """Every (variant, seed) run of the ablation."""
    trial = plan.row["trial"]
    return [
        seeded.Repeat(v.name, seed, v.apply(plan.trial).seeded(seed).flat(),
                       f"{trial} {v.name} seed {seed}")
        for v in plan.variants
        for seed in plan.seeds
    ]  # fmt: skip


def summarize(
    values: dict[tuple[str, int], float], made: list[Variant], seeds: list[int], mode: str
) -> list[dict[str, Any]]:
    """A row per variant: its mean over the seeds with a 95% interval, and for each
    regularizer the change from the config itself (variant - config) paired by seed, its
    95% interval and the verdict."""
    by_seed = {v.name: {s: values[(v.name, s)] for s in seeds} for v in made}
    base = by_seed[BASE]
    table = []
    for variant in made:
        mean = t_interval(list(by_seed[variant.name].values()))
        row = {
            "variant": "the config itself" if variant.name == BASE else variant.name,
            "regularizer": variant.regularizer,
            "setting": variant.setting,
            "seeds": mean.n,
            "mean": mean.mean,
            "mean_low": mean.low,
            "mean_high": mean.high,
            "std": mean.std,
        }
        if variant.name != BASE:
            change = paired_interval(by_seed[variant.name], base)
            row |= {"pairs": change.n, "change": change.mean, "change_low": change.low,
                    "change_high": change.high,
                    "verdict": verdict(change, mode, removed=variant.removed)}  # fmt: skip
        table.append(row)
    return table


def run(plan: Plan, console: Console) -> pd.DataFrame:
    """Train what the ablation misses (through Ray, recorded in MLflow under one ablation run
    nested under the study's parent run), print its table and write ablation.csv and
    ablation.png in the study's folder, also on the parent run and the ablation run."""
    spec, layout, client = plan.spec, plan.spec.layout(plan.root), plan.client
    row, seeds = plan.row, plan.seeds
    console.print(
        f"ablation of {row['run_name']} ({spec.metric} {row['metrics'][spec.metric]:.4f}, "
        f"{row['outcome']}): {len(plan.variants)} variants x {len(seeds)} seeds "
        f"({seeds[0]}-{seeds[-1]}, the split fixed), {plan.trial.run.last_epoch} epochs each",
        highlight=False,
    )
    if plan.skipped:
        console.print(
            f"already off in {row['trial']}, so not run: {', '.join(plan.skipped)}",
            highlight=False,
        )
    where, runs = (plan.experiment_id, plan.parent_id), runs_of(plan)
    name, key = f"ablation {row['run_name']}", {TRIAL_KEY: row["trial"]}
    from study.engines.repeats import recorded  # Ray: once the input is checked

    role_id, values = recorded(
        spec, layout, plan.checked.data, client, where, ROLE, name, key, runs, console
    )
    frame = pd.DataFrame(summarize(values, plan.variants, seeds, spec.mode))
    frame.insert(0, "trial", row["trial"])
    frame.insert(1, "metric", spec.metric)
    print_table(frame, row, spec.metric, spec.mode, seeds, console)
    console.print(
        f"seed {seeds[0]} of the config itself retrains the trial: {spec.metric} "
        f"{values[(BASE, seeds[0])]:.4f} (the trial reported {row['metrics'][spec.metric]:.4f})",
        highlight=False,
    )
    frame.to_csv(layout.ablation_csv, index=False)
    title = f"ablation of {row['run_name']}"
    report.plot_ablation(frame, spec.metric, spec.mode, title, layout.ablation_png)
    for run_id in (plan.parent_id, role_id):
        client.log_artifact(run_id, str(layout.ablation_csv))
        client.log_artifact(run_id, str(layout.ablation_png))
    for _, line in frame.iterrows():
        client.log_metric(role_id, f"{slug(line['variant'])}.mean", line["mean"])
        if line["regularizer"]:
            client.log_metric(role_id, f"{slug(line['variant'])}.change", line["change"])
    console.print(f"written: {layout.ablation_csv}, {layout.ablation_png} (also on the parent run)")
    return frame


def slug(words: str) -> str:
    """`weight_decay off` -> `weight_decay_off`: a metric name."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", words).strip("_")


def signed(value: float) -> str:
    return f"{value:+.4f}"


def print_table(
    frame: pd.DataFrame, row: dict, metric: str, mode: str, seeds: list[int], console: Console
) -> None:
    """The ablation's table on the console (the means' intervals are in ablation.csv)."""
    trial, better = row["trial"], "higher" if mode == "max" else "lower"
    table = Table(
        title=f"{trial}: {metric} over {len(seeds)} seeds ({better} is better); the change "
        "from the config itself paired by seed, with its 95% t-interval",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column in ("variant", f"in {trial}", "mean", "change [95% CI]"):
        table.add_column(column, no_wrap=True)
    table.add_column("verdict")
    for _, line in frame.iterrows():
        cells = [line["variant"], line["setting"], f"{line['mean']:.4f}"]
        if line["regularizer"]:
            low, high = signed(line["change_low"]), signed(line["change_high"])
            cells += [f"{signed(line['change'])} [{low}, {high}]", line["verdict"]]
        else:
            cells += [f"(95% CI {line['mean_low']:.4f}-{line['mean_high']:.4f})", ""]
        table.add_row(*cells)
    console.print(table)
