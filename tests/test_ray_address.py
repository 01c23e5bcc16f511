"""`RAY_ADDRESS`, which Ray sets for the command of a `ray job submit`: a study with no
`cluster.address` of its own runs on that cluster and records the address (so `study resume`
goes back there), where it used to start a local Ray beside it."""

import yaml
from mlflow.tracking import MlflowClient

from benchmarks.common import free_port
from study.spec import StudySpec
from tests.conftest import study_cli


def test_an_unset_address_is_ray_address_and_a_given_one_wins(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert StudySpec().cluster.address is None
    monkeypatch.setenv("RAY_ADDRESS", "")
    assert StudySpec().cluster.address is None
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert StudySpec().cluster.address == "10.0.0.5:6379"
    given = StudySpec.model_validate({"cluster": {"address": "auto"}})
    assert given.cluster.address == "auto"
    assert StudySpec.model_validate({"cluster": {"address": None}}).cluster.address is None


def test_a_study_where_ray_address_is_set_runs_on_that_cluster(ray_head, tmp_path):
    root, name = tmp_path / "runs", "on-the-head"
    overrides = [f"name={name}", "search.num_samples=2", "scheduler.name=none"]
    overrides.append("search.max_concurrent=1")  # one trial actor to start: the node is the point
    overrides.append("scheduler.max_epochs=1")
    args = [a for o in overrides for a in ("--set", o)]
    done = study_cli("run", *args, root=root, ray=ray_head["address"])
    assert done.returncode == 0, done.stderr[-3000:]

    saved = yaml.safe_load((root / "studies" / name / "spec.yaml").read_text())
    assert saved["cluster"]["address"] == ray_head["address"]
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    nodes = {r.data.tags["node_id"] for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert nodes == {ray_head["node_id"]}  # the head's node, not a Ray of the study's own


def test_a_ray_address_nothing_answers_at_is_one_line_naming_it_and_records_nothing(tmp_path):
    root, address = tmp_path / "runs", f"127.0.0.1:{free_port()}"
    done = study_cli("run", root=root, ray=address, timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = done.stderr.strip().splitlines()
    said = f"error: cluster.address (from RAY_ADDRESS): cannot connect to Ray at {address} ("
    assert line.startswith(said), line
    assert line.endswith("fix the address, or unset RAY_ADDRESS for a local Ray"), line
    assert not root.exists()
