"""The user's own data: image folders and loader plug-ins, in memory or streamed by each
trial; their one-line refusals; studies on them through Ray, exported and retrained."""

import copy
import re

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from study.cli import app
from tests.conftest import study_cli
from tests.data_files import image_folder, loader_plugin
from tests.plugin_files import write_module
from trainables import DataError, fit, load_dataset
from trainables.feed import StreamFeed, data_workers
from trainables.sources import FolderImages, Streamed

MODEL = {"name": "cnn", "channels": [4], "widths": [16]}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return image_folder(tmp_path_factory.mktemp("images") / "pets")


def spec(root, **extra):
    return {"name": "image_folder", "root": str(root), "image_size": 8, **extra}


def test_an_image_folder_reads_the_same_in_memory_and_streamed(folder):
    memory = load_dataset(spec(folder), seed=0)
    streamed = load_dataset(spec(folder, placement="stream"), seed=0)
    assert isinstance(streamed, Streamed) and not streamed.index.get("x")
    assert memory.x_train.shape == (210, 3, 8, 8) and memory.x_val.shape == (69, 3, 8, 8)
    assert memory.num_classes == streamed.num_classes == 3
    assert streamed.counts == {"train": 210, "val": 69} and streamed.input_shape == (3, 8, 8)
    splits = streamed.splits()
    for i in (0, 101, 209):
        x, y = splits["train"][i]
        assert torch.equal(x, memory.x_train[i]) and y == memory.y_train[i]
    # Mean and std from the training split: the bright channel of a third of the images.
    assert memory.mean == streamed.mean and 0.3 < memory.mean[0] < 0.45
    pixels = memory.x_train.double() / 255
    assert memory.std[1] == pytest.approx(pixels[:, 1].std(unbiased=False).item(), abs=1e-4)


def test_one_folder_is_split_by_val_fraction(tmp_path):
    root = image_folder(tmp_path / "flat", per_class=20, val=False)
    data = load_dataset(spec(root, val_fraction=0.25), seed=0)
    assert len(data.x_train) == 45 and len(data.x_val) == 15
    assert sorted(data.y_val.tolist()) == [0] * 5 + [1] * 5 + [2] * 5  # stratified


def test_a_streamed_trial_is_reproducible_and_resumes_with_the_same_order(folder):
    data = load_dataset(spec(folder, placement="stream"), seed=0)
    config = {"model": MODEL, "epochs": 3, "seed": 0, "lr": 3e-3, "hflip": True, "threads": 2}
    full, saved = [], {}

    def report(metrics, state):
        full.append(metrics)
        if metrics["epoch"] == 1:  # the checkpoint a resumed trial would start from
            saved.update(copy.deepcopy(state))

    fit(config, data, report)
    rest = []
    fit(config, data, lambda m, s: rest.append(m), state=saved)
    assert [m["epoch"] for m in rest] == [2, 3]
    for key in ("train_loss", "val_loss", "val_acc"):
        assert [m[key] for m in rest] == [m[key] for m in full[1:]]
    again = []
    fit(config, data, lambda m, s: again.append(m["val_loss"]))
    assert again == [m["val_loss"] for m in full]  # same seed, same order, same numbers


def test_streaming_workers_come_out_of_the_trials_cpus(folder):
    for cpus in (1, 2, 3, 4, 8):
        workers, threads = data_workers(cpus)
        assert workers + threads == cpus and threads >= 1
    data = load_dataset(spec(folder, placement="stream"), seed=0)
    feed = StreamFeed(data, torch.device("cpu"), workers=2, seed=0)
    batch = next(iter(feed.train(16, epoch=1)))
    loader = next(iter(feed.loaders.values()))
    assert loader.num_workers == 2 and loader.persistent_workers
    assert batch[0].dtype == torch.float32 and batch[0].max() <= 1 and len(batch[0]) == 16
    orders = [list(iter(feed.sampler)) for feed.sampler.epoch in (1, 2, 1)]
    assert orders[0] == orders[2] != orders[1]  # the order is the seed's and the epoch's


def test_bad_image_folders_name_the_folder_or_the_file(tmp_path):
    with pytest.raises(DataError, match="dataset.root: no folder"):
        load_dataset(spec(tmp_path / "nowhere"))
    one = image_folder(tmp_path / "one", per_class=3, classes=1)
    with pytest.raises(DataError, match="has 1 class folders; lay the images out"):
        load_dataset(spec(one))
    root = image_folder(tmp_path / "bad", per_class=6)
    (root / "train" / "class3").mkdir()
    with pytest.raises(DataError, match="class folder .*class3 has no images"):
        load_dataset(spec(root))
    (root / "train" / "class3").rmdir()
    broken = root / "train" / "class1" / "broken.png"
    broken.write_bytes(b"not a png at all")
    with pytest.raises(
        DataError, match=f"cannot read image {re.escape(str(broken))}.*skip_bad_files"
    ):
        load_dataset(spec(root))
    kept = load_dataset(spec(root, skip_bad_files=True), seed=0)
    assert len(kept.x_train) == 18  # the broken file left out
    with pytest.raises(DataError, match=f"cannot read image {re.escape(str(broken))}"):
        load_dataset(spec(root, placement="stream"))  # its sample for the statistics met it
    streamed = load_dataset(spec(root, placement="stream", skip_bad_files=True), seed=0)
    items = streamed.index["train"]
    position = [path for path, _ in items].index(str(broken))
    with pytest.raises(DataError, match="cannot read image"):  # met by a trial's DataLoader
        FolderImages(items, 8, skip=False)[position]
    stand_in, _ = streamed.splits()["train"][position]  # the next readable image
    assert torch.equal(stand_in, streamed.splits()["train"][position + 1][0])


def test_a_loader_plugin_gives_arrays_or_datasets_in_memory_or_streamed(tmp_path):
    loader_plugin(tmp_path, "digits_loader")  # not my_data: the example's, imported elsewhere
    base = {"name": "digits_loader:load", "code_dir": str(tmp_path)}
    arrays = load_dataset({**base, "args": {"kind": "arrays"}})
    datasets = load_dataset({**base, "args": {"kind": "datasets"}})
    assert torch.equal(arrays.x_train, datasets.x_train) and torch.equal(
        arrays.y_val, datasets.y_val
    )
    assert arrays.x_train.shape == (480, 1, 8, 8) and arrays.num_classes == 10
    streamed = load_dataset({**base, "args": {"kind": "datasets"}, "placement": "stream"})
    assert isinstance(streamed, Streamed) and streamed.counts == {"train": 480, "val": 120}
    config = {"model": MODEL, "epochs": 4, "seed": 0, "lr": 1e-2}
    in_memory = fit(config, datasets, lambda m, s: None)
    assert in_memory["val_acc"] > 0.3  # chance is 0.1: both learned from the loader's data
    assert fit(config, streamed, lambda m, s: None)["val_acc"] > 0.3


BAD_LOADERS = {
    "lengths differ": ("return x, y[:-1], x, y", "train split has 100 examples and 99 labels"),
    # (float targets are a regression set's: tests/test_regression.py)
    "labels not one per example": ("return x, y[:, None], x, y", "labels must be integers"),
    "negative label": ("return x, y - 1, x, y", "label -1 is negative"),
    "empty split": ("return x, y, x[:0], y[:0]", "val split is empty"),
    "images without channels": ("return x[:, 0], y, x[:, 0], y", "images must be (N, C, H, W)"),
    "NaN features": ("x = x.reshape(100, -1); x[3, 4] = float('nan'); return x, y, x, y",
                     "NaN or infinite features"),
    "three values": ("return x, y, x", "returned 3 values"),
    "raises": ("raise OSError('no such bucket')", "raised OSError: no such bucket"),
    "wrong args": (None, "dataset.args"),
}  # fmt: skip


@pytest.mark.parametrize("body, said", BAD_LOADERS.values(), ids=BAD_LOADERS.keys())
def test_a_bad_loader_exits_2_with_one_line_and_records_nothing(body, said, tmp_path, request):
    module = "data_" + re.sub(r"\W", "_", request.node.callspec.id)
    source = (
        "import numpy as np\n\ndef load():\n"
        "    x = np.random.default_rng(0).random((100, 1, 8, 8)).astype('float32')\n"
        "    y = np.arange(100) % 10\n"
        f"    {body or 'return x, y, x, y'}\n"
    )
    write_module(tmp_path, module, source)
    study = {"dataset": {"name": f"{module}:load", **({"args": {"n": 3}} if body is None else {})},
             "model": MODEL}  # fmt: skip
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    root = tmp_path / "runs"
    result = CliRunner().invoke(
        app, ["run", str(tmp_path / "study.yaml")], env={"STUDY_ROOT": str(root)}
    )
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: dataset."), result.stderr
    assert said in lines[0], lines[0]
    assert not root.exists()


def children(root, name):
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("study.role") == "parent")
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags], client.get_run(
        parent.info.run_id
    )


# one at a time: a single trial actor to start (these studies check no concurrency)
SMALL = ["search.num_samples=2", "search.max_concurrent=1", "scheduler.max_epochs=2",
         "scheduler.grace_period=2"]  # fmt: skip


def run_study(tmp_path, study: dict, name: str, ray: str):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "model": MODEL, **study}))
    root = tmp_path / "runs"
    args = [a for o in SMALL for a in ("--set", o)]
    done = study_cli("run", str(path), *args, root=root, ray=ray)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return root


@pytest.mark.parametrize("placement", ["memory", "stream"])
def test_an_image_folder_study_through_ray_exports_and_retrains(
    placement, folder, tmp_path, ray_head
):
    name = f"pets-{placement}"
    study = {"dataset": spec(folder, placement=placement)}
    root = run_study(tmp_path, study, name, ray_head["address"])
    runs, parent = children(root, name)
    assert len(runs) == 2 and all(r.data.tags["outcome"] == "completed" for r in runs)
    assert all(r.data.params["dataset.placement"] == placement for r in runs)
    mean = yaml.safe_load(runs[0].data.params["dataset.mean"])
    assert mean == list(load_dataset(spec(folder), seed=0).mean)  # recorded with the study
    [logged] = parent.inputs.dataset_inputs  # the data set on the parent run, as MLflow shows it
    tags = {t.key: t.value for t in logged.tags}
    assert logged.dataset.name == "image_folder" and str(folder) in logged.dataset.source
    assert tags["train_examples"] == "210" and tags["val_examples"] == "69"
    best = tmp_path / "best.yaml"
    runner = CliRunner()
    exported = runner.invoke(app, ["export", name, "-o", str(best)], env={"STUDY_ROOT": str(root)})
    assert exported.exit_code == 0, exported.stderr
    assert yaml.safe_load(best.read_text())["config"]["dataset"]["placement"] == placement
    trained = runner.invoke(app, ["train", str(best), "--no-log"], env={"STUDY_ROOT": str(root)})
    assert trained.exit_code == 0, trained.stderr
    found = re.search(r"val_acc (\d\.\d+) \(the trial reported (\d\.\d+)", trained.stdout)
    assert found and abs(float(found[1]) - float(found[2])) <= 0.005, trained.stdout[-1500:]


def test_a_loader_plugin_study_runs_through_ray(tmp_path, ray_head):
    """Arrays, in memory (the cluster test streams the Dataset variant on its workers)."""
    loader_plugin(tmp_path, "my_stream_data")
    study = {"dataset": {"name": "my_stream_data:load", "args": {"kind": "arrays"}}}
    root = run_study(tmp_path, study, "loader-stream", ray_head["address"])
    runs, parent = children(root, "loader-stream")
    assert len(runs) == 2 and all(r.data.tags["outcome"] == "completed" for r in runs)
    assert all(0 <= r.data.metrics["val_acc"] <= 1 and r.data.tags["epochs"] == "2" for r in runs)
    assert runs[0].data.params["dataset.source.sha256"]
    [logged] = parent.inputs.dataset_inputs
    assert logged.dataset.name == "my_stream_data:load"
    assert "my_stream_data:load" in logged.dataset.source
