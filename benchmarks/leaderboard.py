"""Leaderboard: every search method of ours against Torch-Pruning at equal MACs, on real images.

    python benchmarks/leaderboard.py run --model resnet56 --fractions 0.5 0.25 --seeds 0 1 \\
        --train-images 12000 --teacher-epochs 8 --epochs 2 --search-epochs 2 --results leaderboard.jsonl
    python benchmarks/leaderboard.py table leaderboard.jsonl

Fashion-MNIST from the Debian package (``apt-get install dataset-fashion-mnist``) read with the
project's own ``load_data`` at 3x32x32; training uses a fixed random subset of ``--train-images`` of
the 60,000 training images (seed 0, the same for every row), validation is the official 10,000
test images, which no search sees (searches score on held-out training images, as a run does).
One teacher per model is trained once and cached (``--cache``). For each budget (a fraction of the
teacher's MACs), method and seed: search (or prune), then the same fine-tune for everyone (the
run's recipe: SGD at lr/5 with distillation from the teacher, ``--epochs``), then accuracy on the
10,000 images; the fine-tuned model is exported to ONNX beside the cache. One JSON line per row is
appended to ``--results``: a killed run continues where it stopped. ``latency`` then times every
row's ONNX with onnxruntime on this CPU (1 thread) in interleaved rounds, so drift on a shared
machine hits every model alike, and writes each median p50 into the results file:

    python benchmarks/leaderboard.py latency leaderboard.jsonl

Peers: Torch-Pruning's MetaPruner with L1 magnitude importance (local, round_to 8; "tp-l1") and
with first-order Taylor importance (global, round_to 8, gradients from 8 training batches;
"tp-taylor"); their pruning ratio is bisected to the largest under the MAC budget. Torch-Pruning
is a peer here only; the project uses it for the dependency graph.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from compressor.runtime import prepare_openmp

prepare_openmp()  # before torch loads: idle OpenMP threads sleep (what the CLI does)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torch_pruning as tp  # noqa: E402
from torch.utils.data import Subset  # noqa: E402

from compressor.budget import Budget  # noqa: E402
from compressor.counting import count_macs, count_params  # noqa: E402
from compressor.data import load_data, make_loader  # noqa: E402
from compressor.models import resolve_model  # noqa: E402
from compressor.runtime import Runtime, seed_everything  # noqa: E402
from compressor.search import SEARCHERS, SearchContext  # noqa: E402
from compressor.space import SearchSpace  # noqa: E402
from compressor.stages.search import held_out_split  # noqa: E402
from compressor.surgery import materialize  # noqa: E402
from compressor.train import evaluate, train  # noqa: E402
from compressor.units import format_count  # noqa: E402
from exporters.onnx_export import export_onnx  # noqa: E402
from exporters.runners import OrtRunner  # noqa: E402

FASHION = "/usr/share/datasets/fashion-mnist"
OURS = ("uniform", "greedy", "tas", "asng", "autoshrink")
PEERS = ("tp-l1", "tp-taylor")
SHAPE = (3, 32, 32)
log = logging.getLogger("leaderboard")


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _teacher(args, data, train_set, val_loader, runtime):
    """The model trained once on the training subset (cached), and its accuracy."""
    model, _, _ = resolve_model(args.model, None, data.num_classes, trust_code=True)
    cache = Path(args.cache) / f"teacher-{args.model}-{args.train_images}-{args.teacher_epochs}.pt"
    if cache.is_file():
        saved = torch.load(cache, weights_only=True)
        model.load_state_dict(saved["state_dict"])
        return model.eval(), saved["accuracy"], saved["seconds"]
    seed_everything(0)
    start = time.perf_counter()
    loader = make_loader(train_set, args.batch_size, shuffle=True, seed=0)
    train(model, loader, args.teacher_epochs, lr=0.1, runtime=runtime, desc="teacher")
    seconds = time.perf_counter() - start
    accuracy = evaluate(model, val_loader, runtime)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "accuracy": accuracy, "seconds": seconds}, cache)
    return model.eval(), accuracy, seconds


def _classifier(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1:]


def _tp_prune(teacher, method: str, macs_budget: int, train_set, seed: int):
    """Torch-Pruning's pruner at the pruning ratio (a 0.025 grid) whose model has the most MACs within
    ``macs_budget``: with round_to 8 the MACs are not monotone in the ratio, so a grid, not a bisection.
    Where no ratio meets the budget (16-channel layers cannot go below 8), the smallest model it
    reaches, marked ``over_budget``: an advantage to the peer, never to us."""
    example = torch.zeros(1, *SHAPE)
    source = copy.deepcopy(teacher).eval()
    if method == "tp-taylor":  # first-order Taylor: gradients of the loss on 8 training batches, kept on the copy
        for (x, y), _ in zip(make_loader(train_set, 64, shuffle=True, seed=seed), range(8)):
            F.cross_entropy(source(x), y).backward()

    def prune(ratio: float):
        model = copy.deepcopy(source)
        for mine, theirs in zip(model.parameters(), source.parameters()):  # deepcopy leaves gradients behind
            mine.grad = None if theirs.grad is None else theirs.grad.clone()
        if method == "tp-l1":
            importance, global_pruning = tp.importance.GroupMagnitudeImportance(p=1), False
        else:
            importance, global_pruning = tp.importance.GroupTaylorImportance(), True
        tp.pruner.MetaPruner(model, example, importance=importance, pruning_ratio=ratio, global_pruning=global_pruning,
                             round_to=8, ignored_layers=_classifier(model)).step()
        model.zero_grad(set_to_none=True)
        return model

    best, smallest = None, None
    for step in range(1, 39):
        model = prune(0.025 * step)
        macs = count_macs(model, SHAPE)
        if macs <= macs_budget and (best is None or macs > best[0]):
            best = (macs, model, 0.025 * step)
        if smallest is None or macs < smallest[0]:
            smallest = (macs, model, 0.025 * step)
    if best is None:
        return smallest[1], {"ratio": smallest[2], "over_budget": True}
    return best[1], {"ratio": best[2]}


def run(args) -> None:
    torch.set_num_threads(args.threads)
    results = Path(args.results)
    done = {(r["model"], r["fraction"], r["method"], r["seed"]) for r in _rows(results)}
    runtime = Runtime(seed=0, quiet=True)
    data = load_data(args.data, resolution=SHAPE[1], seed=0)
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0)).tolist()
    train_set = Subset(data.train, sorted(order[:args.train_images]))
    val_loader = make_loader(data.val, 256, shuffle=False, seed=0)
    teacher, teacher_acc, teacher_s = _teacher(args, data, train_set, val_loader, runtime)
    space = SearchSpace.build(teacher, SHAPE, args.model)
    full = space.full()
    log.warning("teacher %s: %.2f%% on %d images, %s MACs", args.model, 100 * teacher_acc, len(data.val),
                format_count(space.macs(full)))
    calibration = next(iter(make_loader(train_set, 32, shuffle=True, seed=0)))[0]
    search_train, held_out = held_out_split(train_set, 0)
    for fraction in args.fractions:
        budget = Budget(macs=int(space.macs(full) * fraction))
        for seed in args.seeds:
            for method in args.methods:
                if (args.model, fraction, method, seed) in done:
                    continue
                seed_everything(seed)
                start = time.perf_counter()
                if method in PEERS:
                    small, extra = _tp_prune(teacher, method, budget.macs, search_train, seed)
                else:
                    ctx = SearchContext(model=teacher, calibration=calibration, train_data=search_train,
                                        val_data=held_out, epochs=args.search_epochs,
                                        runtime=Runtime(seed=seed, quiet=True), batch_size=args.batch_size)
                    arch = SEARCHERS[method](space, budget, ctx).architecture
                    small, extra = materialize(space, teacher, arch), {"widths": arch.widths, "blocks": arch.blocks}
                searched = time.perf_counter() - start
                seed_everything(seed + 2)
                loader = make_loader(train_set, args.batch_size, shuffle=True, seed=seed)
                start = time.perf_counter()
                train(small, loader, args.epochs, lr=args.lr / 5, teacher=teacher,
                      runtime=Runtime(seed=seed, quiet=True), desc="fine-tune")
                tuned = time.perf_counter() - start
                row = {"model": args.model, "fraction": fraction, "method": method, "seed": seed,
                       "accuracy": evaluate(small.eval(), val_loader, runtime), "val_images": len(data.val),
                       "macs": count_macs(small, SHAPE), "params": count_params(small),
                       "full_macs": space.macs(full), "full_params": space.params(full),
                       "teacher_accuracy": teacher_acc, "teacher_s": teacher_s, "search_s": searched,
                       "finetune_s": tuned, "train_images": len(train_set), "epochs": args.epochs,
                       "search_epochs": args.search_epochs, "teacher_epochs": args.teacher_epochs,
                       "threads": args.threads, **extra}
                row["onnx"] = str(export_onnx(small.cpu().eval(), SHAPE, Path(args.cache) / "onnx" /
                                              f"{args.model}-{fraction}-{method}-{seed}.onnx"))
                with results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                log.warning("%s %.0f%% %s seed %d: %.2f%% at %s MACs (search %.0f s, fine-tune %.0f s)",
                            args.model, 100 * fraction, method, seed, 100 * row["accuracy"],
                            format_count(row["macs"]), searched, tuned)


def latency(args) -> None:
    """Every row's ONNX timed in interleaved rounds; each row gets the median of its rounds' p50."""
    path = Path(args.results)
    rows = _rows(path)
    runner = OrtRunner(threads=1)
    p50s: list[list[float]] = [[] for _ in rows]
    for _ in range(args.rounds):
        for i, row in enumerate(rows):
            p50s[i].append(runner.measure(Path(row["onnx"]), SHAPE, warmup=5, runs=args.runs).p50)
    for row, values in zip(rows, p50s):
        row["p50_ms"] = statistics.median(values)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


def table(args) -> None:
    rows = _rows(Path(args.results))
    if not rows:
        sys.exit(f"{args.results}: no rows")
    print(f"Machine: {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores; "
          f"torch {torch.__version__}, torch-pruning {tp.__version__}\n")
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        first = mine[0]
        print(f"**{model}** (teacher {100 * first['teacher_accuracy']:.2f}% on {first['val_images']} images, "
              f"{format_count(first['full_macs'])} MACs, {format_count(first['full_params'])} params; "
              f"{first['train_images']} training images, fine-tune {first['epochs']} epochs, "
              f"search {first['search_epochs']} epochs)\n")
        print("| budget | method | accuracy (mean, min-max) | seeds | MACs | params | p50 ms | search s |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for fraction in sorted({r["fraction"] for r in mine}, reverse=True):
            for method in [*OURS, *PEERS]:
                group = [r for r in mine if r["fraction"] == fraction and r["method"] == method]
                if not group:
                    continue
                acc = [100 * r["accuracy"] for r in group]
                over = " (over budget)" if any(r.get("over_budget") for r in group) else ""
                p50 = [r["p50_ms"] for r in group if r.get("p50_ms") is not None]
                shown = f"{statistics.median(p50):.3f}" if p50 else "–"
                print(f"| {int(round(100 * fraction))}% | {method} | {statistics.mean(acc):.2f}% "
                      f"({min(acc):.2f}-{max(acc):.2f}) | {len(group)} | "
                      f"{format_count(int(statistics.mean(r['macs'] for r in group)))}{over} | "
                      f"{format_count(int(statistics.mean(r['params'] for r in group)))} | {shown} | "
                      f"{statistics.mean(r['search_s'] for r in group):.0f} |")
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run", help="train the teacher (once), search, fine-tune and measure; append rows")
    go.add_argument("--data", default=FASHION)
    go.add_argument("--model", default="resnet56")
    go.add_argument("--fractions", nargs="+", type=float, default=[0.5, 0.25])
    go.add_argument("--methods", nargs="+", default=[*OURS, *PEERS], choices=[*OURS, *PEERS])
    go.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    go.add_argument("--train-images", type=int, default=12000)
    go.add_argument("--teacher-epochs", type=int, default=8)
    go.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs, the same for every method")
    go.add_argument("--search-epochs", type=int, default=2)
    go.add_argument("--batch-size", type=int, default=64)
    go.add_argument("--lr", type=float, default=0.05, help="the run's --lr (fine-tuning uses lr/5, as a run does)")
    go.add_argument("--threads", type=int, default=1)
    go.add_argument("--cache", default=".leaderboard", help="folder for the cached teachers")
    go.add_argument("--results", default="leaderboard.jsonl")
    show = sub.add_parser("table", help="print the Markdown table of a results file")
    show.add_argument("results")
    timing = sub.add_parser("latency", help="time every row's ONNX in interleaved rounds (onnxruntime, 1 thread)")
    timing.add_argument("results")
    timing.add_argument("--runs", type=int, default=50, help="timed runs per model and round")
    timing.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    {"run": run, "table": table, "latency": latency}[args.command](args)


if __name__ == "__main__":
    main()
