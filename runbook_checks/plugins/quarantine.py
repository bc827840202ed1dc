"""Plugin quarantine and restore: invalid (or unwanted) Docker CLI plugins are moved, never
deleted, into a quarantine directory with a manifest, and put back byte-identical with
their mode (and owner, as root). The plugins-clean runbook's steps are plugins.clean.

A move never replaces anything: on one filesystem it is a hard link then an unlink (the
same inode, so bytes, mode, owner and times are kept); across filesystems it is a copy,
fsync, sha256 check, then the unlink. A name already in the quarantine gets a suffix.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import os
import stat
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..core import files
from ..core.errors import PluginError
from ..core.layout import Layout
from .discovery import user_name

MANIFEST = "manifest.json"


def resolve_dir(quarantine_dir: str, layout: Layout) -> Path:
    return Path(quarantine_dir).expanduser() if quarantine_dir else layout.quarantine_dir


def count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------------------------
# moving one file or symlink, never replacing
# --------------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable; a directory we may write but not read
    (mode -wx) cannot be opened for it, and the move stands anyway."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except PermissionError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link_no_replace(src: Path, dest: Path) -> bool:
    """Hard-link src (a symlink itself, not its target) as dest. False when the
    filesystem or the kernel refuses hard links here (then the caller renames)."""
    try:
        os.link(src, dest, follow_symlinks=False)
        return True
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.ENOTSUP):
            return False
        raise


def move(src: Path, dest: Path, sha256: str | None) -> str:
    """Move a file or symlink from src to dest, never replacing dest, keeping its times.
    Returns how: "link" or "rename" (same filesystem: the same inode) or "copy" (across
    filesystems: checked against `sha256`, or the bytes read, before src goes)."""
    lst = os.lstat(src)
    try:
        if _link_no_replace(src, dest):
            os.unlink(src)
            how = "link"
        else:
            if os.path.lexists(dest):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dest))
            os.rename(src, dest)
            how = "rename"
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_across(src, dest, lst, sha256)
        os.unlink(src)
        how = "copy"
    if not stat.S_ISLNK(lst.st_mode):
        try:
            os.utime(dest, ns=(lst.st_atime_ns, lst.st_mtime_ns))  # reading it to hash it may have moved atime
        except PermissionError:  # not the owner: the same inode kept its mtime; only atime may differ
            pass
    _fsync_dir(dest.parent)
    _fsync_dir(src.parent)
    return how


def _copy_across(src: Path, dest: Path, lst: os.stat_result, sha256: str | None) -> None:
    """Copy to a temporary name beside dest, fsync, check the sha256, then link it into
    place (no replace). The caller unlinks src only after this returned."""
    if stat.S_ISLNK(lst.st_mode):
        target = os.readlink(src)
        os.symlink(target, dest)  # FileExistsError rather than replace
        if os.geteuid() == 0:
            os.lchown(dest, lst.st_uid, lst.st_gid)
        if os.readlink(dest) != target:  # pragma: no cover - a filesystem that rewrites link text
            os.unlink(dest)
            raise PluginError(f"copying the symlink {src} to {dest} changed its target", "nothing was removed")
        return
    tmp = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    digest = hashlib.sha256()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with open(src, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
                os.write(fd, chunk)
        os.fsync(fd)
        if os.geteuid() == 0:
            os.fchown(fd, lst.st_uid, lst.st_gid)
        os.fchmod(fd, stat.S_IMODE(lst.st_mode))  # after chown, which clears set-id bits
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    copied = files.sha256(tmp)
    expected = sha256 or digest.hexdigest()
    if copied != digest.hexdigest() or copied != expected:
        os.unlink(tmp)
        raise PluginError(f"the copy of {src} in {dest.parent} does not match it (sha256 {copied[:12]}, expected"
                          f" {expected[:12]})", f"nothing was removed; check the disk holding {dest.parent}")
    os.utime(tmp, ns=(lst.st_atime_ns, lst.st_mtime_ns))
    try:
        if not _link_no_replace(tmp, dest):
            if os.path.lexists(dest):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dest))
            os.rename(tmp, dest)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


# --------------------------------------------------------------------------------------
# the quarantine and its manifest
# --------------------------------------------------------------------------------------
@dataclass
class Entry:
    """One quarantined plugin, as the manifest records it."""

    id: str
    name: str
    original_path: str
    stored: str  # file name inside the quarantine directory
    kind: str  # file | symlink
    link_target: str | None
    mode: str  # octal, e.g. "0755"
    uid: int
    gid: int
    owner: str
    size: int | None
    sha256: str | None  # of the file's bytes (None for a symlink)
    atime_ns: int
    mtime_ns: int
    reason: str
    time: str
    moved_by: str = ""  # link | rename | copy
    restored: str | None = None  # when it went back

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Entry":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class Quarantine:
    """A directory of moved-away plugins and manifest.json describing each."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.manifest = self.directory / MANIFEST

    def entries(self) -> list[Entry]:
        if not self.manifest.exists():
            return []
        try:
            data = json.loads(self.manifest.read_text())
            return [Entry.from_dict(e) for e in data["entries"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise PluginError(f"{self.manifest} cannot be read ({exc}); the kit will not write over it",
                              "repair it by hand (it is JSON: {\"entries\": [...]}) or move it aside") from None

    def save(self, entries: list[Entry]) -> None:
        body = {"about": "buildkit-ops plugin quarantine: invoke plugins.restore NAME|--all puts them back",
                "entries": [asdict(e) for e in entries]}
        files.atomic_write(self.manifest, json.dumps(body, indent=2) + "\n", mode=0o600)

    def pending(self) -> list[Entry]:
        return [e for e in self.entries() if not e.restored]

    def _free_name(self, base: str) -> str:
        taken = {e.stored for e in self.entries()}
        name, n = base, 1
        while name in taken or os.path.lexists(self.directory / name):
            n += 1
            name = f"{base}.{n}"
        return name

    def put(self, path: Path, name: str, reason: str) -> Entry:
        """Move one plugin in. The manifest records it before the move, so a crash between
        the two leaves a record pointing at a file that is still in place, never the reverse."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        lst = os.lstat(path)
        is_link = stat.S_ISLNK(lst.st_mode)
        entries = self.entries()
        entry = Entry(
            id=f"{files.stamp()}-{len(entries) + 1}",
            name=name, original_path=str(path), stored=self._free_name(path.name),
            kind="symlink" if is_link else "file", link_target=os.readlink(path) if is_link else None,
            mode=f"{stat.S_IMODE(lst.st_mode):04o}", uid=lst.st_uid, gid=lst.st_gid, owner=user_name(lst.st_uid),
            size=None if is_link else lst.st_size, sha256=None if is_link else files.sha256(path),
            atime_ns=lst.st_atime_ns, mtime_ns=lst.st_mtime_ns, reason=reason, time=_now())
        self.save(entries + [entry])
        while True:
            try:
                entry.moved_by = move(path, self.directory / entry.stored, entry.sha256)
                break
            except FileExistsError:  # someone put a file there since _free_name looked
                entry.stored = self._free_name(entry.stored)
                self.save(entries + [entry])
            except BaseException:
                if os.path.lexists(path) or not os.path.lexists(self.directory / entry.stored):
                    self.save(entries)  # it did not move: no record
                raise  # else it moved before the error: the record stays, so restore finds it
        self.save(entries + [entry])
        return entry

    def _check(self, path: Path, entry: Entry, what: str) -> None:
        if entry.kind == "symlink":
            ok = os.path.islink(path) and os.readlink(path) == entry.link_target
        else:
            ok = files.sha256(path) == entry.sha256
        if not ok:
            raise PluginError(f"the {what} copy {path} of {entry.original_path} does not match the manifest",
                              f"compare it with the manifest entry {entry.id} in {self.manifest}")

    def restore(self, entry: Entry) -> str:
        """Put one entry back where it came from, with its mode (and owner, as root)."""
        stored = self.directory / entry.stored
        original = Path(entry.original_path)
        if not os.path.lexists(stored):
            raise PluginError(f"{entry.name}: {stored} is no longer in the quarantine",
                              f"the manifest entry {entry.id} has nothing to restore; remove it by hand")
        self._check(stored, entry, "quarantined")
        if os.path.lexists(original):
            raise PluginError(f"{entry.name}: {original} exists again (a reinstall?); the kit never replaces it",
                              f"move {original} aside first, then restore {entry.name} again")
        if not original.parent.is_dir():
            raise PluginError(f"{entry.name}: its directory {original.parent} no longer exists",
                              f"create it (mkdir -p {original.parent}), then restore {entry.name} again")
        move(stored, original, entry.sha256)
        entry.restored = _now()  # it is back: record that before anything else can fail
        self.save([entry if e.id == entry.id else e for e in self.entries()])
        notes = []
        st = os.lstat(original)
        if (st.st_uid, st.st_gid) != (entry.uid, entry.gid):
            if os.geteuid() == 0:
                os.lchown(original, entry.uid, entry.gid)
            else:
                notes.append(f"owner left as {user_name(st.st_uid)} (was {entry.owner}; only root can give it back)")
        if entry.kind == "file":
            mode = stat.S_IMODE(os.stat(original).st_mode)
            if mode != int(entry.mode, 8):  # a copy, or a chown that cleared set-id bits
                try:
                    os.chmod(original, int(entry.mode, 8))
                except PermissionError:
                    notes.append(f"mode left as {mode:04o} (was {entry.mode}; only its owner or root can set it)")
        self._check(original, entry, "restored")
        if entry.kind == "file":
            try:
                os.utime(original, ns=(entry.atime_ns, entry.mtime_ns))  # the checks read it
            except PermissionError:  # not the owner: moved by rename, the inode kept its mtime
                pass
        return f"{entry.name}: {stored} -> {original} (mode {entry.mode}{'; ' + '; '.join(notes) if notes else ''})"

    def select(self, name: str | None = None, everything: bool = False) -> tuple[list[Entry], list[str]]:
        """The entries to restore: the newest per original path (an older one of the same
        path stays, and is named). By plugin name, or every pending one."""
        pending = self.pending()
        if not everything:
            pending = [e for e in pending if e.name == name]
            if not pending:
                names = sorted({e.name for e in self.pending()})
                raise PluginError(f"no quarantined plugin named {name!r} in {self.directory}",
                                  f"quarantined: {', '.join(names) or 'none'}")
        newest: dict[str, Entry] = {}
        for e in pending:  # the manifest is in time order
            newest[e.original_path] = e
        kept = [f"{e.name}: older copy {e.stored} ({e.time}) stays in quarantine"
                for e in pending if newest[e.original_path] is not e]
        return list(newest.values()), kept


def restore(directory: Path, name: str | None = None, everything: bool = False) -> list[str]:
    """Restore one plugin by name, or all; every entry is tried, the failures are raised
    together at the end (what was restored is in the message)."""
    quarantine = Quarantine(directory)
    if not quarantine.manifest.exists():
        raise PluginError(f"{directory} holds no quarantine manifest", "check --quarantine-dir (or the profile's"
                          " quarantine_dir); nothing was restored")
    chosen, kept = quarantine.select(name, everything)
    if len(chosen) == 1:  # one plugin: its own message and fix
        return [quarantine.restore(chosen[0])] + kept
    done, failed = [], []
    for entry in chosen:
        try:
            done.append(quarantine.restore(entry))
        except (PluginError, OSError) as exc:
            failed.append(str(exc))
    if failed:
        raise PluginError("restored:\n  " + ("\n  ".join(done) or "nothing") + "\nnot restored:\n  "
                          + "\n  ".join(failed), "apply the fix named for each, then restore again")
    return done + kept


def listing(directory: Path) -> list[str]:
    """One line per manifest entry: pending first."""
    quarantine = Quarantine(directory)
    entries = quarantine.entries()
    lines = [f"{e.name}: {e.original_path} ({e.reason}; quarantined {e.time})" for e in entries if not e.restored]
    lines += [f"{e.name}: {e.original_path} (restored {e.restored})" for e in entries if e.restored]
    return lines
