"""Where the data lives: a trial's samples per second with an image folder in memory (read
by the driver, on the trial's device) vs streamed (each trial's DataLoaders read the files),
and the driver's peak memory for the same folder and one 10x larger: streamed, the driver
holds only the index, so its memory must not grow with the data set.

    python -m benchmarks.placement [--images 2000] [--epochs 2]
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT, arguments, record

MODEL = {"name": "cnn", "channels": [16, 32], "widths": [64]}
SIZE = 32

# Run in a fresh process: its peak RSS is what loading the data set cost the driver.
PEAK = """
import json, sys
from trainables import load_dataset
import trainables.sources, PIL.Image, sklearn.model_selection  # imports are not the data

def kib(field):
    line = next(l for l in open("/proc/self/status") if l.startswith(field))
    return int(line.split()[1])

spec = json.loads(sys.argv[1])
open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) starts again from here
before = kib("VmRSS")
data = load_dataset(spec, seed=0)
print(json.dumps({"before": before / 1024, "peak": kib("VmHWM") / 1024}))
"""


def make_folder(root: Path, images: int, classes: int = 10) -> Path:
    """`images` PNGs of SIZE x SIZE in root/train/<class>/ and a quarter as many in val/."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", images), ("val", images // 4)):
        for i in range(count):
            label = i % classes
            folder = root / split / f"c{label}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            pixels[: SIZE // 2, :, label % 3] //= 2
            Image.fromarray(pixels).save(folder / f"{i:06d}.png")
    return root


def samples_per_second(spec: dict, epochs: int, threads: int) -> float:
    """Training samples per second of a trial over `epochs` (after one untimed epoch)."""
    from trainables import fit, load_dataset

    data = load_dataset(spec, seed=0)
    config = {"model": MODEL, "seed": 0, "lr": 1e-3, "threads": threads, "hflip": True}
    fit({**config, "epochs": 1}, data, lambda m, s: None)  # warm up: imports, workers, caches
    started = time.perf_counter()
    fit({**config, "epochs": epochs}, data, lambda m, s: None)
    return data.sizes()["train"] * epochs / (time.perf_counter() - started)


def peak_memory(spec: dict) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PEAK, json.dumps(spec)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    def options(parser):
        parser.add_argument("--images", type=int, default=2000, help="training images")
        parser.add_argument("--epochs", type=int, default=2)
        parser.add_argument("--threads", type=int, default=2, help="the trial's CPUs")

    args = arguments("Data placement: memory vs stream, speed and driver memory.", options)
    images, epochs = (200, 1) if args.quick else (args.images, args.epochs)
    with tempfile.TemporaryDirectory() as folder:
        small = make_folder(Path(folder) / "small", images)
        large = make_folder(Path(folder) / "large", images * 10)
        spec = {"name": "image_folder", "root": str(small), "image_size": SIZE}
        speed = {
            placement: samples_per_second({**spec, "placement": placement}, epochs, args.threads)
            for placement in ("memory", "stream")
        }
        rows, peaks = [], {}
        for placement in ("memory", "stream"):
            for name, root in (("1x", small), ("10x", large)):
                found = peak_memory({**spec, "root": str(root), "placement": placement})
                peaks[placement, name] = found["peak"] - found["before"]
            rows.append(
                [
                    placement,
                    images,
                    f"{speed[placement]:.0f}",
                    f"{speed[placement] / speed['memory']:.2f}x",
                    f"{peaks[placement, '1x']:.0f}",
                    f"{peaks[placement, '10x']:.0f}",
                    f"{peaks[placement, '10x'] / peaks[placement, '1x']:.2f}x"
                    if peaks[placement, "1x"] >= 1
                    else "-",
                ]
            )
    flat = peaks["stream", "10x"] <= 1.5 * peaks["stream", "1x"] + 16
    notes = (
        f"An image folder of {images} training PNGs ({SIZE}x{SIZE}, 10 classes; the 10x one has "
        f"{images * 10}), a CNN {MODEL['channels']} + {MODEL['widths']} on the CPU, "
        f"{args.threads} CPUs for the trial (streamed: "
        f"{args.threads // 2 or 0} DataLoader workers), hflip on, {epochs} timed epochs after "
        "one untimed. Driver memory: how far a fresh process's peak RSS (Linux's VmHWM, reset "
        "once the imports are done) rises while it loads the data set; placement memory "
        "decodes every image, stream reads the index and a sample of 512 images for the mean "
        "and std. Target: streamed, the driver's memory "
        f"does not grow with the data set: {'met' if flat else 'NOT met'}."
    )
    headers = ["placement", "train images", "samples/s", "vs memory",
               "driver MiB (1x)", "driver MiB (10x)", "10x / 1x"]  # fmt: skip
    record("Data placement: memory vs stream", args, headers, rows, notes)


if __name__ == "__main__":
    main()
