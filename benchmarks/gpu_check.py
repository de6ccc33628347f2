"""GPU check (issue 11, item 7): training throughput, one TAS search epoch, and CUDA latency.

    python benchmarks/gpu_check.py [--device auto] [--smoke]

Prints one line per figure, on synthetic data (random images and labels resident on the device,
so data loading is not measured):

- ``train MODEL SHAPE batch B fp32|amp-bf16: N images/s``: training steps (forward, cross-entropy,
  backward, SGD with momentum) of resnet56 (CIFAR-style, 3x32x32) and torchvision's resnet18
  (3x224x224), in fp32 and under bf16 autocast; on CUDA with channels_last and cuDNN autotuning.
- ``tas epoch ...``: the project's ``tas`` searcher (``compressor.search.SEARCHERS["tas"]``) on
  resnet56 at half its MACs, two epochs capped by its ``steps_per_epoch`` option; the seconds of
  each epoch (the first includes the warm-up).
- ``latency RUNTIME MODEL baseline|compressed ...``: batch-1 latency (p50, p90) of a baseline and
  a compressed model under the ``torch-cuda`` and ``torch-cuda-graph`` runners
  (``exporters.torch_runner.TorchRunner``): resnet56 and its TAS architecture, resnet18 and its
  uniform half width. Without CUDA these lines say ``skipped: no CUDA``, and the same models are
  timed under ``torch-cpu`` instead.

``--smoke`` runs every figure with tiny sizes (a CPU can run it in well under a minute); its numbers
mean nothing. ``benchmarks/gpu_check.sh`` runs the full sizes under a time limit.
"""
from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from compressor.budget import Budget
from compressor.models import resolve_model
from compressor.runtime import pick_device, seed_everything
from compressor.search import SEARCHERS, SearchContext
from compressor.space import SearchSpace
from compressor.surgery import materialize
from compressor.units import format_count
from exporters.torch_runner import TorchRunner

CIFAR_SHAPE = (3, 32, 32)


@dataclass(frozen=True)
class Sizes:
    """How much work each figure does."""

    cifar_batch: int = 256
    imagenet_batch: int = 128
    imagenet_shape: tuple[int, int, int] = (3, 224, 224)
    warmup: int = 10
    steps: int = 50
    tas_batch: int = 128
    tas_steps: int = 50
    latency_warmup: int = 20
    latency_runs: int = 200


SMOKE = Sizes(cifar_batch=4, imagenet_batch=2, imagenet_shape=(3, 64, 64), warmup=1, steps=2, tas_batch=4,
              tas_steps=2, latency_warmup=1, latency_runs=3)


def _shape(shape) -> str:
    return "x".join(map(str, shape))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_rate(model: torch.nn.Module, shape, batch: int, warmup: int, steps: int, device: torch.device,
               amp: bool) -> float:
    """Images per second of training steps on one fixed random batch (a copy of ``model`` trains)."""
    net = copy.deepcopy(model).to(device).train()
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *shape, generator=gen).to(device)
    if device.type == "cuda":
        x = x.to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return batch * steps / (time.perf_counter() - start)


def training_figures(sizes: Sizes, device: torch.device, cifar: torch.nn.Module) -> None:
    """fp32 and bf16-autocast images/s of resnet56 at 32x32 and resnet18 at 224x224."""
    resnet18 = resolve_model("resnet18", num_classes=10)[0]
    amp_ok = device.type != "cuda" or torch.cuda.is_bf16_supported()
    for name, model, shape, batch in (("resnet56", cifar, CIFAR_SHAPE, sizes.cifar_batch),
                                      ("resnet18", resnet18, sizes.imagenet_shape, sizes.imagenet_batch)):
        label = f"train {name} {_shape(shape)} batch {batch}"
        fp32 = train_rate(model, shape, batch, sizes.warmup, sizes.steps, device, amp=False)
        print(f"{label} fp32: {fp32:.0f} images/s", flush=True)
        if not amp_ok:
            print(f"{label} amp-bf16: skipped: this GPU has no bf16", flush=True)
            continue
        amp = train_rate(model, shape, batch, sizes.warmup, sizes.steps, device, amp=True)
        print(f"{label} amp-bf16: {amp:.0f} images/s ({amp / fp32:.2f}x fp32)", flush=True)


def tas_figure(sizes: Sizes, device: torch.device, model: torch.nn.Module, space: SearchSpace):
    """Two capped TAS epochs on resnet56 at half its MACs; returns the architecture it found."""
    n = 2 * sizes.tas_steps * sizes.tas_batch  # each half of the data holds exactly the capped steps
    gen = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(n, *CIFAR_SHAPE, generator=gen),
                                          torch.randint(0, 10, (n,), generator=gen))
    budget = Budget(macs=space.macs(space.full()) // 2)
    ctx = SearchContext(model=model, calibration=data.tensors[0][:32], train_data=data, val_data=data,
                        batch_size=sizes.tas_batch, epochs=2, device=device, quiet=True,
                        options={"steps_per_epoch": sizes.tas_steps})
    start = time.perf_counter()
    result = SEARCHERS["tas"](space, budget, ctx)
    wall = time.perf_counter() - start
    epochs = ", ".join(f"epoch {r['epoch']}: {r['seconds']:.2f} s" for r in result.history if "seconds" in r)
    arch = result.architecture
    print(f"tas epoch resnet56 {_shape(CIFAR_SHAPE)} batch {sizes.tas_batch}, {sizes.tas_steps} steps per epoch: "
          f"{epochs} ({wall:.1f} s with setup); found {format_count(space.macs(arch))} of "
          f"{format_count(space.macs(space.full()))} MACs", flush=True)
    return arch


def latency_figures(sizes: Sizes, device: torch.device, pairs) -> None:
    """Batch-1 latency of each (name, shape, [(kind, model)]) under both CUDA runners; without CUDA,
    under ``torch-cpu`` instead (the same models and runner code)."""
    runtimes = [("torch-cuda", str(device), False), ("torch-cuda-graph", str(device), True)]
    if device.type != "cuda":
        for runtime, _, _ in runtimes:
            print(f"latency {runtime}: skipped: no CUDA", flush=True)
        runtimes = [("torch-cpu", "cpu", False)]
    for runtime, where, graph in runtimes:
        runner = TorchRunner(where, cuda_graph=graph)
        for name, shape, models in pairs:
            for kind, model in models:
                stats = runner.measure(model, shape, warmup=sizes.latency_warmup, runs=sizes.latency_runs)
                print(f"latency {runtime} {name} {kind} {_shape(shape)} batch 1: p50 {stats.p50:.3f} ms, "
                      f"p90 {stats.p90:.3f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cuda, cuda:N or cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that every figure runs")
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else Sizes()
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        what = f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
    else:
        what = f"CPU, {torch.get_num_threads()} threads"
    print(f"gpu_check: {device} ({what}), torch {torch.__version__}{', smoke sizes' if args.smoke else ''}",
          flush=True)
    start = time.perf_counter()
    seed_everything(0)
    cifar = resolve_model("resnet56", num_classes=10)[0]
    training_figures(sizes, device, cifar)

    space = SearchSpace.build(cifar, CIFAR_SHAPE, "resnet56")
    arch = tas_figure(sizes, device, cifar, space)

    resnet18 = resolve_model("resnet18", num_classes=10)[0]
    space18 = SearchSpace.build(resnet18, sizes.imagenet_shape, "resnet18")
    pairs = [("resnet56", CIFAR_SHAPE, [("baseline", cifar), ("compressed", materialize(space, cifar, arch))]),
             ("resnet18", sizes.imagenet_shape,
              [("baseline", resnet18), ("compressed", materialize(space18, resnet18, space18.uniform(0.5)))])]
    latency_figures(sizes, device, pairs)
    print(f"gpu_check: done in {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
