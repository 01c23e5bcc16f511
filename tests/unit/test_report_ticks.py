"""The report's plots as a reader sees them: no two tick labels drawn over each other (on a log
axis spanning about a decade matplotlib labels every minor tick, 2x10^-3 3x10^-3 4x10^-3 ...,
on top of each other)."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from study.commands import report
from study.spec import StudySpec


def overlaps(made: Figure) -> list[tuple[str, str]]:
    """The pairs of tick labels of one axis whose rendered boxes overlap."""
    canvas = FigureCanvasAgg(made)
    canvas.draw()
    renderer = canvas.get_renderer()
    found = []
    for axes in made.axes:
        if not axes.get_visible():
            continue
        for axis in (axes.xaxis, axes.yaxis):
            low, high = sorted(axis.get_view_interval())
            ticks = axis.get_major_ticks() + axis.get_minor_ticks()
            labels = [
                tick.label1
                for tick in ticks
                if low <= tick.get_loc() <= high
                and tick.label1.get_visible()
                and tick.label1.get_text()
            ]
            boxes = [(label.get_text(), label.get_window_extent(renderer)) for label in labels]
            for i, (text, box) in enumerate(boxes):
                found += [(text, other) for other, box2 in boxes[i + 1 :] if box.overlaps(box2)]
    return found


def study_table(spec: StudySpec, trials: int = 16) -> pd.DataFrame:
    """Trials spread over the space, log-spaced where it is log-scaled, the lowest a little
    above its low end (as TPE leaves it: the lr panel of a study in [1e-3, 3e-2] then shows
    one decade tick, 1e-2, and matplotlib labels the minor ticks)."""
    rng = np.random.default_rng(0)
    columns: dict[str, object] = {}
    for name, param in spec.space.params.items():
        if param.type == "categorical":
            columns[name] = rng.choice(param.choices, trials)
        elif param.log:
            columns[name] = np.geomspace(param.low * 1.2, param.high * 0.95, trials)
        else:
            columns[name] = rng.uniform(param.low, param.high, trials)
    columns["val_acc"] = rng.uniform(0.9, 0.98, trials)
    columns["outcome"] = ["completed", "early_stopped"] * (trials // 2)
    return pd.DataFrame(columns)


@pytest.mark.parametrize(
    "low, high", [(1e-3, 3e-2), (1e-4, 3e-2), (2e-3, 6e-3), (1e-6, 1e-1)], ids=str
)
def test_marginal_effects_tick_labels_do_not_overlap(tmp_path, monkeypatch, low, high):
    spec = StudySpec.model_validate(
        {
            "space": {
                "params": {
                    "lr": {"type": "float", "low": low, "high": high, "log": True},
                    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
                    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
                    "batch_norm": {"type": "categorical", "choices": [True, False]},
                }
            }
        }  # fmt: skip
    )
    saved = []  # the figure, as report.save writes it
    original = report.save
    monkeypatch.setattr(
        report, "save", lambda made, path: saved.append(made) or original(made, path)
    )
    report.plot_marginals(spec, study_table(spec), "val_acc", tmp_path / "m.png")
    assert overlaps(saved[0]) == []
    lr_panel = saved[0].axes[0]
    labels = [t.label1.get_text() for t in lr_panel.xaxis.get_major_ticks() if t.label1.get_text()]
    assert len(labels) >= 2, labels  # still says where the values are


def test_tick_labels_read_as_run_names_write_numbers():
    assert [report.tick_label(v) for v in (2e-3, 1e-6, 0.01, 0.02, 0.5, 10.0)] == [
        "2e-3", "1e-6", "0.01", "0.02", "0.5", "10",
    ]  # fmt: skip
