"""Does feeding measured latency into the search pay off? MAC-only vs latency-aware greedy search.

    python benchmarks/latency_aware.py [--model resnet18] [--fractions 0.5 0.25] [--shape 3x224x224]
        [--table ~/.cache/compressor/latency-cpu.json] [--tighten 0.85]

For each MAC budget (a fraction of the model's MACs): the MAC-only greedy search, then the same
search with the same MAC budget plus a latency budget of ``tighten`` times the MAC-only result's
predicted latency (the latency table measured on this CPU, onnxruntime, one thread). Both results
are then timed in the same interleaved rounds (thread CPU time, median of the rounds' minima), so
the comparison is of measured latency. Weights are untrained: latency does not depend on them.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from compressor.budget import Budget
from compressor.latency import build_latency_model, measure_architectures
from compressor.models import resolve_model
from compressor.search import greedy_search
from compressor.space import SearchSpace
from compressor.units import format_count, parse_shape
from exporters.runners import CpuClockOrtRunner
from profiles import load_profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.5, 0.25])
    parser.add_argument("--shape", default="3x224x224")
    parser.add_argument("--table", default=str(Path.home() / ".cache" / "compressor" / "latency-cpu.json"))
    parser.add_argument("--tighten", type=float, default=0.85)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    profile = load_profile("cpu")
    shape = parse_shape(args.shape)
    model, _, _ = resolve_model(args.model, None, 10, trust_code=True)
    space = SearchSpace.build(model, shape, args.model, channel_multiple=profile.channel_multiple)
    lat = build_latency_model(space, model, profile, args.table, clock="cpu")
    print(f"{args.model} at {args.shape}: {format_count(space.macs(space.full()))} MACs; onnxruntime CPU, "
          f"1 thread; latency-aware budget = {args.tighten} x the MAC-only result's predicted latency\n")
    print("| MAC budget | search | MACs | predicted ms | measured ms | measured vs MAC-only |")
    print("|---|---|---:|---:|---:|---:|")
    for fraction in args.fractions:
        macs = int(space.macs(space.full()) * fraction)
        mac_only = greedy_search(space, Budget(macs=macs)).architecture
        target = args.tighten * lat.predict(mac_only)
        aware_budget = Budget(macs=macs, latency_ms=target).with_latency_model(lat)
        aware = greedy_search(space, aware_budget).architecture
        measured = measure_architectures(space, model, [mac_only, aware], CpuClockOrtRunner(), rounds=args.rounds)
        for name, arch, ms in (("MAC-only", mac_only, measured[0]), ("latency-aware", aware, measured[1])):
            print(f"| {int(100 * fraction)}% ({format_count(macs)}) | {name} | {format_count(space.macs(arch))} | "
                  f"{lat.predict(arch):.3f} | {ms:.3f} | {100 * ms / measured[0]:.0f}% |", flush=True)


if __name__ == "__main__":
    main()
