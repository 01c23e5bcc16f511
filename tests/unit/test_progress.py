"""The console's node-lost line in memory: Ray's node table as `ray.nodes()` gives it, a
tracker's records; one line per node that went away, naming the trials that ran there."""

import io
from types import SimpleNamespace

from rich.console import Console

from study.engines import progress
from study.engines.progress import Progress


def node(node_id: str, alive: bool) -> dict:
    return {"NodeID": node_id, "Alive": alive, "NodeManagerAddress": "10.0.0.7"}


def test_a_node_that_went_away_is_said_once_with_the_trials_that_ran_there(tmp_path, monkeypatch):
    records = {
        3: SimpleNamespace(label="t003", node="aaaa1111", outcome="running"),
        5: SimpleNamespace(label="t005", node="bbbb2222", outcome="running"),
        6: SimpleNamespace(label="t006", node="aaaa1111", outcome="completed"),  # ended there
    }
    tracker = SimpleNamespace(trials=records)
    out = io.StringIO()
    shown = Progress(tracker, "val_acc", "max", 8, Console(file=out, width=200), tmp_path / "s")
    shown.left = {"aaaa1111": {"t001"}}  # retried away from it before Ray gave it up
    tables = iter([
        [node("aaaa1111", True), node("bbbb2222", True), node("cccc3333", False)],
        [node("aaaa1111", False), node("bbbb2222", True), node("cccc3333", False)],
        [node("aaaa1111", False), node("bbbb2222", True), node("cccc3333", False)],
    ])  # fmt: skip
    monkeypatch.setattr(progress.ray, "nodes", lambda: next(tables))
    for _ in range(3):
        shown._look_at_nodes()
    lines = out.getvalue().splitlines()
    assert lines == [
        "node lost        node 10.0.0.7 (aaaa1111) went away; t001, t003 ran there and "
        "continue from their last checkpoints on other nodes"
    ]  # once; a node dead before the first look (cccc3333) is not said
