"""Compare every search method at equal MAC budgets and an equal fine-tuning budget.

    python benchmarks/compare_methods.py [--model resnet18] [--fractions 0.5 0.25] [--epochs 5]
        [--search-epochs 3] [--methods uniform greedy tas asng autoshrink] [--seed 0]

One teacher is trained on the embedded digits and shared by every method. For each budget
(a fraction of the teacher's MACs at the deployment shape) and method: search, materialize,
fine-tune with distillation for the same number of epochs, evaluate and export to ONNX. Latency is timed
at the end, all models in interleaved rounds (so a burst of load on a shared machine hits every
model alike), with onnxruntime on this CPU; the table gives the median over rounds of each
round's p50. Prints a Markdown table: accuracy, MACs, params, p50 latency, search wall time.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

from compressor.budget import Budget
from compressor.data import load_data, make_loader
from compressor.models import resolve_model
from compressor.pipeline import seed_everything
from compressor.search import SEARCHERS, SearchContext
from compressor.space import SearchSpace
from compressor.surgery import materialize
from compressor.train import evaluate, train
from compressor.units import format_count, parse_shape
from exporters.onnx_export import export_onnx
from exporters.runners import OrtRunner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.5, 0.25])
    parser.add_argument("--methods", nargs="+", default=["uniform", "greedy", "tas", "asng", "autoshrink"])
    parser.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs, the same for every method")
    parser.add_argument("--teacher-epochs", type=int, default=5)
    parser.add_argument("--search-epochs", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--shape", default="3x224x224")
    parser.add_argument("--option", action="append", default=[], metavar="METHOD:KEY=VALUE",
                        help="a method option, e.g. autoshrink:k=5")
    parser.add_argument("--runs", type=int, default=30, help="timed onnxruntime runs per model and round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    shape = parse_shape(args.shape)
    options: dict[str, dict] = {}
    for item in args.option:
        method, _, kv = item.partition(":")
        key, _, value = kv.partition("=")
        options.setdefault(method, {})[key] = json.loads(value) if value[:1].isdigit() else value

    seed_everything(args.seed)
    data = load_data(None, resolution=args.resolution, seed=args.seed)
    train_loader = make_loader(data.train, 64, shuffle=True, seed=args.seed)
    val_loader = make_loader(data.val, 64, shuffle=False, seed=args.seed)
    teacher, _, _ = resolve_model(args.model, None, data.num_classes, trust_code=True)
    train(teacher, train_loader, args.teacher_epochs)
    teacher.eval()
    space = SearchSpace.build(teacher, shape, args.model)
    full = space.full()
    runner = OrtRunner()
    tmp = Path(tempfile.mkdtemp())
    rows: list[dict] = [{"name": "original", "model": teacher, "acc": evaluate(teacher, val_loader)}]
    for fraction in args.fractions:
        budget = Budget(macs=int(space.macs(full) * fraction))
        calibration = next(iter(make_loader(data.train, 32, shuffle=True, seed=args.seed)))[0]
        for method in args.methods:
            seed_everything(args.seed)
            ctx = SearchContext(model=teacher, calibration=calibration, train_data=data.train, val_data=data.val,
                                epochs=args.search_epochs, seed=args.seed,
                                options=options.get(method, {}))
            start = time.perf_counter()
            arch = SEARCHERS[method](space, budget, ctx).architecture
            searched = time.perf_counter() - start
            small = materialize(space, teacher, arch)
            train(small, train_loader, args.epochs, lr=0.01, teacher=teacher)
            rows.append({"name": method, "fraction": fraction, "budget": budget.macs, "model": small.eval(),
                         "acc": evaluate(small.eval(), val_loader), "macs": space.macs(arch),
                         "params": space.params(arch), "search_s": searched})
            print(f"searched {method} at {fraction}", file=sys.stderr, flush=True)
    for i, row in enumerate(rows):
        row["onnx"] = export_onnx(row["model"], shape, tmp / f"m{i}.onnx")
    p50s: list[list[float]] = [[] for _ in rows]
    for _ in range(args.rounds):
        for i, row in enumerate(rows):
            p50s[i].append(runner.measure(row["onnx"], shape, warmup=5, runs=args.runs).p50)
    lat = [statistics.median(v) for v in p50s]

    print(f"{args.model} at {args.shape}, trained {args.teacher_epochs} epochs on the digits at "
          f"{args.resolution}x{args.resolution}: {format_count(space.macs(full))} MACs, "
          f"{format_count(space.params(full))} params, val accuracy {100 * rows[0]['acc']:.2f}%, "
          f"onnxruntime p50 {lat[0]:.3f} ms\n")
    print("| budget | method | val accuracy | MACs | params | p50 ms | search s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row, p50 in zip(rows[1:], lat[1:]):
        print(f"| {int(100 * row['fraction'])}% ({format_count(row['budget'])}) | {row['name']} | "
              f"{100 * row['acc']:.2f}% | {format_count(row['macs'])} | {format_count(row['params'])} | "
              f"{p50:.3f} | {row['search_s']:.1f} |")


if __name__ == "__main__":
    main()
