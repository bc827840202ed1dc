"""Limits proven by hitting them: a build that allocates past memory_max, a CPU-bound step
against cpu_quota, a step that forks past tasks_max, each run on the builder and measured
from its slice's own cgroup counters (the kernel's word, not the unit file's). A limit
this machine cannot be made to hit safely (more memory than it has, more CPU than it has)
is reported with the reason, never passed."""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

from ..core.errors import BuildctlError, KitError
from ..core.layout import Layout
from ..core.results import Outcome
from ..core.units import parse_size
from . import cgroups
from .buildctl import Buildctl
from .contexts import context_with_base
from .service import daemon_answers

BUSY_SECONDS = 4


def _counter(path: Path, name: str) -> int:
    """`name N` from a flat-keyed cgroup file (memory.events, cpu.stat, pids.events...)."""
    try:
        text = path.read_text()
    except OSError:
        return 0
    match = re.search(rf"^{name} (\d+)$", text, re.M)
    return int(match.group(1)) if match else 0


def _run(layout: Layout, body: str, timeout: float = 300) -> tuple[float, str]:
    """Build a one-off context (its steps never cached); (seconds, the error or "")."""
    with tempfile.TemporaryDirectory(prefix="bk-pressure-") as tmp:
        ctx = context_with_base(Path(tmp), f"RUN echo {os.urandom(8).hex()} > /nonce\n{body}")
        start = time.monotonic()
        try:
            Buildctl.for_layout(layout).build(ctx, timeout=timeout)
            return time.monotonic() - start, ""
        except BuildctlError as exc:
            return time.monotonic() - start, exc.problem


def _alive(layout: Layout) -> str:
    return "the daemon answers" if daemon_answers(layout) else "the daemon does NOT answer"


def _available_memory() -> int:
    match = re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    return int(match.group(1)) * 1024 if match else 0


NO_SLICE = ("without systemd there is no slice carrying the limits (the lab runs buildkitd under supervisord):"
            " run this on a production builder or a rehearsal host")


def _memory_counter(where: dict[str, Path]) -> tuple[Path, str]:
    """The slice's count of hitting its memory limit: v1 `memory.failcnt` (charges refused
    at the limit; its oom_kill counts only the victim's own cgroup, gone with the build),
    v2 `memory.events` `max`."""
    if "memory" in where:
        return where["memory"] / "memory.failcnt", ""
    return where["unified"] / "memory.events", "max"


def memory_hit(layout: Layout, manager_name: str, pid: int, memory_max: str, apply: bool) -> Outcome:
    """A RUN step that holds twice memory_max in a shell variable: it is killed (exit code
    137) when the slice reaches its limit (the slice's counter of hits at the limit
    rises), and the daemon (OOMScoreAdjust=-500) lives on."""
    if manager_name != "systemd":
        return Outcome.skipped(NO_SLICE)
    if not memory_max:
        return Outcome.skipped("memory_max is not set: nothing to hit")
    limit = parse_size(memory_max)
    if limit * 2 > _available_memory() // 2:
        return Outcome.skipped(f"memory_max {memory_max} is more than this machine can safely allocate twice over"
                               f" ({_available_memory() // 2**20} MiB available): prove it on a builder with a"
                               " smaller memory_max (a trust level, for example)")
    if not apply:
        return Outcome.skipped(f"would run a step that allocates {2 * limit // 2**20} MiB against memory_max (apply)")
    counter, key = _memory_counter(cgroups.paths(pid, layout.slice))
    read = (lambda: int(counter.read_text().strip() or 0)) if not key else (lambda: _counter(counter, key))
    before = read()
    seconds, error = _run(layout, f"RUN x=$(head -c {2 * limit} /dev/zero | tr '\\0' x); echo ${{#x}}\n")
    hits = read() - before
    if not error:
        raise KitError(f"a step allocated {2 * limit // 2**20} MiB under memory_max {memory_max} and finished",
                       "apply the install and configure runbooks: the limit is on the slice, and buildkitd puts its"
                       " builds in it (defaultCgroupParent)")
    if hits < 1 or "exit code: 137" not in error:
        raise KitError(f"the step failed, but not at the memory limit ({counter.name} +{hits}): {error[-300:]}",
                       "read the build's error above")
    return Outcome.ok(f"a step allocating {2 * limit // 2**20} MiB was OOM-killed in {layout.slice} after"
                      f" {seconds:.1f}s (exit code 137; {counter.name}{' ' + key if key else ''} +{hits}); {_alive(layout)}",
                      memory_limit_hits=hits)


def cpu_throttled(layout: Layout, manager_name: str, pid: int, cpu_quota: str, apply: bool) -> Outcome:
    """CPU-bound RUN steps, one more than the quota's CPUs, for a few seconds: the kernel
    throttles the slice in most scheduling periods of the step and holds it back for a
    good part of its wall time (the slice's cpu.stat). The CPU share it got is reported;
    it is not the test, since the kernel hands out the quota in 5 ms slices per CPU (we
    measured 54 to 58% against 50%), and once, in CI, CPU time from the previous step's
    teardown landed in the window."""
    if manager_name != "systemd":
        return Outcome.skipped(NO_SLICE)
    if not cpu_quota:
        return Outcome.skipped("cpu_quota is not set: nothing to hit")
    quota = int(cpu_quota.rstrip("%"))
    cpus = os.cpu_count() or 1
    if quota >= cpus * 100:
        return Outcome.skipped(f"cpu_quota {cpu_quota} is not below this machine's {cpus} CPUs ({cpus * 100}%): no"
                               " workload here can reach it")
    if not apply:
        return Outcome.skipped(f"would run {quota // 100 + 1} CPU-bound loops for {BUSY_SECONDS}s against cpu_quota"
                               " (apply)")
    loops = quota // 100 + 1
    spin = f"e=$(( $(date +%s) + {BUSY_SECONDS} )); while [ $(date +%s) -lt $e ]; do :; done"
    body = f"RUN for i in $(seq {loops}); do ( {spin} ) & done; wait\n"
    before, start = cgroups.usage(layout.slice), time.monotonic()
    _, error = _run(layout, body)
    wall = time.monotonic() - start
    delta = {k: v - before.get(k, 0) for k, v in cgroups.usage(layout.slice).items()}
    share = delta.get("cpu_seconds", 0) / wall * 100
    held_s = delta.get("cpu_throttled_seconds", 0)
    periods, throttles = int(delta.get("cpu_periods", 0)), int(delta.get("cpu_throttled_periods", 0))
    if error:
        raise KitError(f"the CPU-bound build failed: {error[-300:]}", "read the build's error above")
    if not periods or throttles / periods < 0.5 or held_s < 0.2 * wall:
        raise KitError(f"{loops} busy loop(s) against cpu_quota {cpu_quota} over {wall:.1f}s: throttled in {throttles}"
                       f" of {periods} periods, held back {held_s:.1f}s (got {share:.0f}% of a CPU)",
                       "apply the install and configure runbooks (the quota is on the slice) and restart the daemon")
    return Outcome.ok(f"{loops} busy loop{'s' if loops > 1 else ''} against cpu_quota {cpu_quota} over {wall:.1f}s:"
                      f" throttled in {throttles} of {periods} periods, held back {held_s:.1f}s; the slice got"
                      f" {share:.0f}% of a CPU (the daemon's share included)", cpu_share_percent=round(share),
                      cpu_throttled_periods=throttles)


REFUSED = 42  # the tasks step's exit code when the shell was refused a fork


def tasks_hit(layout: Layout, manager_name: str, pid: int, tasks_max: int, apply: bool) -> Outcome:
    """A RUN step that starts more processes than tasks_max: the kernel refuses a fork
    (the shell says "can't fork" and the step exits 42, by builtins only, since nothing
    more can be forked then); the daemon lives on. The refusal is counted in the build
    container's own cgroup (`pids.events`), which goes with the build, so the step's exit
    code is the evidence."""
    if manager_name != "systemd":
        return Outcome.skipped(NO_SLICE)
    if tasks_max > 2048:
        return Outcome.skipped(f"tasks_max {tasks_max} is more processes than a check should start here: prove it on a"
                               " builder with a smaller tasks_max (a trust level, for example)")
    if not apply:
        return Outcome.skipped(f"would start {tasks_max + 64} processes in one step against tasks_max (apply)")
    many = tasks_max + 64
    body = (f"RUN sh -c 'for i in $(seq {many}); do sleep 30 & done' 2>/tmp/refused; read -r said < /tmp/refused;"
            f" case \"$said\" in *fork*) echo \"$said\"; exit {REFUSED};; esac\n")
    seconds, error = _run(layout, body)
    if not error:
        raise KitError(f"a step started {many} processes under tasks_max {tasks_max}, and no fork was refused",
                       "apply the install and configure runbooks (the limit is on the slice) and restart the daemon")
    if f"exit code: {REFUSED}" not in error:
        raise KitError(f"the step failed, but not by a refused fork: {error[-300:]}", "read the build's error above")
    return Outcome.ok(f"a step starting {many} processes was refused a fork at tasks_max {tasks_max} in"
                      f" {layout.slice} after {seconds:.1f}s (\"can't fork\", exit code {REFUSED}); {_alive(layout)}",
                      tasks_refused=True)
