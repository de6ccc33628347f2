"""How many timed runs make a latency figure stable enough to steer a search?

    python benchmarks/latency_spread.py [--model resnet18] [--shape 3x224x224] [--repeats 10]
        [--runs 10 25 50 100] [--threads 1]

Measures the same ONNX model ``repeats`` times with each number of timed runs (onnxruntime CPU,
10 warm-up runs each time, repeats interleaved across run counts) and prints, per run count, the
median p50 and the spread of the p50 over the repeats: (max - min) / median and the coefficient
of variation. A search needs that spread well below the latency differences it must resolve.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from compressor.models import resolve_model
from compressor.units import parse_shape
from exporters.onnx_export import export_onnx
from exporters.runners import OrtRunner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--shape", default="3x224x224")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--runs", nargs="+", type=int, default=[10, 25, 50, 100])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    shape = parse_shape(args.shape)
    model, _, _ = resolve_model(args.model, None, 10, trust_code=True)
    path = export_onnx(model, shape, Path(tempfile.mkdtemp()) / "model.onnx")
    runner = OrtRunner(threads=args.threads)
    p50s: dict[int, list[float]] = {n: [] for n in args.runs}
    for _ in range(args.repeats):
        for n in args.runs:
            p50s[n].append(runner.measure(path, shape, warmup=10, runs=n).p50)
    print(f"{args.model} at {args.shape}, onnxruntime CPU, {args.threads} thread(s), {args.repeats} repeats\n")
    print("| timed runs | median p50 ms | (max - min) / median | coefficient of variation |")
    print("|---:|---:|---:|---:|")
    for n, values in p50s.items():
        med = statistics.median(values)
        cv = statistics.stdev(values) / statistics.mean(values)
        print(f"| {n} | {med:.3f} | {100 * (max(values) - min(values)) / med:.1f}% | {100 * cv:.1f}% |")


if __name__ == "__main__":
    main()
