"""What the ``compress`` commands share: logging setup, the option parsers (one-line errors), the
one way a user error ends a command (``error:`` and exit code 2), and signal handling."""
from __future__ import annotations

import json
import logging
import os
import signal
import sys

import click

from compress_base.errors import CompressError

from .units import parse_count_or_fraction, parse_latency_ms, parse_shape, parse_size


def interrupt_on_sigterm() -> None:
    """SIGTERM (a scheduler's kill, torchrun stopping the group) ends a run like Ctrl-C: cleanly,
    keeping its resume state, rather than with no cleanup at all."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)


def setup_logging(quiet: bool) -> None:
    other_rank = int(os.environ.get("RANK", "0")) > 0  # under torchrun, rank 0 alone logs progress
    logging.basicConfig(
        level=logging.WARNING if quiet or other_rank else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.ERROR)


def _parsed(parse, what: str):
    """A click callback: ``parse(value, what)``, its CompressError as click's one-line usage error."""
    def convert(ctx, param, value):
        if value is None:
            return None
        try:
            return parse(value, what)
        except CompressError as exc:
            raise click.BadParameter(str(exc)) from None
    return convert


def count_option(what: str):
    """A count with an optional K/M/G suffix (``300M``)."""
    return _parsed(parse_size, what)


def budget_option(what: str):
    """A count or a percentage of the original model (``300M``, ``50%``)."""
    return _parsed(parse_count_or_fraction, what)


def latency_option(ctx, param, value):
    if value is None:
        return None
    try:
        return parse_latency_ms(value)
    except CompressError as exc:
        raise click.BadParameter(str(exc)) from None


def shape_option(ctx, param, value):
    if value is None:
        return None
    try:
        return "x".join(map(str, parse_shape(value)))
    except CompressError as exc:
        raise click.BadParameter(str(exc)) from None


def key_value_options(ctx, param, values):
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def fail(exc: CompressError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


def require_torch() -> None:
    """Exit with one line where PyTorch is missing (a board set up for ``compress bench`` alone)."""
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError:
        fail(CompressError("this command needs PyTorch and torchvision (pip install torch torchvision); without "
                            "them only compress bench, compress report and compress profiles work"))
