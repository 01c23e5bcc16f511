"""The study's console piped to a file or a CI log: tables at the width their cells need, not
cut or wrapped at rich's 80 columns."""

import io
import sys

from rich.table import Table

from study.engines.logs import console


def test_a_console_that_is_not_a_terminal_is_as_wide_as_its_tables(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    piped = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stdout", piped)
    shown = console()
    table = Table(title="an ablation of t007, its verdicts (CI log)")
    for column in ("variant", "setting", "mean", "change [95% CI]", "verdict"):
        table.add_column(column, no_wrap=column != "verdict")
    verdict = "no effect detectable at 5 seeds"
    table.add_row("weight_decay off", "weight_decay=1e-4", "0.9712", "-0.0021 [-0.0040, -0.0002]",
                  verdict)  # fmt: skip
    shown.print(table)
    lines = piped.getvalue().splitlines()
    assert any(verdict in line and "weight_decay off" in line for line in lines), lines
    assert max(len(line) for line in lines) > 80  # wider than rich's default, not wrapped


def test_columns_set_by_the_caller_are_kept(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert console().width == 100
