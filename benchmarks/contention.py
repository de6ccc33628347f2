"""One training epoch alone and beside a busy process, under PyTorch's default threads and under ours.

    python benchmarks/contention.py [--images 2000] [--batch 64]

Each setting trains torchvision's ResNet-18 (10 classes) for one epoch at 32x32 on synthetic images
through ``compressor.train.train``, in a fresh process (OpenMP reads its settings when PyTorch
loads): once alone, once while a second Python process keeps one core busy (a one-thread numpy
loop). The settings:

- ``before``: PyTorch's defaults (a thread per core, OpenMP threads spinning while they wait);
- ``after (CLI)``: what ``compress`` does, :func:`compressor.runtime.prepare_openmp` before PyTorch
  loads and the default thread policy of :class:`compressor.runtime.Runtime`;
- ``after (library, torch loaded first)``: the thread policy alone, when PyTorch was imported
  before ``prepare_openmp`` could act.

Prints a Markdown table: seconds per epoch alone and beside the busy process, and their ratio.
"""
import argparse
import json
import os
import subprocess
import sys
import time

SETTINGS = {
    "before": "PyTorch's defaults",
    "after-cli": "after (CLI): prepare_openmp + Runtime()",
    "after-library": "after (library, torch loaded first): Runtime()",
}
BUSY = "import numpy as np\na = np.random.rand(256, 256)\nwhile True:\n    a = (a @ a) / 256.0\n"


def worker(setting: str, images: int, batch: int) -> None:
    """Train one epoch under ``setting`` and print its figures as one JSON line."""
    if setting == "after-cli":
        from compressor.runtime import prepare_openmp

        prepare_openmp()
    import torch
    import torchvision
    from torch.utils.data import DataLoader, TensorDataset

    from compressor.runtime import Runtime
    from compressor.train import train

    runtime = Runtime(quiet=True, threads=torch.get_num_threads() if setting == "before" else None)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(images, 3, 32, 32, generator=g), torch.randint(0, 10, (images,), generator=g))
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    warmup = DataLoader(torch.utils.data.Subset(data, range(2 * batch)), batch_size=batch)
    train(model, warmup, 1, runtime=runtime)
    loader = DataLoader(data, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    train(model, loader, 1, runtime=runtime)
    print(json.dumps({"seconds": time.perf_counter() - start, "threads": torch.get_num_threads(),
                      "wait": os.environ.get("OMP_WAIT_POLICY", "default")}))


def epoch(setting: str, images: int, batch: int, busy: bool) -> dict:
    """One epoch in a fresh process, with a busy neighbour when asked."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    neighbour = None
    if busy:
        one_thread = dict(env, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        neighbour = subprocess.Popen([sys.executable, "-c", BUSY], env=one_thread)
        time.sleep(1.0)
    try:
        out = subprocess.run([sys.executable, __file__, "--worker", setting, "--images", str(images),
                              "--batch", str(batch)], env=env, capture_output=True, text=True, check=True)
    finally:
        if neighbour is not None:
            neighbour.terminate()
            neighbour.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--worker", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.images, args.batch)
        return
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} usable cores; load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"ResNet-18 at 32x32, {args.images} images, batch {args.batch}, one epoch\n")
    print("| setting | threads | OpenMP wait | alone (s) | beside a busy process (s) | ratio |")
    print("|---|---:|---|---:|---:|---:|")
    for setting, label in SETTINGS.items():
        alone = epoch(setting, args.images, args.batch, busy=False)
        beside = epoch(setting, args.images, args.batch, busy=True)
        print(f"| {label} | {alone['threads']} | {alone['wait']} | {alone['seconds']:.1f} | "
              f"{beside['seconds']:.1f} | {beside['seconds'] / alone['seconds']:.2f}x |", flush=True)
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
