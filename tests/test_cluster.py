"""Studies on a Ray cluster of several nodes on this machine, started with `ray start` as the
README's cluster recipe does: fractional logical GPUs, trials spread over nodes, a node lost
mid-study, and a preflight refusal when no node can ever run a trial."""

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from benchmarks.common import RAY_ENV, free_port, ray_node, stop_node, wait_for_nodes
from tests.conftest import study_cli
from tests.exactly_once import check_exactly_once
from tests.plugin_files import example_plugin
from tests.test_resume import count

# One worker runs every test of the cluster fixture, which is made once (pytest-xdist).
pytestmark = pytest.mark.xdist_group("cluster")

ENV = RAY_ENV
# The head's GCS calls a node dead after five missed health checks a second apart (Ray's
# defaults: about 30 s), so that the hung-node test waits seconds, not half a minute; two
# seconds' grace each keeps a node of this loaded machine from being called dead for nothing.
HEALTH = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "2000",
    "RAY_health_check_failure_threshold": "5",
}
HEALTH_S = 5 * (1 + 2)  # the longest a hung node goes unnoticed


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head without GPUs and two workers with 4 CPUs and 2 logical GPUs each, started one
    after the other (nodes started at the same moment on one machine trip over each other),
    in a folder of their own. A plug-in folder is made for the plug-in test: the nodes refuse
    to import it from there (PLUGIN_ORIGINAL), so only Ray's shipped copy can run."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    where = tmp_path_factory.mktemp("ray-nodes-cwd")
    plugin = tmp_path_factory.mktemp("user-code")
    env = {"PLUGIN_ORIGINAL": str(plugin), **HEALTH}
    nodes = [ray_node("--head", f"--port={port}", "--num-cpus=1", "--num-gpus=0",
                       "--include-dashboard=false", cwd=where, env=env)]  # fmt: skip
    try:
        alive = wait_for_nodes(address, 1)
        ids = []  # each worker's Ray node ID, as trials tag their runs with it
        for count in (2, 3):
            nodes.append(
                ray_node(f"--address={address}", "--num-cpus=4", "--num-gpus=2", cwd=where, env=env)
            )
            now = wait_for_nodes(address, count)
            ids += now - alive
            alive = now
        yield {
            "address": address, "workers": nodes[1:], "ids": ids, "plugin": plugin,
            "where": where, "env": env,
        }  # fmt: skip
    finally:
        for node in reversed(nodes):
            if node.poll() is None:
                stop_node(node, force=True)


def run_on(cluster, root, *overrides, background=False, spec=None):
    args = ["run", *([str(spec)] if spec else []), "--address", cluster["address"]]
    args += [a for o in overrides for a in ("--set", o)]
    if background:
        return subprocess.Popen(
            [sys.executable, "-m", "study", *args],
            env={**ENV, "STUDY_ROOT": str(root)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    env_root = root
    os.environ["RAY_AUTH_MODE"] = "disabled"
    try:
        return study_cli(*args, root=env_root)
    finally:
        del os.environ["RAY_AUTH_MODE"]


RUNNING_ON = (
    "select count(*) from tags node join tags outcome "
    "on node.run_uuid = outcome.run_uuid where node.key = 'node_id' and node.value = '{}' "
    "and outcome.key = 'outcome' and outcome.value = 'running'"
)


def child_runs(root, name="digits-regularization"):
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def test_half_gpu_trials_pack_four_per_node_on_two_nodes(cluster, tmp_path):
    root = tmp_path / "runs"
    done = run_on(
        cluster, root,
        "search.num_samples=16", "search.max_concurrent=8", "resources.gpu=0.5",
        "scheduler.name=none", "scheduler.max_epochs=15", "model.widths=[256, 256]",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    runs = child_runs(root)
    assert len(runs) == 16
    by_node = defaultdict(list)
    for run in runs:
        assert run.data.tags["device"] == "cpu"  # logical GPUs: CUDA_VISIBLE_DEVICES, no CUDA
        by_node[run.data.tags["node_id"]].append((run.info.start_time, run.info.end_time))
    assert len(by_node) == 2  # both workers, never the GPU-less head

    def most_at_once(spans):
        events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
        running = peak = 0
        for _, change in events:
            running += change
            peak = max(peak, running)
        return peak

    peaks = [most_at_once(spans) for spans in by_node.values()]
    assert max(peaks) == 4 and all(p <= 4 for p in peaks)  # 2 GPUs / 0.5 per trial


def test_preflight_refuses_a_trial_no_node_can_hold(cluster, tmp_path):
    root = tmp_path / "runs"
    started = time.perf_counter()
    done = run_on(cluster, root, "resources.gpu=3")
    assert done.returncode == 2
    assert "resources: no node of the cluster has 1 CPU and 3 GPU" in done.stderr
    assert time.perf_counter() - started < 60 and not (root / "mlflow.db").exists()


def study_on_a_node(cluster, root, node_id: str) -> subprocess.Popen:
    """A study whose trials spread over the workers (checkpoints every epoch, three retries),
    returned once trials run on the node `node_id`."""
    driver = run_on(
        cluster, root,
        f"search.num_samples={SAMPLES}", "search.max_concurrent=8", "resources.gpu=0.5",
        "scheduler.name=none", f"scheduler.max_epochs={EPOCHS}", "model.widths=[512, 512]",
        "cluster.checkpoint_every=1", "cluster.max_failures=3",
        background=True,
    )  # fmt: skip
    deadline = time.time() + 240
    while not count(root / "mlflow.db", RUNNING_ON.format(node_id)):
        assert driver.poll() is None, driver.stderr.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.5)
    return driver


def moved_elsewhere(driver: subprocess.Popen, root, node_id: str) -> None:
    """The study ended whole: every trial once, the trials that ran on the lost node retried
    (a lost node counts against cluster.max_failures, as any failure) and completed, and the
    console said which node went and what moved."""
    out, err = driver.communicate(timeout=400)
    assert driver.returncode == 0, err[-3000:]
    runs = check_exactly_once(root, "digits-regularization", SAMPLES, EPOCHS)
    retried = [r for r in runs.values() if int(r.data.tags.get("retries", 0)) >= 1]
    assert retried and all(r.data.tags["outcome"] == "completed" for r in retried)
    (lost,) = [line for line in out.splitlines() if line.startswith("node lost")]
    assert f" ({node_id[:8]}) went away; " in lost, out
    moved = lost.partition("went away; ")[2].partition(" ran there")[0].split(", ")
    assert {int(t.removeprefix("t")) for t in moved} <= {int(r.data.tags["trial"]) for r in retried}
    assert lost.endswith("continue from their last checkpoints on other nodes")
    assert "Traceback" not in out + err


SAMPLES, EPOCHS = 8, 12


def test_a_node_lost_mid_study_its_trials_continue_elsewhere(cluster, tmp_path):
    """A worker's processes all killed at once (a spot machine taken back)."""
    root = tmp_path / "runs"
    driver = study_on_a_node(cluster, root, cluster["ids"][1])
    stop_node(cluster["workers"][1], force=True)
    moved_elsewhere(driver, root, cluster["ids"][1])


def processes_of(pid: int) -> list[int]:
    """`pid` and every process below it (a node's raylet, agents and trial workers), from
    /proc."""
    children: dict[int, list[int]] = defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        children[int(text[text.rindex(")") + 2 :].split()[1])].append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children[found[-1]]
    return found


def test_a_hung_node_is_given_up_and_its_trials_continue_elsewhere(cluster, tmp_path):
    """A new worker frozen (SIGSTOP to its raylet and its trials' workers: a machine that
    hangs) past the head's health checks, then let go: Ray calls the node dead, its trials
    move to the other worker, and the node, woken, finds itself gone and exits."""
    before = wait_for_nodes(cluster["address"], 1)  # the nodes alive now
    node = ray_node(f"--address={cluster['address']}", "--num-cpus=4", "--num-gpus=2",
                    cwd=cluster["where"], env=cluster["env"])  # fmt: skip
    try:
        (node_id,) = wait_for_nodes(cluster["address"], len(before) + 1) - before
        root = tmp_path / "runs"
        driver = study_on_a_node(cluster, root, node_id)
        frozen = processes_of(node.pid)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(HEALTH_S + 5)
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        moved_elsewhere(driver, root, node_id)
    finally:
        stop_node(node, force=True)


def test_plugins_from_an_uninstalled_folder_run_on_the_cluster(cluster, tmp_path):
    """The README's example plug-ins, a network and a loader, in a folder the nodes were not
    started in and refuse to import from: Ray's runtime_env ships both to the workers, which
    run every trial."""
    spec = example_plugin(cluster["plugin"], guard=True, study="my_data_study.yaml")
    root = tmp_path / "runs"
    done = run_on(
        cluster, root, "search.num_samples=4", "search.max_concurrent=4", "resources.gpu=0.5",
        "scheduler.max_epochs=3", "scheduler.grace_period=3",
        "dataset.args.as_datasets=true", "dataset.placement=stream",  # the workers call it
        spec=spec,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    runs = child_runs(root, "my-data-digits")
    assert len(runs) == 4
    assert all(r.data.tags["outcome"] == "completed" for r in runs), [r.data.tags for r in runs]
    assert all(r.data.params["model.name"] == "my_net:build" for r in runs)
    assert all(r.data.params["dataset.name"] == "my_data:load" for r in runs)
