"""Comparing and deciding on a finished study: `study report`, export bundles and formats,
`study train --seeds` with its MLflow run and registered model, and the Optuna dashboard."""

import json
import os
import re
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from benchmarks.common import free_port
from study.commands.report import PLOTS
from study.evidence.analysis import Thresholds, diagnose, leaderboard
from tests.conftest import files, study_cli, study_here
from trainables.loop import load_state

# One worker runs every test of the finished_study fixture, which is made once (pytest-xdist).
pytestmark = pytest.mark.xdist_group("finished_study")

NAME = "digits-regularization"


def png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", header[16:24])


@pytest.fixture(scope="module")
def reported(finished_study):
    done = study_here("report", NAME, root=finished_study["root"])
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_report_writes_every_plot_the_page_and_logs_them_on_the_parent(finished_study, reported):
    folder = finished_study["root"] / "studies" / NAME / "report"
    for name in PLOTS:
        width, height = png_size(folder / f"{name}.png")
        assert width >= 600 and height >= 300, name
    page = (folder / "report.html").read_text()
    assert page.count("src='data:image/png;base64,") == len(PLOTS)  # self-contained
    summary = (folder / "summary.txt").read_text()
    assert "Best: t0" in summary and "What mattered (fANOVA over 10 trials" in summary
    assert summary.splitlines()[0] in reported.stdout and summary.splitlines()[0] in page

    client = MlflowClient(finished_study["uri"])
    experiment = client.get_experiment_by_name(NAME)
    (parent,) = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`study.role` = 'parent'"
    )
    logged = {os.path.basename(a.path) for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {f"{name}.png" for name in PLOTS} | {"report.html", "summary.txt"} <= logged


def test_report_tables_agree_with_the_mlflow_records(finished_study, reported):
    folder = finished_study["root"] / "studies" / NAME / "report"
    fits = pd.read_csv(folder / "diagnosis.csv")
    assert len(fits) == finished_study["num_samples"]
    assert set(fits["diagnosis"]) <= {"good fit", "overfitting", "underfitting"}
    board = pd.read_csv(folder / "leaderboard.csv")
    assert {"val_acc@1", "rank@1", "val_acc@3", "val_acc@9", "rank@9"} <= set(board.columns)
    # every listed trial is among the 3 best at some milestone, and its values are MLflow's
    ranks = board[[c for c in board.columns if c.startswith("rank@")]]
    assert (ranks.min(axis=1) <= 3).all()
    client = MlflowClient(finished_study["uri"])
    row = board.iloc[0]
    run = client.search_runs(
        [client.get_experiment_by_name(NAME).experiment_id],
        filter_string=f"tags.trial = '{int(row['trial'])}'",
    )[0]
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_acc")}
    assert row["val_acc@1"] == pytest.approx(history[1])


def curve(trial: int, train_acc: list[float], val_acc: list[float], val_loss: list[float]):
    return pd.DataFrame(
        {
            "trial": trial,
            "epoch": range(1, len(val_acc) + 1),
            "train_acc": train_acc,
            "val_acc": val_acc,
            "val_loss": val_loss,
            "gap": [t - v for t, v in zip(train_acc, val_acc, strict=True)],
        }
    )


def test_diagnosis_tells_over_under_and_good_fit_apart():
    history = pd.concat(
        [
            curve(1, [0.9, 1.0, 1.0], [0.85, 0.9, 0.88], [0.5, 0.3, 0.6]),  # gap .12, loss up
            curve(2, [0.5, 0.6, 0.62], [0.5, 0.6, 0.61], [1.2, 1.0, 0.9]),  # far below best
            curve(3, [0.9, 0.97, 0.98], [0.9, 0.96, 0.965], [0.4, 0.2, 0.18]),  # fine
            curve(4, [0.9, 1.0, 1.0], [0.85, 0.9, 0.88], [0.5, 0.3, 0.31]),  # gap, loss flat
        ]
    )
    table = pd.DataFrame(
        {"trial": [1, 2, 3, 4, 5], "outcome": ["completed"] * 4 + ["diverged"]}
    ).set_index("trial", drop=False)
    found = diagnose(table, history, Thresholds())["diagnosis"].to_dict()
    assert found == {
        1: "overfitting",
        2: "underfitting",
        3: "good fit",
        4: "good fit",  # a gap alone, with val_loss at its minimum, is not overfitting
        5: "diverged",
    }


def test_leaderboard_compares_trials_at_equal_budget():
    history = pd.concat(
        [
            curve(1, [0.9] * 3, [0.90, 0.91, 0.99], [0.1] * 3),  # slow starter, best at the end
            curve(2, [0.9] * 3, [0.95, 0.96, 0.97], [0.1] * 3),
            curve(3, [0.9], [0.97], [0.1]),  # best at epoch 1, stopped there
        ]
    )
    table = pd.DataFrame({"trial": [1, 2, 3], "name": ["a", "b", "c"]}).set_index("trial")
    board = leaderboard(history, table, "val_acc", "max", [1, 3], top=2).set_index("name")
    assert board.loc["c", "rank@1"] == 1 and pd.isna(board.loc["c", "rank@3"])
    assert board.loc["a", "rank@3"] == 1 and board.loc["a", "rank@1"] == 3
    assert list(board.index) == ["a", "b", "c"]  # ordered by the furthest milestone
    page = board.to_html(float_format="{:.4f}".format, na_rep="-")  # as the report writes it
    assert "<td>3</td>" in page and "3.0000" not in page  # a rank is a whole number
    assert "<td>0.9700</td>" in page  # values keep their four places


def test_export_top_k_bundles_carry_config_seed_version_run_and_checkpoint(
    finished_study, tmp_path
):
    root = finished_study["root"]
    done = study_here("export", NAME, "--top", "2", "-o", str(tmp_path / "out"), root=root)
    assert done.returncode == 0, done.stderr
    folders = sorted((tmp_path / "out").iterdir())
    assert [f.name[:6] for f in folders] == ["rank1-", "rank2-"]
    results = {
        r["trial"]: r for r in json.loads((root / "studies" / NAME / "results.json").read_text())
    }
    for folder in folders:
        bundle = yaml.safe_load((folder / "config.yaml").read_text())
        row = results[bundle["trial"]]
        assert bundle["seed"] == bundle["config"]["seed"] == 0
        assert bundle["code_version"]["package"] == "0.1.0"
        assert bundle["mlflow"]["run_id"] == row["run_id"]
        page = f"/runs/{row['run_id']}?workflowType=machine_learning"  # the model-training view
        assert bundle["mlflow"]["link"].startswith(finished_study["uri"])
        assert bundle["mlflow"]["link"].endswith(page)
        state = load_state(folder / bundle["checkpoint"])
        assert state["epoch"] == row["epochs"] and "model" in state and "optimizer" in state


def test_export_to_a_file_writes_that_file_alone(finished_study, tmp_path):
    root = finished_study["root"]
    before = files(root)
    done = study_here("export", NAME, "-o", str(tmp_path / "best.yaml"), root=root)
    assert done.returncode == 0, done.stderr
    assert files(root) == before
    assert [path.name for path in tmp_path.iterdir()] == ["best.yaml"]


def test_export_formats_rank_by_another_metric(finished_study, tmp_path):
    root = finished_study["root"]
    as_json = study_here("export", NAME, "--top", "3", "--format", "json", "--metric", "val_loss",
                        root=root)  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr
    entries = json.loads(as_json.stdout)
    losses = [e["val_loss"] for e in entries]
    assert len(entries) == 3 and losses == sorted(losses)  # a loss ranks ascending
    path = tmp_path / "top.csv"
    as_csv = study_here("export", NAME, "--top", "3", "--format", "csv", "-o", str(path), root=root)
    assert as_csv.returncode == 0
    frame = pd.read_csv(path)
    assert len(frame) == 3 and "config.lr" in frame.columns
    as_yaml = study_here("export", NAME, "--format", "yaml", "--mode", "min", root=root)
    worst = yaml.safe_load(as_yaml.stdout)[0]["val_acc"]
    assert worst == min(
        r["val_acc"]
        for r in json.loads((root / "studies" / NAME / "results.json").read_text())
        if r["outcome"] in ("completed", "early_stopped")
    )
    bad = study_here("export", NAME, "--format", "xml", root=root)
    assert bad.returncode == 2 and "--format: unknown value 'xml'" in bad.stderr


def test_train_with_seeds_prints_mean_and_std_logs_a_run_and_registers(finished_study, tmp_path):
    root = finished_study["root"]
    best = tmp_path / "best.yaml"
    assert study_here("export", NAME, "-o", str(best), root=root).returncode == 0
    done = study_cli("train", str(best), "--seeds", "2", "--register", "digits-best", root=root)
    assert done.returncode == 0, done.stderr[-3000:]
    seeds = [float(v) for v in re.findall(r"^seed \d+ +val_acc (\d\.\d+)", done.stdout, re.M)]
    assert len(seeds) == 2
    printed = re.search(r"^val_acc over 2 seeds: mean (\S+)  std (\S+)$", done.stdout, re.M)
    mean, std = float(printed.group(1)), float(printed.group(2))
    assert mean == pytest.approx(sum(seeds) / 2, abs=1e-4)
    assert std == pytest.approx(abs(seeds[0] - seeds[1]) / 2**0.5, abs=1e-4)

    client = MlflowClient(finished_study["uri"])
    experiment = client.get_experiment_by_name(NAME)
    # The newest retrain run (the end-to-end test retrains on the same shared study too).
    run = client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.`study.role` = 'retrain'",
        order_by=["attributes.start_time DESC"],
    )[0]
    assert run.data.metrics["val_acc_mean"] == pytest.approx(mean, abs=1e-4)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == [0, 1]
    link = f"MLflow run: {finished_study['uri']}/#/experiments/{experiment.experiment_id}/runs/"
    assert f"{link}{run.info.run_id}?workflowType=machine_learning" in done.stdout
    assert "View run" not in done.stdout  # MLflow's own links (its GenAI view) are not printed
    versions = client.search_model_versions("name = 'digits-best'")
    assert len(versions) == 1 and versions[0].run_id == run.info.run_id


def test_the_optuna_storage_opens_in_optuna_dashboard(finished_study):
    port = free_port()
    storage = f"sqlite:///{finished_study['root'] / 'optuna.db'}"
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("optuna-dashboard")), storage, "--host", "127.0.0.1",
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                studies = json.load(urllib.request.urlopen(f"{base}/api/studies", timeout=2))
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "dashboard did not start"
                time.sleep(0.5)
        (study,) = [s for s in studies["study_summaries"] if s["study_name"] == NAME]
        detail = json.load(urllib.request.urlopen(f"{base}/api/studies/{study['study_id']}"))
        trials = detail["trials"]
        assert len(trials) == finished_study["num_samples"]
        pruned = [t for t in trials if t["state"] == "Pruned"]
        assert pruned and all(t["intermediate_values"] for t in trials)
        page = urllib.request.urlopen(f"{base}/dashboard").read().decode()
        assert "<html" in page.lower()
    finally:
        server.terminate()
        server.wait(timeout=30)
