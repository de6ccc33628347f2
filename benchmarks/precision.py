"""fp32 vs int8 (both quantization recipes) vs fp16 of one run's model.onnx: accuracy on the
validation images, top-1 agreement with fp32, and onnxruntime CPU latency in one interleaved run.

    python benchmarks/precision.py RUN_DIR [--data DIR] [--eval-resolution N] [--rounds 7] [--runs 30]

RUN_DIR is a finished ``compress`` run; ``--data`` names the data it ran on (default: the digits).
The images are loaded again at the model's input shape (the run's split, seed 0), calibration takes
``--calibration-images`` training images with the evaluation transform, as the precision stage
does. ``--eval-resolution N`` (a run evaluated at a proxy size, such as the digits demo) measures
accuracy on the run's model exported again at 3xNxN, quantized the same way, and latency on
``model.onnx`` at the deployment shape. Latency: every file timed once per round, the rounds
interleaved in a shuffled order, one p50 per round; the table gives the median p50 over the rounds
and each file's median ratio to fp32 within a round (so that load drift on a shared machine
cancels). Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch.utils.data import Subset

import compressor
from compressor.data import load_data, make_loader
from exporters.onnx_eval import deployment_info, onnx_predictions
from exporters.onnx_export import export_onnx
from exporters.precision import prepare_onnx
from exporters.runners import OrtRunner
from profiles import cpu_name

VARIANTS = {"fp32": None, "int8 (onnxruntime recipe)": ("int8", "onnxruntime"),
            "int8 (tensorrt recipe)": ("int8", "tensorrt"), "fp16": ("fp16", "tensorrt")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data", default=None, help="the run's --data (default: the digits)")
    parser.add_argument("--calibration-images", type=int, default=256)
    parser.add_argument("--eval-resolution", type=int, default=None, help="measure accuracy at 3xNxN (see above)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    source = args.run_dir / "model.onnx"
    shape = tuple(deployment_info(source)["input_shape"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files, calibration, _ = variants(source, shape, args.data, args.calibration_images, tmp / "deploy")
        if args.eval_resolution:
            side = args.eval_resolution
            model = compressor.load(args.run_dir, trust_code=True)  # the caller's own run
            proxy = export_onnx(model, (shape[0], side, side), tmp / "proxy.onnx")
            scored, _, data = variants(proxy, (shape[0], side, side), args.data, args.calibration_images, tmp / "proxy")
        else:
            scored, data = files, load_data(args.data, resolution=shape[1], seed=0)
        rows, images = accuracy(scored, data)
        p50 = interleaved(files, shape, args)
    ratios = {n: statistics.median(p / f for p, f in zip(p50[n], p50["fp32"])) for n in files}
    where = f"at {args.eval_resolution}x{args.eval_resolution} (the run's evaluation size)" if args.eval_resolution \
        else "at the deployment shape"
    print(f"{source} ({'x'.join(map(str, shape))}), {data.source}: accuracy on {images} validation images {where}, "
          f"{sum(map(len, calibration))} calibration images")
    print(f"{cpu_name()} ({platform.machine()}), onnxruntime {ort.__version__} CPU, {args.threads} thread(s), "
          f"latency at {'x'.join(map(str, shape))}: {args.rounds} interleaved rounds x ({args.warmup} warm-up + "
          f"{args.runs} timed runs), batch 1\n")
    print("| precision | accuracy | top-1 agreement with fp32 | p50 ms (median of rounds) | p50 / fp32 p50 |")
    print("|---|---:|---:|---:|---:|")
    for name in files:
        print(f"| {name} | {100 * rows[name]['accuracy']:.2f}% | {100 * rows[name]['agreement']:.2f}% | "
              f"{statistics.median(p50[name]):.3f} | {ratios[name]:.2f} |")


def variants(source: Path, shape, data_dir, count: int, folder: Path):
    """``source`` and its int8 (both recipes) and fp16 versions in ``folder``, calibrated on ``count``
    unaugmented training images at ``shape``; the calibration batches; the data at that size."""
    folder.mkdir(parents=True, exist_ok=True)
    data = load_data(data_dir, resolution=shape[1], seed=0)
    train = data.train
    if data.preprocess is not None:  # the evaluation transform, not the augmentation
        twin = copy.copy(train.dataset)
        twin.transform = data.preprocess.eval_transform(shape[1])
        train = Subset(twin, train.indices)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:count]
    calibration = [x.numpy() for x, _ in make_loader(Subset(train, order.tolist()), 64, shuffle=False, seed=0)]
    files = {"fp32": source}
    for name, how in VARIANTS.items():
        if how:
            files[name] = folder / f"{how[0]}-{how[1]}.onnx"
            prepare_onnx(source, files[name], *how, calibration)
    return files, calibration, data


def accuracy(files: dict[str, Path], data) -> tuple[dict[str, dict], int]:
    """Each file's accuracy on ``data``'s validation images and its top-1 agreement with fp32's."""
    def val():
        return ((x.numpy(), y.numpy()) for x, y in make_loader(data.val, 256, shuffle=False, seed=0))

    reference, labels = onnx_predictions(files["fp32"], val())
    rows = {}
    for name, path in files.items():
        predicted = reference if name == "fp32" else onnx_predictions(path, val())[0]
        rows[name] = {"accuracy": float(np.mean(predicted == labels)),
                      "agreement": float(np.mean(predicted == reference))}
    return rows, len(labels)


def interleaved(files: dict[str, Path], shape, args) -> dict[str, list[float]]:
    """One p50 per round per file, the files visited in a new shuffled order each round."""
    runner = OrtRunner(threads=args.threads)
    p50: dict[str, list[float]] = {name: [] for name in files}
    rng = np.random.default_rng(0)
    names = list(files)
    for _ in range(args.rounds):
        for i in rng.permutation(len(names)):
            stats = runner.measure(files[names[i]], shape, batch=1, warmup=args.warmup, runs=args.runs)
            p50[names[i]].append(float(stats.p50))
    return p50


if __name__ == "__main__":
    main()
