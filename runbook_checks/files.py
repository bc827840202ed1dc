"""Atomic writes with backups, and unified diffs: how every file the kit owns changes."""

from __future__ import annotations

import datetime as _dt
import difflib
import os
import shutil
import tempfile
from pathlib import Path

from .errors import KitError


def stamp() -> str:
    """A UTC timestamp for file names that sorts in time order, to the microsecond."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def unified_diff(old: str | None, new: str, path: Path) -> str:
    return "".join(difflib.unified_diff(
        (old or "").splitlines(keepends=True), new.splitlines(keepends=True),
        fromfile=f"{path} (on disk)" if old is not None else "/dev/null", tofile=f"{path} (desired)"))


def writable_dir(path: Path) -> Path:
    """The nearest existing ancestor of `path`, if we may create `path` under it."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise KitError(f"{probe} is not writable by uid {os.getuid()}, so {path} cannot be created",
                       f"run as a user who may write {probe}, or choose another state_dir/prefix")
    return probe


def backup(path: Path, backup_dir: Path) -> Path | None:
    """Copy `path` into backup_dir with a timestamp; None if there was nothing to keep."""
    if not path.exists():
        return None
    backup_dir.mkdir(parents=True, exist_ok=True)
    target = backup_dir / f"{path.name}.{stamp()}"
    shutil.copy2(path, target)
    return target


def atomic_write(path: Path, content: str | bytes, mode: int = 0o644) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it: readers see
    the old file or the new one, never half of either."""
    writable_dir(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_copy(src: Path, dest: Path, mode: int = 0o755) -> None:
    """Copy a binary into place atomically (a running daemon keeps its old inode)."""
    atomic_write(dest, src.read_bytes(), mode)
