"""`study report`: PNG plots, one self-contained HTML page and a text summary of a finished
study, written under the root folder and logged on the study's parent MLflow run."""

import base64
import html
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from study.commands.preflight import saved_found
from study.core import FINISHED, SCORED
from study.core.errors import UserError
from study.core.record import ranked
from study.engines import storage
from study.engines.records import StudyRecords
from study.evidence import analysis
from study.evidence.variants import BASE_LABEL
from study.spec import StudySpec

COLORS = {
    "completed": "#1b9e77",
    "patience_stopped": "#66a61e",
    "early_stopped": "#7570b3",
    "failed": "#d95f02",
    "diverged": "#e7298a",
    "running": "#999999",
}
FIT_COLORS = {"good fit": "#1b9e77", "overfitting": "#d95f02", "underfitting": "#7570b3"}
PLOTS = (
    "learning_curves",
    "fit_diagnosis",
    "importance",
    "marginal_effects",
    "parallel_coordinates",
    "leaderboard",
)


def is_log(spec: StudySpec, param: str) -> bool:
    return bool(getattr(spec.space.params[param], "log", False))


def is_categorical(spec: StudySpec, param: str) -> bool:
    return spec.space.params[param].type == "categorical"


def figure(width: float, height: float, rows: int = 1, columns: int = 1, **kwargs: Any):
    """A figure (matplotlib's object API: no pyplot, no display) and its axes."""
    made = Figure(figsize=(width, height))
    return made, made.subplots(rows, columns, **kwargs)


def save(made: Figure, path: Path) -> Path:
    made.tight_layout()
    made.savefig(path, dpi=110)
    return path


def tick_label(value: float, position: int | None = None) -> str:
    """A log axis's tick as run names write numbers: 2e-3 below 0.01, else 0.02, 0.5, 10."""
    if value != 0 and abs(value) < 0.01:
        mantissa, exponent = f"{value:.0e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:g}"


def log_x(axis: Axes) -> None:
    """A log x axis whose tick labels never run into each other: call it once the data is
    plotted. Labels at 1, 2, 3 and 5 of each decade over one decade or less, at 1, 2 and 5
    over two or less (matplotlib's own labels every minor tick there, 2x10^-3 3x10^-3
    4x10^-3 ... on top of each other), at the decades over more. Minor ticks stay,
    unlabelled."""
    axis.set_xscale("log")
    low, high = axis.dataLim.intervalx
    decades = np.log10(high / low) if 0 < low < high else math.inf
    subs = (1.0, 2.0, 3.0, 5.0) if decades <= 1 else (1.0, 2.0, 5.0) if decades <= 2 else (1.0,)
    axis.xaxis.set_major_locator(LogLocator(subs=subs))
    axis.xaxis.set_major_formatter(FuncFormatter(tick_label))
    axis.xaxis.set_minor_formatter(NullFormatter())


def outcome_legend(axis: Axes, outcomes: list[str], best: str | None) -> None:
    handles = [Line2D([], [], color=COLORS[o], label=o) for o in outcomes]
    if best:
        handles.append(Line2D([], [], color="black", linewidth=2.5, label=f"best: {best}"))
    axis.legend(handles=handles, fontsize=8, loc="lower right")


def plot_curves(
    history: pd.DataFrame, table: pd.DataFrame, best: int | None, path: Path, fit: analysis.Fit
) -> Path:
    """train_acc and val_acc (regression: train_rmse and val_rmse) per epoch of every trial,
    coloured by outcome, best in black."""
    made, axes = figure(12, 4.5, 1, 2, sharey=True)
    for axis, key in zip(axes, (fit.train, fit.val), strict=True):
        for trial, curve in history.groupby("trial"):
            outcome = table.loc[trial, "outcome"]
            axis.plot(curve["epoch"], curve[key], color=COLORS[outcome], alpha=0.55, linewidth=1)
        if best is not None:
            curve = history[history["trial"] == best]
            axis.plot(curve["epoch"], curve[key], color="black", linewidth=2.5)
        axis.set(title=key, xlabel="epoch", ylabel=key)
        axis.grid(alpha=0.3)
    best_name = table.loc[best, "name"] if best is not None else None
    outcome_legend(axes[1], sorted(set(table["outcome"]), key=list(COLORS).index), best_name)
    return save(made, path)


def plot_diagnosis(
    diagnosis: pd.DataFrame, best: int | None, path: Path, fit: analysis.Fit
) -> Path:
    """Counts per diagnosis, and final train_acc vs val_acc (regression: train_rmse vs
    val_rmse) coloured by diagnosis."""
    train, val = fit.train, fit.val
    made, (bars, scatter) = figure(12, 4.5, 1, 2)
    counts = diagnosis["diagnosis"].value_counts()
    colors = [FIT_COLORS.get(d, COLORS.get(d, "#999999")) for d in counts.index]
    bars.bar(counts.index, counts.values, color=colors)
    bars.set(title="fit diagnosis at each trial's last epoch", ylabel="trials")
    for x, n in enumerate(counts.values):
        bars.annotate(str(n), (x, n), ha="center", va="bottom")
    judged = diagnosis.dropna(subset=[train]) if train in diagnosis else diagnosis
    for kind, group in judged.groupby("diagnosis"):
        scatter.scatter(group[train], group[val], color=FIT_COLORS[kind], label=kind)
    if best is not None and best in judged.index:
        row = judged.loc[best]
        scatter.scatter(row[train], row[val], s=160, facecolors="none",
                        edgecolors="black", linewidths=2, label="best trial")  # fmt: skip
    if len(judged):
        low, high = judged[[train, val]].min().min(), judged[[train, val]].max().max()
        top = 1 if train == "train_acc" else high
        scatter.plot([low, top], [low, top], color="gray", linestyle="--", linewidth=1,
                     label=f"{val} = {train}")  # fmt: skip
    side = "below" if train == "train_acc" else "above"
    title = "final accuracy" if train == "train_acc" else "final error"
    scatter.set(title=f"{title}: {side} the diagonal = train-val gap",
                xlabel=train, ylabel=val)  # fmt: skip
    scatter.grid(alpha=0.3)
    scatter.legend(fontsize=8)
    return save(made, path)


def plot_importance(importances: dict[str, float], note: str, path: Path) -> Path:
    """fANOVA importance per hyperparameter, largest on top."""
    made, axis = figure(7, 0.5 * max(len(importances), 2) + 1.5)
    names = list(importances)[::-1]
    axis.barh(names, [importances[n] for n in names], color="#1b9e77")
    axis.set(title="hyperparameter importance", xlabel=f"importance ({note})")
    if not importances:
        axis.text(0.5, 0.5, note, ha="center", va="center", transform=axis.transAxes)
    axis.grid(alpha=0.3, axis="x")
    return save(made, path)


def plot_marginals(spec: StudySpec, table: pd.DataFrame, metric: str, path: Path) -> Path:
    """The metric against each sampled param: scatter (log x for log-scaled params) or box
    plots for categorical ones; plus BatchNorm x lr when both are sampled."""
    params = list(spec.space.params)
    interaction = "batch_norm" in params and "lr" in params
    panels = len(params) + interaction
    columns = min(panels, 3)
    rows = math.ceil(panels / columns)
    made, axes = figure(5 * columns, 4 * rows, rows, columns, squeeze=False)
    scored = table[table["outcome"].isin(SCORED)].dropna(subset=[metric])
    for axis, param in zip(axes.flat, params, strict=False):
        present = scored.dropna(subset=[param])
        if is_categorical(spec, param):
            values = [str(c) for c in spec.space.params[param].choices]
            groups = [present.loc[present[param].astype(str) == v, metric] for v in values]
            axis.boxplot(groups, tick_labels=values)
            for x, group in enumerate(groups, start=1):
                axis.scatter(np.full(len(group), x), group, color="black", s=10, alpha=0.6)
        else:
            for outcome, group in present.groupby("outcome"):
                axis.scatter(group[param], group[metric], color=COLORS[outcome], label=outcome,
                             alpha=0.8)  # fmt: skip
            if is_log(spec, param):
                log_x(axis)
            axis.legend(fontsize=8)
        axis.set(title=f"{metric} vs {param}", xlabel=param + (" (log)" if is_log(spec, param)
                 else ""), ylabel=f"final {metric}")  # fmt: skip
        axis.grid(alpha=0.3)
    if interaction:
        axis = axes.flat[len(params)]
        for value, color in ((True, "#1b9e77"), (False, "#d95f02")):
            group = scored[scored["batch_norm"] == value]
            axis.scatter(group["lr"], group[metric], color=color, label=f"batch_norm={value}")
        if is_log(spec, "lr"):
            log_x(axis)
        axis.set(title=f"BatchNorm x lr: {metric}", ylabel=f"final {metric}",
                 xlabel="lr (log)" if is_log(spec, "lr") else "lr")  # fmt: skip
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[panels:]:
        axis.set_visible(False)
    made.suptitle("marginal effects (completed and early-stopped trials, final values)")
    return save(made, path)


def axis_values(spec: StudySpec, param: str, column: pd.Series) -> tuple[np.ndarray, list]:
    """A param's values scaled to [0, 1] for a parallel axis, and tick (position, label)s."""
    if is_categorical(spec, param):
        choices = [str(c) for c in spec.space.params[param].choices]
        index = column.astype(str).map({c: i for i, c in enumerate(choices)}).to_numpy(float)
        span = max(len(choices) - 1, 1)
        return index / span, [(i / span, c) for i, c in enumerate(choices)]
    raw = column.to_numpy(float)
    scaled = np.log10(raw) if is_log(spec, param) else raw
    low, high = np.nanmin(scaled), np.nanmax(scaled)
    span = (high - low) or 1.0
    ticks = [(0.0, f"{np.nanmin(raw):.3g}"), (1.0, f"{np.nanmax(raw):.3g}")]
    return (scaled - low) / span, ticks


def plot_parallel(spec: StudySpec, table: pd.DataFrame, metric: str, path: Path) -> Path:
    """Parallel coordinates of the trials that ended by their own rules (completed, stopped
    by their patience): one axis per sampled param and the metric, lines coloured by it."""
    done = table[table["outcome"].isin(FINISHED)].dropna(subset=[metric])
    params = [p for p in spec.space.params if done[p].notna().all()] if len(done) else []
    made, axis = figure(2.2 * (len(params) + 1) + 2, 5)
    if len(done) == 0:
        axis.text(0.5, 0.5, "no completed trial", ha="center", transform=axis.transAxes)
        return save(made, path)
    lines, ticks = [], []
    for param in params:
        values, marks = axis_values(spec, param, done[param])
        lines.append(values)
        ticks.append(marks)
    score = done[metric].to_numpy(float)
    low, high = score.min(), score.max()
    lines.append((score - low) / ((high - low) or 1.0))
    ticks.append([(0.0, f"{low:.4f}"), (1.0, f"{high:.4f}")])
    matrix = np.vstack(lines)
    colors = colormaps["viridis"]((score - low) / ((high - low) or 1.0))
    x = np.arange(matrix.shape[0])
    for column in range(matrix.shape[1]):
        axis.plot(x, matrix[:, column], color=colors[column], alpha=0.8)
    for position, marks in enumerate(ticks):
        axis.axvline(position, color="black", linewidth=0.8)
        for y, label in marks:
            # on a white ground: the trials' lines run through the ends of the axes
            axis.annotate(label, (position, y), xytext=(4, 0), textcoords="offset points",
                          fontsize=8, va="center", zorder=3,
                          bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})  # fmt: skip
    labels = [p + (" (log)" if not is_categorical(spec, p) and is_log(spec, p) else "")
              for p in params]  # fmt: skip
    axis.set_xticks(x, [*labels, metric])
    axis.set_yticks([])
    axis.set_xlim(-0.2, len(x) - 0.5)
    axis.set_title(f"parallel coordinates of {len(done)} completed trials (colour: {metric})")
    scale = ScalarMappable(cmap="viridis", norm=Normalize(low, high))
    made.colorbar(scale, ax=axis, label=metric)
    return save(made, path)


def plot_leaderboard(board: pd.DataFrame, metric: str, at: list[int], path: Path) -> Path:
    """The leaderboard's trials: metric at each milestone epoch (equal budgets)."""
    made, axis = figure(8, 4.5)
    for _, row in board.iterrows():
        values = [row[f"{metric}@{e}"] for e in at]
        axis.plot(at, values, marker="o", label=row["name"])
    axis.set_xscale("log")
    axis.set_xticks(at, [str(e) for e in at])
    axis.minorticks_off()
    axis.set(title="top trials at equal budget (ASHA milestones)", xlabel="epoch (log)",
             ylabel=metric)  # fmt: skip
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="lower right")
    return save(made, path)


VERDICT_COLORS = {"helps": "#1b9e77", "hurts": "#d95f02"}  # no effect detectable: grey


def better_side(mode: str) -> str:
    return "higher is better" if mode == "max" else "lower is better"


def plot_ablation(frame: pd.DataFrame, metric: str, mode: str, title: str, path: Path) -> Path:
    """The ablation's forest plot: per variant, the mean change in the metric from the config
    itself (paired by seed) with its 95% interval, coloured by the verdict written beside."""
    base = frame[frame["variant"] == BASE_LABEL].iloc[0]
    rows = frame[frame["variant"] != BASE_LABEL].reset_index(drop=True)
    made, axis = figure(10, 0.55 * max(len(rows), 1) + 2.2)
    y = np.arange(len(rows))[::-1]
    for position, (_, row) in zip(y, rows.iterrows(), strict=True):
        color = VERDICT_COLORS.get(row["verdict"], "#777777")
        error = [[row["change"] - row["change_low"]], [row["change_high"] - row["change"]]]
        axis.errorbar(row["change"], position, xerr=error, fmt="o", color=color, capsize=4,
                      markersize=7, linewidth=2)  # fmt: skip
    axis.axvline(0, color="black", linewidth=0.8)
    labels = [
        r["variant"] if r["regularizer"] == "batch_norm" else f"{r['variant']} (was {r['setting']})"
        for _, r in rows.iterrows()
    ]
    axis.set_yticks(y, labels)
    axis.xaxis.set_major_locator(MaxNLocator(nbins=6))
    axis.set_ylim(-0.7, len(rows) - 0.3)
    verdicts = axis.twinx()
    verdicts.set_ylim(axis.get_ylim())
    verdicts.set_yticks(y, list(rows["verdict"]))
    for label, verdict in zip(verdicts.get_yticklabels(), rows["verdict"], strict=True):
        label.set_color(VERDICT_COLORS.get(verdict, "#555555"))
    seeds = int(base["seeds"])
    axis.set(
        title=f"{title}\n{BASE_LABEL}: {metric} {base['mean']:.4f} over {seeds} seeds",
        xlabel=f"change in {metric} from {BASE_LABEL}, paired by seed, 95% CI "
        f"({better_side(mode)})",
    )
    axis.grid(alpha=0.3, axis="x")
    return save(made, path)


def plot_confirm(frame: pd.DataFrame, metric: str, mode: str, path: Path) -> Path:
    """The confirmation's forest plot: per trial, best first, its mean over the seeds with a
    95% interval, the value the study's single run reported, and the first's mean."""
    made, axis = figure(10, 0.55 * max(len(frame), 1) + 2.2)
    axis.xaxis.set_major_locator(MaxNLocator(nbins=6))
    y = np.arange(len(frame))[::-1]
    for position, (_, row) in zip(y, frame.iterrows(), strict=True):
        same = bool(row["indistinguishable"]) or row["rank"] == 1
        color = "#1b9e77" if same else "#d95f02"
        error = [[row["mean"] - row["mean_low"]], [row["mean_high"] - row["mean"]]]
        axis.errorbar(row["mean"], position, xerr=error, fmt="o", color=color, capsize=4,
                      markersize=7, linewidth=2)  # fmt: skip
        axis.scatter(row["study_value"], position, marker="D", facecolors="none",
                     edgecolors="black", zorder=3)  # fmt: skip
    first = frame.iloc[0]
    axis.axvline(first["mean"], color="gray", linestyle="--", linewidth=1)
    axis.set_yticks(y, [f"{r['rank']}. {r['run_name']}" for _, r in frame.iterrows()])
    axis.set_ylim(-0.7, len(frame) - 0.3)
    name = first["trial"]
    handles = [
        Line2D([], [], color="#1b9e77", marker="o", label=f"indistinguishable from {name}"),
        Line2D([], [], color="#d95f02", marker="o", label=f"apart from {name}"),
        Line2D([], [], color="black", marker="D", linestyle="", markerfacecolor="none",
               label="the study's single run"),
    ]  # fmt: skip
    axis.legend(handles=handles, fontsize=8, loc="best")
    axis.set(
        title=f"the top {len(frame)} trials over {int(first['seeds'])} seeds",
        xlabel=f"{metric}, mean over the seeds and its 95% CI ({better_side(mode)})",
    )
    axis.grid(alpha=0.3, axis="x")
    return save(made, path)


def evidence(layout: Any) -> tuple[list[str], dict[str, Path], dict[str, str]]:
    """The summary lines, plots and tables of `study ablate` and `study confirm`, where the
    study has them."""
    lines, images, tables = [], {}, {}
    style = {"index": False, "float_format": "{:.4f}".format, "na_rep": ""}
    if layout.ablation_csv.exists() and layout.ablation_png.exists():
        frame = pd.read_csv(layout.ablation_csv, keep_default_na=False, na_values=[""])
        frame["pairs"] = frame["pairs"].astype("Int64")  # a count (none on the config's row)
        rows = frame[frame["variant"] != BASE_LABEL]
        seeds = int(frame["seeds"].max())
        said = "; ".join(
            f"{r['variant']}: {r['verdict']} ({r['change']:+.4f})" for _, r in rows.iterrows()
        )
        what = f"change in {frame['metric'].iloc[0]}, paired by seed"
        lines.append(
            f"Ablation of {frame['trial'].iloc[0]} over {seeds} seeds ({what}): "
            f"{said or 'nothing to remove'}."
        )
        images["Ablation (study ablate)"] = layout.ablation_png
        tables["Ablation: each variant over the seeds, change paired by seed"] = frame.to_html(
            **style
        )
    if layout.confirm_csv.exists() and layout.confirm_png.exists():
        frame = pd.read_csv(layout.confirm_csv)
        same = list(frame.loc[frame["indistinguishable"] & (frame["rank"] > 1), "trial"])
        first = frame["trial"].iloc[0]
        lines.append(
            f"Confirmation of the top {len(frame)} over {int(frame['seeds'].max())} seeds: {first} "
            f"first by mean; indistinguishable from it: {', '.join(same) or 'none'}."
        )
        if "against_baseline" in frame.columns:  # `study confirm --with`
            others = frame[frame["vs_baseline"].notna()]
            said = "; ".join(f"{r['trial']} {r['against_baseline']} ({r['vs_baseline']:+.4f})"
                             for _, r in others.iterrows())  # fmt: skip
            lines.append(f"Against the baseline, paired by seed: {said}.")
        images["Confirmation (study confirm)"] = layout.confirm_png
        tables["Confirmation: the top trials over the seeds"] = frame.to_html(**style)
    return lines, images, tables


def page(name: str, summary: list[str], images: dict[str, Path], tables: dict[str, str]) -> str:
    """One HTML file with the summary, the plots inlined as PNG data and the tables."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Study report: {html.escape(name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "img{max-width:100%}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px}</style></head><body>",
        f"<h1>Study report: {html.escape(name)}</h1>",
        "<h2>Summary</h2><ul>",
        *(f"<li>{html.escape(line)}</li>" for line in summary),
        "</ul>",
    ]
    for title, path in images.items():
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' "
                     f"src='data:image/png;base64,{data}'>")  # fmt: skip
    for title, table in tables.items():
        parts.append(f"<h2>{html.escape(title)}</h2>{table}")
    parts.append("</body></html>")
    return "\n".join(parts)


def study_trials(spec: StudySpec, layout: Any) -> tuple[StudyRecords, list]:
    """The study's records and its trials; a UserError where it has none yet."""
    records = StudyRecords.reading(layout)
    if records is None:
        raise UserError(f"NAME: study {spec.name!r} has no MLflow runs yet; run it first")
    trials = records.trials()
    if not trials:
        raise UserError(f"NAME: study {spec.name!r} has no trials yet; run or resume it")
    return records, trials


def how_searched(tags: dict[str, str], earlier: list[str]) -> list[str]:
    """The summary's lines on what the search did beyond its own trials: the earlier studies'
    trials its sampler learned from (search.warm_start), and the stop of search.terminate."""
    lines = []
    if int(tags.get("warm_start_trials", 0)):
        lines.append(
            f"The sampler also learned from {tags['warm_start_trials']} trials of "
            f"{', '.join(earlier)} (search.warm_start): not rerun, not in this report's trials."
        )
    if tags.get("terminated"):
        lines.append(f"Stopped by search.terminate: {tags['terminated']}.")
    return lines


def analyse(spec: StudySpec, layout: Any, limits: dict[str, float | None]) -> dict[str, Any]:
    """What the report shows, computed: curves, the trials' table, the best trial, the fit
    diagnosis, importance, the equal-budget leaderboard and the summary lines."""
    records, trials = study_trials(spec, layout)
    params, metric = list(spec.space.params), spec.metric
    task = spec.task(saved_found(layout)) or "classification"
    keys = analysis.curve_keys(metric, task)
    history = analysis.curves(records.histories(trials, keys), keys)
    table = analysis.trials(trials, params, metric)
    best_first = ranked(trials, metric, spec.mode)
    diagnosis = analysis.diagnose(table, history, analysis.Thresholds.of(task, **limits), task)
    importances, note = analysis.importance(storage.scored_trials(layout), params)
    at = analysis.milestones(spec.scheduler.rung_epochs(), spec.scheduler.max_epochs)
    categorical = [p for p in params if is_categorical(spec, p)]
    lines = analysis.summary(
        spec.name, table, diagnosis, best_first, importances, note, categorical, metric, task
    )
    versus = analysis.baseline_line(trials, best_first, metric, spec.name)
    searched = how_searched(records.parent_tags(), spec.search.warm_start)
    lead = [*searched, versus] if versus else searched  # after the trials' count: the evidence
    lines[1:1] = lead
    return {"records": records, "fit": analysis.FITS[task], "history": history,
            "table": table, "best": best_first[0].number if best_first else None,
            "diagnosis": diagnosis, "importances": importances, "note": note, "at": at,
            "board": analysis.leaderboard(history, table, metric, spec.mode, at),
            "lines": lines, "lead": 1 + len(lead), "trials": trials}  # fmt: skip


def plots(spec: StudySpec, made: dict[str, Any], folder: Path) -> dict[str, Path]:
    """The report's PNGs in `folder`, by title."""
    png = {name: folder / f"{name}.png" for name in PLOTS}
    history, table, best, fit = made["history"], made["table"], made["best"], made["fit"]
    metric = spec.metric
    return {
        "Learning curves": plot_curves(history, table, best, png["learning_curves"], fit),
        "Fit diagnosis": plot_diagnosis(made["diagnosis"], best, png["fit_diagnosis"], fit),
        "Hyperparameter importance": plot_importance(
            made["importances"], made["note"], png["importance"]
        ),
        "Marginal effects": plot_marginals(spec, table, metric, png["marginal_effects"]),
        "Parallel coordinates": plot_parallel(spec, table, metric, png["parallel_coordinates"]),
        "Leaderboard at equal budget": plot_leaderboard(
            made["board"], metric, made["at"], png["leaderboard"]
        ),
    }


def report(spec: StudySpec, root: Path, **limits: float | None) -> dict[str, Any]:
    """Write the report of the finished study `spec` under <root>/studies/NAME/report, log it
    on the parent run, and return its summary lines, folder and parts. `limits` are the fit
    diagnosis's thresholds (gap, rise, underfit; None: the task's default, analysis.Thresholds).
    """
    layout = spec.layout(root)
    made = analyse(spec, layout, limits)
    lines, diagnosis, board, records = (
        made["lines"],
        made["diagnosis"],
        made["board"],
        made["records"],
    )
    folder = layout.report_dir
    folder.mkdir(parents=True, exist_ok=True)
    images = plots(spec, made, folder)
    extra = made["table"][["name", "outcome", "epochs"]]  # a column both have: suffixed "_" here
    fits = diagnosis.join(extra.rename(columns={c: f"{c}_" for c in diagnosis.columns}))
    fits = fits.drop(columns=["trial"]).reset_index()
    board.to_csv(folder / "leaderboard.csv", index=False)
    fits.to_csv(folder / "diagnosis.csv", index=False)
    more, shown, listed = evidence(layout)  # study ablate and study confirm, if run
    first = made["lead"]
    lines[first:first] = more  # the intervals next, before the one-run figures
    images.update(shown)
    (folder / "summary.txt").write_text("\n".join(lines) + "\n")
    style = {"index": False, "float_format": "{:.4f}".format, "na_rep": "-"}
    tables = {
        "Leaderboard at equal budget (value and rank at each milestone epoch)": board.to_html(
            **style
        ),
        "Fit diagnosis per trial": fits.to_html(**style),
        **listed,
    }
    (folder / "report.html").write_text(page(spec.name, lines, images, tables))
    records.attach_folder(records.parent_id, str(folder), "report")
    return {"summary": lines, "folder": folder, "diagnosis": diagnosis, "leaderboard": board,
            "importance": made["importances"], "parent_run_id": records.parent_id}  # fmt: skip
