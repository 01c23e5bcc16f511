"""`study confirm NAME --top K --seeds N`: the study's top K trials retrained over N seeds each
(seeds s, s+1, ..., the split fixed, as `study ablate` trains: study.engines.repeats), ranked
by their mean with 95% t-intervals, and which of them are indistinguishable from the first at this
number of seeds (the 95% interval of their difference from it, paired by seed, holds 0)."""

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
from study.core.errors import UserError
from study.core.layout import CONFIRM
from study.core.record import TrialRecord
from study.core.repeat import Repeat, Role
from study.engines.records import StudyRecords
from study.evidence.intervals import Interval, paired_interval, ranked_means, t_interval, versus
from study.spec import StudySpec

ROLE = CONFIRM  # its MLflow role


@dataclass(frozen=True)
class Plan:
    """A confirmation checked and ready to run: nothing has run or been recorded yet."""

    spec: StudySpec
    root: Path
    checked: Checked
    records: StudyRecords
    trials: list[TrialRecord]  # the top trials, best first
    configs: dict[str, TrialConfig]  # each trial's config as retrained, by trial label
    seeds: list[int]
    baseline: str | None = None  # `--with`: the trial every other is compared with


def plan(
    spec: StudySpec, root: Path, top: int = 3, seeds: int = 5, against: str | None = None
) -> Plan:
    """Check the confirmation's input and load the study's data; UserError (exit 2) before
    anything runs. `against` (`--with`): a trial (the study's baseline) each of the top is
    compared with, paired by seed, trained too when it is not among them."""
    check_seeds(seeds)
    if top < 1:
        raise UserError(f"--top: {top}; use 1 or more")
    layout = spec.layout(root)
    records, best = ranked_trials(spec, layout)
    if top > len(best):
        raise UserError(
            f"--top: {top}, but study {spec.name!r} has {len(best)} finished trials with a "
            f"{spec.metric}; use --top {len(best)} or fewer"
        )
    trials = best[:top]
    base = against and pick(records.trials(), best, against, spec.name, spec.metric, "--with")
    if base and base not in trials:
        trials.append(base)
    configs = {trial.label: trial.retrained() for trial in trials}
    checked = prepare_resume(spec, root)
    first = configs[trials[0].label].run.seed  # the study's seed: every trial's
    return Plan(checked.spec, root, checked, records, trials, configs,
                list(range(first, first + seeds)), base and base.label)  # fmt: skip


def runs_of(plan: Plan) -> list[Repeat]:
    """Every (trial, seed) run of the confirmation."""
    return [
        Repeat(t.label, seed, plan.configs[t.label].seeded(seed).flat(), f"{t.name} seed {seed}")
        for t in plan.trials
        for seed in plan.seeds
    ]


def summarize(
    values: dict[tuple[str, int], float],
    trials: list[TrialRecord],
    seeds: list[int],
    metric: str,
    mode: str,
    baseline: str | None = None,
) -> list[dict[str, Any]]:
    """A row per trial, best mean first: its mean over the seeds with a 95% interval, and its
    difference from the first's (paired by seed) with a 95% interval, and whether that holds
    0 (indistinguishable from the first at this number of seeds; the first itself: true);
    with a `baseline` trial, each other's difference from it too, and what that says."""
    by_seed = {t.label: {s: values[(t.label, s)] for s in seeds} for t in trials}
    means: dict[str, Interval] = {t: t_interval(list(v.values())) for t, v in by_seed.items()}
    order = ranked_means(means, mode)
    first = order[0]
    of = {t.label: t for t in trials}
    table = []
    for rank, trial in enumerate(order, start=1):
        record, mean = of[trial], means[trial]
        difference = paired_interval(by_seed[trial], by_seed[first])
        table.append({
            "rank": rank, "trial": trial, "run_name": record.name,
            "outcome": record.outcome.value, "epochs": record.epochs,
            "study_value": record.metrics[metric], "seeds": mean.n,
            "mean": mean.mean, "mean_low": mean.low, "mean_high": mean.high, "std": mean.std,
            "difference": difference.mean, "difference_low": difference.low,
            "difference_high": difference.high,
            "indistinguishable": trial == first or difference.holds(0.0),
        })  # fmt: skip
        if baseline:
            table[-1] |= against_baseline(by_seed, trial, baseline, mode)
    return table


def against_baseline(
    by_seed: dict[str, dict[int, float]], trial: str, baseline: str, mode: str
) -> dict[str, Any]:
    """A trial's difference from the baseline trial, paired by seed: its 95% interval and
    what it says (better, worse, no difference detectable); empty for the baseline itself."""
    if trial == baseline:
        return {"vs_baseline": None, "vs_baseline_low": None, "vs_baseline_high": None,
                "against_baseline": "the baseline"}  # fmt: skip
    change = paired_interval(by_seed[trial], by_seed[baseline])
    return {"vs_baseline": change.mean, "vs_baseline_low": change.low,
            "vs_baseline_high": change.high,
            "against_baseline": versus(change, mode, baseline)}  # fmt: skip


def run(plan: Plan, console: Console) -> pd.DataFrame:
    """Train what the confirmation misses (through Ray, recorded in MLflow under one confirm
    run nested under the study's parent run), print its ranking and write confirm.csv and
    confirm.png in the study's folder, also on the parent run and the confirm run."""
    spec, layout, records, seeds = plan.spec, plan.spec.layout(plan.root), plan.records, plan.seeds
    console.print(
        f"confirming the top {len(plan.trials)} of {spec.name} ({', '.join(plan.configs)}) over "
        f"{len(seeds)} seeds ({seeds[0]}-{seeds[-1]}, the split fixed), each for its epochs",
        highlight=False,
    )
    from study.engines.repeats import recorded  # Ray: once the input is checked

    role = Role(ROLE, "confirm top trials")
    role_id, values = recorded(
        spec, layout, plan.checked.data, records, role, runs_of(plan), console
    )
    table = summarize(values, plan.trials, seeds, spec.metric, spec.mode, plan.baseline)
    frame = pd.DataFrame(table)
    frame.insert(1, "metric", spec.metric)
    print_ranking(frame, spec.metric, spec.mode, len(seeds), console)
    frame.to_csv(layout.confirm_csv, index=False)
    report.plot_confirm(frame, spec.metric, spec.mode, layout.confirm_png)
    for run_id in (records.parent_id, role_id):
        records.attach(run_id, str(layout.confirm_csv))
        records.attach(run_id, str(layout.confirm_png))
    records.log_values(
        role_id, {f"{line['trial']}.mean": line["mean"] for _, line in frame.iterrows()}
    )
    console.print(f"written: {layout.confirm_csv}, {layout.confirm_png} (also on the parent run)")
    return frame


def indistinguishable_line(frame: pd.DataFrame, seeds: int) -> str:
    """Which trials are indistinguishable from the first at this number of seeds."""
    first = frame["trial"].iloc[0]
    same = list(frame.loc[frame["indistinguishable"] & (frame["rank"] > 1), "trial"])
    if len(frame) == 1:
        return f"{first} alone: nothing to compare it with"
    if not same:
        return f"each of the others is apart from {first} at {seeds} seeds: {first} is best"
    return (
        f"indistinguishable from {first} at {seeds} seeds (the 95% CI of their difference, "
        f"paired by seed, holds 0): {', '.join(same)}"
    )


def print_ranking(
    frame: pd.DataFrame, metric: str, mode: str, seeds: int, console: Console
) -> None:
    """The ranking on the console (`one run`: the study's own, with the first seed; the std
    is in confirm.csv) and the line on which are indistinguishable."""
    better = "higher" if mode == "max" else "lower"
    table = Table(
        title=f"{metric} over {seeds} seeds ({better} is better), 95% t-intervals; the "
        "difference from the first paired by seed",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    compared = "against_baseline" in frame.columns  # `--with`: each against the baseline
    columns = ["rank", "trial", "one run", "mean [95% CI]", "difference [95% CI]"]
    for column in columns + (["vs the baseline [95% CI]", "against it"] if compared else []):
        table.add_column(column, no_wrap=True)
    for _, r in frame.iterrows():
        mean = f"{r['mean']:.4f} [{r['mean_low']:.4f}, {r['mean_high']:.4f}]"
        difference = "" if r["rank"] == 1 else signed(r, "difference")
        cells = [str(r["rank"]), r["trial"], f"{r['study_value']:.4f}", mean, difference]
        if compared:
            versus = "" if pd.isna(r["vs_baseline"]) else signed(r, "vs_baseline")
            cells += [versus, r["against_baseline"]]
        table.add_row(*cells)
    console.print(table)
    console.print(indistinguishable_line(frame, seeds), highlight=False)


def signed(row: Any, key: str) -> str:
    """A paired difference and its 95% interval: `+0.0123 [+0.0040, +0.0206]`."""
    return f"{row[key]:+.4f} [{row[key + '_low']:+.4f}, {row[key + '_high']:+.4f}]"
