"""Recovery for what the service manager cannot fix by itself, each action reported like
any step and nothing deleted without a copy:

- a corrupted bolt database under buildkitd's root. BuildKit resets `cache.db` and
  `history.db` itself (keeping a .bak); a worker database it cannot open stops the daemon
  from starting (`metadata_v2.db`, `containerdmeta.db`), or leaves it listening while
  every build fails (`snapshots/metadata.db`). `bbolt check` (bbolt's own tool, built
  from the Go module proxy) finds it; the worker's directory is moved aside whole (its
  databases refer to each other) and the daemon starts on an empty local cache;
- snapshot directories the snapshot database never recorded (a daemon killed between
  making one and committing its record). The next snapshot to get that id fails its build
  with "file exists"; they are moved aside with the daemon stopped;
- a full disk. With no byte free, buildkitd cannot even prune (a prune writes to its
  databases) and what the failed step left stays. A reserve file beside the cache is
  released, the daemon restarted (its start-up garbage collection removes what failed
  steps left), the cache pruned to a target free space, the reserve made again;
- build containers a dying daemon left in `runc init` (made, never started; seen when
  buildkit.service was killed while it made one): killed;
- a daemon that listens but does not build: a build probe."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Callable

from ..core import files
from ..core.clock import wait_until
from ..core.errors import KitError, ServiceError
from ..core.layout import Layout
from ..core.results import Outcome
from ..core.units import human_bytes
from . import install, service, stack
from .buildctl import Buildctl
from .contexts import busybox_rootfs

BBOLT_MODULE = "go.etcd.io/bbolt"
BBOLT_VERSION = "v1.4.3"
RESERVE = "kit-reserve"  # the reserve file in buildkitd's root: space to release when the disk is full
# where BuildKit keeps bolt databases under its root (never into snapshot contents)
DATABASE_GLOBS = ("*.db", "*/*.db", "*/snapshots/metadata.db")


def bbolt() -> Path:
    """bbolt's CLI (`bbolt check`), built once per version outside the checkout."""
    return install.cached_go_binary(BBOLT_MODULE, "cmd/bbolt", BBOLT_VERSION)


def databases(layout: Layout) -> list[Path]:
    root = layout.root_dir
    return sorted({p for pattern in DATABASE_GLOBS for p in root.glob(pattern) if p.is_file()})


def check_database(path: Path, tool: Path | None = None) -> str:
    """"" when `bbolt check` passes on a copy of `path` (a running daemon holds the file's
    lock), else what it says is wrong."""
    with tempfile.TemporaryDirectory(prefix="kit-bolt-") as tmp:
        copy = Path(tmp) / path.name
        shutil.copyfile(path, copy)
        proc = subprocess.run([str(tool or bbolt()), "check", str(copy)], capture_output=True, text=True, timeout=300)
    if proc.returncode == 0:
        return ""
    said = [ln.removeprefix("Error: ") for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    return said[0] if said else f"bbolt check exited {proc.returncode}"


def broken_databases(layout: Layout) -> dict[Path, str]:
    tool = bbolt()
    found = {db: check_database(db, tool) for db in databases(layout)}
    return {db: why for db, why in found.items() if why}


def what_to_move(layout: Layout, db: Path) -> Path:
    """A worker's database takes its whole directory with it (its databases and snapshots
    refer to each other); a database at the root goes alone."""
    relative = db.relative_to(layout.root_dir)
    return layout.root_dir / relative.parts[0] if len(relative.parts) > 1 else db


def aside_dir(layout: Layout, stamp: str) -> Path:
    """Where moved-aside state goes: beside the root (same filesystem, out of BuildKit's sight)."""
    return layout.root_dir.parent / f"{layout.root_dir.name}.aside-{stamp}"


def databases_sound(layout: Layout, manager, apply: bool, timeout: float = 60) -> Outcome:
    """Every bolt database under the root passes `bbolt check`; else (apply) stop the
    daemon, move what holds the broken ones aside (a copy, never deleted), start it, and
    say what the daemon lost."""
    found = databases(layout)
    broken = broken_databases(layout)
    if not broken:
        return Outcome.ok(f"{len(found)} databases pass bbolt check: "
                          f"{', '.join(str(p.relative_to(layout.root_dir)) for p in found)}", databases=len(found))
    moves = sorted({what_to_move(layout, db) for db in broken})
    said = "; ".join(f"{db.relative_to(layout.root_dir)}: {why}" for db, why in broken.items())
    lost = [lost_with(layout, m) for m in moves]
    if not apply:
        return Outcome.changed(f"bbolt check fails: {said}. Would stop buildkitd, move "
                               f"{', '.join(str(m.relative_to(layout.root_dir)) for m in moves)} aside and start it;"
                               f" lost: {'; '.join(lost)}", broken=[str(b) for b in broken], lost=lost)
    manager.stop_daemon()
    dest = move_aside(layout, moves)
    manager.start()
    service.wait_ready(layout, manager, timeout)
    return Outcome.changed(f"bbolt check failed: {said}. Moved {', '.join(str(m.relative_to(layout.root_dir)) for m in moves)}"
                           f" to {dest} and started buildkitd; lost: {'; '.join(lost)}. Builds are uncached until they"
                           " import a remote cache (remote caches are untouched; the cache-warm runbook re-warms)."
                           f" Remove {dest} once nothing in it is wanted",
                           broken=[str(b) for b in broken], aside=str(dest), lost=lost)


def move_aside(layout: Layout, paths: list[Path]) -> Path:
    """Move `paths` under the root (the daemon stopped) into a new aside directory, keeping
    their places relative to the root: where they went."""
    dest = aside_dir(layout, files.stamp())
    for path in paths:
        for point in stack.mounts_under(path) if path.is_dir() else []:
            subprocess.run(["umount", "-l", point], check=False)
        target = dest / path.relative_to(layout.root_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(path, target)
    return dest


def lost_with(layout: Layout, path: Path) -> str:
    """What the daemon no longer has once `path` is moved aside."""
    size = human_bytes(files.tree_bytes(path))
    if path.is_dir():
        return f"the local build cache of {path.name} ({size})"
    if path.name == "history.db":
        return f"the build history ({size})"
    return f"the cache records of {path.name} ({size})"


# --------------------------------------------------------------------------------------
# snapshot directories no database records
# --------------------------------------------------------------------------------------
def _uvarint(data: bytes) -> int:
    value = 0
    for shift, byte in enumerate(data):
        value |= (byte & 0x7F) << (7 * shift)
        if byte < 0x80:
            break
    return value


def snapshot_ids(db: Path, tool: Path | None = None) -> set[int]:
    """The ids containerd's snapshot store has recorded in `db` (bucket v1/snapshots, one
    sub-bucket per snapshot, its `id` a uvarint), read with bbolt's CLI from a copy."""
    tool = tool or bbolt()
    with tempfile.TemporaryDirectory(prefix="kit-bolt-") as tmp:
        copy = Path(tmp) / db.name
        shutil.copyfile(db, copy)

        def bolt(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([str(tool), *args], capture_output=True, text=True, timeout=60)

        keys = bolt("keys", str(copy), "v1", "snapshots")  # snapshot names: printable, one per line
        if keys.returncode:
            if "bucket not found" in keys.stdout + keys.stderr:
                return set()
            raise KitError(f"bbolt keys {db}: {(keys.stdout + keys.stderr).strip()}", "run the databases step first")
        ids = set()
        for key in keys.stdout.splitlines():
            got = bolt("get", "--format", "hex", str(copy), "v1", "snapshots", key, "id")
            if got.returncode == 0:
                ids.add(_uvarint(bytes.fromhex(got.stdout.strip())))
    return ids


def unrecorded_snapshots(layout: Layout) -> list[Path]:
    """Entries of each worker's snapshots/snapshots/ whose name is no id its snapshot
    database records (what containerd's own cleanup would remove)."""
    found = []
    tool = bbolt()
    for db in sorted(layout.root_dir.glob("*/snapshots/metadata.db")):
        ids = {str(i) for i in snapshot_ids(db, tool)}
        found += sorted((p for p in (db.parent / "snapshots").glob("*") if p.name not in ids),
                        key=lambda p: (len(p.name), p.name))
    return found


def snapshots_recorded(layout: Layout, manager, apply: bool, timeout: float = 60) -> Outcome:
    """Every snapshot directory is one the snapshot database records; else (apply) stop the
    daemon, look again (a snapshot being made is a directory before it is a record), move
    what is still unrecorded aside (never deleted), start it."""
    def named(found: list[Path]) -> str:
        listed = ", ".join(str(p.relative_to(layout.root_dir)) for p in found[:5]) + (", ..." if len(found) > 5 else "")
        return f"{len(found)} snapshot director{'y' if len(found) == 1 else 'ies'} no database records ({listed})"

    found = unrecorded_snapshots(layout)
    if not found:
        return Outcome.ok("every snapshot directory is recorded in its snapshot database")
    if not apply:
        return Outcome.changed(f"{named(found)}: a build whose snapshot gets such an id fails with 'file exists'."
                               " Would stop buildkitd, move them aside and start it", unrecorded=len(found))
    manager.stop_daemon()
    found = unrecorded_snapshots(layout)
    dest = move_aside(layout, found) if found else None
    manager.start()
    service.wait_ready(layout, manager, timeout)
    if not found:
        return Outcome.ok("every snapshot directory is recorded in its snapshot database (looked again with the"
                          " daemon stopped)")
    return Outcome.changed(f"moved {named(found)} to {dest} and started buildkitd. Remove {dest} once nothing in it"
                           " is wanted", unrecorded=len(found), aside=str(dest))


# --------------------------------------------------------------------------------------
# build containers their daemon left behind
# --------------------------------------------------------------------------------------
RUNC_INIT = "runc:[2:INIT]"  # a container's process until `runc start` lets it exec the step


def _status(proc: Path) -> dict[str, str]:
    try:
        return dict(line.split(":\t", 1) for line in (proc / "status").read_text().splitlines() if ":\t" in line)
    except OSError:
        return {}


def stray_containers(proc_root: Path = Path("/proc")) -> dict[int, str]:
    """{pid: container id} of BuildKit build containers whose daemon died while it made
    them: a `runc init` still waiting to be started, in one of BuildKit's cgroups
    (.../buildkit/ID), whose parent is no longer the runc that made it. No one will ever
    start it: it holds its cgroup, a few tasks and its memory until it is killed."""
    found = {}
    for proc in proc_root.iterdir():
        if not proc.name.isdigit():
            continue
        status = _status(proc)
        if status.get("Name", "").strip() != RUNC_INIT:
            continue
        if _status(proc_root / status.get("PPid", "0").strip()).get("Name", "").strip() == "runc":
            continue  # being made right now
        try:
            groups = (proc / "cgroup").read_text()
        except OSError:
            continue
        ids = [line.rsplit("/buildkit/", 1)[1] for line in groups.splitlines() if "/buildkit/" in line]
        if ids:
            found[int(proc.name)] = ids[0]
    return found


def stray_containers_gone(apply: bool, proc_root: Path = Path("/proc"), timeout: float = 10) -> Outcome:
    """No stray build container on this host; else (apply) kill each (SIGKILL): a process
    that waits for a start that cannot come has nothing to lose."""
    strays = stray_containers(proc_root)
    if not strays:
        return Outcome.ok("no build container outlived the daemon that made it")
    names = ", ".join(f"{cid} (pid {pid})" for pid, cid in sorted(strays.items()))
    if not apply:
        return Outcome.changed(f"{len(strays)} build container(s) outlived the daemon that made them, waiting in runc"
                               f" init for a start that cannot come: {names}; would kill them", strays=len(strays))
    for pid in strays:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    wait_until(lambda: not set(stray_containers(proc_root)) & set(strays), timeout,
               f"stray build containers (pids {sorted(strays)}) going away after SIGKILL",
               "look at them with ps and /proc/PID/status (a process in D state waits on I/O)", ServiceError)
    return Outcome.changed(f"killed {len(strays)} build container(s) the daemon left behind in runc init: {names}",
                           strays=len(strays))


# --------------------------------------------------------------------------------------
# a full disk
# --------------------------------------------------------------------------------------
def reserve_path(layout: Layout) -> Path:
    return layout.root_dir / RESERVE


def make_reserve(path: Path, size: int) -> None:
    """`size` bytes really allocated (not a sparse file), written atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def ensure_reserve(layout: Layout, size: int, apply: bool, here: bool = True) -> Outcome:
    """The reserve file in buildkitd's root (`disk_reserve`): space the recover runbook
    releases when the disk is full, so that a prune can write again. Not `here` (a tree
    rendered for another host): it is made on that host, not in the tree."""
    if not here:
        return Outcome.skipped(f"a tree rendered under {layout.state_dir}: the reserve belongs on the build server's"
                               " disk (apply configure there, state_dir=/)")
    path = reserve_path(layout)
    have = path.stat().st_size if path.exists() else 0
    if have == size:
        return Outcome.ok(f"{path} reserves {human_bytes(size)}" if size else "no disk reserve (disk_reserve is 0)")
    if not apply:
        return Outcome.changed(f"would {'make' if size else 'remove'} {path} ({human_bytes(size)})")
    if not size:
        path.unlink()
        return Outcome.changed(f"removed {path}")
    free = shutil.disk_usage(layout.root_dir).free
    if size - have > free:
        raise ServiceError(f"the disk reserve needs {human_bytes(size - have)} more and {layout.root_dir} has"
                           f" {human_bytes(free)} free", "free space first (the recover runbook), or lower disk_reserve")
    layout.root_dir.mkdir(parents=True, exist_ok=True)
    make_reserve(path, size)
    return Outcome.changed(f"{path} reserves {human_bytes(size)}")


def disk_space(layout: Layout, manager, min_free: int, reserve: int, apply: bool, timeout: float = 60) -> Outcome:
    """At least `min_free` bytes free on buildkitd's filesystem; else (apply) release the
    reserve, restart the daemon, prune to `min_free` free, make the reserve again."""
    free = shutil.disk_usage(layout.root_dir).free
    if free >= min_free:
        return Outcome.ok(f"{human_bytes(free)} free on {layout.root_dir}'s filesystem (at least"
                          f" {human_bytes(min_free)} wanted)", free_bytes=free)
    if not apply:
        return Outcome.changed(f"only {human_bytes(free)} free on {layout.root_dir}'s filesystem: would release the"
                               " reserve, restart buildkitd, prune the cache to"
                               f" {human_bytes(min_free)} free and make the reserve again", free_bytes=free)
    path = reserve_path(layout)
    released = path.stat().st_size if path.exists() else 0
    if released:
        path.unlink()
    manager.restart()  # its start-up garbage collection removes what failed steps left behind
    service.wait_ready(layout, manager, timeout)
    after_restart = shutil.disk_usage(layout.root_dir).free
    Buildctl.for_layout(layout).run("prune", "--all", "--free-storage", str(max(1, min_free // 1_000_000)),
                                    timeout=600)
    after = shutil.disk_usage(layout.root_dir).free
    facts = {"free_bytes": after, "released": released, "free_after_restart": after_restart}
    if after < min_free + reserve:
        return Outcome.failed(f"released {human_bytes(released)}, restarted and pruned, and only {human_bytes(after)}"
                              f" is free on {layout.root_dir}'s filesystem: the build cache is not what fills it",
                              **facts)
    if reserve:
        make_reserve(path, reserve)
    return Outcome.changed(f"was {human_bytes(free)} free: released the {human_bytes(released)} reserve, restarted"
                           f" buildkitd ({human_bytes(after_restart)} free), pruned to {human_bytes(after)} free"
                           f"{', made the reserve again' if reserve else ''}. To keep it from filling, give the GC"
                           f" policy a rule with min_free_space (at least {human_bytes(min_free)})", **facts)


# --------------------------------------------------------------------------------------
# a daemon that listens but does not build
# --------------------------------------------------------------------------------------
PROBE_DOCKERFILE = "FROM scratch\nCOPY rootfs/ /\nARG {arg}\nRUN echo {nonce} > /probe\n"
PROBE_ARG = "BUILDKIT_OPS_PROBE"  # the build-arg every probe carries, so reports can leave probes out


def probe(client: Buildctl, timeout: float = 120) -> float:
    """A build with a RUN step no cache holds (the daemon answers AND builds): its seconds."""
    with tempfile.TemporaryDirectory(prefix="kit-probe-") as tmp:
        ctx = Path(tmp)
        busybox_rootfs(ctx / "rootfs")
        (ctx / "Dockerfile").write_text(PROBE_DOCKERFILE.format(arg=PROBE_ARG, nonce=uuid.uuid4().hex))
        return client.build(ctx, build_args={PROBE_ARG: "1"}, timeout=timeout).seconds


def build_error(build: Callable[[], object]) -> str:
    """"" when `build()` succeeds, else buildctl's error (the part after its last "error: ")."""
    try:
        build()
        return ""
    except KitError as exc:
        return exc.problem.rsplit("error: ", 1)[-1]


def probe_fails(client: Buildctl, timeout: float = 120) -> str:
    """"" when a probe build runs, else buildctl's error."""
    return build_error(lambda: probe(client, timeout))


def is_probe(record: dict) -> bool:
    """Whether a build history record is a probe's."""
    attrs = record.get("FrontendAttrs") or record.get("frontendAttrs") or {}
    return f"build-arg:{PROBE_ARG}" in attrs


def build_probe(layout: Layout, timeout: float = 120) -> Outcome:
    seconds = probe(Buildctl.for_layout(layout), timeout)
    return Outcome.ok(f"a probe build ran a RUN step in {seconds:.1f}s", probe_seconds=seconds)
