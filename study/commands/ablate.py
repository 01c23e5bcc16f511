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
from rich import box
from rich.console import Console
from rich.table import Table

from study.commands import report
from study.commands.evidence_input import check_seeds, pick, ranked_trials
from study.commands.preflight import Checked, prepare_resume
from study.core import TrialConfig
from study.core.layout import ABLATION
from study.core.record import TrialRecord
from study.core.repeat import Repeat, Role
from study.engines.records import StudyRecords
from study.evidence.intervals import paired_interval, t_interval, verdict
from study.evidence.variants import BASE, BASE_LABEL, Variant, variants
from study.spec import StudySpec

ROLE = ABLATION  # its MLflow role
TRIAL_KEY = "ablation.trial"  # the ablation run's tag: the trial it ablates


@dataclass(frozen=True)
class Plan:
    """An ablation checked and ready to run: nothing has run or been recorded yet."""

    spec: StudySpec
    root: Path
    checked: Checked
    records: StudyRecords
    chosen: TrialRecord  # the trial ablated
    trial: TrialConfig  # its config, as retrained
    variants: list[Variant]
    skipped: list[str]  # regularizers already off in it
    seeds: list[int]


def plan(spec: StudySpec, root: Path, trial: str | None = None, seeds: int = 5) -> Plan:
    """Check the ablation's input and load the study's data; UserError (exit 2) before
    anything runs."""
    check_seeds(seeds)
    layout = spec.layout(root)
    records, best = ranked_trials(spec, layout)
    chosen = pick(records.trials(), best, trial, spec.name, spec.metric)
    config = chosen.retrained()
    made, skipped = variants(config)
    checked = prepare_resume(spec, root)
    first = config.run.seed
    return Plan(checked.spec, root, checked, records, chosen, config, made, skipped,
                list(range(first, first + seeds)))  # fmt: skip


def runs_of(plan: Plan) -> list[Repeat]:
    """Every (variant, seed) run of the ablation."""
    trial = plan.chosen.label
    return [
        Repeat(v.name, seed, v.apply(plan.trial).seeded(seed).flat(),
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
            "variant": BASE_LABEL if variant.name == BASE else variant.name,
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
    spec, layout, records = plan.spec, plan.spec.layout(plan.root), plan.records
    chosen, seeds, metric = plan.chosen, plan.seeds, plan.spec.metric
    console.print(
        f"ablation of {chosen.name} ({metric} {chosen.metrics[metric]:.4f}, "
        f"{chosen.outcome}): {len(plan.variants)} variants x {len(seeds)} seeds "
        f"({seeds[0]}-{seeds[-1]}, the split fixed), {plan.trial.run.last_epoch} epochs each",
        highlight=False,
    )
    if plan.skipped:
        console.print(
            f"already off in {chosen.label}, so not run: {', '.join(plan.skipped)}",
            highlight=False,
        )
    role = Role(ROLE, f"ablation {chosen.name}", {TRIAL_KEY: chosen.label})
    from study.engines.repeats import recorded  # Ray: once the input is checked

    role_id, values = recorded(
        spec, layout, plan.checked.data, records, role, runs_of(plan), console
    )
    frame = pd.DataFrame(summarize(values, plan.variants, seeds, spec.mode))
    frame.insert(0, "trial", chosen.label)
    frame.insert(1, "metric", metric)
    print_table(frame, chosen, metric, spec.mode, seeds, console)
    console.print(
        f"seed {seeds[0]} of the config itself retrains the trial: {metric} "
        f"{values[(BASE, seeds[0])]:.4f} (the trial reported {chosen.metrics[metric]:.4f})",
        highlight=False,
    )
    frame.to_csv(layout.ablation_csv, index=False)
    report.plot_ablation(frame, metric, spec.mode, role.name, layout.ablation_png)
    for run_id in (records.parent_id, role_id):
        records.attach(run_id, str(layout.ablation_csv))
        records.attach(run_id, str(layout.ablation_png))
    values_logged = {f"{slug(line['variant'])}.mean": line["mean"] for _, line in frame.iterrows()}
    for _, line in frame[frame["regularizer"].astype(bool)].iterrows():
        values_logged[f"{slug(line['variant'])}.change"] = line["change"]
    records.log_values(role_id, values_logged)
    console.print(f"written: {layout.ablation_csv}, {layout.ablation_png} (also on the parent run)")
    return frame


def slug(words: str) -> str:
    """`weight_decay off` -> `weight_decay_off`: a metric name."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", words).strip("_")


def signed(value: float) -> str:
    return f"{value:+.4f}"


def print_table(
    frame: pd.DataFrame,
    chosen: TrialRecord,
    metric: str,
    mode: str,
    seeds: list[int],
    console: Console,
) -> None:
    """The ablation's table on the console (the means' intervals are in ablation.csv)."""
    trial, better = chosen.label, "higher" if mode == "max" else "lower"
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
