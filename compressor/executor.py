"""The one executor of runs: a list of stages over a :class:`~compressor.run_state.RunState`.

It opens (and locks) the run directory, runs the stages in order, times each, leaves the stages
marked ``main_only`` to rank 0 under torchrun, and applies the run directory's rules on failure:
a new run that fails on bad input before any stage saved state removes what it created; an
interrupted or crashed one keeps what ``--resume`` needs; a full disk is one line saying how to
continue. ``compress run`` and ``compress nas`` are the same executor with different stage lists.
"""
from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from compress_base.errors import CompressError
from compress_base.fileio import write_json

from .distributed import broadcast_object, is_main, process_group
from .run_report import RunReport
from .run_state import RunState
from .rundir import RunDir, open_new, open_resume
from .settings import RunConfig, absolute_paths

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """A named step of a run. ``when`` decides whether it runs (and is timed) at all; ``main_only``
    stages run on rank 0 alone (the other ranks stop before the first of them)."""

    name: str
    run: Callable[[RunState], None]
    when: Callable[[RunState], bool] | None = None
    main_only: bool = False


def execute(config: RunConfig, stages: list[Stage], make_state: Callable[[RunConfig, Path], RunState],
            name: str) -> RunReport | None:
    """Run ``stages`` in the run directory of ``config`` and return the report (None on ranks other
    than 0). ``make_state`` builds the initial state; ``name`` names a default run directory."""
    absolute_paths(config)  # on every rank: a run resumes from any working directory
    with process_group():
        run_dir = _shared_run_dir(config, name)
        try:
            state = make_state(config, run_dir.path)
            for stage in stages:
                if stage.main_only and not is_main():
                    return None
                if stage.when is None or stage.when(state):
                    _timed(stage, state)
            return state.report
        except CompressError:
            if is_main() and not config.resume and not run_dir.did_work():
                run_dir.discard()
            raise
        except OSError as exc:
            raise _write_error(exc, run_dir.path) from None
        finally:
            run_dir.release()


def _timed(stage: Stage, state: RunState) -> None:
    log.info("stage: %s", stage.name)
    start = time.perf_counter()
    try:
        stage.run(state)
    finally:
        spent = time.perf_counter() - start
        state.timings[stage.name] = round(state.timings.get(stage.name, 0.0) + spent, 3)


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _write_error(exc: OSError, out: Path) -> Exception:
    """A full disk or read-only folder under the run: one line saying how to continue; other OS
    errors stay what they are."""
    inside = exc.filename is not None and Path(exc.filename).absolute().is_relative_to(out.absolute())
    if exc.errno in _WRITE_ERRNOS or (inside and exc.errno in (errno.EACCES, errno.EPERM)):
        return CompressError(f"cannot write to the run directory {out} ({exc.strerror}): free space or make it "
                             f"writable, then continue with `compress --resume {out}`")
    return exc


def _shared_run_dir(config: RunConfig, name: str) -> RunDir:
    """Rank 0 opens (and locks) the run directory and saves the settings; every rank learns its
    path (or rank 0's error)."""
    result: tuple = (None, None)
    run_dir = None
    if is_main():
        try:
            run_dir = open_resume(config.out) if config.resume else _open_new(config, name)
            result = (str(run_dir.path), None)
        except CompressError as exc:
            result = (None, str(exc))
    path, error = broadcast_object(result)
    if error:
        raise CompressError(error)
    config.out = path
    return run_dir or RunDir(Path(path))


def _open_new(config: RunConfig, name: str) -> RunDir:
    run_dir = open_new(config.out, name, config.overwrite)
    config.out = str(run_dir.path)
    try:
        write_json(run_dir.settings_file, {**config.settings(), "budget": config.budget.to_dict()})
    except BaseException:
        run_dir.discard()
        run_dir.release()
        raise
    return run_dir
