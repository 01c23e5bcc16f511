"""The zero-setup path: a study on the default SQLite store under the root, served by `study ui`,
and that page in a real browser (Debian's chromium, headless, driven by Playwright)."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from benchmarks.common import free_port
from tests.conftest import study_cli

# one at a time: a single trial actor to start (this study checks no concurrency)
TINY = ["search.num_samples=3", "search.max_concurrent=1", "scheduler.max_epochs=2",
        "scheduler.grace_period=1"]  # fmt: skip
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
# Screenshots kept as test artifacts (CI keeps the folder).
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts"))


@pytest.fixture(scope="module")
def local_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("local") / "runs"
    done = study_cli("run", *[a for o in TINY for a in ("--set", o)], root=root)
    assert done.returncode == 0, done.stderr[-2000:]
    return root


@pytest.fixture(scope="module")
def study_ui(local_study):
    """`study ui` serving the local study; yields (port, printed experiment link)."""
    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "study", "ui", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "STUDY_ROOT": str(local_study)},
    )
    line = ""
    deadline = time.time() + 120
    while "digits-regularization:" not in line and time.time() < deadline:
        line = ui.stdout.readline()
    yield port, line
    ui.terminate()
    ui.wait(timeout=30)


def test_default_store_then_study_ui_serves_it(local_study, study_ui):
    root = local_study
    assert {"mlflow.db", "optuna.db", "mlartifacts", "ray", "studies"} <= set(os.listdir(root))

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("digits-regularization")
    assert experiment.artifact_location.startswith((root / "mlartifacts").as_uri())
    assert len(client.search_runs([experiment.experiment_id])) == 4  # parent + 3 trials

    port, line = study_ui
    link = re.search(r"http://127\.0\.0\.1:\d+/#/experiments/(\d+)/runs\S*", line)
    assert link and link.group(0).endswith("workflowType=machine_learning"), line
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search",
        data=json.dumps({"experiment_ids": [link.group(1)]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    found = json.load(urllib.request.urlopen(request, timeout=10))["runs"]
    names = sorted(r["info"]["run_name"] for r in found)
    assert names[0] == "digits-regularization" and len(names) == 4


def test_the_experiment_page_in_a_browser(local_study, study_ui):
    """The link `study ui` prints, opened in headless chromium: the study's columns, the parent
    run with its trials nested under it, and a trial's page with its val_acc chart."""
    if not os.path.exists(CHROMIUM) and not os.environ.get("STUDY_REQUIRE_BROWSER"):
        pytest.skip(f"no {CHROMIUM}: apt-get install -y chromium (.ci/run does)")
    from playwright.sync_api import expect, sync_playwright

    _, line = study_ui
    link = re.search(r"http://\S+", line).group(0)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(f"sqlite:///{local_study / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("digits-regularization")
    runs = client.search_runs([experiment.experiment_id])
    trials = [r for r in runs if r.data.tags.get("trial")]
    (parent_run,) = [r for r in runs if r.data.tags.get("study.role") == "parent"]

    def run_link(run):
        return page.locator(f"a[href$='/runs/{run.info.run_id}']")

    def cell(run, column):
        """A run's cell in the runs table (ag-grid splits a row over pinned and scrolled
        parts, which share its row-index)."""
        index = page.locator("[role='row']", has=run_link(run)).first.get_attribute("row-index")
        return page.locator(f"[role='row'][row-index='{index}'] [col-id='{column}']")

    def status_colour(run):
        icon = cell(run, "runDateAndNestInfo").locator("[role='img']").first
        return icon.evaluate("icon => getComputedStyle(icon).color")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 2400, "height": 1000})
        try:
            page.goto(link)
            expect(run_link(parent_run)).to_have_text("digits-regularization", timeout=60_000)
            assistant = page.get_by_role("button", name="Close")  # MLflow's chat panel
            if assistant.count():
                assistant.first.click()
            stopped = any("early_stopped_epoch" in r.data.tags for r in trials)
            columns = ["outcome", "val_acc", "best_so_far", "lr"]  # MLflow shows a tag's column
            columns += ["early_stopped_epoch"] if stopped else []  # once some run has the tag
            for column in columns:
                expect(page.get_by_test_id(f"sort-header-{column}")).to_be_visible()
            for run in trials:  # the trials are nested: hidden until the parent is expanded
                expect(run_link(run)).to_have_count(0)
            page.locator("button[data-component-id*='runnamecellrenderer']").first.click()
            for run in trials:
                expect(run_link(run)).to_have_text(run.info.run_name)
            # the parent's row reads as the study's result: the best trial's value and knobs
            best = next(r for r in trials if r.info.run_id == parent_run.data.tags["best_run_id"])
            shown = cell(parent_run, "metrics.`val_acc`").inner_text()
            assert shown != "-" and abs(float(shown) - best.data.metrics["val_acc"]) < 1e-3
            expect(cell(parent_run, "metrics.`best_so_far`")).to_have_text(shown)
            expect(cell(parent_run, "params.`lr`")).to_have_text(best.data.params["lr"])
            # a run is drawn as it ended: early-stopped ones as finished, red only for those
            # that failed or diverged (the parent ended FINISHED)
            finished = status_colour(parent_run)
            for run in trials:
                went_wrong = run.data.tags["outcome"] in ("failed", "diverged")
                assert (status_colour(run) == finished) != went_wrong, run.data.tags["outcome"]
            page.screenshot(path=ARTIFACTS / "mlflow-experiment-page.png")

            child = trials[0]
            run_link(child).click()
            page.get_by_role("tab", name="Model metrics").click()
            chart = page.get_by_text("val_acc", exact=True).first  # the chart card's title
            chart.scroll_into_view_if_needed(timeout=30_000)
            expect(chart).to_be_visible()
            expect(page.locator("svg.main-svg").first).to_be_visible()  # plotly drew charts
            page.screenshot(path=ARTIFACTS / "mlflow-trial-val_acc-chart.png")
        except Exception:
            page.screenshot(path=ARTIFACTS / "mlflow-browser-failure.png")
            raise
        finally:
            browser.close()
