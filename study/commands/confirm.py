"""`study confirm NAME --top K --seeds N`: the study's top K trials retrained over N seeds each
(seeds s, s+1, ..., the split fixed, as `study ablate` trains: study.engines.repeats), ranked by their
mean with 95% t-intervals, and which of them are indistinguishable from the first at this
number of seeds (the 95% interval of their difference from it, paired by seed, holds 0)."""

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
from study.core import TrialConfig
from study.core.errors import UserError
from study.evidence.intervals import Interval, paired_interval, ranked_means, t_interval
from study.spec import StudySpec

ROLE = "confirm"  # its MLflow role (study.core.layout.REPEAT_ROLES)


@dataclass(frozen=True)
class Plan:
    """A confirmation checked and ready to run: nothing has run or been recorded yet."""

    spec: StudySpec
    root: Path
    checked: Checked
    client: MlflowClient
    experiment_id: str
    parent_id: str
    rows: list[dict[str, Any]]  # the top trials' rows of the results table, best first
    configs: dict[str, TrialConfig]  # each trial's config as retrained, by trial label
    seeds: list[int]


def plan(spec: StudySpec, root: Path, top: int = 3, seeds: int = 5) -> Plan:
    """Check the confirmation's input and load the study's data; UserError (exit 2) before
    anything runs."""
    seeded.check_seeds(seeds)
    if top < 1:
        raise UserError(f"--top: {top}; use 1 or more")
    layout = spec.layout(root)
    client, experiment_id, parent_id, _, best = seeded.ranked_trials(spec, layout)
    if top > len(best):
        raise UserError(
            f"--top: {top}, but study {spec.name!r} has {len(best)} finished trials with a "
            f"{spec.metric}; use --top {len(best)} or fewer"
        )
    rows = best[:top]
    configs = {row["trial"]: seeded.retrained(row) for row in rows}
    checked = prepare_resume(spec, root)
    first = configs[rows[0]["trial"]].run.seed  # the study's seed: every trial's
    return Plan(checked.spec, root, checked, client, experiment_id, parent_id, rows, configs,
                list(range(first, first + seeds)))  # fmt: skip


def runs_of(plan: Plan) -> list[seeded.Repeat]:
    """Every (trial, seed) run of the confirmation."""
    return [
        seeded.Repeat(row["trial"], seed, plan.configs[row["trial"]].seeded(seed).flat(),
                       f"{row['run_name']} seed {seed}")
        for row in plan.rows
        for seed in plan.seeds
    ]  # fmt: skip


def summarize(
    values: dict[tuple[str, int], float], rows: list[dict], seeds: list[int], metric: str, mode: str
) -> list[dict[str, Any]]:
    """A row per trial, best mean first: its mean over the seeds with a 95% interval, and its
    difference from the first's (paired by seed) with a 95% interval, and whether that holds
    0 (indistinguishable from the first at this number of seeds; the first itself: true)."""
    by_seed = {r["trial"]: {s: values[(r["trial"], s)] for s in seeds} for r in rows}
    means: dict[str, Interval] = {t: t_interval(list(v.values())) for t, v in by_seed.items()}
    order = ranked_means(means, mode)
    first = order[0]
    of = {r["trial"]: r for r in rows}
    table = []
    for rank, trial in enumerate(order, start=1):
        row, mean = of[trial], means[trial]
        difference = paired_interval(by_seed[trial], by_seed[first])
        table.append({
            "rank": rank, "trial": trial, "run_name": row["run_name"], "outcome": row["outcome"],
            "epochs": row["epochs"], "study_value": row["metrics"][metric], "seeds": mean.n,
            "mean": mean.mean, "mean_low": mean.low, "mean_high": mean.high, "std": mean.std,
            "difference": difference.mean, "difference_low": difference.low,
            "difference_high": difference.high,
            "indistinguishable": trial == first or difference.holds(0.0),
        })  # fmt: skip
    return table


def run(plan: Plan, console: Console) -> pd.DataFrame:
    """Train what the confirmation misses (through Ray, recorded in MLflow under one confirm
    run nested under the study's parent run), print its ranking and write confirm.csv and
    confirm.png in the study's folder, also on the parent run and the confirm run."""
    spec, layout, client, seeds = plan.spec, plan.spec.layout(plan.root), plan.client, plan.seeds
    console.print(
        f"confirming the top {len(plan.rows)} of {spec.name} ({', '.join(plan.configs)}) over "
        f"{len(seeds)} seeds ({seeds[0]}-{seeds[-1]}, the split fixed), each for its epochs",
        highlight=False,
    )
    where, runs = (plan.experiment_id, plan.parent_id), runs_of(plan)
    from study.engines.repeats import recorded  # Ray: once the input is checked

    role_id, values = recorded(
        spec,
        layout,
        plan.checked.data,
        client,
        where,
        ROLE,
        "confirm top trials",
        {},
        runs,
        console,
    )
    frame = pd.DataFrame(summarize(values, plan.rows, seeds, spec.metric, spec.mode))
    frame.insert(1, "metric", spec.metric)
    print_ranking(frame, spec.metric, spec.mode, len(seeds), console)
    frame.to_csv(layout.confirm_csv, index=False)
    report.plot_confirm(frame, spec.metric, spec.mode, layout.confirm_png)
    for run_id in (plan.parent_id, role_id):
        client.log_artifact(run_id, str(layout.confirm_csv))
        client.log_artifact(run_id, str(layout.confirm_png))
    for _, line in frame.iterrows():
        client.log_metric(role_id, f"{line['trial']}.mean", line["mean"])
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
    for column in ("rank", "trial", "one run", "mean [95% CI]", "difference [95% CI]"):
        table.add_column(column, no_wrap=True)
    for _, r in frame.iterrows():
        mean = f"{r['mean']:.4f} [{r['mean_low']:.4f}, {r['mean_high']:.4f}]"
        low, high = r["difference_low"], r["difference_high"]
        difference = "" if r["rank"] == 1 else f"{r['difference']:+.4f} [{low:+.4f}, {high:+.4f}]"
        table.add_row(str(r["rank"]), r["trial"], f"{r['study_value']:.4f}", mean, difference)
    console.print(table)
    console.print(indistinguishable_line(frame, seeds), highlight=False)
