"""Closed-form cost evaluation speed and exactness against counting on the built model.

    python benchmarks/cost_model.py [--models resnet50 mobilenet_v2 ...] [--shape 3x224x224]

For each model: space build time, median time of one closed-form MACs+params evaluation, and
whether it equals PyTorch's FLOP counter / 2 and the parameter count on the materialized model for
a random architecture (and the time to materialize and count, for comparison).
"""
import argparse
import logging
import statistics
import time

import numpy as np
import torchvision

from compressor.counting import count_macs, count_params
from compressor.space import SearchSpace
from compressor.surgery import materialize
from compressor.units import parse_shape


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "mobilenet_v2", "efficientnet_b0",
                                                         "densenet121", "convnext_tiny"])
    parser.add_argument("--shape", default="3x224x224")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    shape = parse_shape(args.shape)
    print("| model | build s | closed form µs (median of 1000) | materialize+count s | exact |")
    print("|---|---:|---:|---:|---|")
    for name in args.models:
        net = torchvision.models.get_model(name).eval()
        t = time.perf_counter()
        space = SearchSpace.build(net, shape, name)
        build = time.perf_counter() - t
        rng = np.random.default_rng(0)
        arch = space.architecture({g.name: int(rng.choice(g.choices)) for g in space.decision_groups},
                                  {b.name: bool(rng.random() < 0.7) for b in space.blocks})
        times = []
        for _ in range(1000):
            t = time.perf_counter()
            macs, params = space.macs(arch), space.params(arch)
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        small = materialize(space, net, arch)
        counted = (count_macs(small, shape), count_params(small))
        slow = time.perf_counter() - t
        print(f"| {name} | {build:.1f} | {1e6 * statistics.median(times):.0f} | {slow:.2f} | "
              f"{(macs, params) == counted} |")


if __name__ == "__main__":
    main()
