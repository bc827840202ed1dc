"""The tuning advisor (seed §10.2): what the builder measured about itself, and the
parameter changes that evidence asks for. Each proposal is a `--set` the operator passes
to the runbook that applies it, in check mode first, with the numbers behind it.

The evidence, read where the builder runs (`gather`): its slice's counters (memory limit
hits, CPU periods throttled by the quota), the build cache (`buildctl du`: in use,
reclaimable) and its disk, the build history (cache hits, failures), the front door's
queue waits (the audit log), and buildkitd.toml's max-parallelism. What it proposes
(`advise`), with the thresholds below:

- memory_max: the slice hit its memory limit (a step was OOM-killed there);
- cpu_quota, or max_parallelism: the quota throttled the slice in many periods; raise
  the quota while the machine has cores left, else run fewer steps at once;
- max_concurrent_builds: builds wait in the queue while the CPU has room;
- prune_keep_storage: few steps come from the cache while the cache is near the size
  the prune keeps (it is evicted before it is reused);
- prune_keep_duration: the disk is nearly full and much of the cache is reclaimable."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tomllib
from dataclasses import asdict, dataclass
from typing import Any

from ..core.layout import Layout
from ..core.units import p95, parse_duration, parse_size

THROTTLED_SHARE = 0.25  # of the CFS periods the slice ran in
QUEUE_WAITED_SHARE, QUEUE_P95_MS = 0.2, 10_000
CACHE_HIT_LOW, CACHE_NEAR_LIMIT = 0.3, 0.8
DISK_FREE_LOW, RECLAIMABLE_HIGH = 0.15, 0.3


# the parameters the advice is about, and the runbook whose profile values they are
PARAMETERS = {"install": ("memory_max", "cpu_quota"), "configure": ("max_parallelism",),
              "access": ("max_concurrent_builds",), "prune": ("prune_keep_storage", "prune_keep_duration")}


@dataclass
class Proposal:
    parameter: str
    current: str
    proposed: str
    runbook: str  # the runbook that applies it
    evidence: str

    @property
    def set(self) -> str:
        return f"{self.parameter}={self.proposed}"


# --------------------------------------------------------------------------------------
# the evidence, where the builder runs
# --------------------------------------------------------------------------------------
def gather(layout: Layout) -> dict[str, Any]:
    """What the builder on this machine measured about itself."""
    from ..daemon import cgroups, pressure
    from ..daemon.buildctl import Buildctl
    from ..production import access, auditlog

    where = cgroups.slice_dirs(layout.slice)
    hits = 0
    if where:  # v1: memory.failcnt holds the number alone; v2: memory.events' `max` line
        counter, key = pressure._memory_counter(where)
        hits = pressure._counter(counter, key) if key else int(cgroups._read(counter) or 0)
    client = Buildctl.for_layout(layout)
    records = client.disk_usage()
    history = [r.get("record", r) for r in client.histories()]
    disk = shutil.disk_usage(layout.root_dir if layout.root_dir.exists() else layout.state_dir)
    queue = [e.get("queue_ms", 0) for e in auditlog.read(access.audit_log(layout))
             if e.get("tier") == "connection" and e.get("status") == "ok"] \
        if auditlog.log_files(access.audit_log(layout)) else []
    try:
        oci = tomllib.loads(layout.config_path.read_text()).get("worker", {}).get("oci", {})
    except (OSError, ValueError):
        oci = {}
    return {"builder": layout.name, "slice": layout.slice if where else "", "cores": os.cpu_count() or 1,
            "usage": cgroups.usage(layout.slice) if where else {}, "memory_limit_hits": hits,
            "du": {"records": len(records), "total_bytes": sum(int(r.get("size", 0)) for r in records),
                   "reclaimable_bytes": sum(int(r.get("size", 0)) for r in records if not r.get("inUse"))},
            "disk": {"total_bytes": disk.total, "free_bytes": disk.free},
            "history": {"builds": len(history), "failed": sum(1 for r in history if r.get("error")),
                        "cached_steps": sum(int(r.get("numCachedSteps", 0)) for r in history),
                        "total_steps": sum(int(r.get("numTotalSteps", 0)) for r in history)},
            "queue": {"connections": len(queue), "waited": sum(1 for q in queue if q > 0),
                      "p95_wait_ms": p95([float(q) for q in queue])},
            "max_parallelism": int(oci.get("max-parallelism", 0) or 0)}


def main(argv: list[str]) -> int:
    """`python -m runbook_checks.reports.tuning [TRUST_LEVEL]`, where the builder runs: the
    evidence as JSON."""
    from ..core import layout as layout_mod

    print(json.dumps(gather(layout_mod.production("/", argv[0] if argv else ""))))
    return 0


# --------------------------------------------------------------------------------------
# what it asks for
# --------------------------------------------------------------------------------------
def _size(n: float) -> str:
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= factor:
            return f"{int(round(n / factor))}{unit}"
    return f"{int(n)}"


def _hours(seconds: float) -> str:
    return f"{max(1, int(seconds // 3600))}h"


def current(profile: str, trust_level: str = "") -> dict[str, Any]:
    """The PARAMETERS as `profile` gives them to their runbooks (for the builder of
    `trust_level`): what the proposals change."""
    from ..core import profiles

    sets = [f"trust_level={trust_level}"] if trust_level else []
    out: dict[str, Any] = {}
    for runbook, keys in PARAMETERS.items():
        values = profiles.resolve(runbook, profile, "check", sets)
        out.update({k: values.get(k) for k in keys})
    return out


def advise(evidence: dict[str, Any], current: dict[str, Any]) -> tuple[list[Proposal], list[str]]:
    """(proposals, notes): what the evidence asks of `current` (the parameters as the
    profile gives them: memory_max, cpu_quota, max_parallelism, max_concurrent_builds,
    prune_keep_storage, prune_keep_duration)."""
    out: list[Proposal] = []
    notes: list[str] = []
    usage, cores = evidence.get("usage", {}), int(evidence.get("cores", 1))
    hits = int(evidence.get("memory_limit_hits", 0))
    if hits and current.get("memory_max"):
        limit = parse_size(current["memory_max"])
        out.append(Proposal("memory_max", current["memory_max"], _size(limit * 1.5), "install",
                            f"the builder's slice hit its memory limit {hits} time(s) (a step was OOM-killed there);"
                            f" it uses {_size(usage.get('memory_bytes', 0))} of {_size(limit)} now"))
    periods, throttled = usage.get("cpu_periods", 0), usage.get("cpu_throttled_periods", 0)
    share = throttled / periods if periods else 0.0
    quota = int(str(current.get("cpu_quota") or "0").rstrip("%") or 0)
    if share > THROTTLED_SHARE and quota:
        said = (f"the CPU quota throttled the slice in {share:.0%} of the {int(periods)} periods it ran"
                f" ({usage.get('cpu_throttled_seconds', 0):.1f} s held back)")
        if quota < cores * 100:
            out.append(Proposal("cpu_quota", f"{quota}%", f"{min(int(quota * 1.5), cores * 100)}%", "install",
                                f"{said}; the machine has {cores} cores"))
        elif int(current.get("max_parallelism") or 0) > cores:
            out.append(Proposal("max_parallelism", str(current["max_parallelism"]), str(cores), "configure",
                                f"{said}, and the quota is all {cores} cores already: run fewer steps at once"))
    queue = evidence.get("queue", {})
    waited = queue.get("waited", 0) / queue["connections"] if queue.get("connections") else 0.0
    slots = int(current.get("max_concurrent_builds") or 0)
    if slots and waited > QUEUE_WAITED_SHARE and queue.get("p95_wait_ms", 0) > QUEUE_P95_MS:
        if share <= THROTTLED_SHARE:
            out.append(Proposal("max_concurrent_builds", str(slots), str(slots * 2), "access",
                                f"{waited:.0%} of {queue['connections']} builds waited in the queue (p95"
                                f" {queue['p95_wait_ms'] / 1000:.0f} s) while the CPU quota throttled"
                                f" {share:.0%} of periods"))
        else:
            notes.append("builds wait in the queue and the CPU is saturated: a bigger build server, or another one")
    du, history = evidence.get("du", {}), evidence.get("history", {})
    keep = parse_size(current["prune_keep_storage"]) if current.get("prune_keep_storage") else 0
    hit = history["cached_steps"] / history["total_steps"] if history.get("total_steps") else 1.0
    if keep and history.get("builds", 0) >= 10 and hit < CACHE_HIT_LOW and \
            du.get("total_bytes", 0) >= CACHE_NEAR_LIMIT * keep:
        out.append(Proposal("prune_keep_storage", current["prune_keep_storage"], _size(keep * 2), "prune",
                            f"{hit:.0%} of {history['total_steps']} steps came from the cache while it holds"
                            f" {_size(du['total_bytes'])} of the {_size(keep)} the prune keeps: it is evicted"
                            " before it is reused"))
    disk = evidence.get("disk", {})
    free = disk["free_bytes"] / disk["total_bytes"] if disk.get("total_bytes") else 1.0
    reclaimable = du["reclaimable_bytes"] / du["total_bytes"] if du.get("total_bytes") else 0.0
    if current.get("prune_keep_duration") and free < DISK_FREE_LOW and reclaimable > RECLAIMABLE_HIGH:
        seconds = parse_duration(current["prune_keep_duration"])
        out.append(Proposal("prune_keep_duration", current["prune_keep_duration"], _hours(seconds / 2), "prune",
                            f"the disk is {free:.0%} free and {reclaimable:.0%} of the cache"
                            f" ({_size(du['reclaimable_bytes'])}) is reclaimable"))
    if history.get("builds") and history["failed"] / history["builds"] > 0.2:
        notes.append(f"{history['failed']} of {history['builds']} builds in the history failed: read the failing"
                     " Dockerfiles in invoke report.adoption")
    return out, notes


def as_json(proposals: list[Proposal], notes: list[str], evidence: dict[str, Any]) -> dict[str, Any]:
    return {"proposals": [{**asdict(p), "set": p.set} for p in proposals], "notes": notes, "evidence": evidence}


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
