"""The user's own network as `model.name: module:callable`, from a folder that is not a package
and not installed: preflight's one-line refusals and its ignored-knob warning, a local study
end to end with export, retrain and report, torchvision architectures."""

import re
import time

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from torch import nn
from typer.testing import CliRunner

from study.cli import app
from study.commands.preflight import preflight
from study.spec import load_spec
from tests.conftest import study_cli
from tests.plugin_files import EXAMPLE, example_plugin, write_module
from tests.test_data import fake_cifar10
from trainables.hyperparameters import resolve
from trainables.models import build_model, build_torchvision, num_params

STUDIES = EXAMPLE.parent.parent / "studies"

GOOD = """
from torch import nn

def build(input_shape, num_classes, hp, width=16):
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, num_classes)
    )
"""

# case: (module source, model mapping with {m} for the module's name, field, words said)
BAD = {
    "module not found": (None, {"name": "{m}_missing:build"}, "model.name", "no module"),
    "no such attribute": (GOOD, {"name": "{m}:buidl"}, "model.name", "has no attribute 'buidl'"),
    "import raises": ("import nosuchpackage_xyz\n", {"name": "{m}:build"}, "model.name",
                      "importing"),
    "syntax error": ("def build(:\n", {"name": "{m}:build"}, "model.name", "SyntaxError"),
    "not callable": ("build = 3\n", {"name": "{m}:build"}, "model.name", "not a callable"),
    "wrong signature": ("def build(x):\n    return x\n", {"name": "{m}:build"}, "model.name",
                        "must take (input_shape, num_classes, hp"),
    "unknown args key": (GOOD, {"name": "{m}:build", "args": {"widht": 8}}, "model.args",
                         "widht"),
    "not a module": ("def build(s, c, hp):\n    return [1]\n", {"name": "{m}:build"},
                     "model.name", "returned a list, not a torch.nn.Module"),
    "build raises": ("def build(s, c, hp):\n    raise ValueError('no width')\n",
                     {"name": "{m}:build"}, "model.name", "raised ValueError: no width"),
    "forward raises": (GOOD.replace("Linear(64", "Linear(65"), {"name": "{m}:build"},
                       "model.name", "forward pass"),
    "wrong output shape": (GOOD.replace("num_classes)", "5)"), {"name": "{m}:build"},
                           "model.name", "gave (2, 5)"),
}  # fmt: skip


def run_cli(args: list[str], root) -> tuple[int, str, float]:
    started = time.perf_counter()
    result = CliRunner().invoke(app, args, env={"STUDY_ROOT": str(root)})
    return result.exit_code, result.stderr, time.perf_counter() - started


@pytest.mark.parametrize("source, model, field, said", BAD.values(), ids=BAD.keys())
def test_a_bad_plugin_exits_2_with_one_line_and_records_nothing(
    source, model, field, said, tmp_path, request
):
    module = "net_" + re.sub(r"\W", "_", request.node.callspec.id)  # one module name per case
    folder = tmp_path / "code"
    if source is not None:
        write_module(folder, module, source)
    folder.mkdir(exist_ok=True)
    model = yaml.safe_load(yaml.safe_dump(model).replace("{m}", module))
    spec = folder / "study.yaml"
    spec.write_text(yaml.safe_dump({"name": "bad", "model": model}))
    root = tmp_path / "runs"
    code, stderr, seconds = run_cli(["run", str(spec)], root)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}: "), stderr
    assert said in lines[0], lines[0]
    assert seconds < 30
    assert not root.exists()  # no MLflow store, no Optuna storage, no Ray folder


def test_a_sampled_knob_the_network_ignores_is_warned_about(tmp_path):
    write_module(tmp_path, "net_ignores", GOOD)  # reads no knob at all
    spec = tmp_path / "study.yaml"
    space = {
        "lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        "batch_norm": {"type": "categorical", "choices": [True, False]},
    }
    study = {"model": {"name": "net_ignores:build"}, "space": {"params": space}}
    spec.write_text(yaml.safe_dump(study, sort_keys=False))
    said: list[str] = []
    preflight(load_spec(spec), tmp_path / "runs", warn=said.append)
    assert len(said) == 2, said  # dropout and batch_norm; lr is the loop's
    assert said[0].startswith("warning: space.params.dropout: net_ignores:build builds the same")
    assert said[1].startswith("warning: space.params.batch_norm:")
    # The example plug-in reads both: no warning.
    said.clear()
    example = load_spec(example_plugin(tmp_path / "example"))
    found = preflight(example, tmp_path / "runs", warn=said.append).found
    assert said == []
    assert found.model["source"]["file"].endswith("my_net.py") and found.model["source"]["sha256"]
    assert example.model.source is None  # the spec is input; what preflight found is a record


def final_value(stdout: str) -> tuple[float, float]:
    found = re.search(r"val_acc (\d\.\d+) \(the trial reported (\d\.\d+)", stdout)
    assert found, stdout[-2000:]
    return float(found[1]), float(found[2])


def test_a_plugin_study_runs_exports_retrains_and_reports(tmp_path, ray_head):
    code = tmp_path / "my code"  # a space in the path, as users have
    spec = example_plugin(code)
    root = tmp_path / "elsewhere" / "runs"  # study_cli runs in root's parent, not in `code`
    root.parent.mkdir()
    small = ["search.num_samples=4", "scheduler.max_epochs=4", "scheduler.grace_period=2"]
    small.append("search.max_concurrent=1")  # one trial actor to start
    args = [a for o in small for a in ("--set", o)]
    done = study_cli("run", str(spec), *args, root=root, ray=ray_head["address"])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("my-net-digits")
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 4
    for run in children:
        params = run.data.params
        assert params["model.name"] == "my_net:build" and params["model.args.width"] == "128"
        hp = resolve({k: yaml.safe_load(v) for k, v in params.items() if k in resolve({})})
        model = {"name": "my_net:build", "args": {"width": 128}, "code_dir": str(code)}
        built = build_model((1, 8, 8), 10, model, hp)
        assert params["num_params"] == str(num_params(built))
        assert len(params["model.source.sha256"]) == 64

    # The rest in this process (the CLI's own entry point): no Ray, no new imports to wait for.
    def cli(*args):
        return CliRunner().invoke(app, list(args), env={"STUDY_ROOT": str(root)})

    best = tmp_path / "best.yaml"
    exported = cli("export", "my-net-digits", "-o", str(best))
    assert exported.exit_code == 0, exported.stderr
    document = yaml.safe_load(best.read_text())
    assert document["config"]["model"]["source"]["file"] == str(code / "my_net.py")
    trained = cli("train", str(best), "--no-log")
    assert trained.exit_code == 0, trained.stderr[-3000:]
    assert "changed since the study" not in trained.stdout
    retrained, reported = final_value(trained.stdout)
    assert abs(retrained - reported) <= 0.005

    with open(code / "my_net.py", "a") as f:  # the user edits the plug-in after the study
        f.write("\n# tuned later\n")
    edited = cli("train", str(best), "--no-log")
    assert edited.exit_code == 0 and "my_net.py changed since the study" in edited.stdout

    report = cli("report", "my-net-digits")
    assert report.exit_code == 0, report.stderr[-3000:]
    assert (root / "studies" / "my-net-digits" / "report" / "report.html").exists()


# -- the network's and the loader's own knobs ---------------------------------------------------

# A network with a knob of its own (kernel_size) and one it takes but ignores (blocks), and a
# loader with one (noise): none of them is a hyperparameter of ours.
OWN_KNOBS = """
import numpy as np
from sklearn.datasets import load_digits
from torch import nn


def build(input_shape, num_classes, hp, width=16, kernel_size=3, blocks=1):
    channels, height, width_px = input_shape
    return nn.Sequential(
        nn.Conv2d(channels, 4, kernel_size, padding=kernel_size // 2), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * height * width_px, width), nn.ReLU(), nn.Linear(width, num_classes),
    )


def load(noise=0.0):
    digits = load_digits()
    images = (digits.images[:, None] / 16).astype(np.float32)
    images += noise * np.random.default_rng(0).standard_normal(images.shape, dtype=np.float32)
    images = images.clip(0, 1)
    return images[:1400], digits.target[:1400], images[1400:], digits.target[1400:]
"""


def own_knobs_study(folder, **space):
    write_module(folder, "own_net", OWN_KNOBS)
    study = {
        "name": "own-knobs",
        "model": {"name": "own_net:build", "args": {"width": 16}},
        "dataset": {"name": "own_net:load"},
        "space": {"params": {k: {"type": "categorical", "choices": v} for k, v in space.items()}},
        "fixed": {"lr": 0.01},
        "search": {"sampler": "grid", "max_concurrent": 2},
        "scheduler": {"name": "none", "max_epochs": 2},
    }
    spec = folder / "study.yaml"
    spec.write_text(yaml.safe_dump(study, sort_keys=False))
    return spec


def test_the_networks_and_loaders_own_knobs_are_tuned_recorded_exported_and_retrained(
    tmp_path, ray_head
):
    """kernel_size goes to the builder and noise to the loader, in each trial (through Ray) and
    in `study train`, recorded on every run and in the export; the retrain matches exactly."""
    spec = own_knobs_study(tmp_path / "code", kernel_size=[1, 3], noise=[0.0, 0.5])
    said: list[str] = []
    preflight(load_spec(spec), tmp_path / "runs", warn=said.append)
    assert said == []  # both knobs change what is trained
    root = tmp_path / "runs"
    done = study_cli("run", str(spec), root=root, ray=ray_head["address"])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("own-knobs").experiment_id
    runs = [r for r in client.search_runs([experiment]) if "mlflow.parentRunId" in r.data.tags]
    grid = sorted((r.data.params["kernel_size"], r.data.params["noise"]) for r in runs)
    assert grid == [("1", "0.0"), ("1", "0.5"), ("3", "0.0"), ("3", "0.5")]
    sizes = {r.data.params["kernel_size"]: int(r.data.params["num_params"]) for r in runs}
    assert sizes["3"] - sizes["1"] == 4 * (9 - 1)  # the builder got the sampled kernel size
    scores = {(r.data.params["kernel_size"], r.data.params["noise"]): r.data.metrics["val_acc"]
              for r in runs}  # fmt: skip
    assert scores[("3", "0.0")] != scores[("3", "0.5")]  # the loader got the sampled noise

    def cli(*args):
        return CliRunner().invoke(app, list(args), env={"STUDY_ROOT": str(root)})

    best = tmp_path / "best.yaml"
    assert cli("export", "own-knobs", "-o", str(best)).exit_code == 0
    config = yaml.safe_load(best.read_text())["config"]
    assert config["kernel_size"] in (1, 3) and config["noise"] in (0.0, 0.5)
    trained = cli("train", str(best), "--no-log")
    assert trained.exit_code == 0, trained.stderr[-3000:]
    assert "difference +0.0000" in trained.stdout, trained.stdout[-500:]
    config["kernel_sise"] = config.pop("kernel_size")  # an export edited by hand
    best.write_text(yaml.safe_dump({"config": config}))
    typo = cli("train", str(best), "--no-log")
    assert typo.exit_code == 2
    assert "config.kernel_sise: unknown key, and no plug-in of the config takes it" in typo.stderr


def test_an_own_knob_the_network_ignores_is_warned_about(tmp_path):
    """blocks is an argument of the builder that changes nothing it builds."""
    spec = own_knobs_study(tmp_path, kernel_size=[3], blocks=[1, 2])
    said: list[str] = []
    preflight(load_spec(spec), tmp_path / "runs", warn=said.append)
    assert len(said) == 1 and said[0].startswith(
        "warning: space.params.blocks: own_net:build builds the same network for blocks=1 and "
        "blocks=2"
    ), said
    assert "use the argument in it" in said[0]


@pytest.mark.parametrize(
    "name, model, says",
    [
        ("kernel_sise", "own_net:build", "error: space.params.kernel_sise: unknown name, not ours "
         "and not an argument of own_net:build or own_net:load; did you mean 'kernel_size'?"),
        ("kernel_size", "mlp", "error: space.params.kernel_size: unknown name; known: lr,"),
    ],
    ids=["a typo, with plug-ins", "a built-in model and loader"],
)  # fmt: skip
def test_a_name_no_plugin_takes_exits_2_with_one_line(tmp_path, name, model, says):
    spec = own_knobs_study(tmp_path / "code", **{name: [1, 3]})
    args = ["run", str(spec), "--set", f"model.name={model}"]
    if model == "mlp":
        args += ["--set", "dataset.name=digits", "--set", "model.args=null"]
    code, stderr, _ = run_cli(args, tmp_path / "runs")
    assert code == 2 and stderr.strip() == stderr.strip().splitlines()[0], stderr
    assert stderr.startswith(says), stderr
    assert not (tmp_path / "runs").exists()


# -- torchvision architectures -----------------------------------------------------------------


def test_torchvision_resnet_small_input_batch_norm_and_dropout():
    hp = resolve({"batch_norm": True})
    plain = build_torchvision((3, 32, 32), 10, hp, arch="resnet18")
    small = build_torchvision((3, 32, 32), 10, hp, arch="resnet18", small_input=True)
    assert plain.conv1.stride == (2, 2) and isinstance(plain.maxpool, nn.MaxPool2d)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    x = torch.rand(2, 3, 32, 32)
    assert small(x).shape == (2, 10)
    assert any(isinstance(m, nn.BatchNorm2d) for m in small.modules())
    no_bn = build_torchvision((3, 32, 32), 10, resolve({"batch_norm": False}), arch="resnet18")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in no_bn.modules())
    dropped = build_torchvision((1, 28, 28), 7, resolve({"dropout": 0.3}), arch="resnet18")
    assert isinstance(dropped.fc[0], nn.Dropout) and dropped.fc[0].p == 0.3
    assert dropped(torch.rand(2, 1, 28, 28)).shape == (2, 7)  # one channel: its first conv
    with pytest.raises(ValueError, match="model.small_input: only for ResNets"):
        build_torchvision((3, 32, 32), 10, hp, arch="vgg11", small_input=True)
    with pytest.raises(ValueError, match="model.arch: unknown architecture 'resnet19'"):
        build_torchvision((3, 32, 32), 10, hp, arch="resnet19")


def test_torchvision_keeps_batch_norm_unless_the_study_turns_it_off():
    spec = load_spec(STUDIES / "cifar10_resnet18.yaml", ["fixed={optimizer: sgd}"])
    assert spec.trial_constants()["batch_norm"] is True
    assert "batch_norm" not in load_spec(None).trial_constants()  # the mlp's default: false


def test_model_keys_that_belong_to_another_model_are_refused(tmp_path):
    code, stderr, _ = run_cli(["run", "--set", "model.arch=resnet18"], tmp_path / "runs")
    assert code == 2 and "error: model.arch: not a key of model mlp; remove it" in stderr
    code, stderr, _ = run_cli(
        ["run", "--set", "model.name=x:build", "--set", "model.widths=[3]"], tmp_path / "runs"
    )
    assert code == 2 and "model.widths: not a key of model x:build; put it in model.args" in stderr


def test_resnet18_small_input_on_cifar_files_through_ray_with_and_without_batch_norm(
    tmp_path, ray_head
):
    fake_cifar10(tmp_path / "data")
    spec = tmp_path / "resnet.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "resnet",
                "dataset": {"name": "cifar10", "root": str(tmp_path / "data"), "train_size": 48},
                "model": {"name": "torchvision", "arch": "resnet18", "small_input": True},
                "space": {
                    "params": {"batch_norm": {"type": "categorical", "choices": [True, False]}}
                },
                "fixed": {"optimizer": "sgd", "lr": 0.005, "batch_size": 16, "mixup_alpha": 0.2},
                "search": {"sampler": "grid", "max_concurrent": 2},
                "scheduler": {"name": "none", "max_epochs": 1},
            }
        )
    )
    root = tmp_path / "runs"
    done = study_cli("run", str(spec), root=root, ray=ray_head["address"])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("resnet").experiment_id
    runs = [r for r in client.search_runs([experiment]) if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.params["batch_norm"] for r in runs) == ["False", "True"]
    assert all(r.data.tags["outcome"] == "completed" for r in runs), [r.data.tags for r in runs]
    size = {r.data.params["batch_norm"]: int(r.data.params["num_params"]) for r in runs}
    bn_params = 2 * (64 * 5 + 128 * 5 + 256 * 5 + 512 * 5)  # weight and bias of each BatchNorm
    assert size["True"] - size["False"] == bn_params
