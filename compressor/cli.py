"""The ``compress`` command.

``compress [run] --target cpu --budget-macs 300M`` compresses a model (``run`` is the default
command); ``compress inspect --model NAME`` shows a model's costs and search space;
``compress profiles`` lists the target profiles. User errors print one line and exit 2.
"""
from __future__ import annotations

import json
import logging
import sys

import click

from compress_base.errors import CompressError

from . import __version__
from .cli_support import (
    budget_option,
    count_option,
    fail,
    interrupt_on_sigterm,
    key_value_options,
    latency_option,
    require_torch,
    setup_logging,
    shape_option,
)
from .runtime import prepare_openmp
from .search import METHODS
from .settings import MAX_SEED, PATH_FIELDS, PRECISIONS
from .units import format_count, parse_shape

log = logging.getLogger("compressor")


class DefaultGroup(click.Group):
    """A group that runs ``run`` when the first argument is not a command name."""

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h", "--version")):
            args = ["run", *args]
        return super().parse_args(ctx, args)

    def main(self, *args, **kwargs):
        """Like click's, but a usage error is one line on stderr and exit code 2."""
        prepare_openmp()  # before any command imports torch: idle OpenMP threads sleep, not spin
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            click.echo(f"error: {exc.format_message()}{hint}", err=True)
            sys.exit(2)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(130)

        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="compress")
def main():
    """Shrink a PyTorch CNN to a budget for a deployment target.

    Without a command, runs `compress run`, e.g. `compress --target cpu --budget-macs 300M`.
    """


@main.command("run")
@click.option("--model", default="resnet18", show_default=True,
              help="torchvision classification model name, a CIFAR ResNet (resnet20/32/44/56/110) or "
                   "package.module:function returning an nn.Module.")
@click.option("--weights", default=None,
              help="torchvision weights name (DEFAULT, IMAGENET1K_V1; fetched by torchvision) or a state_dict file. "
                   "Without weights the model is first trained on the data.")
@click.option("--num-classes", type=click.IntRange(min=2), default=None,
              help="Classes of the classifier; default: the number of classes in the data.")
@click.option("--data", "data_dir", default=None,
              help="ImageFolder directory (class subfolders, or train/ and val/). Default: scikit-learn's bundled "
                   "handwritten digits.")
@click.option("--target", default="cpu", show_default=True,
              help="Target profile name (see `compress profiles`) or a TOML file.")
@click.option("--input-shape", callback=shape_option, default=None,
              help="Deployment input CxHxW at which costs and latency are measured; default from the profile "
                   "(3x32x32 for the CIFAR ResNets).")
@click.option("--train-resolution", type=click.IntRange(min=8, max=4096), default=32, show_default=True,
              help="Side of the square proxy images the search trains and scores on.")
@click.option("--eval-resolution", type=click.IntRange(min=8, max=4096), default=None,
              help="Side of the square images the teacher and the compressed model train and are evaluated at; "
                   "default: the deployment size when --data or --weights is given, else (the digits demo) "
                   "--train-resolution.")
@click.option("--budget-macs", callback=budget_option("--budget-macs"), default=None,
              help="Upper bound on MACs at the deployment shape, batch 1: a count (K/M/G suffixes: 300M) or a "
                   "percentage of the original model's (50%).")
@click.option("--budget-params", callback=budget_option("--budget-params"), default=None,
              help="Upper bound on parameters: a count (K/M/G suffixes: 2.5M) or a percentage of the original's (25%).")
@click.option("--keep", multiple=True, metavar="NAME_OR_PATTERN",
              help="Leave these layers' channels unpruned, repeatable: module names or patterns as `compress inspect` "
                   "lists them (conv1, layer4.*, features.0); a block holding a kept layer is never removed.")
@click.option("--budget-latency", callback=latency_option, default=None,
              help="Upper bound on latency on the target (4ms, 800us), predicted by a lookup table measured on "
                   "the target and checked by measuring the result.")
@click.option("--latency-table", default=None,
              help="Latency table file (compress lut); default ~/.cache/compressor/latency-<target>.json.")
@click.option("--method", type=click.Choice(sorted(METHODS)), default="greedy", show_default=True,
              help="Search method.")
@click.option("--search-epochs", type=click.IntRange(min=1), default=5, show_default=True,
              help="Epochs of supernet training for the methods that train while searching (tas, asng, autoshrink).")
@click.option("--option", "options", multiple=True, callback=key_value_options, metavar="KEY=VALUE",
              help="A method-specific setting, repeatable (e.g. --option tau_max=10).")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="Precision of the shipped model: fp32, fp16 or int8 (post-training quantization); "
                   "default: the target profile's.")
@click.option("--calibration-images", type=click.IntRange(min=1), default=256, show_default=True,
              help="Training images that calibrate int8 quantization.")
@click.option("--warn-accuracy-drop", type=click.FloatRange(0, 100), default=1.0, show_default=True,
              help="Accuracy points lost (to the original, or to fp32) that the report warns about.")
@click.option("--epochs", type=click.IntRange(min=0), default=5, show_default=True,
              help="Fine-tuning epochs of the compressed model (distillation from the original).")
@click.option("--kd-lambda", type=click.FloatRange(0, 1), default=0.9, show_default=True,
              help="Weight of the distillation loss in fine-tuning (the rest is the label loss; 0: labels only).")
@click.option("--kd-temperature", "temperature", type=click.FloatRange(min=0, min_open=True), default=4.0,
              show_default=True, help="Softmax temperature of the distillation loss.")
@click.option("--from-scratch", is_flag=True,
              help="Re-initialise the compressed model before distillation (TAS's official code) instead of "
                   "inheriting the original's weights.")
@click.option("--teacher-epochs", type=click.IntRange(min=0), default=5, show_default=True,
              help="Epochs to train the original first when it has no trained weights.")
@click.option("--batch-size", type=click.IntRange(min=2), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.05, show_default=True,
              help="Learning rate of teacher training; fine-tuning uses a fifth of it.")
@click.option("--out", default=None, help="Run directory; default runs/<timestamp>-<model>.")
@click.option("--overwrite", is_flag=True, help="Allow writing into a non-empty run directory.")
@click.option("--resume", "resume_dir", default=None, metavar="RUN_DIR",
              help="Continue a killed run from its run directory, with its own settings. Its data, weights, "
                   "latency table or profile file outside RUN_DIR must be given again (--data ...) to confirm.")
@click.option("--trust-code", is_flag=True,
              help="With --resume: allow importing the package.module:function model named in the run's settings.")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True)
@click.option("--device", default=None, help="Training device (cpu, cuda, cuda:1); default: CUDA if available.")
@click.option("--latency-runs", type=click.IntRange(min=1), default=None,
              help="Timed runs per latency measurement; default from the profile.")
@click.option("--workers", type=click.IntRange(0, 64), default=None,
              help="Data loading worker processes; default from the CPU cores.")
@click.option("--no-amp", "amp", flag_value=False, default=True,
              help="Train in fp32 on CUDA (default: mixed precision there; the CPU always trains in fp32).")
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors; no progress bars.")
def run_command(**opts):
    """Compress a model to a budget, fine-tune it, export ONNX and measure latency."""
    require_torch()
    from .budget import Budget
    from .pipeline import NAS_METHOD, RunConfig, resume_config, run, run_nas
    from .report import summary_line, summary_line_nas

    setup_logging(opts["quiet"])
    interrupt_on_sigterm()
    try:
        resume_dir, trust_code = opts.pop("resume_dir"), opts.pop("trust_code")
        opts["data"] = opts.pop("data_dir")
        if resume_dir:
            config = resume_config(resume_dir, quiet=opts["quiet"], trust_code=trust_code,
                                   given=_resume_options(click.get_current_context(), opts))
        else:
            if trust_code:
                raise CompressError("--trust-code only applies to --resume: a model you name on the command line "
                                    "is trusted already")
            budget = Budget(macs=opts.pop("budget_macs"), params=opts.pop("budget_params"),
                            latency_ms=opts.pop("budget_latency"))
            opts["keep"] = list(opts["keep"]) or None
            config = RunConfig(budget=budget, search_cwd=True, **opts)  # the user typed --model: search the cwd
        report = _compressing(run_nas if config.method == NAS_METHOD else run, config)
    except CompressError as exc:
        fail(exc)
    if report is not None:  # None on a torchrun rank other than 0: rank 0 writes and reports
        click.echo(summary_line_nas(report) if report.is_nas else summary_line(report))


def _compressing(run, config):
    """``run(config)``; an interruption (Ctrl-C, SIGTERM) keeps the run's state and says how to continue."""
    try:
        return run(config)
    except KeyboardInterrupt:
        where = f": continue with `compress --resume {config.out}`" if config.out else ""
        click.echo(f"interrupted{where}", err=True)
        sys.exit(130)


def _resume_options(ctx: click.Context, opts: dict) -> dict:
    """The options typed beside --resume: the path settings it may confirm; anything else is refused
    (a resumed run keeps its own settings)."""
    given = {k: v for k, v in opts.items()
             if ctx.get_parameter_source("data_dir" if k == "data" else k) == click.core.ParameterSource.COMMANDLINE}
    extra = sorted(set(given) - set(PATH_FIELDS) - {"quiet"})
    if extra:
        flag = next(p.opts[0] for p in ctx.command.params if p.name == extra[0])
        raise CompressError(f"{flag} cannot change the settings of a resumed run: drop it "
                            "(--resume continues the run with its own settings)")
    given.pop("quiet", None)
    return given


@main.command("inspect")
@click.option("--model", required=True, help="torchvision model name or package.module:function.")
@click.option("--weights", default=None, help="torchvision weights name or state_dict file (optional).")
@click.option("--num-classes", type=click.IntRange(min=2), default=None)
@click.option("--input-shape", callback=shape_option, default="3x224x224", show_default=True)
@click.option("--channel-multiple", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--keep", multiple=True, metavar="NAME_OR_PATTERN",
              help="Show the groups and blocks this --keep of `compress run` would fix (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def inspect_command(model, weights, num_classes, input_shape, channel_multiple, keep, as_json):
    """Show a model's MACs, params and search space: its channel groups in model order."""
    require_torch()
    from .models import resolve_model
    from .space import SearchSpace

    setup_logging(quiet=True)
    try:
        net, _, _ = resolve_model(model, weights, num_classes, trust_code=True, search_cwd=True)  # the user typed it
        space = SearchSpace.build(net, parse_shape(input_shape), model, channel_multiple=channel_multiple, keep=keep)
    except CompressError as exc:
        fail(exc)
    info = space.describe()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    groups = info["groups"]
    fixed = [g for g in groups if g["choices"][2] == 1]  # kept, unprunable, or a single channel multiple wide
    click.echo(f"{model} at {input_shape}: {format_count(info['macs'])} MACs, {format_count(info['params'])} params; "
               f"smallest architecture in the space: {format_count(info['smallest_macs'])} MACs")
    click.echo(f"classifier (never pruned): {info['classifier']}")
    click.echo(f"\n{len(groups)} channel groups in model order ({len(groups) - len(fixed)} width decisions, "
               f"{len(fixed)} fixed); each lists the layers whose output channels shrink together:")
    click.echo(f"  {'#':>3s} {'channels':>8s}  {'choices':14s}  layers")
    for i, g in enumerate(groups, 1):
        lo, hi, n = g["choices"]
        choices = "fixed" if n == 1 else f"{lo}..{hi} ({n})"
        why = f"  [{g['fixed']}]" if g["fixed"] else ""
        click.echo(f"  {i:3d} {g['channels']:8d}  {choices:14s}  {_layer_list(g['layers'] or [g['name']])}{why}")
    click.echo(f"\n{len(info['blocks'])} removable residual blocks:")
    for b in info["blocks"]:
        click.echo(f"  {b['name']:40s} dropped -> {b['after_drop']}")
    in_groups = {g["name"] for g in groups if g["fixed"]}
    others = [e for e in info["fixed_layers"] if not any(n in in_groups for n in e["layers"])]
    if others:
        click.echo("\nalso fixed:")
        for e in others:
            click.echo(f"  {', '.join(e['layers'][:4])}{' ...' if len(e['layers']) > 4 else ''}: {e['reason']}")


def _layer_list(layers: list[str]) -> str:
    """``a + b + c``, or ``a + b + ... + z (N layers)`` for more than three."""
    if len(layers) <= 3:
        return " + ".join(layers)
    return f"{layers[0]} + {layers[1]} + ... + {layers[-1]} ({len(layers)} layers)"


@main.command("profiles")
def profiles_command():
    """List the target profiles shipped with the package."""
    from profiles import list_profiles, load_profile

    for name in list_profiles():
        p = load_profile(name)
        click.echo(f"{name:20s} {p.device:4s} {'x'.join(map(str, p.input_shape)):10s} "
                   f"multiple {p.channel_multiple:<3d} {', '.join(p.runtimes)}")


@main.command("nas")
@click.option("--space", type=click.Choice(["shrinkcnn"]), default="shrinkcnn", show_default=True,
              help="Cell search space searched from scratch.")
@click.option("--budget-macs", callback=count_option("--budget-macs"), required=True,
              help="MAC budget of the deployed network at the deployment shape (K/M/G suffixes).")
@click.option("--data", "data_dir", default=None, help="ImageFolder directory; default: the embedded digits.")
@click.option("--target", default="cpu", show_default=True, help="Target profile name or TOML file.")
@click.option("--input-shape", callback=shape_option, default=None,
              help="Deployment input CxHxW; default from the profile.")
@click.option("--train-resolution", type=click.IntRange(min=8), default=32, show_default=True,
              help="Side of the square proxy images the cell is searched and trained on.")
@click.option("--epochs", type=click.IntRange(min=0), default=5, show_default=True,
              help="Training epochs of the deployed network.")
@click.option("--batch-size", type=click.IntRange(min=2), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.05, show_default=True)
@click.option("--option", "options", multiple=True, callback=key_value_options, metavar="KEY=VALUE",
              help="Cell search setting, repeatable: k, floor, epochs (per candidate), train_images, max_steps, ...")
@click.option("--out", default=None, help="Run directory; default runs/<timestamp>-shrinkcnn.")
@click.option("--overwrite", is_flag=True)
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True)
@click.option("--device", default=None)
@click.option("--latency-runs", type=click.IntRange(min=1), default=None)
@click.option("--quiet", "-q", is_flag=True)
def nas_command(space, **opts):
    """Search a ShrinkCNN cell from scratch (AutoShrink edge shrinking) and deploy it at the budget."""
    require_torch()
    from .budget import Budget
    from .networks.shrinkcnn import SPEC_NAME
    from .pipeline import NAS_METHOD, RunConfig, run_nas
    from .report import summary_line_nas

    setup_logging(opts["quiet"])
    interrupt_on_sigterm()
    try:
        config = RunConfig(budget=Budget(macs=opts.pop("budget_macs")), data=opts.pop("data_dir"),
                           model=SPEC_NAME, method=NAS_METHOD, **opts)
        report = _compressing(run_nas, config)
    except CompressError as exc:
        fail(exc)
    if report is not None:  # None on a rank other than 0 under torchrun
        click.echo(summary_line_nas(report))


@main.command("bench")
@click.argument("model_file", type=click.Path(dir_okay=False))
@click.option("--target", required=True, help="Target profile name or TOML file.")
@click.option("--runtime", default=None, help="Runtime to time with; default from the file type and the profile.")
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Batch size; default from the profile.")
@click.option("--warmup", type=click.IntRange(min=0), default=None)
@click.option("--runs", type=click.IntRange(min=1), default=None)
@click.option("--threads", type=click.IntRange(min=0), default=None)
@click.option("--input-shape", callback=shape_option, default=None,
              help="CxHxW; default: the model's static shape, else the profile's.")
@click.option("--out", default=None, help="JSON file; default <model>.<target>.bench.json beside the model.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
@click.option("--quiet", "-q", is_flag=True)
def bench_command(model_file, target, runtime, batch, warmup, runs, threads, input_shape, out, as_json, quiet):
    """Measure the latency of MODEL_FILE (.onnx or a TensorRT .engine) on this device."""
    from pathlib import Path

    from exporters.bench import bench, format_bench, write_bench
    from profiles import load_profile

    setup_logging(quiet)
    try:
        profile = load_profile(target)
        result = bench(model_file, profile, runtime=runtime, batch=batch, warmup=warmup, runs=runs,
                       input_shape=parse_shape(input_shape) if input_shape else None, threads=threads)
        path = Path(out) if out else Path(model_file).with_suffix(f".{profile.name}.bench.json")
        write_bench(result, path)
    except CompressError as exc:
        fail(exc)
    click.echo(json.dumps(result, indent=2) if as_json else f"{format_bench(result)}; written to {path}")


def _calibration_images(onnx_path, folder: str, count: int, size: int) -> list:
    """Up to ``count`` images of ``folder`` (laid out as for ``--data``) as NCHW float32 batches of
    ``size`` x ``size``, preprocessed as the ONNX metadata records (ImageNet's default without it)."""
    from exporters.onnx_eval import read_metadata

    from .data import load_data, make_loader
    from .preprocess import Preprocess

    try:
        steps = json.loads(read_metadata(onnx_path).get("preprocess", "null"))
    except ValueError:  # the digits demo records its own scaling as text
        steps = None
    if isinstance(steps, dict):
        preprocess = Preprocess(resize=steps["resize"], crop=steps["crop"], mean=steps["mean"], std=steps["std"],
                                interpolation=steps["interpolation"], source=f"the metadata of {onnx_path.name}")
    else:
        preprocess = Preprocess.default()
        log.warning("%s records no preprocessing: calibrating with %s", onnx_path.name, preprocess.source)
    data = load_data(folder, resolution=size, val_fraction=0.5, preprocess=preprocess)
    batches, seen = [], 0
    for images, _ in make_loader(data.val, 32, shuffle=True, seed=0):  # the evaluation transform
        batches.append(images[: count - seen].numpy())
        seen += len(batches[-1])
        if seen >= count:
            break
    return batches


@main.command("engine")
@click.argument("onnx_file", type=click.Path(dir_okay=False))
@click.option("--target", default="gpu", show_default=True, help="Target profile (precision and batch defaults).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
              help="Engine precision: an fp32 ONNX is prepared at it first (default: the profile's); an ONNX "
                   "holding Q/DQ or fp16 is built as it is.")
@click.option("--batch-range", default=None, metavar="MIN,OPT,MAX",
              help="Dynamic batch range of the optimisation profile; default 1,<profile batch>,8.")
@click.option("--workspace", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Workspace limit in MiB.")
@click.option("--calib-data", default=None,
              help="Images that calibrate int8 from an fp32 ONNX (laid out as for --data; preprocessed as the "
                   "ONNX metadata records).")
@click.option("--calib-images", type=click.IntRange(min=1), default=256, show_default=True,
              help="How many --calib-data images calibrate.")
@click.option("--out", default=None, help="Engine file; default: the ONNX file with suffix .engine.")
@click.option("--quiet", "-q", is_flag=True)
def engine_command(onnx_file, target, precision, batch_range, workspace, calib_data, calib_images, out, quiet):
    """Build a strongly typed TensorRT engine from ONNX_FILE (TensorRT 10.3 to 11.x and an NVIDIA GPU)."""
    from pathlib import Path

    from exporters import tensorrt as trt
    from profiles import load_profile

    setup_logging(quiet)
    try:
        profile = load_profile(target)
        trt.require_tensorrt()
        onnx_path = Path(onnx_file)
        if not onnx_path.is_file():
            raise CompressError(f"ONNX file {onnx_file} does not exist: give the model.onnx a run wrote")
        holds = trt.onnx_precision(onnx_path)
        precision = precision or (profile.precision if holds == "fp32" else holds)
        dims = trt.onnx_input(onnx_path)[1]
        shape = None if all(d > 0 for d in dims[1:]) else profile.input_shape  # the profile fills dynamic axes
        calibration = None
        if calib_data and precision == "int8" and holds == "fp32":
            size = (shape or dims[1:])[-1]
            calibration = _calibration_images(onnx_path, calib_data, calib_images, size)
        elif calib_data:
            log.warning("--calib-data is only used for an int8 engine from an fp32 ONNX; ignored")
        engine_path = Path(out) if out else onnx_path.with_suffix(".engine")
        batch = trt.parse_batch_range(batch_range) if batch_range else (1, profile.batch, max(8, profile.batch))
        info = trt.build_engine(onnx_path, engine_path, precision=precision, batch=batch, input_shape=shape,
                                workspace_mb=workspace, timing_cache=engine_path.with_suffix(".timing.cache"),
                                calibration=calibration)
    except CompressError as exc:
        fail(exc)
    source = f" from {Path(info['onnx']).name}" if info["prepared"] else ""
    click.echo(f"built {engine_path} ({info['precision']}{source}), {trt.format_layers(info['layers'])}; time it with "
               f"`compress bench {engine_path} --target {profile.name}`")


@main.command("report")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--out", default=None,
              help="Folder for report.md, report.html and merged.json; without it the Markdown table is printed.")
@click.option("--quiet", "-q", is_flag=True)
def report_command(paths, out, quiet):
    """Merge run directories and `compress bench` JSON files (matched to runs by SHA-256) into one report."""
    from .merge import merge_reports, merged_markdown, write_merged

    setup_logging(quiet)
    try:
        merged = merge_reports(paths)
        if out:
            write_merged(out, merged)
    except CompressError as exc:
        fail(exc)
    click.echo(f"written to {out}" if out else merged_markdown(merged))


@main.command("lut")
@click.option("--target", default="cpu", show_default=True, help="Target profile; run this on that device.")
@click.option("--model", default="resnet18", show_default=True, help="Model whose layers to measure.")
@click.option("--num-classes", type=click.IntRange(min=2), default=10, show_default=True)
@click.option("--input-shape", callback=shape_option, default=None, help="CxHxW; default from the profile.")
@click.option("--out", default=None, help="Table file; default ~/.cache/compressor/latency-<target>.json.")
@click.option("--evaluate", "n_eval", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also measure this many random architectures and report the predictor's error.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="Precision the layers are timed in (int8: Q/DQ with the profile's recipe); default: the profile's.")
@click.option("--quiet", "-q", is_flag=True)
def lut_command(target, model, num_classes, input_shape, out, n_eval, precision, quiet):
    """Measure a per-layer latency table on this device, calibrated on whole models."""
    require_torch()
    from pathlib import Path

    from .latency import build_latency_model, evaluate_predictor
    from .models import resolve_model
    from .pipeline import latency_clock, resolve_target
    from .runtime import Runtime
    from .space import SearchSpace

    setup_logging(quiet)
    try:
        profile = resolve_target(target)
        shape = parse_shape(input_shape) if input_shape else profile.input_shape
        path = Path(out) if out else Path.home() / ".cache" / "compressor" / f"latency-{profile.name}.json"
        net, _, _ = resolve_model(model, None, num_classes, trust_code=True, search_cwd=True)  # the user typed it
        space = SearchSpace.build(net, shape, model, channel_multiple=profile.channel_multiple)
        runtime = Runtime(quiet=quiet)  # a run's threads and verbosity
        lat = build_latency_model(space, net, profile, path, clock=latency_clock(profile), cache=True, runtime=runtime,
                                  precision=precision)
        line = (f"latency table {path}: {len(lat.keys())} layer configurations for {model} on {profile.name} "
                f"({precision or profile.precision})")
        if n_eval:
            err = evaluate_predictor(lat, space, net, profile, n=n_eval, runtime=runtime)
            line += (f"; on {n_eval} random architectures {100 * err['within_10pct']:.0f}% of predictions are "
                     f"within 10% (mean error {100 * err['mean_abs_rel_err']:.1f}%)")
    except CompressError as exc:
        fail(exc)
    click.echo(line)
