"""What a finished study says about regularization: per-epoch curves, a fit diagnosis per
trial, hyperparameter importance, and a leaderboard at equal budgets. Plain pandas and Optuna;
the plots and the page are in `study.report`."""

import math
from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd
from mlflow.tracking import MlflowClient

from study.core import SCORED
from study.records import TrialRecord

CURVES = ("train_loss", "train_acc", "val_loss", "val_acc", "gap")
GAP = 0.05  # overfitting: final train-val accuracy gap above this ...
RISE = 0.10  # ... and val_loss this fraction above its minimum
UNDERFIT = 0.10  # underfitting: final train_acc this far below the study's best train_acc


@dataclass
class Thresholds:
    """The fit-diagnosis thresholds (see GAP, RISE, UNDERFIT)."""

    gap: float = GAP
    rise: float = RISE
    underfit: float = UNDERFIT


def curves(client: MlflowClient, records: list[TrialRecord], metric: str) -> pd.DataFrame:
    """One row per trial and epoch: trial number, epoch and every logged curve metric."""
    keys = list(dict.fromkeys((*CURVES, metric)))
    rows: dict[tuple[int, int], dict[str, Any]] = {}
    for record in records:
        for key in keys:
            for point in client.get_metric_history(record.run_id, key):
                row = rows.setdefault((record.number, point.step), {})
                row[key] = point.value
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
                "outcome": r.outcome,
                "epochs": r.epochs,
                **{p: r.config.get(p) for p in params},
                metric: r.last.get(metric, math.nan),
            }
            for r in records
        ]
    ).set_index("trial", drop=False)


def diagnose(table: pd.DataFrame, history: pd.DataFrame, limits: Thresholds) -> pd.DataFrame:
    """The fit of each trial at its last epoch: overfitting (gap above `limits.gap` and val_loss
    risen `limits.rise` above its minimum), underfitting (train_acc `limits.underfit` below the
    best final train_acc of the study), good fit; failed and diverged trials keep their outcome.
    """
    last = history.groupby("trial").last()
    lowest = history.groupby("trial")["val_loss"].min()
    scored = table["outcome"].isin(SCORED) & table["trial"].isin(last.index)
    best_train = last.loc[table.loc[scored, "trial"], "train_acc"].max()
    rows = []
    for trial, outcome in zip(table["trial"], table["outcome"], strict=True):
        if not scored[trial]:
            rows.append({"trial": trial, "diagnosis": outcome if outcome != "running" else "-"})
            continue
        end = last.loc[trial]
        rising = end["val_loss"] > lowest[trial] * (1 + limits.rise)
        if end["train_acc"] < best_train - limits.underfit:
            diagnosis = "underfitting"
        elif end["gap"] > limits.gap and rising:
            diagnosis = "overfitting"
        else:
            diagnosis = "good fit"
        rows.append(
            {
                "trial": trial,
                "diagnosis": diagnosis,
                "train_acc": end["train_acc"],
                "val_acc": end["val_acc"],
                "gap": end["gap"],
                "val_loss": end["val_loss"],
                "min_val_loss": lowest[trial],
            }
        )
    return pd.DataFrame(rows).set_index("trial", drop=False)


def importance(storage: Any, name: str, params: list[str]) -> tuple[dict[str, float], str]:
    """fANOVA importance of each sampled param for the study's objective (read from the Optuna
    `storage`, None when there is none), and what it was computed over. Pruned (early-stopped)
    trials count at their last reported value, as Optuna's TPE counts them; conditional params
    that some trials lack are left out."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage is None:
        return {}, "no Optuna storage"
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return {}, "no Optuna study"
    scored = optuna.create_study(directions=study.directions)
    for trial in study.get_trials(deepcopy=False):
        value = trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None
        if trial.state == optuna.trial.TrialState.PRUNED and trial.intermediate_values:
            value = trial.intermediate_values[max(trial.intermediate_values)]
        if value is not None and math.isfinite(value):
            scored.add_trial(
                optuna.trial.create_trial(
                    params=trial.params, distributions=trial.distributions, value=value
                )
            )
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
    return frame.sort_values(order, na_position="last").reset_index(drop=True)


def categorical_medians(table: pd.DataFrame, param: str, metric: str) -> dict[Any, tuple]:
    """Median metric and count per value of a categorical param, over scored trials."""
    scored = table[table["outcome"].isin(SCORED)].dropna(subset=[metric])
    groups = scored.groupby(scored[param].astype(str))[metric]
    return {value: (group.median(), len(group)) for value, group in groups}


def summary(
    name: str,
    table: pd.DataFrame,
    diagnosis: pd.DataFrame,
    ranked: list[dict[str, Any]],
    importances: dict[str, float],
    importance_note: str,
    categorical: list[str],
    metric: str,
) -> list[str]:
    """A few sentences: the best config, which knobs mattered, and how the best trial fits."""
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
        f"Best: {best['run_name']}, {metric} {best['metrics'][metric]:.4f} after "
        f"{best['epochs']} epochs ({best['outcome']})."
    )
    if importances:
        knobs = ", ".join(f"{p} {v:.2f}" for p, v in importances.items())
        lines.append(f"What mattered ({importance_note}): {knobs}.")
    else:
        lines.append(f"Importance not computed: {importance_note}.")
    for param in categorical:
        medians = categorical_medians(table, param, metric)
        if len(medians) > 1:
            parts = ", ".join(f"{v}: {m:.4f} (n={n})" for v, (m, n) in medians.items())
            lines.append(f"Median {metric} by {param}: {parts}.")
    number = best["number"]
    fit = diagnosis.loc[number]
    if "gap" in fit and not pd.isna(fit.get("gap")):
        lines.append(
            f"The best trial: {fit['diagnosis']} (train_acc {fit['train_acc']:.4f}, gap "
            f"{fit['gap']:+.4f}, val_loss {fit['val_loss']:.4f}, lowest {fit['min_val_loss']:.4f})."
        )
    kinds = diagnosis["diagnosis"].value_counts()
    fits = ", ".join(f"{n} {d}" for d, n in kinds.items())
    lines.append(f"Fit of all trials at their last epoch: {fits}.")
    return lines
