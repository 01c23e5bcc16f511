"""Bad input: exit code 2 and one line that names the field and the fix, before anything runs."""

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import search_spaces
import study.commands.preflight  # noqa: F401  (imported before a test drops root's rights)
from benchmarks.common import free_port
from study.cli import app
from study.spec import param_problem
from tests.conftest import study_cli
from trainables import DOMAINS, HYPERPARAMETERS, Domain

SPACE = "space.params"

CASES = {
    "unknown top-level key": (["nme=x"], "nme: unknown key", "did you mean 'name'"),
    "unknown nested key": (["search.num_sampels=4"], "search.num_sampels", "'num_samples'"),
    "unknown --set key": (["scheduler.patience=3"], "scheduler.patience: unknown key", "known:"),
    "unknown dataset": (["dataset.name=mnistt"], "dataset.name: unknown data set", "use one of"),
    "unknown space": (["space=regularisation"], "space: unknown space", "study spaces"),
    "low above high": ([f"{SPACE}.lr.low=0.5"], f"{SPACE}.lr: low (0.5) > high", "make low <="),
    "log with low 0": ([f"{SPACE}.lr.low=0"], f"{SPACE}.lr: log scale needs low > 0", "raise low"),
    "empty choices": ([f"{SPACE}.batch_norm.choices=[]"], f"{SPACE}.batch_norm", "at least one"),
    "bad param type": ([f"{SPACE}.lr.type=real"], f"{SPACE}.lr: type must be", "categorical"),
    "num_samples 0": (["search.num_samples=0"], "search.num_samples: must be", "(got 0)"),
    "grace over budget": (["scheduler.grace_period=50"], "grace_period (50) > max_epochs", "make"),
    "brackets past the rungs": (
        ["scheduler.brackets=4"],
        "scheduler.brackets: 4, but 2 rungs make at most 3 brackets",
        "make brackets at most 3",
    ),
    "a knob no plug-in takes": (
        [f"{SPACE}.kernel_size={{type: int, low: 1, high: 5}}"],
        f"{SPACE}.kernel_size: unknown name",
        "known: lr",
    ),
    "unknown hyperparameter": (["fixed.weight_decy=0.1"], "fixed.weight_decy", "'weight_decay'"),
    "fixed and sampled": (["fixed.lr=0.1"], "fixed.lr: also in the space", "remove it"),
    "unknown metric": (["metric=accuracy"], "metric: unknown metric", "val_acc"),
    "gpu on a machine without": (
        ["resources.gpu=64"],
        "resources.gpu: 64 GPU",
        "set resources.gpu",
    ),
    "too many cpus": (["resources.cpu=4096"], "resources.cpu: 4096 per trial", "at most"),
    "unknown condition name": (
        [f"{SPACE}.dropout.when={{optimzer: sgd}}"],
        f"{SPACE}.dropout.when: 'optimzer' is neither",
        "modality",
    ),
    "unknown optimizer": (["fixed.optimizer=lbfgs"], "fixed.optimizer: 'lbfgs' is not", "adamw"),
    "grid over a float": (["search.sampler=grid"], "search.sampler: grid needs", "as choices"),
    "enqueue on a grid": (
        ["search.sampler=grid", "search.enqueue=[unregularized]"],
        "search.enqueue: the grid sampler runs",
        "use sampler gp",
    ),
    "more enqueued than trials": (
        ["search.num_samples=1", "search.enqueue=[unregularized, {dropout: 0.1}]"],
        "search.enqueue: 2 configs, but num_samples is 1",
        "raise",
    ),
    "terminate on a grid": (
        ["search.sampler=grid", "search.terminate=true"],
        "search.terminate: the grid sampler runs every point",
        "use sampler gp",
    ),
    "warm start at random": (
        ["search.sampler=random", "search.warm_start=[old]"],
        "search.warm_start: the random sampler learns nothing",
        "gp or tpe",
    ),
    "enqueue outside the space": (
        ["search.enqueue=[{lr: 0.5}]"],
        "search.enqueue[1].lr: given 0.5 is outside",
        "widen",
    ),
    "warm start from nowhere": (
        ["search.warm_start=[nowhere]"],
        "search.warm_start: no study 'nowhere'",
        "studies there",
    ),
    "cnn on a table": (["dataset.name=circles", "model.name=cnn"], "model.name: cnn needs", "mlp"),
    "csv without a path": (["dataset.name=csv"], "dataset: csv needs path", "dataset.path"),
    "missing image files": (
        ["dataset.name=mnist", "dataset.root=/nonexistent"],
        "dataset.root: mnist not found under /nonexistent",
        "download: true",
    ),
    "bad --set syntax": (["search.num_samples"], "--set 'search.num_samples'", "key.sub=value"),
    "classification metric on regression data": (
        ["dataset.name=diabetes"],  # the default study file says metric: val_acc
        "metric: val_acc is a classification metric and diabetes is a regression data set",
        "val_rmse",
    ),
    "regression loss on classes": (
        ["fixed.loss=mse"],
        "fixed.loss: loss mse is for regression and digits is a classification data set",
        "use cross_entropy",
    ),
    "label smoothing on regression data": (
        ["dataset.name=diabetes", "metric=val_rmse", "fixed.label_smoothing=0.1"],
        "fixed.label_smoothing: label_smoothing is for classes",
        "remove it",
    ),
    "monitoring a regression metric on classes": (
        ["fixed.patience=3", "fixed.monitor=val_rmse"],
        "fixed.monitor: val_rmse is a regression metric",
        "monitor one of val_loss, val_acc",
    ),
    "negative patience": (["fixed.patience=-1"], "fixed.patience: -1 is too small", "integer"),
    "task against a built-in": (
        ["dataset.name=diabetes", "dataset.task=classification"],
        "dataset.task: diabetes is a regression data set",
        "remove task",
    ),
    "bad optuna storage": (
        ["search.storage=nosuchdb://x"],
        "search.storage: cannot open the Optuna storage nosuchdb://x",
        "fix the URL",
    ),
}


def run_cli(args: list[str], root) -> tuple[int, str, float]:
    started = time.perf_counter()
    result = CliRunner().invoke(app, args, env={"STUDY_ROOT": str(root)})
    return result.exit_code, result.stderr, time.perf_counter() - started


@pytest.mark.parametrize("overrides, field, fix", CASES.values(), ids=CASES.keys())
def test_bad_override_exits_2_with_one_line(overrides, field, fix, tmp_path):
    root = tmp_path / "runs"
    args = ["run"] + [a for o in overrides for a in ("--set", o)]
    code, stderr, seconds = run_cli(args, root)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert field in lines[0] and fix in lines[0], lines[0]
    assert seconds < 10
    assert not root.exists()  # nothing launched, nothing recorded


def test_malformed_yaml_names_the_line(tmp_path):
    spec = tmp_path / "broken.yaml"
    spec.write_text("name: x\nsearch:\n  num_samples: [4\n")
    code, stderr, _ = run_cli(["run", str(spec)], tmp_path / "runs")
    assert code == 2
    assert f"{spec}: malformed YAML at line" in stderr and "fix the syntax" in stderr


def test_spec_that_is_not_a_mapping(tmp_path):
    spec = tmp_path / "list.yaml"
    spec.write_text("- name\n- dataset\n")
    code, stderr, _ = run_cli(["run", str(spec)], tmp_path / "runs")
    assert code == 2 and "a spec is a mapping" in stderr


def test_missing_spec_file(tmp_path):
    code, stderr, _ = run_cli(["run", str(tmp_path / "nope.yaml")], tmp_path / "runs")
    assert code == 2 and "nope.yaml: cannot read it (No such file or directory)" in stderr


def test_space_file_with_a_bad_condition(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(
        "params:\n"
        "  momentum: {type: float, low: 0.0, high: 0.9, when: {optimizer: sgd}}\n"
        "  optimizer: {type: categorical, choices: [sgd, adam]}\n"
    )
    code, stderr, _ = run_cli(["run", "--set", f"space={space}"], tmp_path / "runs")
    assert code == 2
    assert "params.momentum.when names 'optimizer'" in stderr and "list 'optimizer' first" in stderr


def test_unreachable_tracking_server(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    code, stderr, _ = run_cli(["run", "--set", f"tracking.uri={uri}"], tmp_path / "runs")
    assert code == 2
    assert f"tracking.uri: cannot reach the MLflow server at {uri}" in stderr


def test_export_of_an_unknown_study(tmp_path):
    code, stderr, _ = run_cli(["export", "no-such-study"], tmp_path / "runs")
    assert code == 2 and "no study 'no-such-study'" in stderr


def test_train_with_an_unknown_config_key(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("config: {lr: 0.1, dropot: 0.2, epochs: 1, seed: 0}\n")
    code, stderr, _ = run_cli(["train", str(config)], tmp_path / "runs")
    assert code == 2 and "config.dropot: unknown key" in stderr


def test_real_process_exit_code_and_stderr(tmp_path):
    root = tmp_path / "runs"
    done = study_cli("run", "--set", "search.num_samples=0", root=root, timeout=120)
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == "error: search.num_samples: must be greater than or equal to 1 (got 0)"
    )
    assert not root.exists()


# ---- every hyperparameter's domain, cases generated from the declared domains --------------


def outside(domain: Domain) -> list:
    """Values a hyperparameter of `domain` must refuse: one per way out of it."""
    if domain.boolean:
        return [1, "maybe", None]
    if domain.choices:
        return ["no_such_value", 1, True]
    values = ["abc", True]
    if domain.low is not None:
        values.append(domain.low if domain.open_low else domain.low - 1)
    if domain.high is not None:
        values.append(domain.high if domain.open_high else domain.high + 1)
    if domain.integer:
        values.append((domain.low or 0) + 1.5)
    return values


def inside(domain: Domain):
    """A value inside `domain` other than the usual default."""
    if domain.boolean:
        return True
    if domain.choices:
        return domain.choices[-1]
    low = domain.low if domain.low is not None else 0
    value = low + 1 if domain.integer else low + (domain.high - low if domain.high else 1) / 2
    return int(value) if domain.integer else value


def other_space(name: str) -> str:
    """A one-parameter space without `name`, so that `fixed.<name>` is not also sampled."""
    other = "weight_decay" if name == "lr" else "lr"
    return f"space={{params: {{{other}: {{type: float, low: 0.001, high: 0.01}}}}}}"


def fixed_cases():
    for name, domain in DOMAINS.items():
        for value in outside(domain):
            overrides = [other_space(name), f"fixed.{name}={json.dumps(value)}"]
            yield pytest.param(overrides, f"fixed.{name}: {value!r}", domain, id=f"{name}={value}")


def space_cases():
    for name, domain in DOMAINS.items():
        good = inside(domain)
        for value in outside(domain):
            choices = {"type": "categorical", "choices": [good, value]}
            yield pytest.param(choices, f"choice {value!r}", domain, id=f"{name} in {value}")
        if domain.boolean or domain.choices:
            param = {"type": "float", "low": 0.0, "high": 1.0}
            yield pytest.param(param, "use type: categorical", domain, id=f"{name} as a range")
            continue
        if domain.integer:
            param = {"type": "float", "low": float(good), "high": float(good) + 1}
            yield pytest.param(param, "use type: int", domain, id=f"{name} as a float range")
        kind = "int" if domain.integer else "float"
        for value in outside(domain):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if domain.integer and not isinstance(value, int):
                    continue  # the int range itself refuses 1.5
                bound = "low" if domain.low is not None and value <= domain.low else "high"
                low, high = (value, good) if bound == "low" else (good, value)
                param = {"type": kind, "low": low, "high": high}
                yield pytest.param(
                    param, f"{bound} {value!r}", domain, id=f"{name} {bound}={value}"
                )


def one_error_line(args: list[str], root) -> str:
    code, stderr, seconds = run_cli(args, root)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert seconds < 10 and not root.exists()
    return lines[0]


@pytest.mark.parametrize("overrides, said, domain", fixed_cases())
def test_a_fixed_value_outside_its_domain_is_refused(overrides, said, domain, tmp_path):
    line = one_error_line(["run"] + [a for o in overrides for a in ("--set", o)], tmp_path / "r")
    assert line.startswith(f"error: {said} ") and line.endswith(f"takes {domain}"), line


@pytest.mark.parametrize("param, said, domain", space_cases())
def test_a_space_that_samples_outside_a_domain_is_refused(param, said, domain, tmp_path, request):
    name = request.node.callspec.id.split(" ")[0]
    spec = tmp_path / "study.yaml"  # the default study fixes some knobs: this one fixes none
    spec.write_text(yaml.safe_dump({"space": {"params": {name: param}}}))
    line = one_error_line(["run", str(spec)], tmp_path / "r")
    assert line.startswith(f"error: space.params.{name}: ") and said in line, line
    assert str(domain) in line, line


def test_every_default_and_every_shipped_space_is_inside_the_domains():
    for name, default in HYPERPARAMETERS.items():
        assert DOMAINS[name].problem(default) is None, name
    for name in search_spaces.names():
        for param, dist in search_spaces.load(name).params.items():
            assert param_problem(param, dist) is None, (name, param)


def test_an_exported_config_outside_a_domain_is_refused_by_train(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("config: {lr: -0.1, epochs: 1, seed: 0, dataset: {}, model: {}}\n")
    code, stderr, _ = run_cli(["train", str(config)], tmp_path / "runs")
    assert code == 2 and "config.lr: -0.1 is too small; lr takes a number > 0" in stderr


# ---- spec files that are not YAML text, duplicate keys, empty files -------------------------

FILES = {
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not UTF-8 text (byte 0 is 0x89)"),
    "latin-1": ("name: caf\xe9\n".encode("latin-1"), "not UTF-8 text (byte 9 is 0xe9)"),
    "utf-16": ("name: x\n".encode("utf-16"), "not UTF-8 text"),
    "nul bytes": (b"name: a\x00b\n", "a binary file, not YAML text"),
    "control character": (b"name: a\x07b\n", "malformed YAML"),
    "duplicate top-level key": (
        b"name: a\nmetric: val_acc\nname: b\n",
        "duplicate key 'name' at line 3 (first at line 1); keep one of them",
    ),
    "duplicate nested key": (
        b"search:\n  num_samples: 4\n  seed: 1\n  num_samples: 8\n",
        "duplicate key 'num_samples' at line 4 (first at line 2)",
    ),
    "empty": (b"", "the file is empty; write a spec in it, or run `study run` with no file"),
    "comments only": (b"# a study\n\n", "the file is empty"),
}


@pytest.mark.parametrize("content, said", FILES.values(), ids=FILES.keys())
def test_a_spec_file_that_is_not_a_yaml_mapping_is_refused(content, said, tmp_path):
    spec = tmp_path / "study.yaml"
    spec.write_bytes(content)
    line = one_error_line(["run", str(spec)], tmp_path / "runs")
    assert line.startswith(f"error: {spec}: ") and said in line, line


@pytest.mark.parametrize("content, said", FILES.values(), ids=FILES.keys())
def test_a_space_file_that_is_not_yaml_text_is_refused(content, said, tmp_path):
    if said.startswith("the file is empty"):
        said = "holds no mapping"
    space = tmp_path / "space.yaml"
    space.write_bytes(content)
    line = one_error_line(["run", "--set", f"space={space}"], tmp_path / "runs")
    assert line.startswith(f"error: space: {space}") and said in line, line


def test_a_directory_given_as_the_spec_is_refused(tmp_path):
    line = one_error_line(["run", str(tmp_path)], tmp_path / "runs")
    assert line == f"error: {tmp_path}: cannot read it (Is a directory); check the path"


def _run_unprivileged(spec: str, root: str, answer) -> None:
    if os.getuid() == 0:  # root reads any file: run as nobody, everything already imported
        os.setgid(65534)
        os.setuid(65534)
    result = CliRunner().invoke(app, ["run", spec], env={"STUDY_ROOT": root})
    answer.send((result.exit_code, result.stderr))


def test_a_spec_file_without_read_permission_is_refused(tmp_path):
    spec = tmp_path / "study.yaml"
    spec.write_text("name: secret\n")
    spec.chmod(0)
    tmp_path.chmod(0o755)
    receive, send = multiprocessing.get_context("fork").Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(
        target=_run_unprivileged, args=(str(spec), str(tmp_path / "runs"), send)
    )
    child.start()
    code, stderr = receive.recv()
    child.join()
    assert code == 2, stderr
    assert stderr.strip() == f"error: {spec}: cannot read it (Permission denied); check the path"


# ---- the CLI's own text -----------------------------------------------------------------------


def test_help_keeps_what_stands_in_square_brackets():
    done = CliRunner().invoke(app, ["run", "--help"])
    text = " ".join(done.stdout.split())  # the help wraps lines at 78 columns
    assert "Study YAML file [default: the shipped digits study]." in text
    assert "Root folder of all study files [default: $STUDY_ROOT or ./runs]." in text


def test_spaces_is_a_table_with_every_parameter_whole_at_80_columns():
    done = CliRunner().invoke(app, ["spaces"], env={"COLUMNS": "80"})
    assert done.exit_code == 0
    assert "{" not in done.stdout and "'type'" not in done.stdout  # no dict reprs
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    words = {word.strip(",") for line in lines for word in line.split()}
    starts = [i for i, line in enumerate(lines) if line.split(":")[0] in search_spaces.names()]
    ends = [*starts[1:], None]
    tables = {lines[i].split(":")[0]: lines[i:j] for i, j in zip(starts, ends, strict=True)}
    for name in search_spaces.names():
        for param, dist in search_spaces.load(name).params.items():
            row = next(line.split() for line in tables[name] if line.split()[:1] == [param])
            assert row[1] == dist.type  # the name and type whole, on the parameter's line
            shown = [_spelled(choice) for choice in getattr(dist, "choices", [])]
            for key, wanted in (dist.when or {}).items():
                shown += [key, *map(_spelled, wanted if isinstance(wanted, list) else [wanted])]
            for word in shown:
                assert word in words, (param, word)


def _spelled(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


@pytest.mark.parametrize(
    "rows, task, said",
    [
        ([f"{i},{'nan' if i == 5 else i % 7}" for i in range(40)], "regression",
         "column 'y' has missing values"),
        ([f"{i},{'inf' if i == 5 else i % 7}" for i in range(40)], "regression",
         "targets hold NaN or infinite values"),
        ([f"{i},3.5" for i in range(40)], "regression", "training target is constant"),
    ],
    ids=["nan target", "infinite target", "constant target"],
)  # fmt: skip
def test_csv_targets_no_network_can_regress_are_refused_before_anything_runs(
    rows, task, said, tmp_path
):
    table = tmp_path / "t.csv"
    table.write_text("x,y\n" + "\n".join(rows) + "\n")
    root = tmp_path / "runs"
    overrides = [f"dataset.path={table}", "dataset.target=y", f"dataset.task={task}",
                 "dataset.name=csv", "metric=val_rmse"]  # fmt: skip
    code, stderr, _ = run_cli(["run"] + [a for o in overrides for a in ("--set", o)], root)
    assert code == 2, stderr
    (line,) = stderr.strip().splitlines()
    assert line.startswith("error: dataset.") and said in line, line
    assert not root.exists()


def test_an_error_of_ours_that_escapes_a_command_is_one_line_and_a_traceback_file(tmp_path):
    """No rich traceback box: `status` meeting a stage record it cannot read (written by
    hand: the driver writes it whole) says one line naming the file its traceback went to."""
    root = tmp_path / "runs"
    folder = root / "studies" / "digits-regularization"
    folder.mkdir(parents=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump({"name": "digits-regularization"}))
    (folder / "stage.json").write_text("{not json")
    done = study_cli("status", "digits-regularization", root=root)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: JSONDecodeError: ") and "(traceback: " in line, line
    kept = line.rpartition("(traceback: ")[2].rstrip(")")
    assert "Traceback (most recent call last)" in Path(kept).read_text()
    assert "─" not in done.stdout + done.stderr  # no box
