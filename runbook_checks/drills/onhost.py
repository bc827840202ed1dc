"""Drills on a rehearsal host: the production builder under systemd, reached by a team
through its front door. A drill team's bundle (a one-day certificate whose key leaves
with the drill) builds over mutual TLS; the faults hit the units systemd runs, and
systemd's own restart is the recovery under test."""

from __future__ import annotations

import datetime as _dt
import json
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..cache.proof import uncached
from ..core import files
from ..core import layout as layout_mod
from ..core.errors import KitError
from ..core.layout import Layout
from ..core.units import parse_duration
from ..daemon import recovery
from ..daemon.buildctl import Buildctl
from ..daemon.contexts import context_with_base
from ..production import access, ca, hosts, rehearsal
from .faults import Fault, Injected, Trial, wait
from .sandbox import start_build

TEAM = "kit-drills"
SYSTEMD = "systemd (Restart=on-failure)"
DOCKERFILE = "FROM base\nRUN echo {nonce} > /seed && sleep {sleep}\n"


@dataclass
class HostBox:
    host: hosts.Host
    layout: Layout
    remote: dict[str, str]
    work: Path

    @property
    def buildctl(self) -> Buildctl:
        return access.client(self.remote, self.work / "bundle")

    def context(self, nonce: str = "", sleep: float = 0) -> Path:
        ctx = Path(tempfile.mkdtemp(prefix="ctx-", dir=self.work))
        return context_with_base(ctx, DOCKERFILE.format(nonce=nonce or uuid.uuid4().hex, sleep=sleep))

    @property
    def baseline(self) -> Path:
        return self.work / "baseline"

    def run(self, *argv: str) -> str:
        return hosts.run_in(self.host, list(argv), timeout=120).stdout.strip()

    def main_pid(self, unit: str) -> int:
        return int(self.run("systemctl", "show", "-p", "MainPID", "--value", unit) or 0)

    def past_start_limit(self, unit: str) -> None:
        """Wait until one more start of `unit` cannot trip systemd's start limit (more than
        StartLimitBurst starts within StartLimitIntervalSec, 5 in 10 s by default, and the
        unit stays failed): the unit's last start at least interval / (burst - 1) ago."""
        props = dict(line.split("=", 1) for line in self.run(
            "systemctl", "show", "-p", "StartLimitIntervalUSec,StartLimitBurst,ActiveEnterTimestampMonotonic",
            unit).splitlines() if "=" in line)
        interval = parse_duration(props.get("StartLimitIntervalUSec", "10s").replace(" ", "").replace("min", "m"))
        spacing = interval / max(int(props.get("StartLimitBurst") or 5) - 1, 1)
        started = int(props.get("ActiveEnterTimestampMonotonic") or 0) / 1e6
        since = float(self.run("cut", "-d", " ", "-f", "1", "/proc/uptime")) - started
        if since < spacing:
            time.sleep(spacing - since)

    def restarts(self, unit: str) -> int:
        return int(self.run("systemctl", "show", "-p", "NRestarts", "--value", unit) or 0)

    def builds(self) -> str:
        """"" when a team's build (a RUN step no cache holds) runs through the front door, else its error."""
        return recovery.probe_fails(self.buildctl)


@contextmanager
def hostbox(name: str) -> Iterator[HostBox]:
    """The rehearsal host NAME, whose production builder (install, configure, access
    applied) the drills use, with a drill team's bundle; the bundle goes after."""
    host = hosts.load(name)
    if hosts.state(host) not in ("running", "degraded"):
        raise KitError(f"the rehearsal host {name} is not running", f"start it: invoke host.up {name}, then apply the"
                       " production runbooks on it (install, configure, access)")
    layout = layout_mod.production(host.rootfs)
    remote = access.remote(layout)  # refused when there is no front door
    work = Path(tempfile.mkdtemp(prefix="bkdrill-host-", dir="/tmp"))
    try:
        ca.write_bundle(ca.issue(layout, TEAM, 1), work / "bundle")
        box = HostBox(host, layout, remote, work)
        context_with_base(box.baseline, DOCKERFILE.format(nonce="baseline", sleep=0))
        box.buildctl.build(box.baseline, timeout=300)
        yield box
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------------------
# the faults
# --------------------------------------------------------------------------------------
def killed_unit(part: str, how: Callable[[HostBox, str], None], what: str) -> Callable[[HostBox, int], Injected]:
    """A unit of the builder (`part`: "" for buildkit.service, "frontdoor") hit by `how`
    while a team's build runs a RUN step; systemd restarts it."""
    def inject(box: HostBox, trial: int) -> Injected:
        unit = box.layout.unit(part)
        wait(lambda: box.main_pid(unit) > 0, 60, f"{unit} running before the fault")
        box.past_start_limit(unit)
        pid, before = box.main_pid(unit), box.restarts(unit)
        flight = start_build(box.buildctl, box.context(sleep=3))
        flight.wait_for(lambda n: "sleep" in n)
        how(box, unit)
        killed = time.monotonic()
        code, said = flight.finish()
        if code == 0:
            raise KitError(f"the build survived {what}: the fault did not land", "check the drill's timing")
        seen = round(time.monotonic() - killed, 2)
        took = wait(lambda: box.restarts(unit) > before and box.main_pid(unit) not in (0, pid) and not box.builds(),
                    120, f"systemd restarting {unit} and a team building again")
        by, notes = SYSTEMD, {"unit": unit}
        # the killed build's container goes with runc, unless the kill caught it being made:
        # then its runc init waits for a start that cannot come, and the recover runbook kills it
        try:
            wait(lambda: not leftover_build_containers(box), 10, "the killed build's container going away")
        except KitError:
            notes["stray_build_containers"] = leftover_build_containers(box)
            start = time.monotonic()
            code, _ = rehearsal.run_runbook(box.host.name, "recover", "production", "apply", [])
            if code:
                raise KitError(f"the recover runbook failed on {box.host.name}", "read its record under runs/recover/")
            took, by = round(took + time.monotonic() - start, 2), f"{SYSTEMD}, then the recover runbook (apply)"
        return Injected(f"the team's build failed ({said.removeprefix('error: ')[:100]}); systemd counted the"
                        f" failure (NRestarts {before} -> {box.restarts(unit)})", seen, by, took, notes=notes)
    return inject


def sigkill_main(box: HostBox, unit: str) -> None:
    box.run("kill", "-9", str(box.main_pid(unit)))


def sigkill_cgroup(box: HostBox, unit: str) -> None:
    box.run("systemctl", "kill", "--signal=SIGKILL", unit)


HOST_FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("frontdoor-down", "the front door (HAProxy's master) killed while a team builds through it", "",
          killed_unit("frontdoor", sigkill_main, "the front door's kill")),
    Fault("unit-killed", "every process of buildkit.service killed at once (systemctl kill -s KILL) during a"
          " team's build", "", killed_unit("", sigkill_cgroup, "the unit's kill")),
)}


def digests(box: HostBox) -> dict[str, str]:
    from ..production import frontdoor

    return {str(p): files.sha256(p) for p in (box.layout.config_path, frontdoor.config_path(box.layout)) if p.exists()}


def audit_intact(box: HostBox, since: float) -> str:
    """Every audit line parses, and the drill team's calls since `since` are in it."""
    path = access.audit_log(box.layout)
    lines = path.read_text().splitlines() if path.exists() else []
    try:
        entries = [json.loads(line) for line in lines if line.strip()]
    except ValueError as exc:
        return f"an audit line does not parse: {exc}"
    ours = [e for e in entries if e.get("team") == TEAM and "time" in e
            and _dt.datetime.fromisoformat(e["time"]).timestamp() >= since - 1]
    return "ok" if ours else f"no audit line of team {TEAM} since the fault"


def nothing_lost(box: HostBox, before: dict[str, str], since: float) -> dict[str, str]:
    checks: dict[str, str] = {}
    checks["a team builds through the front door"] = box.builds() or "ok"
    try:
        missed = uncached(box.buildctl.build(box.baseline, timeout=120))
        checks["the baseline rebuilds CACHED"] = "ok" if not missed else f"not cached: {missed}"
    except KitError as exc:
        checks["the baseline rebuilds CACHED"] = exc.problem
    checks["buildkitd.toml and frontdoor.cfg unchanged"] = "ok" if digests(box) == before else "changed"
    checks["the audit log is whole and has the drill's calls"] = audit_intact(box, since)
    left = leftover_build_containers(box)
    checks["no build container left in the builder's slice"] = "ok" if not left else f"{left} still there"
    return checks


def run_trial(box: HostBox, fault: Fault, number: int) -> Trial:
    start, since = time.monotonic(), time.time()
    before = digests(box)
    try:
        injected = fault.inject(box, number)
    except KitError as exc:
        return Trial(fault.name, number, False, error=exc.problem, seconds=round(time.monotonic() - start, 2),
                     checks=nothing_lost(box, before, since))
    checks = nothing_lost(box, before, since)
    return Trial(fault.name, number, all(v == "ok" for v in checks.values()), injected.detected_by,
                 injected.detect_seconds, injected.recovered_by, injected.recover_seconds, injected.lost, checks,
                 injected.notes, seconds=round(time.monotonic() - start, 2))


def leftover_build_containers(box: HostBox) -> int:
    """Build containers under the builder's slice (BuildKit's cgroup parent) that still hold
    processes, counted once across the cgroup hierarchies."""
    base = Path(f"/proc/{hosts.leader(box.host)}/root/sys/fs/cgroup")
    return len({procs.parent.name for procs in base.glob(f"*/{box.layout.slice}/buildkit/*/cgroup.procs")
                if procs.read_text().strip()})
