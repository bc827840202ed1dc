"""The faults BuildKit operators meet, each injected for real into a sandbox under load;
then the three questions of every trial: was it detected (by what, how fast), was it
recovered (by the service manager or the kit's recover runbook, how fast), was anything
lost (the daemon builds, the baseline rebuilds CACHED, remote caches are whole or cleanly
absent, the config and the run records are intact)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..cache.proof import uncached
from ..core import files
from ..core.clock import wait_until
from ..core.errors import KitError
from ..daemon import recovery, service
from ..daemon.buildctl import Buildctl
from .sandbox import Sandbox, start_build

SUPERVISOR = "supervisord (autorestart)"
RECOVER = "the recover runbook (apply)"
CONFIGURE = "the configure runbook (apply: the services beside buildkitd)"


@dataclass
class Injected:
    """What a fault's injection saw: how it was detected, how it was recovered, what was
    lost on purpose (the recovery says so), and anything else worth keeping."""

    detected_by: str
    detect_seconds: float
    recovered_by: str
    recover_seconds: float
    lost: list[str] = field(default_factory=list)
    notes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Fault:
    name: str
    summary: str  # what goes wrong, as the operator meets it
    issue: str  # where operators report it
    inject: Callable[..., Injected]  # (its sandbox or host box, the trial's number)
    setup: Callable[..., None] | None = None  # once per sandbox, before the first trial


# --------------------------------------------------------------------------------------
# the moves every fault is made of
# --------------------------------------------------------------------------------------
def wait(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """`wait_until` with the drills' fix: the sandbox daemon's log tells why."""
    return wait_until(predicate, timeout, what, "read the sandbox daemon's log")


def daemon_pid(box: Sandbox) -> int:
    """The daemon's pid once supervisord counts it RUNNING: a fault starts from a steady state."""
    wait(lambda: box.manager.info()["state"] == "RUNNING", 30, "buildkitd RUNNING before the fault")
    return box.manager.info()["pid"]


def restarted_by_supervisor(box: Sandbox, old_pid: int, timeout: float = 60) -> float:
    """Seconds until supervisord has a new buildkitd RUNNING (past its startsecs) that
    answers. Not only answering: a daemon that dies again before startsecs counts as a
    failed start, and after startretries of those supervisord gives up (FATAL)."""
    def running() -> bool:
        info = box.manager.info()
        return info["state"] == "RUNNING" and info["pid"] not in (0, old_pid) and service.daemon_answers(box.layout)

    return wait(running, timeout, "supervisord restarting buildkitd")


def back_in_service(box: Sandbox, old_pid: int) -> tuple[str, float, list[str], dict]:
    """supervisord restarts the daemon; probe builds show whether it builds again: (recovered
    by, seconds, what was lost, notes). A crash can leave a snapshot directory the
    database never recorded: the first build after the restart whose snapshot gets that id
    fails ("file exists") and the daemon's garbage collection then removes every such
    directory, so the next build works; that first failure is kept in the notes (the
    recover runbook moves them aside before any build meets one). Where builds still
    fail, the recover runbook repairs it."""
    took = restarted_by_supervisor(box, old_pid)
    notes = {}
    first = probe_fails(box)
    if first:
        notes["first_build_after_restart_failed"] = first[:300]
    strays = recovery.stray_containers()
    if strays:  # the kill caught a container being made: its runc init waits for ever
        notes["stray_build_containers"] = len(strays)
    if not strays and (not first or not probe_fails(box)):
        return SUPERVISOR, took, [], notes
    more, lost = recover_runbook(box)
    return f"{SUPERVISOR}, then {RECOVER}", round(took + more, 2), lost, notes


def recover_runbook(box: Sandbox, *sets: str) -> tuple[float, list[str]]:
    """Run the recover runbook (apply): its seconds, and what its steps say was lost."""
    start = time.monotonic()
    result = box.runbook("recover", "apply", *sets)
    if result.report.status == "failed":
        failed = [s for s in result.report.steps if s.status == "failed"]
        raise KitError(f"the recover runbook failed: {failed[-1].name}: {failed[-1].message}" if failed else
                       "the recover runbook failed", f"read {result.notebook}")
    return round(time.monotonic() - start, 2), list(result.report.facts.get("lost", []))


def probe_fails(box: Sandbox) -> str:
    """The probe build's error, or "" when it builds."""
    return recovery.probe_fails(Buildctl.for_layout(box.layout), timeout=60)


def build_fails(build: Callable[[], object], what: str) -> str:
    """The error of a build the fault must make fail; if it succeeds, the fault did not land."""
    try:
        build()
    except KitError as exc:
        return exc.problem
    raise KitError(f"{what} succeeded: the fault did not land", "check the drill's setup")


def kill_during(box: Sandbox, moment: Callable[[str], bool], export: tuple[str, ...] = (),
                payload_mb: int = 4, sleep: float = 0) -> tuple[int, str, float]:
    """Start a build, SIGKILL buildkitd when a step `moment` accepts starts: (old pid, the
    step, seconds until the build's client saw the failure)."""
    pid = daemon_pid(box)
    flight = start_build(box.buildctl, box.context(sleep=sleep, payload_mb=payload_mb), export)
    step = flight.wait_for(moment)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    code, _ = flight.finish()
    if code == 0:
        raise KitError(f"the build survived the kill at {step!r}: the fault did not land", "check the drill's timing")
    return pid, step, round(time.monotonic() - killed, 2)


# --------------------------------------------------------------------------------------
# the faults
# --------------------------------------------------------------------------------------
def kill_run(box: Sandbox, trial: int) -> Injected:
    pid, step, seen = kill_during(box, lambda n: n.startswith("[") and "sleep" in n, sleep=3)
    by, took, lost, notes = back_in_service(box, pid)
    return Injected("the build's client: the connection dropped", seen, by, took, lost, {"step": step, **notes})


def kill_export(kind: str) -> Callable[[Sandbox, int], Injected]:
    def inject(box: Sandbox, trial: int) -> Injected:
        backend = box.backend(kind, f"export-{trial}")
        pid, step, seen = kill_during(box, lambda n: n.startswith("exporting cache"),
                                      (backend.export_option(),), payload_mb=24)
        by, took, lost, notes = back_in_service(box, pid)
        missing = backend.missing_blobs()
        state = "absent" if missing is None else ("complete" if not missing else f"{len(missing)} blobs missing")
        return Injected("the build's client: the connection dropped", seen, by, took, lost,
                        {"step": step, "interrupted_cache": state, "checked": str(backend), **notes})
    return inject


def kill_prune(box: Sandbox, trial: int) -> Injected:
    for _ in range(3):  # records to prune
        box.buildctl.build(box.context(payload_mb=2))
    pid = daemon_pid(box)
    prune = subprocess.Popen([str(box.layout.buildctl), "--addr", box.layout.address, "prune", "--all"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert prune.stdout is not None
    first = prune.stdout.readline()  # the first record pruned: the prune is under way
    running = prune.poll() is None
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    prune.wait(timeout=60)
    seen = round(time.monotonic() - killed, 2)
    by, took, lost, notes = back_in_service(box, pid)
    return Injected(f"buildctl prune: exit {prune.returncode}", seen, by, took, lost,
                    {"prune_still_running_at_kill": running, "first_pruned": first.split()[0] if first else "", **notes})


def kill_tree(box: Sandbox, trial: int) -> Injected:
    """supervisord and everything under it, at once (a service's whole cgroup killed)."""
    pidfile = box.layout.run_dir / "supervisord.pid"
    top = int(pidfile.read_text().strip())
    flight = start_build(box.buildctl, box.context(sleep=3))
    flight.wait_for(lambda n: "sleep" in n)
    tree = [top, *descendants(top)]
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    killed = time.monotonic()
    flight.finish()
    detected = wait(lambda: not service.daemon_answers(box.layout), 30, "the daemon stopping answering")
    seen = round(time.monotonic() - killed, 2)
    took, lost = recover_runbook(box)
    return Injected(f"the daemon stopped answering ({detected}s after); the build's client failed", seen, RECOVER,
                    took, lost, {"killed": len(tree)})


def descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        child, parent = (int(x) for x in line.split())
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def garble(path: Path) -> None:
    """Overwrite both bolt meta pages (the first 8 KiB) with random bytes."""
    with open(path, "r+b") as fh:
        fh.write(os.urandom(8192))


def garble_under(box: Sandbox, db: Path) -> int:
    """The daemon frozen (SIGSTOP, every thread seen stopped, so no write of its lands after
    ours), `db` garbled, the daemon killed: the pid it had."""
    pid = daemon_pid(box)
    os.kill(pid, signal.SIGSTOP)
    tasks = Path(f"/proc/{pid}/task")
    wait_until(lambda: all(_state(t) in ("T", "t", "") for t in tasks.iterdir()), 10, f"buildkitd (pid {pid}) stopping",
               "look at its threads' states in /proc/PID/task/*/stat")
    garble(db)
    os.kill(pid, signal.SIGKILL)
    return pid


def _state(task: Path) -> str:
    try:
        return (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def corrupt_worker_db(box: Sandbox, trial: int) -> Injected:
    """metadata_v2.db garbled, then the daemon killed: it will not start again."""
    garble_under(box, next(box.layout.root_dir.glob("*/metadata_v2.db")))
    killed = time.monotonic()
    wait(lambda: box.manager.info()["state"] == "FATAL", 60, "supervisord giving up on buildkitd")
    seen = round(time.monotonic() - killed, 2)
    took, lost = recover_runbook(box)
    return Injected("supervisord: buildkitd FATAL (exits at start: invalid database)", seen, RECOVER, took, lost)


def corrupt_snapshots_db(box: Sandbox, trial: int) -> Injected:
    """snapshots/metadata.db garbled, then the daemon killed: it starts, listens and
    answers, and every build fails (a hung daemon for its users)."""
    pid = garble_under(box, next(box.layout.root_dir.glob("*/snapshots/metadata.db")))
    restarted_by_supervisor(box, pid)
    start = time.monotonic()
    said = probe_fails(box)
    if not said:
        raise KitError("the daemon built on a garbled snapshots database: the fault did not land",
                       "check which database the drill garbles")
    seen = round(time.monotonic() - start, 2)
    took, lost = recover_runbook(box)
    return Injected(f"a probe build (BuildkitdCannotBuild's) failed while the daemon answered: {said[:120]}", seen,
                    RECOVER, took, lost)


FULL_DISK_MB = 160  # the builder root's filesystem in the disk-full drill
DISK_SETS = ("free_space_target=40MB", "disk_reserve=8MB")


def small_disk(box: Sandbox) -> None:
    """Put the builder's root on a 160 MB filesystem of its own, the reserve in it."""
    box.manager.stop_daemon()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FULL_DISK_MB}m,mode=0711", "kit-drill-disk",
                    str(box.layout.root_dir)], check=True)
    box.manager.start()
    service.wait_ready(box.layout, box.manager, 60)
    recovery.ensure_reserve(box.layout, 8_000_000, apply=True)
    box.rebuild_baseline()  # the local cache again, from the remote one


def disk_full(box: Sandbox, trial: int) -> Injected:
    """A build writes more than the disk holds: the step fails, and then every build,
    `buildctl du` and even a prune fail with ENOSPC until space is freed. BuildKit may give
    the failed step's space back before the probe runs (seen once in six trials in CI): the
    disk is then filled again, three times at most, and the note says how many it took."""
    for fills in range(1, 4):
        filled = build_fails(lambda: box.buildctl.build(box.context(payload_mb=FULL_DISK_MB * 2)),
                             "a build larger than the disk")
        start = time.monotonic()
        said = probe_fails(box)
        if said:
            break
    else:
        raise KitError("a probe build ran on the full disk after three fills: the fault did not land",
                       "shrink the drill's disk")
    seen = round(time.monotonic() - start, 2)
    took, lost = recover_runbook(box, *DISK_SETS)
    return Injected(f"a probe build (BuildkitdCannotBuild's) failed: {said[:120]}", seen, RECOVER, took, lost,
                    {"the_filling_build": filled.rsplit("error: ", 1)[-1][:200], "fills": fills})


def backend_down(program: str, kind: str) -> Callable[[Sandbox, int], Injected]:
    """The cache backend stopped: an export fails the build (unless ignore-error), an
    import falls back to the daemon's own cache; the configure runbook starts it again."""
    def inject(box: Sandbox, trial: int) -> Injected:
        backend = box.backend(kind, f"down-{trial}")
        box.manager.stop_program(program)
        start = time.monotonic()
        said = build_fails(lambda: box.buildctl.build(box.baseline, export_cache=[backend.export_option()]),
                           f"a cache export to a stopped {program}")
        seen = round(time.monotonic() - start, 2)
        imported = box.buildctl.build(box.baseline, import_cache=[backend.import_option()])
        ignored = box.buildctl.build(box.baseline, export_cache=[backend.export_option() + ",ignore-error=true"])
        start = time.monotonic()
        result = box.runbook("configure", "apply")
        if result.report.status == "failed":
            raise KitError(f"the configure runbook did not bring {program} back", f"read {result.notebook}")
        took = round(time.monotonic() - start, 2)
        box.buildctl.build(box.baseline, export_cache=[backend.export_option()])
        return Injected(f"the export failed: {said.rsplit('error: ', 1)[-1][:120]}", seen, CONFIGURE, took,
                        notes={"import_while_down_uncached": uncached(imported),
                               "export_with_ignore_error_uncached": uncached(ignored),
                               "export_after": "complete" if backend.missing_blobs() == [] else "not complete"})
    return inject


FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("kill-run", "buildkitd killed (SIGKILL) in the middle of a RUN step", "", kill_run),
    Fault("kill-export-registry", "buildkitd killed while it exports a build's cache to the registry", "",
          kill_export("registry")),
    Fault("kill-export-s3", "buildkitd killed while it exports a build's cache to S3", "", kill_export("s3")),
    Fault("kill-prune", "buildkitd killed while a prune removes cache records", "", kill_prune),
    Fault("kill-tree", "the whole service tree killed at once: supervisord, buildkitd and the services beside them",
          "", kill_tree),
    Fault("corrupt-worker-db", "the worker's metadata database garbled after a crash: buildkitd will not start",
          "moby/buildkit#4909", corrupt_worker_db),
    Fault("corrupt-snapshots-db", "the snapshotter's database garbled: buildkitd starts and answers, every build"
          " fails", "moby/buildkit#4909", corrupt_snapshots_db),
    Fault("disk-full", "the builder's disk fills up during a build: then every build, du and prune fail",
          "moby/buildkit#6008", disk_full, setup=small_disk),
    Fault("registry-down", "the registry holding the cache is down during export and import", "moby/buildkit#2578",
          backend_down("registry", "registry")),
    Fault("s3-down", "the S3 service holding the cache is down during export and import", "moby/buildkit#2578",
          backend_down("s3", "s3")),
)}


# --------------------------------------------------------------------------------------
# a trial: the fault, then nothing lost
# --------------------------------------------------------------------------------------
@dataclass
class Trial:
    drill: str
    trial: int
    passed: bool
    detected_by: str = ""
    detect_seconds: float = 0.0
    recovered_by: str = ""
    recover_seconds: float = 0.0
    lost: list[str] = field(default_factory=list)
    checks: dict[str, str] = field(default_factory=dict)  # check -> "ok" or what is wrong
    notes: dict = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def run_records_intact(box: Sandbox) -> str:
    import json

    broken = []
    for path in sorted(box.runs.rglob("*.json")):
        try:
            json.loads(path.read_text())
        except ValueError:
            broken.append(str(path))
    return "ok" if not broken else f"{len(broken)} run records do not parse: {broken[:3]}"


def nothing_lost(box: Sandbox, config_digest: str) -> dict[str, str]:
    """What must hold after any fault and its recovery."""
    checks: dict[str, str] = {}
    checks["daemon answers"] = "ok" if service.daemon_answers(box.layout) else "buildkitd does not answer"
    strays = recovery.stray_containers()
    checks["no stray build containers"] = "ok" if not strays else f"{len(strays)} left in runc init: {strays}"
    checks["a new build runs"] = probe_fails(box) or "ok"
    try:
        missed = uncached(box.rebuild_baseline())
        checks["the baseline rebuilds CACHED"] = "ok" if not missed else f"not cached: {missed}"
    except KitError as exc:
        checks["the baseline rebuilds CACHED"] = exc.problem
    for backend in box.baseline_caches():
        missing = backend.missing_blobs()
        checks[f"{backend.kind} cache whole"] = "ok" if missing == [] else (
            "its manifest is gone" if missing is None else f"{len(missing)} blobs missing")
    now = files.sha256(box.layout.config_path) if box.layout.config_path.exists() else "absent"
    checks["buildkitd.toml unchanged"] = "ok" if now == config_digest else "buildkitd.toml changed"
    checks["run records intact"] = run_records_intact(box)
    return checks


def run_trial(box: Sandbox, fault: Fault, number: int) -> Trial:
    start = time.monotonic()
    config_digest = files.sha256(box.layout.config_path)
    try:
        injected = fault.inject(box, number)
    except KitError as exc:
        return Trial(fault.name, number, False, error=exc.problem, seconds=round(time.monotonic() - start, 2),
                     checks=nothing_lost(box, config_digest))
    checks = nothing_lost(box, config_digest)
    if "interrupted_cache" in injected.notes:  # an interrupted export: whole, or cleanly absent
        state = injected.notes["interrupted_cache"]
        checks["the interrupted cache is whole or absent"] = "ok" if state in ("complete", "absent") else state
    for note in ("import_while_down_uncached", "export_with_ignore_error_uncached"):
        if note in injected.notes:  # the daemon's own cache carries builds while the backend is down
            missed = injected.notes[note]
            checks[note.replace("_", " ")] = "ok" if not missed else f"not cached: {missed}"
    if injected.notes.get("export_after", "complete") != "complete":
        checks["export after the backend is back"] = injected.notes["export_after"]
    passed = all(v == "ok" for v in checks.values())
    return Trial(fault.name, number, passed, injected.detected_by, injected.detect_seconds, injected.recovered_by,
                 injected.recover_seconds, injected.lost, checks, injected.notes,
                 seconds=round(time.monotonic() - start, 2))
