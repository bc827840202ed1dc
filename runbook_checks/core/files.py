"""How every file the kit owns changes: converge (diff in check mode; backup and atomic
write in apply), atomic writes, backups, diffs, sha256, sizes of trees."""

from __future__ import annotations

import datetime as _dt
import difflib
import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

from .errors import KitError
from .results import Outcome


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


def writable_dir(path: Path, what: str = "") -> Path:
    """The nearest existing ancestor of `path`, if we may create `path` under it."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        why = "is not a directory" if not probe.is_dir() else f"is not writable by uid {os.getuid()}"
        raise KitError(f"{probe} {why}, so {path}{f' ({what})' if what else ''} cannot be created",
                       f"run as a user who may write {probe}, or choose another place"
                       + (f" for the {what}" if what else " (state_dir, or the parameter naming it)"))
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


def sha256(path: str | Path) -> str:
    """A file's sha256, read without moving its access time where the kernel allows
    (O_NOATIME: the owner, or root), so that hashing is not mistaken for use."""
    digest = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOATIME)
    except PermissionError:
        fd = os.open(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tree_bytes(path: Path) -> int:
    """The bytes of the regular files at or under `path` (symlinks not followed, nor
    counted; files that vanish while it walks count nothing); 0 when it does not exist."""
    if path.is_symlink() or not path.exists():
        return 0
    if not path.is_dir():
        return path.stat().st_size
    total = 0
    for top, _, names in os.walk(path):
        for name in names:
            try:
                found = os.lstat(os.path.join(top, name))
            except OSError:
                continue
            if stat.S_ISREG(found.st_mode):
                total += found.st_size
    return total


def converge(wanted: dict[Path, str], apply: bool, backup_dir: Path | None = None, **facts) -> Outcome:
    """Files that hold what is wanted: ok when every one does; otherwise changed, with the
    diff, and in apply mode the stale files written atomically, each backed up first into
    `backup_dir` (when given). Check mode writes nothing but fails now if apply could not
    create the files. `facts` go into the outcome; the backups made into its `backups`."""
    stale = {p: t for p, t in wanted.items() if read_text(p) != t}
    if not stale:
        return Outcome.ok(f"{_names(wanted)} up to date", **facts)
    diff = "".join(unified_diff(read_text(p), t, p) for p, t in stale.items())
    if not apply:
        writable_dir(next(iter(stale)).parent)
        return Outcome.changed(f"would write {_names(stale)}", diff, **facts)
    backups = {}
    for path, text in stale.items():
        saved = backup(path, backup_dir) if backup_dir else None
        if saved:
            backups[str(path)] = str(saved)
        atomic_write(path, text)
    outcome = Outcome.changed(f"wrote {_names(stale)}", diff, **facts)
    outcome.backups = backups
    return outcome


def write_if_changed(path: Path, content: str | bytes) -> bool:
    """Atomically write `content` unless `path` holds it already; True if written (for
    generated files whose history is git's: plots, rendered pages)."""
    data = content.encode() if isinstance(content, str) else content
    if path.exists() and path.read_bytes() == data:
        return False
    atomic_write(path, data)
    return True


def _names(paths) -> str:
    return ", ".join(str(p) for p in paths)
