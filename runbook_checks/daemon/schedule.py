"""The maintenance schedule of a builder on a systemd host: one profile parameter
(`maintenance_schedule`, job -> systemd OnCalendar or off) becomes a NAME-JOB.timer and a
NAME-JOB.service per job, written and enabled by the configure runbook (so the drift
check covers them too).

Each service runs `python -m runbook_checks.daemon.schedule run JOB`, which runs the
job's `invoke maint.*` task and records how it ended: JSON beside the builder (what
`invoke maint.schedule` shows with systemd's next run) and a node-exporter textfile
(buildkit_ops_maintenance_*, what the MaintenanceJobFailed alert reads). Supervisord has
no timers: there the jobs are the same tasks, run by hand or by cron."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..core import files
from ..core.errors import KitError, ServiceError
from ..core.layout import Layout
from ..core.params import MAINTENANCE
from ..core.paths import PROJECT_ROOT, runs_dir
from ..core.results import Outcome
from . import install
from .systemd import systemctl, verify_units_text

MANAGED = "# Managed by buildkit-ops (maintenance schedule)."
TEXTFILE_PREFIX = "buildkit_ops_maintenance"
TEXTFILE_SERIES = (("last_run_timestamp_seconds", "when the job last finished (Unix time)"),
                   ("last_success", "1 if the job's last run succeeded, 0 if it failed"),
                   ("last_duration_seconds", "how long the job's last run took"))


@dataclass(frozen=True)
class Job:
    """One maintenance job: what it does, the `invoke` task that does it, and which
    builders have it (every builder, the host's builder only, a builder with a front
    door of its own)."""

    name: str
    what: str
    task: tuple[str, ...]
    scope: str = "builder"  # builder | host | frontdoor


JOBS = {j.name: j for j in (
    Job("prune", "prune the build cache and expire remote cache (the prune runbook, apply)",
        ("maint.prune", "--mode", "apply")),
    Job("drift", "configure in check mode: a change it would make is drift", ("maint.drift",)),
    Job("certs", "renew the front door's certificate within 30 days of its expiry", ("maint.certs",),
        "frontdoor"),
    Job("backup", "back up the builder's configuration, certificates, CA and units", ("maint.backup",)),
    Job("plugins-audit", "audit the Docker CLI plugins (the plugins-audit runbook)", ("maint.plugins-audit",), "host"),
    Job("version", "is a newer BuildKit published than the one installed?", ("maint.version",), "host"),
)}
assert set(JOBS) == set(MAINTENANCE), "core.params.MAINTENANCE and JOBS name the same jobs"


def jobs_for(layout: Layout, schedule: dict[str, str], frontdoor_port: int) -> dict[str, str]:
    """{job: OnCalendar} of the jobs this builder has, in JOBS' order, without the ones
    switched off."""
    own_door = bool(frontdoor_port) and not layout.pool_of
    has = {"builder": True, "host": not layout.trust_level, "frontdoor": own_door}
    return {name: schedule.get(name, MAINTENANCE[name]) for name, job in JOBS.items()
            if has[job.scope] and schedule.get(name, MAINTENANCE[name]) != "off"}


def records_dir(layout: Layout) -> Path:
    """Where each job's last run is recorded (JSON)."""
    if layout.style == "fhs":
        return layout.state_dir / "var/lib/buildkit-ops/maintenance"
    return layout.state_dir / "maintenance"


def textfile_dir(layout: Layout) -> Path:
    """The node exporter's textfile directory: Debian's default on a production host
    (prometheus-node-exporter reads it), the state directory's in the lab (the lab's
    node exporter is started with it)."""
    if layout.style == "fhs":
        return layout.state_dir / "var/lib/prometheus/node-exporter"
    return layout.state_dir / "textfile"


def _profile_args(profile: str, trust_level: str) -> list[str]:
    return ["--profile", profile, *(["--trust-level", trust_level] if trust_level else [])]


def render(layout: Layout, jobs: dict[str, str], profile: str) -> dict[str, str]:
    """NAME-JOB.service (oneshot, the job through the recorder) and NAME-JOB.timer per job."""
    units = {}
    args = " ".join(_profile_args(profile, layout.trust_level))
    for name, when in jobs.items():
        job = JOBS[name]
        units[layout.unit(name)] = textwrap.dedent(f"""\
            {MANAGED}
            [Unit]
            Description=buildkit-ops maintenance of {layout.name}: {job.what}
            After={layout.unit()}

            [Service]
            Type=oneshot
            WorkingDirectory={PROJECT_ROOT}
            Environment=HOME=%h BUILDKIT_OPS_RUNS_DIR={runs_dir()} COLUMNS=120
            ExecStart={sys.executable} -m runbook_checks.daemon.schedule run {name} {args}
            Nice=10
            IOSchedulingClass=idle
            """)
        units[layout.unit(name, "timer")] = textwrap.dedent(f"""\
            {MANAGED}
            [Unit]
            Description=buildkit-ops maintenance of {layout.name}: {name} ({when})

            [Timer]
            OnCalendar={when}
            RandomizedDelaySec=5m
            Persistent=true

            [Install]
            WantedBy=timers.target
            """)
    return units


def _ours(layout: Layout) -> set[Path]:
    """The maintenance units of this builder on disk (the kit's, by their first line; not
    another builder's, whose names start with this one's)."""
    found = set()
    for job in JOBS:
        for kind in ("service", "timer"):
            path = layout.unit_dir / layout.unit(job, kind)
            if path.is_file() and path.read_text(errors="replace").startswith(MANAGED):
                found.add(path)
    return found


def _timer_states(names: list[str]) -> dict[str, str]:
    """{TIMER: "enabled active"...} as systemd has them."""
    out = {}
    for name in names:
        enabled = systemctl("is-enabled", name).stdout.strip()
        active = systemctl("is-active", name).stdout.strip()
        out[name] = f"{enabled} {active}"
    return out


def write_timers(layout: Layout, manager_name: str, schedule: dict[str, str], frontdoor_port: int, profile: str,
                 apply: bool) -> Outcome:
    """The timers of this builder's jobs: verified by systemd-analyze before anything is
    written, written with backups, the ones switched off stopped and removed, each one
    enabled and started. Supervisord has no timers: skipped, with what to run instead."""
    jobs = jobs_for(layout, schedule, frontdoor_port)
    if manager_name != "systemd":
        return Outcome.skipped(f"supervisord has no timers: run {', '.join(f'invoke {JOBS[j].task[0]}' for j in jobs)}"
                               " by hand or from cron on this host", jobs=jobs)
    units = render(layout, jobs, profile)
    wanted = {layout.unit_dir / name: text for name, text in units.items()}
    try:
        scratch = {p: t.replace(f"ExecStart={sys.executable} ", "ExecStart=/bin/true ") for p, t in wanted.items()}
        verify_units_text(scratch, "fix maintenance_schedule: each job's time is a systemd OnCalendar expression"
                                   " such as daily, hourly or Sun *-*-* 03:00:00, or off")
    except KitError as exc:
        raise ServiceError(f"the maintenance timers do not verify: {exc.problem}", exc.fix) from None
    stale = sorted(_ours(layout) - set(wanted))
    outcome = files.converge(wanted, apply, layout.backup_dir, jobs=jobs)
    timers = [layout.unit(j, "timer") for j in jobs]
    here = layout.on_host(layout.unit_dir) == layout.unit_dir  # the units are this host's, not a tree's
    states = _timer_states(timers) if here and os.path.exists("/run/systemd/system") else {}
    idle = [t for t in timers if states and states.get(t) != "enabled active"]
    if not apply:
        todo = [f"remove {p.name}" for p in stale] + [f"enable and start {t}" for t in idle]
        if todo and outcome.status == "ok":
            return Outcome.changed("would " + "; ".join(todo), jobs=jobs)
        if todo:
            outcome.message += "; would " + "; ".join(todo)
        return outcome
    done = []
    for path in stale:
        if here:
            systemctl("disable", "--now", path.name)
        files.backup(path, layout.backup_dir)
        path.unlink()
        done.append(f"removed {path.name}")
    if here and (outcome.status == "changed" or stale or idle):
        systemctl("daemon-reload")
        for timer in timers:
            proc = systemctl("enable", "--now", timer)
            if proc.returncode:
                raise ServiceError(f"systemctl enable --now {timer} failed: {proc.stderr.strip()}",
                                   f"read `systemctl status {timer}`")
        done.append(f"enabled {len(timers)} timer(s)")
    if done and outcome.status == "ok":
        return Outcome.changed("; ".join(done), jobs=jobs)
    if done:
        outcome.message += "; " + "; ".join(done)
    return outcome


# --------------------------------------------------------------------------------------
# a job's run, recorded
# --------------------------------------------------------------------------------------
def record(layout: Layout, job: str, started: float, finished: float, code: int, message: str) -> dict:
    """The job's last run as JSON and as a node-exporter textfile (both atomic)."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    entry = {"job": job, "builder": layout.name, "started": _iso(started), "finished": _iso(finished),
             "seconds": round(finished - started, 1), "exit_code": code, "ok": code == 0, "message": message}
    files.atomic_write(records_dir(layout) / f"{layout.name}-{job}.json", json.dumps(entry, indent=2) + "\n")
    registry = CollectorRegistry()
    labels = {"maintenance": job, "unit": layout.unit(job)}  # job and builder are the scrape's labels
    for (name, doc), value in zip(TEXTFILE_SERIES, (finished, int(code == 0), finished - started)):
        Gauge(f"{TEXTFILE_PREFIX}_{name}", doc, list(labels), registry=registry).labels(**labels).set(value)
    out = textfile_dir(layout)
    out.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(out / f"{TEXTFILE_PREFIX}_{layout.name}_{job}.prom".replace("-", "_")), registry)
    return entry


def _iso(epoch: float) -> str:
    return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).isoformat(timespec="seconds")


def run_job(layout: Layout, job: str, profile: str, trust_level: str = "") -> dict:
    """Run one job's task (its output passes through, to the journal under systemd) and
    record how it ended; the record."""
    if job not in JOBS:
        raise KitError(f"{job!r} is not a maintenance job", f"name one of {', '.join(JOBS)}")
    argv = [sys.executable, "-m", "invoke", *JOBS[job].task, "--profile", profile]
    if trust_level:
        argv += ["--set", f"trust_level={trust_level}"]
    started = time.time()
    proc = subprocess.run(argv, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sys.stdout.write(proc.stdout)
    return record(layout, job, started, time.time(), proc.returncode, summary(proc.stdout))


def summary(output: str) -> str:
    """What a job's output says last: a refusal from its "error:" line on (with its fix),
    otherwise its last line."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [i for i, ln in enumerate(lines) if ln.startswith("error:")]
    return " ".join(lines[errors[-1]:] if errors else lines[-1:])[:500]


# --------------------------------------------------------------------------------------
# what runs when
# --------------------------------------------------------------------------------------
def _usec(value: str) -> str:
    """A systemd timestamp property as ISO time ("" when unset)."""
    value = value.strip()
    if not value or value in ("0", "n/a"):
        return ""
    try:
        return _iso(int(value) / 1e6)
    except ValueError:
        return value


def status(layout: Layout, schedule: dict[str, str], frontdoor_port: int, manager_name: str) -> list[dict]:
    """One row per job of this builder: when it runs, its next run (systemd), and its
    last recorded run (finished, ok, seconds, message)."""
    jobs = jobs_for(layout, schedule, frontdoor_port)
    rows = []
    for name in JOBS:
        when = schedule.get(name, MAINTENANCE[name])
        if name not in jobs and when != "off":
            continue  # not a job of this builder
        row = {"job": name, "builder": layout.name, "when": when, "what": JOBS[name].what, "next": "",
               "timer": "", "last": "", "ok": None, "seconds": None, "message": ""}
        if manager_name == "systemd" and name in jobs:
            props = systemctl("show", layout.unit(name, "timer"), "-p",
                              "NextElapseUSecRealtime,LastTriggerUSec,ActiveState,UnitFileState").stdout
            got = dict(line.split("=", 1) for line in props.splitlines() if "=" in line)
            row["timer"] = f"{got.get('UnitFileState', '')} {got.get('ActiveState', '')}".strip()
            row["next"] = _next(got.get("NextElapseUSecRealtime", ""))
        elif name in jobs:
            row["timer"] = "no timers (supervisord): run it by hand"
        path = records_dir(layout) / f"{layout.name}-{name}.json"
        if path.exists():
            last = json.loads(path.read_text())
            row.update(last=last["finished"], ok=last["ok"], seconds=last["seconds"], message=last["message"])
        rows.append(row)
    return rows


def _next(value: str) -> str:
    """NextElapseUSecRealtime: microseconds, or (systemctl show) a date like "Mon 2026-11-30 03:30:00 UTC"."""
    value = value.strip()
    if value.isdigit():
        return _usec(value)
    return value


# --------------------------------------------------------------------------------------
# the jobs the kit's other packages do not do already
# --------------------------------------------------------------------------------------
def backup(layout: Layout, keep: int) -> Outcome:
    """The builder's configuration directory (buildkitd.toml, the front door, the CA and
    its issued certificates) and its units into BACKUPS/state/NAME-STAMP.tar.gz (0600:
    it holds the CA's key), the newest `keep` kept. The build cache is not in it: a
    builder rebuilds it."""
    sources = [layout.config_path.parent]
    if layout.style == "fhs":
        sources += sorted(p for p in layout.unit_dir.glob(f"{layout.name}[.-]*") if p.is_file())
    missing = [str(p) for p in sources[:1] if not p.exists()]
    if missing:
        raise ServiceError(f"nothing to back up: {missing[0]} does not exist",
                           "install and configure the builder first (invoke runbook install, configure)")
    target_dir = layout.backup_dir / "state"
    target_dir.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    target = target_dir / f"{layout.name}-{stamp}.tar.gz"
    skip = layout.backup_dir.resolve()

    def keep_out(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        path = (layout.state_dir / info.name).resolve()
        return None if path == skip or skip in path.parents else info

    fd, tmp = tempfile.mkstemp(dir=target_dir, prefix=".backup-")
    os.close(fd)
    try:
        os.chmod(tmp, 0o600)
        with tarfile.open(tmp, "w:gz") as tar:
            for path in sources:
                tar.add(path, arcname=str(path.relative_to(layout.state_dir)), filter=keep_out)
        with tarfile.open(tmp) as tar:
            members = len(tar.getmembers())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    kept = sorted(target_dir.glob(f"{layout.name}-*.tar.gz"))
    for old in kept[:-keep]:
        old.unlink()
    return Outcome.changed(f"backed up {members} files and directories to {target}"
                           f" ({target.stat().st_size} bytes); {min(len(kept), keep)} backup(s) kept",
                           backup=str(target), members=members)


def newest_version(module: str = install.MODULE, timeout: float = 30) -> str:
    """The newest release (no pre-release) of `module` the Go module proxy lists (the
    first of $GOPROXY, else proxy.golang.org)."""
    from packaging.version import InvalidVersion, Version

    proxy = next((p for p in re.split(r"[,|]", os.environ.get("GOPROXY", "")) if p.startswith("http")),
                 "https://proxy.golang.org")
    url = f"{proxy.rstrip('/')}/{module.lower()}/@v/list"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            listed = resp.read().decode().split()
    except (urllib.error.URLError, OSError) as exc:
        raise ServiceError(f"the Go module proxy did not answer {url}: {getattr(exc, 'reason', exc)}",
                           "set GOPROXY to a proxy this host reaches (your organisation's mirror), or switch the"
                           " job off: maintenance_schedule: {version: off}") from None
    releases = []
    for tag in listed:
        try:
            v = Version(tag.lstrip("v"))
        except InvalidVersion:
            continue
        if not v.is_prerelease:
            releases.append((v, tag))
    if not releases:
        raise ServiceError(f"{url} lists no release of {module}", "check GOPROXY")
    return max(releases)[1]


def version_check(layout: Layout, newest: str | None = None) -> Outcome:
    """The installed buildkitd against the newest release: ok when it is the newest,
    changed (with the upgrade command) when a newer one is out."""
    from packaging.version import Version

    installed = install.binary_version(layout.buildkitd)
    if not installed:
        raise ServiceError(f"no buildkitd answers --version at {layout.buildkitd}", "install it: invoke runbook install")
    newest = newest or newest_version()
    if Version(newest.lstrip("v")) <= Version(installed.lstrip("v")):
        return Outcome.ok(f"BuildKit {installed} is installed; {newest} is the newest release", installed=installed,
                          newest=newest)
    return Outcome.changed(f"BuildKit {newest} is out; {installed} is installed: try it with"
                           f" invoke runbook upgrade --set buildkit_version={newest} (check mode first)",
                           installed=installed, newest=newest)


def main(argv: list[str] | None = None) -> int:
    from ..core import layout as layout_mod
    from ..core import profiles

    parser = argparse.ArgumentParser(prog="python -m runbook_checks.daemon.schedule")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a maintenance job and record how it ended (what the timers run)")
    run.add_argument("job", choices=list(JOBS))
    run.add_argument("--profile", default="production")
    run.add_argument("--trust-level", default="")
    args = parser.parse_args(argv)
    sets = [f"trust_level={args.trust_level}"] if args.trust_level else []
    values = profiles.resolve("configure", args.profile, "check", sets)
    entry = run_job(layout_mod.for_params(values), args.job, args.profile, args.trust_level)
    return entry["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
