"""How much faster are the training searches with two processes under torchrun than with one?

    python benchmarks/distributed_search.py [--model resnet18] [--resolution 64] [--batch 64]
        [--steps 20] [--repeats 3] [--methods tas asng autoshrink]

Runs each search on the embedded digits in one process and as two gloo ranks (``torchrun
--nproc_per_node 2``), one torch thread per process, alternating the two ``repeats`` times, and
prints the median seconds of the search call alone (rank 0's wall clock; start-up, data loading
and the space build excluded) and their ratio. tas and asng keep the total batch equal (one
process at ``batch``, two ranks at ``batch / 2``) and run ``steps`` steps; autoshrink runs
``steps / 5`` steps of 4 candidates each (5 fine-tuning steps per candidate).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(args) -> None:
    import torch

    from compressor.budget import Budget
    from compressor.data import load_data
    from compressor.distributed import process_group, rank, world_size
    from compressor.models import resolve_model
    from compressor.search import SEARCHERS
    from compressor.search.base import SearchContext
    from compressor.space import SearchSpace

    torch.set_num_threads(1)
    with process_group():
        data = load_data(resolution=args.resolution, seed=0)
        model, _, _ = resolve_model(args.model, None, data.num_classes, trust_code=True)
        shape = (3, args.resolution, args.resolution)
        space = SearchSpace.build(model.eval(), shape, args.model)
        budget = Budget(macs=int(0.25 * space.macs(space.full())))
        options = {"tas": {"steps_per_epoch": args.steps}, "asng": {"steps_per_epoch": args.steps},
                   "autoshrink": {"k": 4, "finetune_steps": 5, "commit_steps": 5, "eval_batches": 4,
                                  "max_steps": max(1, args.steps // 5)}}
        seconds = {}
        for method in args.methods:
            batch = args.batch if method == "autoshrink" else args.batch // world_size()
            context = SearchContext(model=model, train_data=data.train, val_data=data.val, batch_size=batch,
                                    epochs=1, seed=0, quiet=True, options=dict(options[method]))
            start = time.perf_counter()
            SEARCHERS[method](space, budget, context)
            seconds[method] = time.perf_counter() - start
        if rank() == 0:
            Path(args.out).write_text(json.dumps(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=["tas", "asng", "autoshrink"])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    common = [__file__, "--worker", "--model", args.model, "--resolution", str(args.resolution), "--batch",
              str(args.batch), "--steps", str(args.steps), "--methods", *args.methods]
    launch = {1: [sys.executable], 2: [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                       "--master_port", "29541"]}
    times: dict[int, dict[str, list[float]]] = {w: {m: [] for m in args.methods} for w in launch}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for world, prefix in launch.items():
                out = Path(tmp) / f"world{world}.json"
                subprocess.run([*prefix, *common, "--out", str(out)], check=True, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for method, s in json.loads(out.read_text()).items():
                    times[world][method].append(s)
    print(f"{args.model} at {args.resolution}x{args.resolution}, digits, total batch {args.batch}, "
          f"{args.steps} steps, median of {args.repeats}, 1 thread per process\n")
    print("| method | 1 process (s) | 2 processes (s) | 2 / 1 |")
    print("|---|---:|---:|---:|")
    for method in args.methods:
        one, two = statistics.median(times[1][method]), statistics.median(times[2][method])
        print(f"| {method} | {one:.1f} | {two:.1f} | {two / one:.2f} |")


if __name__ == "__main__":
    main()
