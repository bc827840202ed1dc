"""How far one build server goes, measured on a rehearsal host (`invoke bench.scaling`),
for the sizing guide:

- concurrency: bursts of 1, 2, 4, 8 teams building at once on one builder, each team a
  few builds one after another, each a one-line source edit of a workload (so its later
  steps run, as a commit's would): builds per minute, median and p95 seconds, the builder
  slice's peak memory and CPU seconds. From these: builds per core, memory per
  concurrent build, and the concurrency past which builds per minute stop rising (there
  the front door's queue starts to grow: max_concurrent_builds belongs near it);
- the pool: the same burst over 1, 2 and 4 builders behind the front door (consistent
  hashing on the team), builds per minute and where they ran;
- the queue's own cost: a build that does not wait, through the front door with 16
  build slots per builder and with no limit (set in the running front door, ABBA
  blocks); target within 5%.

Builds go through the front door from this side with team certificates, the way teams'
builds come. The workload is one of workloads/ built on the local busybox base (a
rehearsal host's builder pulls nothing)."""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..core import figures
from ..core.errors import KitError, ScalingError
from ..core.paths import PROJECT_ROOT, WORKLOADS_DIR
from ..core.units import p95
from ..daemon import cgroups
from ..daemon.buildctl import Buildctl
from ..daemon.contexts import BASE_STAGE, busybox_rootfs

QUEUE_OVERHEAD_MAX = 0.05  # a build that does not wait: through the queue within 5% of without
BUSYBOX_BASE = "${BASE_REGISTRY}/kit/busybox:latest"
KNEE_GAIN = 1.15  # doubling the builds at once gains less than this: the builder is saturated


# --------------------------------------------------------------------------------------
# the workload
# --------------------------------------------------------------------------------------
def workload_context(name: str, dest: Path, nonce: str) -> Path:
    """workloads/NAME on the local busybox base, its source edited as its edit.txt says
    (the line appended carries `nonce`, so the steps after the edit run)."""
    src = WORKLOADS_DIR / name
    if not (src / "Dockerfile").exists():
        raise ScalingError(f"there is no workload {name!r} in {WORKLOADS_DIR}",
                           f"use one of: {', '.join(sorted(p.name for p in WORKLOADS_DIR.iterdir() if p.is_dir()))}")
    text = (src / "Dockerfile").read_text()
    if BUSYBOX_BASE not in text or "kit/debian" in text:
        raise ScalingError(f"the workload {name} does not build on kit/busybox alone, and a rehearsal host's builder"
                           " pulls no image", "use a busybox workload, such as small")
    shutil.copytree(src, dest, dirs_exist_ok=True)
    busybox_rootfs(dest / "rootfs")
    (dest / "Dockerfile").write_text(BASE_STAGE + text.replace(BUSYBOX_BASE, "base"))
    edited, line = (src / "edit.txt").read_text().splitlines()[:2]
    with open(dest / edited, "a") as fh:
        fh.write(line.replace("{nonce}", nonce) + "\n")
    return dest


# --------------------------------------------------------------------------------------
# the load: teams building at once
# --------------------------------------------------------------------------------------
def burst(clients: dict[str, Buildctl], per_team: int, workload: str, tag: str) -> dict[str, Any]:
    """Every team in `clients` at once, each `per_team` builds one after another (a new
    edit each): wall seconds, builds per minute, each build's seconds."""
    seconds: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def team(name: str, client: Buildctl) -> None:
        for k in range(per_team):
            with tempfile.TemporaryDirectory(prefix="bk-scale-") as tmp:
                ctx = workload_context(workload, Path(tmp), f"{tag}-{name}-{k}")
                start = time.monotonic()
                try:
                    client.build(ctx, timeout=900)
                except KitError as exc:
                    with lock:
                        errors.append(f"{name}: {exc.problem[:300]}")
                    return
                with lock:
                    seconds.append(time.monotonic() - start)

    threads = [threading.Thread(target=team, args=item) for item in clients.items()]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    if errors:
        raise ScalingError(f"{len(errors)} build(s) failed under load: {errors[0]}",
                           "read the audit log (invoke report.audit --host HOST --since 1h) and the builder's journal")
    return {"teams": len(clients), "builds": len(seconds), "wall_s": round(wall, 3),
            "builds_per_min": round(len(seconds) / wall * 60, 2), "median_s": round(statistics.median(seconds), 3),
            "p95_s": round(p95(seconds), 3)}


def queue_cost(times: dict[str, list[float]]) -> dict[str, Any]:
    """The medians of warm builds without a queue ("straight") and through one
    ("queued"), and the queue's overhead."""
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"rounds": len(times["queued"]), "seconds": times, "median_straight_s": round(med["straight"], 4),
            "median_queued_s": round(med["queued"], 4), "overhead": round(med["queued"] / med["straight"] - 1, 4)}


# --------------------------------------------------------------------------------------
# the builder's slices (inside the host)
# --------------------------------------------------------------------------------------
def slice_counters(slices: list[str], reset: bool = False) -> dict[str, dict[str, float]]:
    """Per slice: memory now and its peak since the last reset (cgroup v1's
    max_usage_in_bytes, v2's memory.peak), CPU seconds; `reset` starts a new peak."""
    out = {}
    for name in slices:
        dirs = cgroups.slice_dirs(name)
        peak_file = (dirs["memory"] / "memory.max_usage_in_bytes" if "memory" in dirs
                     else dirs["unified"] / "memory.peak" if "unified" in dirs else None)
        if reset and peak_file is not None and peak_file.name == "memory.max_usage_in_bytes":
            peak_file.write_text("0")
        used = cgroups.usage(name)
        peak = cgroups._number(cgroups._read(peak_file)) if peak_file is not None else None
        out[name] = {"memory_bytes": used.get("memory_bytes", 0), "peak_memory_bytes": peak or 0,
                     "cpu_seconds": used.get("cpu_seconds", 0)}
    return out


def main(argv: list[str]) -> int:
    """`python -m runbook_checks.production.scaling counters [--reset] SLICE...`, on the
    host: JSON."""
    if not argv or argv[0] != "counters":
        print("usage: python -m runbook_checks.production.scaling counters [--reset] SLICE...", file=sys.stderr)
        return 2
    reset = "--reset" in argv
    print(json.dumps(slice_counters([a for a in argv[1:] if a != "--reset"], reset)))
    return 0


# --------------------------------------------------------------------------------------
# the run, from this side, on a rehearsal host with the production sequence applied
# --------------------------------------------------------------------------------------
MEMBER_PORTS, MEMBER_SUBNETS = 6161, "10.6{}.0.0/16"  # the benchmark's own pool builders: p2, p3, p4...
POOL_TEAMS = 8  # teams at once over the pool (enough for each builder to get some)


def bench_profile(dest: Path, members: list[str]) -> Path:
    """A site profile: production with the benchmark's pool builders declared."""
    import yaml

    levels = {m: {"debug_port": MEMBER_PORTS + i, "bridge_subnet": MEMBER_SUBNETS.format(i + 1)}
              for i, m in enumerate(members)}
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump({"extends": "production", "pool": members, "trust_levels": levels},
                                   sort_keys=False))
    return dest


def run(host, workload: str = "small", concurrency: tuple[int, ...] = (1, 2, 4, 8),
        builders: tuple[int, ...] = (1, 2, 4), per_team: int = 3, rounds: int = 10,
        profile_dir: Path | None = None, say: Callable[[str], None] = print) -> dict[str, Any]:
    """The three measurements on `host`; the front door is left as the production profile
    makes it, and the benchmark's pool builders stopped."""
    from ..core import layout as layout_mod
    from ..daemon import install
    from . import access, auditlog, bench, ca, hosts, pool, rehearsal

    layout = layout_mod.production(host.rootfs)
    binary = install.built_with_go(install.BUILDKIT_VERSION) / "buildctl"
    members = [f"p{n}" for n in range(2, max(builders) + 1)]
    profile = str(bench_profile((profile_dir or Path(tempfile.mkdtemp())) / "scaling.yaml", members))
    with tempfile.TemporaryDirectory(prefix="bk-scaling-") as tmp:
        workload_context(workload, Path(tmp) / "probe", "probe")  # refused here, before the host is touched

    def runbook(name: str, *sets: str) -> None:
        code, records = rehearsal.run_runbook(host.name, name, profile, "apply", sets, capture=True)
        if code:
            report = json.loads(records[-1].read_text()) if records else {}
            failed = [f"{s['name']}: {s['message'][:300]}" for s in report.get("steps", []) if s["status"] == "failed"]
            raise ScalingError(f"the {name} runbook failed on {host.name}: {'; '.join(failed) or 'see its record'}",
                               f"run it by hand: invoke runbook {name} --profile {profile} --host {host.name}")

    def counters(reset: bool = False) -> dict[str, Any]:
        argv = [sys.executable, "-m", __name__, "counters", *(["--reset"] if reset else []), layout.slice]
        proc = hosts.run_in(host, argv, cwd=str(PROJECT_ROOT), timeout=60)
        return json.loads(proc.stdout.strip().splitlines()[-1])[layout.slice]

    for member in members:
        say(f"pool builder buildkit-{member}: install and configure")
        runbook("install", f"trust_level={member}")
        runbook("configure", f"trust_level={member}")
    teams = [f"scale{i}" for i in range(1, max(*concurrency, POOL_TEAMS) + 1)]
    remote = access.remote(layout)
    clients = {}
    bundles = Path(tempfile.mkdtemp(prefix="bk-scaling-bundles-"))
    for team in teams:
        bundle = ca.write_bundle(ca.issue(layout, team, days=1), bundles / team)
        clients[team] = access.client(remote, bundle, binary)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    record: dict[str, Any] = {"host": host.name, "workload": workload, "per_team": per_team}
    try:
        runbook("access", "pool=[]")
        burst({teams[0]: clients[teams[0]]}, 1, workload, f"{stamp}-warm")  # the base and first steps cached
        rows = []
        for c in concurrency:
            idle = counters(reset=True)
            result = burst({t: clients[t] for t in teams[:c]}, per_team, workload, f"{stamp}-c{c}")
            after = counters()
            cpu = after["cpu_seconds"] - idle["cpu_seconds"]
            rows.append({**result, "idle_memory_bytes": idle["memory_bytes"],
                         "peak_memory_bytes": after["peak_memory_bytes"], "cpu_s": round(cpu, 2),
                         "cores_busy": round(cpu / result["wall_s"], 2)})
            say(f"{c} team(s) at once: {result['builds_per_min']} builds/min, p95 {result['p95_s']}s,"
                f" peak {_mib(after['peak_memory_bytes'])}")
        record["concurrency"] = rows
        cores = int(hosts.run_in(host, ["nproc"]).stdout.strip() or 1)
        record["sizing"] = sizing(rows, cores)
        times: dict[str, list[float]] = {"straight": [], "queued": []}
        with tempfile.TemporaryDirectory(prefix="bk-scaling-q-") as tmp:
            ctx = workload_context(workload, Path(tmp), f"{stamp}-queue")
            client = clients[teams[0]]
            client.build(ctx, timeout=300)  # warm
            for which in ("straight", "queued", "queued", "straight"):  # ABBA: drift hits both
                pool.run(host, "slots", "16" if which == "queued" else "0")  # the running front door's
                times[which] += [bench.cached_build(client, ctx) for _ in range(rounds)]
        access.reload_after_revocation(layout, host)  # the configuration's slots again
        record["queue"] = queue_cost(times)
        say(f"queue overhead on a build that does not wait: {record['queue']['overhead'] * 100:+.1f}%")
        pool_rows = []
        for n in builders:
            runbook("access", f"pool=[{','.join(members[:n - 1])}]")
            load = {t: clients[t] for t in teams[:POOL_TEAMS]}
            burst(load, 1, workload, f"{stamp}-warm{n}")  # each builder holds its teams' first steps
            since = time.time()
            result = burst(load, per_team, workload, f"{stamp}-n{n}")
            time.sleep(1)  # the audit shipper's last lines
            spread: dict[str, int] = {}
            for e in auditlog.read(access.audit_log(layout), since):
                if e.get("tier") == "connection" and e.get("team") in load and e.get("builder"):
                    spread[e["builder"]] = spread.get(e["builder"], 0) + 1
            pool_rows.append({"builders": n, **result, "per_builder": spread})
            say(f"{n} builder(s): {result['builds_per_min']} builds/min ({', '.join(f'{k} {v}' for k, v in spread.items())})")
        record["pool"] = pool_rows
    finally:
        for team in teams:
            ca.revoke(layout, team)
        shutil.rmtree(bundles, ignore_errors=True)
        rehearsal.run_runbook(host.name, "access", "production", "apply", (), capture=True)
        for member in members:
            hosts.run_in(host, ["systemctl", "disable", "--now", f"buildkit-{member}.socket",
                                f"buildkit-{member}.service"], check=False, timeout=120)
    return record


# --------------------------------------------------------------------------------------
# what the numbers say
# --------------------------------------------------------------------------------------
def sizing(concurrency: list[dict[str, Any]], cores: int) -> dict[str, Any]:
    """Builds per core per minute (at the best concurrency), memory per concurrent build
    (the peak's rise over the idle builder, per build at once, at the largest burst), and
    the knee: the concurrency past which doubling gains less than KNEE_GAIN."""
    best = max(concurrency, key=lambda r: r["builds_per_min"])
    knee = 0  # not reached within the concurrency measured
    for prev, row in zip(concurrency, concurrency[1:]):
        if row["builds_per_min"] < prev["builds_per_min"] * KNEE_GAIN:
            knee = prev["teams"]
            break
    top = concurrency[-1]
    per_build = max(0.0, top["peak_memory_bytes"] - top["idle_memory_bytes"]) / max(1, top["teams"])
    return {"cores": cores, "best_builds_per_min": best["builds_per_min"], "best_at": best["teams"],
            "cores_busy_at_best": best.get("cores_busy", 0),
            "builds_per_core_per_min": round(best["builds_per_min"] / max(1, cores), 2),
            "memory_per_concurrent_build_bytes": int(per_build), "knee": knee,
            "cpu_seconds_per_build": round(sum(r["cpu_s"] for r in concurrency)
                                           / max(1, sum(r["builds"] for r in concurrency)), 3)}


def plot(record: dict[str, Any], dest: Path, caption: str) -> Path:
    """Builds per minute and p95 seconds against builds at once, and builds per minute
    against builders in the pool."""
    plt = figures.pyplot()

    conc, pool = record["concurrency"], record["pool"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    xs = [r["teams"] for r in conc]
    left.plot(xs, [r["builds_per_min"] for r in conc], "o-", label="builds per minute")
    left.set_xlabel("teams building at once (one builder)")
    left.set_ylabel("builds per minute")
    left.set_xscale("log", base=2)
    left.set_ylim(bottom=0)
    left.set_xticks(xs, [str(x) for x in xs])
    if record["sizing"]["knee"]:
        left.axvline(record["sizing"]["knee"], color="#999999", linestyle="--", label="knee: the queue grows past it")
    twin = left.twinx()
    twin.plot(xs, [r["p95_s"] for r in conc], "s:", color="#d62728", label="p95 seconds")
    twin.set_ylabel("p95 seconds per build")
    lines = left.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    left.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper left")
    right.bar([str(r["builders"]) for r in pool], [r["builds_per_min"] for r in pool], color="#2ca02c")
    twin.set_ylim(bottom=0)
    right.set_xlabel(f"builders in the pool ({pool[0]['teams'] if pool else 0} teams at once)")
    right.set_ylabel("builds per minute")
    fig.suptitle(f"One build server: {record['workload']} workload, one-line edits", fontsize=10)
    return figures.save(fig, dest, caption)


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def markdown(record: dict[str, Any]) -> str:
    """The tables and the sentences the sizing guide publishes."""
    s, q = record["sizing"], record["queue"]
    rows = ["| teams at once | builds | builds/min | median s | p95 s | peak memory | builder CPU s | builder cores busy |",
            "|---|---|---|---|---|---|---|---|"]
    for r in record["concurrency"]:
        rows.append(f"| {r['teams']} | {r['builds']} | {r['builds_per_min']} | {r['median_s']} | {r['p95_s']} |"
                    f" {_mib(r['peak_memory_bytes'])} | {r['cpu_s']:.1f} | {r.get('cores_busy', 0):.2f} |")
    pool = ["| builders | builds | builds/min | p95 s | builds per builder |", "|---|---|---|---|---|"]
    for r in record["pool"]:
        spread = ", ".join(f"{k}: {v}" for k, v in sorted(r["per_builder"].items()))
        pool.append(f"| {r['builders']} | {r['builds']} | {r['builds_per_min']} | {r['p95_s']} | {spread} |")
    said = [f"- **Builds per core:** {s['builds_per_core_per_min']} builds per minute per core at best"
            f" ({s['best_builds_per_min']} per minute on {s['cores']} cores, {s['best_at']} teams at once);"
            f" {s['cpu_seconds_per_build']} CPU seconds per build in the builder's slice, which kept"
            f" {s.get('cores_busy_at_best', 0):.2f} of {s['cores']} cores busy then"
            + (" (so the builder's CPU was not what bounded it: the clients, on the same machine, and each"
               " build's fixed steps were)." if s.get("cores_busy_at_best", 0) < 0.5 * s["cores"] else "."),
            f"- **Memory per concurrent build:** about {_mib(s['memory_per_concurrent_build_bytes'])} above the idle"
            " builder for each build running at once.",
            (f"- **Where the queue starts to grow:** past {s['knee']} builds at once, builds per minute rise by less"
             f" than {round((KNEE_GAIN - 1) * 100)}% when the builds at once double, so more only wait longer:"
             f" max_concurrent_builds near {s['knee']} per builder of this size." if s["knee"] else
             f"- **Where the queue starts to grow:** not within {record['concurrency'][-1]['teams']} builds at once:"
             " builds per minute still rose; measure with more (--concurrency)."),
            f"- **The queue's own cost:** a build that does not wait took {q['median_queued_s'] * 1000:.0f} ms"
            f" through the queue and {q['median_straight_s'] * 1000:.0f} ms without (median of {q['rounds']} each):"
            f" {q['overhead'] * 100:+.1f}% (target within {QUEUE_OVERHEAD_MAX * 100:.0f}%)."]
    return "\n".join(said) + "\n\n" + "\n".join(rows) + "\n\n" + "\n".join(pool)


def publish(record: dict[str, Any], png: Path, page: Path, caption: str) -> None:
    """The plot, the numbers and the tables into the page's bench:scaling block."""
    figures.publish(page, "bench:scaling", png, "sizing.png", caption, markdown(record), ScalingError)


def verdict(record: dict[str, Any]) -> list[str]:
    overhead = record["queue"]["overhead"]
    if overhead > QUEUE_OVERHEAD_MAX:
        return [f"the queue adds {overhead * 100:.1f}% to a build that does not wait, more than"
                f" {QUEUE_OVERHEAD_MAX * 100:.0f}%"]
    return []


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
