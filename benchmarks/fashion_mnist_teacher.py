"""Train a teacher on the full Fashion-MNIST (the Debian IDX files, read as they lie): accuracy on the
official 10,000 test images and wall time per epoch.

    python benchmarks/fashion_mnist_teacher.py --model resnet56 --epochs 3 --resolution 32

Uses the project's own path: ``load_data`` (IDX reader, light augmentation, grey to RGB),
``make_loader``, ``train`` (SGD, cosine schedule) and ``evaluate``; prints one line per epoch and a
JSON summary (``--out``) for docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

from compressor.runtime import prepare_openmp

prepare_openmp()  # before torch loads: idle OpenMP threads sleep (what the CLI does)

import torch  # noqa: E402

from compressor.data import load_data, make_loader  # noqa: E402
from compressor.models import resolve_model  # noqa: E402
from compressor.runtime import Runtime  # noqa: E402
from compressor.train import train  # noqa: E402

FASHION = "/usr/share/datasets/fashion-mnist"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=FASHION)
    parser.add_argument("--model", default="resnet56")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON file for the figures")
    args = parser.parse_args()

    start = time.perf_counter()
    data = load_data(args.data, resolution=args.resolution, seed=args.seed)
    runtime = Runtime(seed=args.seed, quiet=True)
    torch.manual_seed(args.seed)
    model, _, _ = resolve_model(args.model, None, data.num_classes, trust_code=True)
    train_loader = make_loader(data.train, args.batch_size, shuffle=True, seed=args.seed, workers=args.workers)
    val_loader = make_loader(data.val, 256, shuffle=False, seed=args.seed, workers=args.workers)
    history = train(model, train_loader, args.epochs, lr=args.lr, runtime=runtime, val_loader=val_loader,
                    desc="teacher")
    for h in history:
        print(f"epoch {h['epoch']}: loss {h['loss']:.4f}, train acc {100 * h['train_acc']:.2f}%, "
              f"test acc {100 * h['val_acc']:.2f}% ({len(data.val)} images), {h['seconds']:.0f} s", flush=True)
    summary = {
        "model": args.model, "data": data.source, "train_images": len(data.train), "test_images": len(data.val),
        "resolution": args.resolution, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "workers": args.workers, "torch_threads": torch.get_num_threads(), "cpu": platform.processor(),
        "cores": len(os.sched_getaffinity(0)), "history": history, "total_s": time.perf_counter() - start,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=2)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}))


if __name__ == "__main__":
    main()
