"""Latency predictor accuracy: per-layer table + whole-model calibration vs measurements on random architectures.

    python benchmarks/latency_predictor.py [--models resnet18 mobilenet_v2] [--shape 3x224x224]
        [--target cpu] [--threads 1] [--clock cpu] [--grid 5] [--rounds 7] [--calibration 12] [--n 20]
        [--table-dir DIR] [--json FILE]

For each model: builds the latency model on the target (measures the single-layer table, then
calibrates on ``--calibration`` whole architectures) and times the build; then measures ``--n``
random architectures the calibration did not see (widths uniform over the choices, each block
kept with probability 1/2) and prints the fraction predicted within ±10%, the mean and max
relative error and the rank correlation. ``drift`` is how much the machine's speed moved between
calibration and evaluation (calibration architectures re-timed in the same rounds as the
evaluated ones); "same session" gives the errors with the calibration refitted on those
(the evaluated architectures stay unseen).

Defaults suit a shared machine: one onnxruntime thread, timed by thread CPU time (``--clock cpu``;
``--clock wall --threads 0`` times as the profile says). Tables go to a temporary folder unless
``--table-dir`` is given (then a second run reuses them and only evaluates).
"""
import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import torch
import torchvision

from compressor.latency import build_latency_model, evaluate_predictor
from compressor.space import SearchSpace
from compressor.units import parse_shape
from profiles import load_profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--shape", default="3x224x224")
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--grid", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calibration", type=int, default=12)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--table-dir", default=None)
    parser.add_argument("--json", default=None, help="also write every measured/predicted pair here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    profile = load_profile(args.target)
    shape = parse_shape(args.shape)
    folder = Path(args.table_dir) if args.table_dir else Path(tempfile.mkdtemp(prefix="latency-bench-"))
    results, notes = {}, []
    print(f"target {profile.name}, input {args.shape}, {args.threads} thread(s), {args.clock} clock, grid {args.grid}, "
          f"{args.rounds} rounds, {args.calibration} calibration archs, {args.n} evaluation archs")
    print("| model | table graphs | build s | a | c ms/MB | b ms | within ±10% | mean err | max err | spearman | drift "
          "| same session: within ±10% / mean / max |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name in args.models:
        torch.manual_seed(0)
        net = torchvision.models.get_model(name).eval()
        space = SearchSpace.build(net, shape, name, channel_multiple=profile.channel_multiple)
        t = time.perf_counter()
        lat = build_latency_model(space, net, profile, folder / f"{profile.name}-{name}.json",
                                  calibration_archs=args.calibration, grid=args.grid, rounds=args.rounds,
                                  threads=args.threads, clock=args.clock)
        build = time.perf_counter() - t
        t = time.perf_counter()
        ev = evaluate_predictor(lat, space, net, profile, n=args.n, seed=args.seed)
        evaluate = time.perf_counter() - t
        nan = float("nan")
        same = ev.get("same_session", {})
        print(f"| {name} | {len(set(lat.keys()))} | {build:.0f} | {lat.a:.3f} | {lat.c:.4f} | {lat.b:+.3f} | "
              f"{100 * ev['within_10pct']:.0f}% | {100 * ev['mean_abs_rel_err']:.1f}% | "
              f"{100 * ev['max_abs_rel_err']:.1f}% | {ev['spearman']:.3f} | {ev.get('drift', nan):.3f} | "
              f"{100 * same.get('within_10pct', nan):.0f}% / {100 * same.get('mean_abs_rel_err', nan):.1f}% / "
              f"{100 * same.get('max_abs_rel_err', nan):.1f}% |", flush=True)
        lo = min(p["measured_ms"] for p in ev["pairs"])
        hi = max(p["measured_ms"] for p in ev["pairs"])
        notes.append(f"{name}: evaluated architectures measure {lo:.2f}-{hi:.2f} ms (full model "
                     f"{lat.predict(space.full()):.2f} ms predicted); evaluation took {evaluate:.0f} s")
        results[name] = {"build_s": build, "evaluate_s": evaluate, "a": lat.a, "b": lat.b,
                         "calibration": lat.calibration(), **ev}
    print("\n".join(["", *notes]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
