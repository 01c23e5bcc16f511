"""The example studies: every file validates, and the classic experiments show what they claim."""

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from study.spec import load_spec
from tests.conftest import study_cli
from tests.test_data import fake_mnist

STUDIES = sorted((Path(__file__).parent.parent / "studies").glob("*.yaml"))


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_example_study_is_valid(path):
    spec = load_spec(path)
    assert spec.search.num_samples >= 2


def val_acc_curves(root: Path, name: str) -> dict[str, list[float]]:
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    curves = {}
    for run in client.search_runs([experiment.experiment_id]):
        if "mlflow.parentRunId" in run.data.tags:
            history = sorted(
                client.get_metric_history(run.info.run_id, "val_acc"), key=lambda m: m.step
            )
            curves[run.info.run_name] = [m.value for m in history]
    return curves


def test_circles_batchnorm_learns_faster(tmp_path, ray_head):
    root = tmp_path / "runs"
    study = Path(__file__).parent.parent / "studies" / "circles_batchnorm.yaml"
    done = study_cli("run", str(study), root=root, ray=ray_head["address"])
    assert done.returncode == 0, done.stderr[-2000:]
    curves = val_acc_curves(root, "circles-batchnorm")
    assert set(curves) == {"t001 bn", "t002 no-bn"} or set(curves) == {"t001 no-bn", "t002 bn"}
    first = {
        "bn" if name.endswith(" bn") else "no-bn": next(i for i, a in enumerate(c, 1) if a >= 0.95)
        for name, c in curves.items()
    }
    assert first["bn"] < first["no-bn"]
    assert all(len(c) == 20 for c in curves.values())


def test_image_study_with_a_cnn_runs_through_ray_on_mnist_files(tmp_path, ray_head):
    fake_mnist(tmp_path / "data", "MNIST")
    root = tmp_path / "runs"
    study = Path(__file__).parent.parent / "studies" / "mnist_batchnorm.yaml"
    overrides = [
        f"dataset.root={tmp_path / 'data'}",
        "model.name=cnn",
        "model.channels=[4, 8]",
        "model.widths=[16]",
        "scheduler.max_epochs=2",
        "fixed.crop_padding=2",
    ]
    args = [a for o in overrides for a in ("--set", o)]
    done = study_cli("run", str(study), *args, root=root, ray=ray_head["address"])
    assert done.returncode == 0, done.stderr[-2000:]
    curves = val_acc_curves(root, "mnist-batchnorm")
    assert len(curves) == 6 and all(len(c) == 2 for c in curves.values())
