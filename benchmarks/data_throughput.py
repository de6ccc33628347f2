"""Images per second of one pass of the training loader, with 0 and N DataLoader workers.

    python benchmarks/data_throughput.py [--idx /usr/share/datasets/fashion-mnist] [--idx-sizes 28 224]
        [--jpegs 2000] [--jpeg-size 224] [--workers 0 1 2] [--batch 128] [--threads 1]

Two datasets, each through :func:`compressor.data.load_data` and :func:`compressor.data.make_loader`
with the training transform (what a training epoch reads):
- the Fashion-MNIST IDX files where Debian installs them (60,000 training images of 28x28, uint8
  in memory, grey replicated to RGB, light augmentation), at each of ``--idx-sizes``;
- an ImageFolder of ``--jpegs`` generated JPEGs of 256x256 in 10 classes (written once under
  /tmp/compress-bench-jpegs), decoded per item, RandomResizedCrop and flip to ``--jpeg-size``.
Each row: seconds of ``load_data`` (no image is read there), then one full pass from a fresh loader
(worker start included) and a second pass (persistent workers already running). The main process
uses ``--threads`` torch threads; each worker uses one.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from compressor.data import default_workers, load_data, make_loader

JPEG_DIR = Path("/tmp/compress-bench-jpegs")


def _jpeg_folder(n: int) -> Path:
    """``n`` smooth random 256x256 JPEGs (quality 90) in 10 class folders, made once."""
    root = JPEG_DIR / str(n)
    if (root / "done").exists():
        return root
    rng = np.random.default_rng(0)
    grid = np.linspace(0, 1, 256)
    for i in range(n):
        folder = root / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        a, b, c = rng.uniform(2, 12, 3)
        base = np.sin(a * grid[None, :, None] + b * grid[:, None, None] + c * np.arange(3))
        pixels = 127 + 100 * base + rng.normal(0, 12, (256, 256, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)
    (root / "done").touch()
    return root


def _passes(dataset, workers: int, batch: int) -> tuple[float, float]:
    """Seconds of a first (fresh loader) and a second pass over ``dataset``."""
    loader = make_loader(dataset, batch, shuffle=True, seed=0, workers=workers)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        for _x, _y in loader:
            pass
        times.append(time.perf_counter() - start)
    del loader
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idx", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--idx-sizes", nargs="+", type=int, default=[28, 224])
    parser.add_argument("--jpegs", type=int, default=2000)
    parser.add_argument("--jpeg-size", type=int, default=224)
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = [(f"Fashion-MNIST IDX at {size}", args.idx, size) for size in args.idx_sizes]
    cases.append((f"{args.jpegs} JPEGs 256x256 at {args.jpeg_size}", _jpeg_folder(args.jpegs), args.jpeg_size))
    print(f"{os.cpu_count()} cores, default_workers() = {default_workers()}, main process {args.threads} torch "
          f"thread(s), batch {args.batch}, torch {torch.__version__}\n")
    print("| data | load_data s | workers | 1st pass s | 1st pass img/s | 2nd pass img/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, root, size in cases:
        start = time.perf_counter()
        train = load_data(root, resolution=size).train
        loaded = time.perf_counter() - start
        for workers in args.workers:
            first, second = _passes(train, workers, args.batch)
            print(f"| {name} | {loaded:.2f} | {workers} | {first:.1f} | {len(train) / first:,.0f} | "
                  f"{len(train) / second:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
