"""What a finished study says about regularization: per-epoch curves, a fit diagnosis per
trial, hyperparameter importance, and a leaderboard at equal budgets. Plain pandas and Optuna;
the plots and the page are in `study.commands.report`."""

import math
from dataclasses import dataclass, replace
from typing import Any

import optuna
import pandas as pd

from study.core import SCORED, Outcome
from study.core.record import TrialRecord
from trainables.hyperparameters import CLASSIFICATION_METRICS, REGRESSION_METRICS


@dataclass(frozen=True)
class Fit:
    """How a task's fit is judged: the training and validation metric compared per trial; how
    well a trial fits its training split (`quality`) and the study's best value of `reference`
    it is held against (underfitting)."""

    train: str
    val: str
    quality: str
    reference: str
    curves: tuple[str, ...]  # what the report reads per epoch


FITS = {
    # underfitting: a train_acc well below the study's best train_acc
    "classification": Fit("train_acc", "val_acc", "train_acc", "train_acc", CLASSIFICATION_METRICS),
    # underfitting: fitting its own training rows worse than the best trial predicts unseen
    # ones (the best train R^2 belongs to whichever trial memorised most)
    "regression": Fit("train_rmse", "val_rmse", "train_r2", "val_r2", REGRESSION_METRICS),
}


@dataclass
class Thresholds:
    """The fit-diagnosis thresholds. Overfitting: the final gap above `gap` (classification:
    train_acc - val_acc; regression: the relative error gap (val_rmse - train_rmse) / val_rmse)
    and val_loss `rise` above its minimum. Underfitting: the final train_acc `underfit` below
    the study's best train_acc (regression: the final train R^2 below the study's best val
    R^2)."""

    gap: float = 0.05
    rise: float = 0.10
    underfit: float = 0.10

    @classmethod
    def of(cls, task: str, **given: float | None) -> "Thresholds":
        """The task's defaults, where `given` leaves a threshold None."""
        defaults = cls(gap=0.10, underfit=0.05) if task == "regression" else cls()
        return replace(defaults, **{k: v for k, v in given.items() if v is not None})


def curve_keys(metric: str, task: str = "classification") -> list[str]:
    """The per-epoch metrics the curves and the fit diagnosis read."""
    return list(dict.fromkeys((*FITS[task].curves, metric)))


def curves(points: Any, keys: list[str]) -> pd.DataFrame:
    """One row per trial and epoch: trial number, epoch and every logged curve metric, from
    `points` (trial number, metric, epoch, value; StudyRecords.histories). A trial whose
    patience restored its best epoch's weights has their metrics one step after its last
    epoch."""
    rows: dict[tuple[int, int], dict[str, Any]] = {}
    for number, key, step, value in points:
        rows.setdefault((number, step), {})[key] = value
    frame = pd.DataFrame(
        [{"trial": n, "epoch": e, **values} for (n, e), values in rows.items()],
        columns=["trial", "epoch", *keys],
    )
    return frame.sort_values(["trial", "epoch"]).reset_index(drop=True)


def trials(records: list[TrialRecord], params: list[str], metric: str) -> pd.DataFrame:
    """One row per trial: number, name, outcome, epochs, sampled params, final metric."""
    return pd.DataFrame(
        [
            {
                "trial": r.number,
                "name": r.name,
                "outcome": r.outcome.value,
                "epochs": r.epochs,
                **{p: r.config.hyperparameters.get(p) for p in params},
                metric: r.metrics.get(metric, math.nan),
            }
            for r in records
        ]
    ).set_index("trial", drop=False)


def diagnose(
    table: pd.DataFrame, history: pd.DataFrame, limits: Thresholds, task: str = "classification"
) -> pd.DataFrame:
    """The fit of each trial with the weights it ended with: overfitting (the gap above
    `limits.gap` and val_loss risen `limits.rise` above its minimum), underfitting (the fit of
    the training split `limits.underfit` below the study's best), good fit; failed and diverged
    trials keep their outcome. See Thresholds for what each task compares."""
    fit = FITS[task]
    last = history.groupby("trial").last()
    lowest = history.groupby("trial")["val_loss"].min()
    scored = table["outcome"].isin(SCORED) & table["trial"].isin(last.index)
    best_quality = last.loc[table.loc[scored, "trial"], fit.reference].max()
    rows = []
    for trial, outcome in zip(table["trial"], table["outcome"], strict=True):
        if not scored[trial]:
            rows.append({"trial": trial, "diagnosis": outcome if outcome != "running" else "-"})
            continue
        end = last.loc[trial]
        rising = end["val_loss"] > lowest[trial] * (1 + limits.rise)
        gap = end["gap"] / end["val_rmse"] if task == "regression" else end["gap"]
        if end[fit.quality] < best_quality - limits.underfit:
            diagnosis = "underfitting"
        elif gap > limits.gap and rising:
            diagnosis = "overfitting"
        else:
            diagnosis = "good fit"
        row = {"trial": trial, "diagnosis": diagnosis, fit.train: end[fit.train]}
        row.update({fit.val: end[fit.val], fit.quality: end[fit.quality], "gap": end["gap"]})
        if task == "regression":
            row["relative_gap"] = gap
        rows.append({**row, "val_loss": end["val_loss"], "min_val_loss": lowest[trial]})
    return pd.DataFrame(rows).set_index("trial", drop=False)


def importance(found: Any, params: list[str]) -> tuple[dict[str, float], str]:
    """fANOVA importance of each sampled param for the study's objective, and what it was
    computed over. `found`: the study's trials with a value and its direction
    (study.engines.storage.scored_trials: pruned, early-stopped trials at their last reported
    value, as Optuna's TPE counts them), None where Optuna has no such study; conditional
    params that some trials lack are left out. Optuna here is a statistics library: no
    storage is read."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if found is None:
        return {}, "no Optuna study"
    trials, direction = found
    scored = optuna.create_study(direction=direction)
    scored.add_trials(trials)
    counted = len(scored.trials)
    shared = [p for p in params if all(p in t.params for t in scored.trials)]
    if counted < 3 or not shared:
        return {}, f"too few trials ({counted}) for fANOVA"
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        result = optuna.importance.get_param_importances(scored, evaluator=evaluator, params=shared)
    except (RuntimeError, ValueError) as error:
        return {}, f"fANOVA could not run: {error}"
    return dict(result), f"fANOVA over {counted} trials, early-stopped ones at their last value"


def milestones(rungs: list[int], max_epochs: int) -> list[int]:
    """The epochs at which trials are compared: ASHA's rungs and the full budget."""
    return sorted({*rungs, max_epochs})


def leaderboard(
    history: pd.DataFrame, table: pd.DataFrame, metric: str, mode: str, at: list[int], top: int = 3
) -> pd.DataFrame:
    """The metric of the top trials at each milestone epoch, with their rank among every
    trial that reached it: trials compared at equal budget, not at their own last epoch.
    Rows: the `top` best trials at each milestone (ties: lower trial number), best at the
    furthest milestone first.
    """
    columns = {}
    for epoch in at:
        values = history.loc[history["epoch"] == epoch].set_index("trial")[metric].dropna()
        ranks = values.rank(ascending=mode == "min", method="min")
        columns[epoch] = (values, ranks)
    leaders = [v.sort_values(ascending=mode == "min").head(top) for v, _ in columns.values()]
    chosen = {trial for values in leaders for trial in values.index}
    rows = []
    for trial in chosen:
        row: dict[str, Any] = {"trial": trial, "name": table.loc[trial, "name"]}
        for epoch, (values, ranks) in columns.items():
            row[f"{metric}@{epoch}"] = values.get(trial, math.nan)
            row[f"rank@{epoch}"] = ranks.get(trial, math.nan)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    order = [f"rank@{epoch}" for epoch in reversed(at)]
    frame = frame.sort_values(order, na_position="last").reset_index(drop=True)
    return frame.astype({column: "Int64" for column in order})  # ranks: whole numbers, or -


def patience_line(table: pd.DataFrame, ranked: list[TrialRecord]) -> str | None:
    """What early stopping by patience did, where some trial had it on: how many trials it
    stopped, where, and the epochs they did not train."""
    known = {record.number: record for record in ranked}
    patient = [
        known[n]
        for n in table["trial"]
        if n in known and known[n].config.hyperparameters.get("patience")
    ]
    if not patient:
        return None
    stopped = [r for r in patient if r.outcome == Outcome.PATIENCE_STOPPED]
    if not stopped:
        return f"Patience was on in {len(patient)} trials and stopped none of them."
    at = sorted(r.epochs for r in stopped)
    best = sorted(int(r.metrics.get("best_epoch", r.epochs)) for r in stopped)
    saved = sum(r.config.run.epochs - r.epochs for r in stopped)
    return (
        f"Patience stopped {len(stopped)} of the {len(patient)} trials that had it on, at "
        f"epochs {at[0]}-{at[-1]} (median {at[len(at) // 2]}; their best epochs "
        f"{best[0]}-{best[-1]}), {saved} epochs short of their budget."
    )


def baseline(trials: list[TrialRecord]) -> TrialRecord | None:
    """The study's baseline: its first enqueued trial (search.enqueue), None without one."""
    return next((t for t in trials if (t.config.run.enqueued or "").startswith("1: ")), None)


def baseline_line(
    trials: list[TrialRecord], ranked: list[TrialRecord], metric: str, name: str
) -> str | None:
    """The best trial against the study's baseline, in one run each, and how to get
    intervals; None for a study without a baseline."""
    base = baseline(trials)
    if base is None:
        return None
    which = f"your baseline {base.label} ({base.config.run.enqueued.partition(': ')[2]})"
    if not base.scored(metric):
        return f"{which[0].upper()}{which[1:]} ended {base.outcome} without a {metric}."
    budget = f", cut at epoch {base.epochs}" if base.outcome == Outcome.EARLY_STOPPED else ""
    confirm = f"`study confirm {name} --with {base.label}` for intervals"
    if ranked[0].number == base.number:
        return f"Best is {which}: no trial beat it, in one run each; {confirm}."
    change = ranked[0].metrics[metric] - base.metrics[metric]
    return (
        f"Best vs {which}{budget}: {change:+.4f} {metric} ({ranked[0].label}), in one run "
        f"each; {confirm}."
    )


def categorical_medians(table: pd.DataFrame, param: str, metric: str) -> dict[Any, tuple]:
    """Median metric and count per value of a categorical param, over scored trials."""
    scored = table[table["outcome"].isin(SCORED)].dropna(subset=[metric])
    groups = scored.groupby(scored[param].astype(str))[metric]
    return {value: (group.median(), len(group)) for value, group in groups}


def summary(
    name: str,
    table: pd.DataFrame,
    diagnosis: pd.DataFrame,
    ranked: list[TrialRecord],
    importances: dict[str, float],
    importance_note: str,
    categorical: list[str],
    metric: str,
    task: str = "classification",
) -> list[str]:
    """A few sentences: the best config, which knobs mattered, what early stopping by
    patience did, and how the best trial fits."""
    counts = table["outcome"].value_counts()
    lines = [
        f"Study {name}: {len(table)} trials ("
        + ", ".join(f"{n} {o}" for o, n in counts.items())
        + f"), {int(table['epochs'].sum())} epochs spent."
    ]
    if not ranked:
        return [*lines, "No trial produced a value to compare."]
    best = ranked[0]
    lines.append(
        f"Best: {best.name}, {metric} {best.metrics[metric]:.4f} after "
        f"{best.epochs} epochs ({best.outcome})."
    )
    if importances:
        knobs = ", ".join(f"{p} {v:.2f}" for p, v in importances.items())
        lines.append(f"What mattered ({importance_note}): {knobs}.")
    else:
        lines.append(f"Importance not computed: {importance_note}.")
    cut = int((table["outcome"] == Outcome.EARLY_STOPPED).sum())
    unequal = f" (at unequal budgets: ASHA cut {cut} trials early; not evidence)" if cut else ""
    for param in categorical:
        medians = categorical_medians(table, param, metric)
        if len(medians) > 1:
            parts = ", ".join(f"{v}: {m:.4f} (n={n})" for v, (m, n) in medians.items())
            lines.append(f"Median {metric} by {param}{unequal}: {parts}.")
    if said := patience_line(table, ranked):
        lines.append(said)
    number = best.number
    fit, keys = diagnosis.loc[number], FITS[task]
    if "gap" in fit and not pd.isna(fit.get("gap")):
        quality = (
            f", train_r2 {fit['train_r2']:.4f}, relative gap {fit['relative_gap']:+.4f}"
            if task == "regression"
            else ""
        )
        lines.append(
            f"The best trial: {fit['diagnosis']} ({keys.train} {fit[keys.train]:.4f}{quality}, "
            f"gap {fit['gap']:+.4f}, val_loss {fit['val_loss']:.4f}, lowest "
            f"{fit['min_val_loss']:.4f})."
        )
    kinds = diagnosis["diagnosis"].value_counts()
    fits = ", ".join(f"{n} {d}" for d, n in kinds.items())
    lines.append(f"Fit of all trials at their last epoch: {fits}.")
    return lines
