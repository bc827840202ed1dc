"""`invoke bench.*`: the benchmarks (speed targets live here, never in timed tests)."""

from __future__ import annotations

from invoke import Exit, task

from runbook_checks.core.errors import ParameterError
from runbook_checks.core.paths import PROJECT_ROOT, runs_dir

from ._kit import console, port_option, refusals, show


def _benchmark(name: str, options: dict[str, str], repetitions: str, state_dir: str, registry_port: str,
               s3_port: str, publish: bool, keep_caches: bool = False) -> None:
    """The benchmark runbook (apply) on the lab; its recap, the medians, exit 1 on a missed goal."""
    from runbook_checks.cache import benchmarks
    from runbook_checks.core import runner

    sets = [f"benchmark={name}", f"repetitions={repetitions}", f"publish={str(bool(publish)).lower()}",
            f"keep_caches={str(bool(keep_caches)).lower()}"]
    for key, value in options.items():
        if value:
            sets.append(f"{key}=[{', '.join(v.strip() for v in value.split(',') if v.strip())}]")
    for key, value, option in (("registry_port", registry_port, "--registry-port"), ("s3_port", s3_port, "--s3-port")):
        if value:
            sets.append(f"{key}={port_option(value, option)}")
    if state_dir:
        sets.append(f"state_dir={state_dir}")
    result = runner.run("benchmark", "lab", "apply", sets)
    show(result)
    facts = result.report.facts
    records = benchmarks.results(facts)
    if records:
        console().print(benchmarks.table(facts, records), soft_wrap=True)
        console().print(f"results: {facts['results']}\nplot:    {facts['plot']}", soft_wrap=True)
    if facts.get("published"):
        console().print(f"published to {facts['published']}")
    if result.report.status == "failed":
        raise Exit(result.report.steps[-1].message, code=1)


LAB = {
    "repetitions": "runs of every scenario, each with new caches and builders; tables show medians",
    "state_dir": "the lab's state directory (default: the lab profile's, .lab)",
    "registry_port": "its local registry's port (default: the lab profile's, 15000)",
    "s3_port": "its S3 server's port (default: the lab profile's, 19000)",
}


@task(help={
    "workloads": "comma-separated workloads under workloads/ (default: all: small, go-app, py-app)",
    "scenarios": "comma-separated scenarios (default: all: cold, warm, edit, fresh-registry, fresh-s3, fresh-local)",
    **LAB,
    "publish": "also copy the plot and the table into docs/guides/cache-benchmark.md",
    "keep_caches": "keep what the run exported (registry tags, S3 prefix, local directories)",
})
@refusals
def cache(c, workloads="", scenarios="", repetitions="1", state_dir="", registry_port="", s3_port="",
          publish=False, keep_caches=False):
    """Measure the build cache: cold, warm, edit, and fresh builders importing each backend.

    Runs the benchmark runbook (apply) on the running lab (./kit up), so the run is a
    recorded notebook (runs/benchmark/) with its table and plot inline; the records go to
    runs/bench/cache-<stamp>.json with the plot beside them. Prints the medians. Exits 1
    when a fresh builder importing the registry or S3 cache of a Debian workload is not
    5x faster than cold, all CACHED."""
    _benchmark("cache", {"workloads": workloads, "scenarios": scenarios}, repetitions, state_dir, registry_port,
               s3_port, publish, keep_caches)


@task(help={
    "workloads": "comma-separated workloads under workloads/ (default: all: small, go-app, py-app)",
    "scenarios": "comma-separated scenarios (default: all: cold, warm, edit, concurrent, fresh-remote)",
    "tools": "comma-separated tools (default: all: buildkit-kit, buildkit-defaults, buildah)",
    **LAB,
    "publish": "also copy the plot and the tables into docs/guides/peers.md",
})
@refusals
def peers(c, workloads="", scenarios="", tools="", repetitions="3", state_dir="", registry_port="", s3_port="",
          publish=False):
    """Measure the kit's BuildKit against BuildKit's defaults and Buildah: the same
    workloads, base images and output (an OCI archive), interleaved; cold, warm, edit,
    builds at once and a fresh builder importing the registry cache.

    Runs the benchmark runbook (apply) on the running lab (./kit up); the records go to
    runs/bench/peers-<stamp>.json. Prints the medians and ratios. Exits 1 when the kit's
    configuration is slower than BuildKit's defaults by more than the noise."""
    _benchmark("peers", {"workloads": workloads, "scenarios": scenarios, "tools": tools}, repetitions, state_dir,
               registry_port, s3_port, publish)


@task(help={
    "workload": "the workload under workloads/ whose warm build is measured (default: small)",
    "repetitions": "builds on each path, interleaved raw, runbook, raw, ... (default 5)",
    "state_dir": "the lab's state directory (default: the lab profile's, .lab)",
    "registry_port": "its local registry's port (default: the lab profile's, 15000)",
    "keep_cache": "keep the cache the run exported (the kit/bench-overhead tag in the local registry)",
})
@refusals
def overhead(c, workload="small", repetitions="5", state_dir="", registry_port="", keep_cache=False):
    """Measure what the kit adds to a build: the same warm build as a raw `buildctl build`
    and through the cache-warm runbook (apply), interleaved; medians, p95, the overhead and
    where the runbook's time goes.

    Needs the running lab (./kit up). Writes runs/bench/overhead-<stamp>.json; prints a table."""
    from runbook_checks.cache import bench, overhead as kit_overhead
    from runbook_checks.core import files

    if not str(repetitions).isdigit() or not 1 <= int(repetitions) <= 100:
        raise ParameterError(f"--repetitions {repetitions!r} is not a count", "give 1 to 100, e.g. --repetitions 5")
    plan = kit_overhead.plan(kit_overhead.context_of(workload), "lab", state_dir,
                             port_option(registry_port, "--registry-port"))
    out = console()
    stamp = files.stamp()
    records = kit_overhead.run(plan, int(repetitions), say=lambda m: out.print(m, soft_wrap=True, highlight=False),
                               keep_cache=keep_cache)
    doc = kit_overhead.document(records, plan, stamp, bench.machine())
    path = kit_overhead.write_results(doc, runs_dir(), stamp)
    out.print(kit_overhead.recap_table(doc))
    out.print(f"results: {path}", soft_wrap=True)


@task(help={"host": "the rehearsal host with the production sequence and access applied (invoke host.up NAME)",
            "rounds": "warm builds on each path (default 10)"})
@refusals
def frontdoor(c, host, rounds="10"):
    """Measure what the front door costs: a warm build through it vs on the unix socket
    (median of --rounds each, inside the host), and certs.issue to a team's first build.

    Writes runs/bench/frontdoor-<stamp>.json. Exits 1 when the front door adds more than
    10% or 50 ms (whichever is larger), or the first build takes over 60 s."""
    import json
    import sys

    from rich.table import Table

    from runbook_checks.core import files
    from runbook_checks.daemon import install
    from runbook_checks.production import access, bench, hosts

    if not str(rounds).isdigit() or not 1 <= int(rounds) <= 1000:
        raise ParameterError(f"--rounds {rounds!r} is not a number of rounds", "give 1 to 1000, e.g. --rounds 10")
    layout_, h = access.installation(host)
    out = console()
    out.print(f"{rounds} warm builds on the socket and through the front door, inside {h.name} ...")
    proc = hosts.run_in(h, [sys.executable, "-m", "runbook_checks.production.bench", "frontdoor", str(rounds)],
                        cwd=str(PROJECT_ROOT), timeout=3600)
    cost = json.loads(proc.stdout.strip().splitlines()[-1])
    first = bench.first_build(layout_, install.built_with_go(install.BUILDKIT_VERSION) / "buildctl", h,
                              say=lambda m: out.print(m, highlight=False))
    summary, misses = bench.verdict(cost, first)
    stamp = files.stamp()
    path = runs_dir() / "bench" / f"frontdoor-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    files.atomic_write(path, json.dumps({"host": h.name, "stamp": stamp, **summary, "cost": cost, "first": first},
                                        indent=2) + "\n")
    table = Table(title=f"front door benchmark {stamp} ({h.name})", title_justify="left")
    for col in ("measure", "value", "target"):
        table.add_column(col)
    table.add_row("warm build, unix socket (median)", f"{summary['median_socket_s'] * 1000:.0f} ms", "")
    table.add_row("warm build, front door (median)", f"{summary['median_frontdoor_s'] * 1000:.0f} ms", "")
    table.add_row("front door overhead", f"{summary['overhead_ms']:.0f} ms", f"<= {summary['allowed_ms']:.0f} ms")
    table.add_row("certs.issue to first build", f"{summary['issue_to_first_build_s']:.2f} s",
                  f"< {bench.FIRST_BUILD_S:.0f} s")
    out.print(table)
    out.print(f"results: {path}", soft_wrap=True)
    if misses:
        raise Exit("below the goal:\n  " + "\n  ".join(misses), code=1)


def _counts(text: str, option: str, most: int) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(not 1 <= v <= most for v in values) or list(values) != sorted(set(values)):
        raise ParameterError(f"{option} {text!r} is not a rising list of counts from 1 to {most}",
                             f"give them like {option} 1,2,4")
    return values


@task(help={"host": "the rehearsal host with the production sequence and access applied (invoke host.up NAME)",
            "workload": "a busybox workload under workloads/ (default: small)",
            "concurrency": "teams building at once on one builder (default: 1,2,4,8)",
            "builders": "builders in the pool (default: 1,2,4)",
            "per_team": "builds each team makes one after another in a burst (default: 3)",
            "rounds": "warm builds per block for the queue's cost, four blocks (default: 10)",
            "publish": "also copy the plot, the tables and the numbers into docs/guides/sizing.md"})
@refusals
def scaling(c, host, workload="small", concurrency="1,2,4,8", builders="1,2,4", per_team="3", rounds="10",
            publish=False):
    """Measure how far one build server goes, for the sizing guide: builds per minute, p95
    and memory as more teams build at once; builds per minute over a pool of 1, 2, 4
    builders; and the build queue's own cost on a build that does not wait.

    Reconfigures the host's front door while it runs and leaves it as the production
    profile makes it. Writes runs/bench/scaling-<stamp>.json and .png. Exits 1 when the
    queue adds more than 5% to a build that does not wait."""
    import json

    from runbook_checks.core import files
    from runbook_checks.production import hosts, scaling as bench_scaling

    teams, pool = _counts(concurrency, "--concurrency", 32), _counts(builders, "--builders", 8)
    for value, option in ((per_team, "--per-team"), (rounds, "--rounds")):
        if not str(value).isdigit() or not 1 <= int(value) <= 100:
            raise ParameterError(f"{option} {value!r} is not a count", f"give 1 to 100, e.g. {option} 3")
    h = hosts.load(host)
    out = console()
    stamp = files.stamp()
    path = runs_dir() / "bench" / f"scaling-{stamp}.json"
    record = bench_scaling.run(h, workload, teams, pool, int(per_team), int(rounds), path.parent / f"scaling-{stamp}",
                               say=lambda m: out.print(m, highlight=False))
    record = {"stamp": stamp, **record}
    files.atomic_write(path, json.dumps(record, indent=2) + "\n")
    caption = f"run {stamp} on rehearsal host {h.name}, {record['sizing']['cores']} cores"
    png = bench_scaling.plot(record, path.with_suffix(".png"), caption)
    out.print(bench_scaling.markdown(record), highlight=False, soft_wrap=True)
    out.print(f"results: {path}\nplot:    {png}", soft_wrap=True)
    if publish:
        bench_scaling.publish(record, png, PROJECT_ROOT / "docs/guides/sizing.md", caption)
        out.print("published to docs/guides/sizing.md")
    misses = bench_scaling.verdict(record)
    if misses:
        raise Exit("below the goal:\n  " + "\n  ".join(misses), code=1)
