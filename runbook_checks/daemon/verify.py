"""Read-only checks of a running BuildKit (Testinfra/goss style): each asserts one
thing in the daemon's own view and repairs nothing."""

from __future__ import annotations

import json
import tempfile
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable

from ..core.errors import KitError
from ..core.layout import Layout
from ..core.results import Outcome
from .buildctl import Buildctl
from .config import GC_KEYS, BuildkitdConfig
from . import cgroups
from .contexts import context_with_base
from .service import daemon_answers
from .systemd import Limits

LEVELS = ["trace", "debug", "info", "warning", "error", "fatal", "panic"]


def daemon_up(layout: Layout, manager) -> Outcome:
    if manager is None:
        raise KitError(f"no daemon runs from units rendered under {layout.state_dir}",
                       "verify on the build server itself (state_dir=/)")
    info = manager.info()
    if info["state"] not in ("RUNNING", "STARTING") or not daemon_answers(layout):
        raise KitError(f"buildkitd is {info['state']} ({info.get('spawnerr') or 'not running'})",
                       "run the configure runbook in apply mode, or `invoke up`; read " + str(layout.log_path))
    return Outcome.ok(f"buildkitd {info['state']}, pid {info['pid']}", pid=info["pid"])


def buildctl_reaches(layout: Layout) -> Outcome:
    info = Buildctl.for_layout(layout).info()
    version = info["buildkitVersion"]["version"]
    return Outcome.ok(f"{layout.address} answers: BuildKit {version}", address=layout.address,
                      daemon_version=version)


def _expected_rule(rule) -> dict[str, Any]:
    return {key: getattr(rule, name) for name, key in GC_KEYS.items()}


def gc_policy_in_force(layout: Layout, desired: BuildkitdConfig) -> Outcome:
    """`buildctl debug workers` shows the configured GC rules (percentages as the bytes
    the daemon resolved them to)."""
    workers = Buildctl.for_layout(layout).workers()
    seen = workers[0].get("gcPolicy") or []
    if len(seen) != len(desired.gc_policy):
        raise KitError(f"the daemon runs {len(seen)} GC rules, the profile configures {len(desired.gc_policy)}",
                       "apply the configure runbook (the daemon may be on an old config)")
    problems = []
    for i, (rule, got) in enumerate(zip(desired.gc_policy, seen)):
        want = _expected_rule(rule)
        checks = {
            "all": (bool(want["all"]), bool(got.get("all"))),
            "filters": (sorted(want["filters"] or []), sorted(got.get("filter") or [])),
            "keepDuration": ((want["keepDuration"] or 0) * 10**9, got.get("keepDuration", 0)),
        }
        for key in ("reservedSpace", "maxUsedSpace", "minFreeSpace"):
            value = want[key]
            if isinstance(value, str):  # a percentage: the daemon resolved it against the disk
                if not got.get(key):
                    problems.append(f"rule {i}: {key} {value} resolved to 0")
                continue
            checks[key] = (value or 0, got.get(key, 0))
        problems += [f"rule {i}: {k} is {g!r}, want {w!r}" for k, (w, g) in checks.items() if w != g]
    if problems:
        raise KitError("the daemon's GC policy differs from the profile: " + "; ".join(problems),
                       "apply the configure runbook and check that the daemon restarted on the new file")
    return Outcome.ok(f"{len(seen)} GC rules in force as configured", gc_policy=seen)


PROBE_STAGE = """FROM base AS s{i}
ARG NONCE
RUN echo "$NONCE {i}" >/dev/null && read up idle </proc/uptime && echo $up >/start && sleep {sleep} \\
    && read up idle </proc/uptime && echo $up >/end
"""


def measure_parallelism(layout: Layout, stages: int, sleep: float = 2) -> int:
    """Run `stages` independent RUN steps that each sleep, and return the most that
    ran at once: the max-parallelism the daemon really enforces."""
    body = "".join(PROBE_STAGE.format(i=i, sleep=sleep) for i in range(stages))
    body += "FROM scratch\n" + "".join(f"COPY --from=s{i} /start /end /s{i}/\n" for i in range(stages))
    with tempfile.TemporaryDirectory(prefix="bk-probe-") as tmp:
        ctx = context_with_base(Path(tmp) / "ctx", body)
        out = Path(tmp) / "out"
        Buildctl.for_layout(layout).build(ctx, build_args={"NONCE": uuid.uuid4().hex},
                                          output=f"type=local,dest={out}")
        events = []
        for i in range(stages):
            events.append((float((out / f"s{i}/start").read_text()), 1))
            events.append((float((out / f"s{i}/end").read_text()), -1))
    running = peak = 0
    for _, delta in sorted(events):  # at a tie, an end (-1) sorts before a start
        running += delta
        peak = max(peak, running)
    return peak


def parallelism_in_force(layout: Layout, desired: BuildkitdConfig) -> Outcome:
    want = desired.max_parallelism
    peak = measure_parallelism(layout, stages=want + 2)
    if peak != want:
        raise KitError(f"{want + 2} independent RUN steps ran {peak} at a time; max-parallelism is {want}",
                       "apply the configure runbook so the daemon restarts on the configured max-parallelism")
    return Outcome.ok(f"{want + 2} independent RUN steps ran at most {peak} at a time (max-parallelism {want})",
                      max_parallelism_observed=peak)


def metrics_answer(debug_address: str) -> Outcome:
    url = f"http://{debug_address}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
    except OSError as exc:
        raise KitError(f"{url} did not answer: {exc}", "check debugAddress in buildkitd.toml and that the port is free") from None
    names = {line.split("{")[0].split()[0] for line in text.splitlines() if line and not line.startswith("#")}
    buildkit = sorted(n for n in names if n.startswith("buildkit_"))
    if not buildkit:
        raise KitError(f"{url} serves no buildkit_* metrics", "check that this is buildkitd's debug address")
    return Outcome.ok(f"{url} serves {len(names)} series names, {len(buildkit)} of them buildkit_*", metrics_url=url)


def log_format_and_level(read_lines: Callable[[], list[str]], log_format: str, log_level: str,
                         where: str = "the log") -> Outcome:
    """The running daemon's log lines (`read_lines` is its manager's: the supervisor's
    log file, or the journal) are in the configured format, none below the configured level."""
    lines = read_lines()
    if not lines:
        raise KitError(f"{where} has no lines from the running daemon",
                       "the daemon writes lines at start; restart it and check again")
    floor = LEVELS.index("warning" if log_level == "warn" else log_level)
    bad_format, too_low = [], []
    for line in lines:
        if log_format == "json":
            try:
                level = json.loads(line)["level"]
            except (ValueError, KeyError, TypeError):
                bad_format.append(line)
                continue
        else:
            if line.startswith("{") or "level=" not in line:
                bad_format.append(line)
                continue
            level = line.split("level=", 1)[1].split()[0]
        if level in LEVELS and LEVELS.index(level) < floor:
            too_low.append(line)
    if bad_format:
        raise KitError(f"{len(bad_format)} of {len(lines)} log lines are not {log_format}: {bad_format[-1][:200]}",
                       "apply the configure runbook so the daemon restarts with the configured log format")
    if too_low:
        raise KitError(f"{len(too_low)} log lines are below level {log_level}: {too_low[-1][:200]}",
                       "apply the configure runbook so the daemon restarts with the configured log level")
    return Outcome.ok(f"{len(lines)} lines from the running daemon in {where}: {log_format}, none below {log_level}")


VERIFY_DOCKERFILE = """FROM base
RUN echo "built by buildkit-ops verify" > /etc/motd
RUN mkdir -p /app && cat /etc/motd > /app/one && echo two >> /app/one
RUN wc -l /app/one > /app/count && test "$(cut -d' ' -f1 /app/count)" = 2
"""


def build_and_rebuild(layout: Layout) -> Outcome:
    """A multi-step build on the local busybox base succeeds, and its rerun is all CACHED."""
    client = Buildctl.for_layout(layout)
    with tempfile.TemporaryDirectory(prefix="bk-verify-") as tmp:
        ctx = context_with_base(Path(tmp), VERIFY_DOCKERFILE)
        first = client.build(ctx)
        second = client.build(ctx)
    runs = [v["name"] for v in first.steps if " RUN " in v["name"]]
    if len(runs) < 3:
        raise KitError(f"the verify build ran {len(runs)} RUN steps, expected 3", "this is a kit bug: report it")
    if second.cached_steps != len(second.steps):
        missed = [v["name"] for v in second.steps if not v.get("cached")]
        raise KitError(f"the rebuild re-ran {len(missed)} of {len(second.steps)} steps: {missed}",
                       "the cache is not kept between builds: check the GC policy and that root is persistent")
    return Outcome.ok(f"build with {len(first.steps)} steps in {first.seconds:.1f}s; rebuild {second.cached_steps}/"
                      f"{len(second.steps)} CACHED in {second.seconds:.1f}s",
                      build_seconds=first.seconds, rebuild_seconds=second.seconds)


def limits_in_force(manager_name: str, pid: int, limits: Limits, data_dir: Path, scope: str = "") -> Outcome:
    """Under systemd, each of the builder's limits as its slice's cgroups hold them
    (`scope`; memory, CPU quota, tasks, I/O weight), in the units the profile gives them;
    a limit this machine cannot enforce is reported with the reason, never passed.
    Elsewhere (no systemd) the step is skipped and says why."""
    if manager_name != "systemd":
        return Outcome.skipped("CPUQuota/MemoryMax/IOWeight/TasksMax are systemd properties and systemd is not PID 1"
                               " here; max-parallelism is checked above", manager=manager_name)
    found = cgroups.in_force(pid, limits.configured(), data_dir, scope)
    facts = {"manager": manager_name, "limits_in_force": {k: v.to_dict() for k, v in found.items()}}
    wrong = {k: v for k, v in found.items() if not v.holds and not v.reason}
    if wrong:
        raise KitError("limits differ from the unit's: " + "; ".join(f"{k} configured {v.configured}, in force"
                                                                    f" {v.in_force}" for k, v in wrong.items()),
                       "systemctl daemon-reload, then restart the builder's service (apply the configure runbook)")
    held = ", ".join(f"{k}={v.in_force}" for k, v in found.items() if v.holds)
    unable = "; ".join(f"{k}={v.configured} not enforced here: {v.reason}" for k, v in found.items() if v.reason)
    where = f"{scope}'s cgroups (the daemon and its builds)" if scope else "the daemon's cgroups"
    return Outcome.ok(f"in force in {where}: {held or 'none'}" + (f". {unable}" if unable else ""), **facts)


def builds_within_limits(layout: Layout, manager_name: str, pid: int, timeout: float = 60) -> Outcome:
    """Under systemd, a RUN step's container runs inside the builder's slice, beside the
    daemon (`NAME.slice/buildkit/<id>`), so the slice's limits bound the builds too:
    seen from this side, in the slice's cgroups, while the step runs. Elsewhere build
    containers sit in `/buildkit/<id>` at each hierarchy's root, bound by nothing the kit
    sets; the step says so."""
    import threading
    import time

    if manager_name != "systemd":
        return Outcome.skipped("without systemd there is no slice: build containers run in /buildkit/<id> at each"
                               " cgroup hierarchy's root, bound only by max-parallelism")
    where = cgroups.paths(pid, layout.slice)
    watch = where.get("pids") or where.get("unified")
    if watch is None or watch.name != layout.slice:
        raise KitError(f"the daemon (pid {pid}) does not run in {layout.slice}",
                       "apply the install and configure runbooks (the service unit says Slice=) and restart it")
    errors: list[str] = []

    def build() -> None:
        with tempfile.TemporaryDirectory(prefix="bk-slice-") as tmp:
            ctx = context_with_base(Path(tmp), f"RUN echo {uuid.uuid4().hex} > /nonce && sleep 4\n")
            try:
                Buildctl.for_layout(layout).build(ctx, timeout=timeout)
            except KitError as exc:
                errors.append(exc.problem)

    worker = threading.Thread(target=build, daemon=True)
    worker.start()
    seen: list[Path] = []
    deadline = time.monotonic() + timeout
    while worker.is_alive() and not seen and time.monotonic() < deadline:
        seen = [p.parent for p in watch.glob("buildkit/*/cgroup.procs") if p.read_text().strip()]
        time.sleep(0.2)
    worker.join(timeout)
    if errors:
        raise KitError(f"the probe build failed: {errors[0]}", "read the daemon's log")
    if not seen:
        raise KitError(f"no build container appeared under {watch}/buildkit while a RUN step ran: they run outside"
                       f" {layout.slice}, so its limits do not bound them",
                       "apply the configure runbook (buildkitd.toml's defaultCgroupParent) and restart the daemon")
    return Outcome.ok(f"a RUN step ran in cgroup /{seen[0].relative_to(watch.parent)}, inside {layout.slice} with the"
                      " daemon: the slice's limits bound the builds",
                      build_cgroup_parent=f"{layout.slice}/buildkit")
