"""The GPU path of the training loop: device placement, bf16 autocast, channels_last,
torch.compile, checkpoints moving between a GPU and the CPU, and what a GPU trial records.

Tests marked `cuda` are skipped where torch sees no CUDA GPU (tests/conftest.py);
`python -m benchmarks.gpu` runs them on a GPU machine. The last test runs on the CPU: a
checkpoint in a GPU's format resumes there.
"""

import math
from copy import deepcopy

import pytest
import torch
from torch import nn

import trainables.loop as loop
from study.engines.trial import GPU_PEAK, GPU_TAG, device_tags, gpu_memory
from tests.data_files import fake_cifar10
from trainables import fit, load_dataset
from trainables.loop import load_state, restore, start, train_epoch

CNN = {"name": "cnn", "channels": [8, 16], "widths": [32]}
MLP = {"name": "mlp", "widths": [64]}
BASE = {"lr": 3e-3, "optimizer": "adam", "batch_size": 32, "epochs": 2, "seed": 0}
AUGMENTED = {"hflip": True, "crop_padding": 4, "mixup_alpha": 0.2}  # the device generator's


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """200 CIFAR-10-format images (150 to train) read through the real loader, on the CPU."""
    root = tmp_path_factory.mktemp("cifar")
    fake_cifar10(root, per_batch=40)
    return load_dataset({"name": "cifar10", "root": str(root), "val_fraction": 0.25}, seed=0)


def on(monkeypatch, kind: str) -> None:
    """The loop trains on `kind` (cuda or cpu) whatever the machine has, as a trial that Ray
    gave a GPU, or none, does."""
    monkeypatch.setattr(loop, "device", lambda: torch.device(kind))


@pytest.mark.cuda
def test_the_model_the_data_and_the_state_live_on_the_gpu(images):
    run = start({**BASE, "model": CNN}, images)
    assert run.device.type == "cuda"
    assert all(p.is_cuda for p in run.setup.model.parameters())
    assert run.feed.data.x_train.is_cuda and run.feed.data.y_train.is_cuda  # resident
    x, target = next(iter(run.feed.train(32, 1)))
    assert x.is_cuda and target.is_cuda and x.shape == (32, 3, 32, 32)
    states = []
    metrics = fit({**BASE, "model": CNN}, images, lambda m, s: states.append(s))
    assert math.isfinite(metrics["val_loss"]) and len(states) == 2
    assert all(t.is_cuda for t in states[-1]["model"].values())
    assert states[-1]["cuda"] is not None  # the CUDA generator's state is kept too


@pytest.mark.cuda
def test_training_runs_under_bf16_autocast_with_float32_weights(images):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    run = start({**BASE, "model": CNN}, images)
    assert run.amp
    dtypes = []
    run.setup.model.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    peak = train_epoch(run, 1)
    assert dtypes and set(dtypes) == {torch.bfloat16}  # the logits of every batch
    assert math.isfinite(peak)
    assert all(p.dtype == torch.float32 for p in run.setup.model.parameters())


@pytest.mark.cuda
def test_convolutions_run_channels_last_and_an_mlp_is_left_alone(images):
    run = start({**BASE, "model": CNN}, images)
    assert run.channels_last
    convs = [m for m in run.setup.model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    layouts = []  # of the first convolution's input, batch by batch
    last = torch.channels_last
    convs[0].register_forward_pre_hook(
        lambda m, args: layouts.append(args[0].is_contiguous(memory_format=last))
    )
    train_epoch(run, 1)
    assert layouts and all(layouts)
    assert not start({**BASE, "model": MLP}, images).channels_last


@pytest.mark.cuda
@pytest.mark.parametrize("saved_on, resumed_on", [("cuda", "cpu"), ("cpu", "cuda")])
def test_a_checkpoint_saved_on_one_device_resumes_on_the_other(
    saved_on, resumed_on, images, tmp_path, monkeypatch
):
    """Saved as a trial saves it (torch.save of its state), read by load_state, resumed on the
    other device: same weights, optimizer state on the new device, epochs 2 and 3 trained."""
    config = {**BASE, **AUGMENTED, "model": CNN, "epochs": 3}
    on(monkeypatch, saved_on)
    fit({**config, "stop_epoch": 1}, images, lambda m, s: torch.save(s, tmp_path / "state.pt"))
    state = load_state(tmp_path / "state.pt")
    assert (state["cuda"] is not None) == (saved_on == "cuda")

    on(monkeypatch, resumed_on)
    run = start(config, images)
    assert restore(run, state) == 2
    for name, tensor in run.setup.model.state_dict().items():
        assert tensor.device.type == resumed_on and torch.equal(tensor.cpu(), state["model"][name])
    moments = [t for s in run.setup.optimizer.state.values() for t in s.values() if t.dim()]
    assert moments and all(t.device.type == resumed_on for t in moments)
    assert math.isfinite(train_epoch(run, 2))

    epochs = []
    fit(config, images, lambda m, s: epochs.append(m), state)
    assert [m["epoch"] for m in epochs] == [2, 3]
    assert all(math.isfinite(m["val_loss"]) for m in epochs)


@pytest.mark.cuda
@pytest.mark.parametrize("compiled", [False, True])
def test_torch_compile_on_and_off_train_alike(compiled, images):
    """`compile: true` trains through torch.compile's module; both learn the same batches."""
    config = {**BASE, "model": MLP, "compile": compiled, "epochs": 1}
    run = start(config, images)
    assert (run.forward is not run.setup.model) == compiled
    torch._dynamo.reset()  # each case compiles afresh
    first = fit(config, images, lambda m, s: None)
    plain = fit({**config, "compile": False}, images, lambda m, s: None)
    assert first["train_loss"] == pytest.approx(plain["train_loss"], rel=0.05)


@pytest.mark.cuda
def test_a_gpu_trial_reports_its_gpu_and_its_peak_memory(images):
    """What study.engines.trial adds to a GPU trial's results, for its MLflow run."""
    dev = torch.device("cuda")
    torch.cuda.reset_peak_memory_stats(dev)
    fit({**BASE, "model": CNN, "epochs": 1}, images, lambda m, s: None)
    assert device_tags(dev) == {"device": "cuda", GPU_TAG: torch.cuda.get_device_name(0)}
    peak = gpu_memory(dev)[GPU_PEAK]
    data_mib = images.x_train.numel() * 4 / 2**20  # the training images on the GPU, as floats
    assert data_mib < peak < torch.cuda.get_device_properties(0).total_memory / 2**20


@pytest.mark.parametrize("augmented", [False, True])
def test_a_checkpoint_in_a_gpus_format_resumes_on_the_cpu(augmented, images, monkeypatch):
    """A GPU's checkpoint holds a CUDA generator's state (16 bytes of Philox seed and offset),
    which a CPU generator cannot take: the CPU reseeds its augmentation from the seed and the
    epoch instead, the same on every such resume. A CPU checkpoint still restores exactly."""
    on(monkeypatch, "cpu")
    config = {**BASE, **(AUGMENTED if augmented else {}), "model": CNN, "epochs": 2}
    states, full = [], []
    fit(config, images, lambda m, s: (full.append(m), states.append(deepcopy(s))))
    rest = []
    fit(config, images, lambda m, s: rest.append(m), states[0])
    assert rest[0]["val_loss"] == full[1]["val_loss"]  # same device: the same draws

    from_gpu = {**states[0], "augment": torch.zeros(16, dtype=torch.uint8),
                "cuda": torch.zeros(16, dtype=torch.uint8)}  # fmt: skip
    first, second = [], []  # each from its own copy, as each resume reads its own file
    fit(config, images, lambda m, s: first.append(m), deepcopy(from_gpu))
    fit(config, images, lambda m, s: second.append(m), deepcopy(from_gpu))
    assert [m["epoch"] for m in first] == [2] and math.isfinite(first[0]["val_loss"])
    assert first[0]["val_loss"] == second[0]["val_loss"]
