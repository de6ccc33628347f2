"""The run directory: where a run writes, what it keeps to resume, and who may write it.

Layout: the artifacts (``arch.json``, ``model.pt``, ``model.onnx``, reports, ``manifest.json``) at
the top; while the run is unfinished, its private state in ``.compress/``: ``run.json`` (the
settings ``--resume`` reads) and the stages' checkpoints. The state folder's name is one no user
file has, so ``--overwrite`` never mistakes a user's ``state/`` or ``run.json`` for the run's.

Rules kept here, in one place:

- one process at a time: a run holds an exclusive ``flock`` on the directory while it works, and
  a second run or ``--resume`` of it is refused with one line;
- only what a run created is removed: a run that fails on bad input before doing any work removes
  its state (and the folders it created); an interrupted or crashed run keeps what ``--resume``
  needs; ``--overwrite`` removes a previous run's state and those of its artifacts that its
  manifest lists with an unchanged SHA-256, nothing else;
- a resumed run first removes the temporary files a killed process left (``write_atomic``'s
  ``.<name>.<random>.tmp``).
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from compress_base.errors import CompressError

from .manifest import MANIFEST, sha256

log = logging.getLogger(__name__)

STATE_DIR = ".compress"  # the run's private state while it is unfinished
SETTINGS_FILE = "run.json"  # inside STATE_DIR: the settings --resume reads
_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # fileio.atomic_path's temporary names


@dataclass
class RunDir:
    """An open run directory, locked by this process (rank 0) until :meth:`release`."""

    path: Path
    created: Path | None = None  # the top-most folder this run created; None: the folder existed
    lock_fd: int | None = None

    @property
    def state(self) -> Path:
        """The run's private state folder (settings and checkpoints)."""
        return self.path / STATE_DIR

    @property
    def settings_file(self) -> Path:
        return self.state / SETTINGS_FILE

    def did_work(self) -> bool:
        """Whether a stage has saved anything ``--resume`` could continue from."""
        return self.state.is_dir() and any(p.name != SETTINGS_FILE for p in self.state.iterdir())

    def discard(self) -> None:
        """Remove what this run created: its state; and when it made the run folder, that folder and
        the empty folders above it up to the first one it made."""
        if self.created is None:
            shutil.rmtree(self.state, ignore_errors=True)
            return
        created, folder = self.created.absolute(), self.path.absolute()
        shutil.rmtree(folder, ignore_errors=True)
        while folder != created and not folder.exists():
            folder = folder.parent
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    def finish(self) -> None:
        """The run is complete (its manifest written): drop the resume state."""
        shutil.rmtree(self.state, ignore_errors=True)

    def release(self) -> None:
        """Give up the lock."""
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # closing the descriptor releases its flock
            self.lock_fd = None


def default_out(name: str) -> str:
    """``runs/<timestamp>-<name>``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return str(Path("runs") / f"{stamp}-{name.replace(':', '_').replace('.', '_')}")


def open_new(out: str | None, name: str, overwrite: bool) -> RunDir:
    """Create (or, with ``overwrite``, reuse) the run directory, lock it and make its state folder."""
    out = out or default_out(name)
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise CompressError(f"output path {out} exists and is not a directory: choose another --out")
    created = _top_missing(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CompressError(f"cannot write to output directory {out} ({exc.strerror}): choose another --out") from None
    run = RunDir(path, created, _lock(path))
    try:
        if not overwrite and any(path.iterdir()):
            raise CompressError(f"output directory {out} is not empty: pass --overwrite or choose another --out")
        _replace_state(run)
    except BaseException:
        run.release()  # the folder is as it was: nothing to remove
        raise
    try:
        run.state.mkdir()
        _probe(run.state)
    except OSError as exc:
        run.discard()
        run.release()
        raise CompressError(f"cannot write to output directory {out} ({exc.strerror}): choose another --out") from None
    return run


def open_resume(path: str | Path) -> RunDir:
    """Lock the killed run's directory and remove the temporary files its process left."""
    run = RunDir(Path(path))
    if not run.path.is_dir():
        raise CompressError(f"{path} is not a run directory: give the --out of a run to resume")
    run.lock_fd = _lock(run.path)
    try:
        _check_state_folder(run)
        for folder in (run.path, run.state):
            for p in folder.iterdir() if folder.is_dir() else ():
                if _TEMP.match(p.name) and p.is_file() and not p.is_symlink():
                    p.unlink()
                    log.info("removed %s, left by the killed run", p)
    except BaseException:
        run.release()
        raise
    return run


def read_settings(path: str | Path) -> dict:
    """The saved settings of the unfinished run in ``path`` (a JSON object), with one-line errors."""
    run = RunDir(Path(path))
    if (run.path / MANIFEST).is_file():
        raise CompressError(f"the run in {path} has finished already: there is nothing to resume")
    if not run.settings_file.is_file() or run.settings_file.is_symlink():
        raise CompressError(f"{path} is not an unfinished run directory (no {STATE_DIR}/{SETTINGS_FILE}): "
                            "give the --out of a run to resume")
    try:
        saved = json.loads(run.settings_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CompressError(f"{run.settings_file} is damaged ({type(exc).__name__}); start a new run") from None
    if not isinstance(saved, dict):
        raise CompressError(f"{run.settings_file} is damaged (not a JSON object); start a new run")
    return saved


def remove_previous_artifacts(path: Path) -> None:
    """With ``--overwrite`` into a finished run: remove its manifest and the artifacts it lists that are
    unchanged (same SHA-256), so no stale file is taken for this run's. Anything else stays."""
    manifest = path / MANIFEST
    if not manifest.is_file() or manifest.is_symlink():
        return
    try:
        listed = json.loads(manifest.read_text(encoding="utf-8"))["artifacts"]
        items = [(str(name), str(entry["sha256"])) for name, entry in listed.items()]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        log.warning("%s is not a manifest this tool wrote; it is left as it is and will be replaced", manifest)
        return
    for name, digest in items:
        target = path / name
        if "/" in name or name.startswith(".") or not target.is_file() or target.is_symlink():
            continue
        if sha256(target) == digest:
            target.unlink()
    manifest.unlink()
    log.info("removed the previous run's artifacts from %s", path)


def _top_missing(path: Path) -> Path | None:
    """The top-most folder of ``path`` that does not exist yet (None: ``path`` exists)."""
    missing, probe = None, path.absolute()
    while not probe.exists() and probe != probe.parent:
        missing, probe = probe, probe.parent
    return missing


def _lock(path: Path) -> int:
    """An exclusive, non-blocking flock on the directory itself; released when the process ends."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CompressError(f"run directory {path} is in use by another compress process: wait for it to end, "
                            "or choose another --out") from None
    return fd


def _check_state_folder(run: RunDir) -> None:
    """The state path must be a real folder inside the run, never a link elsewhere."""
    state = run.state
    if state.is_symlink() or (state.exists() and not state.is_dir()):
        raise CompressError(f"{state} is not a folder this tool made (a link or a file): remove it, or choose "
                            "another --out")


def _replace_state(run: RunDir) -> None:
    """A new run in a folder that holds a killed run's state (``--overwrite``) starts afresh."""
    _check_state_folder(run)
    if run.state.is_dir():
        shutil.rmtree(run.state)
        log.info("removed the unfinished run's state from %s (--overwrite)", run.path)


def _probe(folder: Path) -> None:
    probe = folder / ".write-test"
    probe.write_text("")
    probe.unlink()
