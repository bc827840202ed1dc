"""The peers benchmark (`invoke bench.peers`): the same workloads, the same base images
from the lab's registry and the same output (an OCI archive on disk) under three tools,
interleaved in one run:

| tool | the builder |
|---|---|
| buildkit-kit | a throwaway buildkitd on the lab's own buildkitd.toml (daemon.throwaway.scratch_config) |
| buildkit-defaults | a throwaway buildkitd with upstream defaults: a config with its root and socket, the lab registry's `http = true` and the meter's cgroup parent, nothing else |
| buildah | Debian's buildah with overlay storage in a root of its own and its layer cache (`--layers`) |

Scenarios, each repetition with new builders: `cold` (an empty builder), `warm` (the same
again), `edit` (one line appended to one file; exports the cache to the registry:
BuildKit `mode=max`, Buildah `--cache-to`), `concurrent` (CONCURRENCY copies, each with
an edit of its own, built at once on the warm builder) and `fresh-remote` (a new empty
builder importing the registry cache `edit` exported).

Each builder runs in a cgroup of its own (daemon.cgroups.Meter): its peak memory and CPU
seconds per scenario cover the daemon and its build containers (BuildKit) or buildah and
its containers. A scenario a tool cannot do is a record with `reason`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..core import figures
from ..core.errors import BenchError, KitError
from ..core.params import BENCHMARK_SCENARIOS
from ..core.units import human_bytes, p95
from ..daemon.cgroups import Meter
from ..daemon.service import free_port
from ..daemon.throwaway import defaults_config, scratch_config, throwaway
from . import registry
from .bench import Lab, Workload, median_runs, read_records, write_records
from .proof import uncached, work_steps

TOOLS = ("buildkit-kit", "buildkit-defaults", "buildah")
SCENARIOS = BENCHMARK_SCENARIOS["peers"]
CONCURRENCY = 4
NOISE_FLOOR = 0.25  # seconds: below this, two builds' times differ by jitter alone
RECORD_FIELDS = ("tool", "workload", "scenario", "repetition", "seconds", "cached_steps", "total_steps",
                 "peak_memory_bytes", "cpu_seconds", "bytes_exported", "reason")
BUILDAH = "/usr/bin/buildah"
STEP = re.compile(r"^(?:\[\d+/\d+\] )?STEP \d+/\d+: (?P<instruction>[A-Z]+)")
WORK = ("RUN", "COPY", "ADD", "WORKDIR")  # the instructions BuildKit reports as steps (proof.work_steps)


@dataclass
class Record:
    tool: str
    workload: str
    scenario: str
    repetition: int
    seconds: float | None = None
    cached_steps: int | None = None
    total_steps: int | None = None
    peak_memory_bytes: int | None = None
    cpu_seconds: float | None = None
    bytes_exported: int | None = None  # the OCI archive, and the registry's growth (the cache `edit` exports)
    reason: str = ""  # why the tool could not do the scenario
    builds: int = 1
    p95_seconds: float | None = None  # concurrent: of the builds
    builds_per_minute: float | None = None  # concurrent: builds / wall seconds * 60


@dataclass
class Build:
    seconds: float
    cached: int
    total: int


# --------------------------------------------------------------------------------------
# the builders
# --------------------------------------------------------------------------------------
class BuildkitBuilder:
    def __init__(self, client, lab: Lab):
        self.client, self.lab = client, lab

    def build(self, context: Path, out: Path, cache_to: str = "", cache_from: str = "") -> Build:
        result = self.client.build(context, build_args={"BASE_REGISTRY": f"127.0.0.1:{self.lab.registry_port}"},
                                   output=f"type=oci,dest={out}",
                                   export_cache=[f"type=registry,ref={cache_to},mode=max"] if cache_to else [],
                                   import_cache=[f"type=registry,ref={cache_from}"] if cache_from else [],
                                   timeout=3600)
        total = len(work_steps(result))
        return Build(result.seconds, total - len(uncached(result)), total)


class BuildahBuilder:
    def __init__(self, root: Path, meter: Meter, lab: Lab):
        self.root, self.meter, self.lab = root, meter, lab

    def _buildah(self, *args: str, timeout: float = 3600) -> str:
        argv = [BUILDAH, "--root", str(self.root / "storage"), "--runroot", str(self.root / "run"),
                "--storage-driver", "overlay", *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, preexec_fn=self.meter.enter)
        if proc.returncode:
            raise BenchError(f"buildah {args[0]} failed: {(proc.stdout + proc.stderr).strip()[-1500:]}",
                             "read buildah's message; the lab's registry must hold the workload's base image")
        return proc.stdout

    def build(self, context: Path, out: Path, cache_to: str = "", cache_from: str = "") -> Build:
        tag = f"localhost/peers/{context.name}:{uuid.uuid4().hex[:8]}"
        start = time.monotonic()
        log = self._buildah("bud", "--layers", "--tls-verify=false", "--network", "host", "--cgroup-parent",
                            self.meter.parent, "--build-arg", f"BASE_REGISTRY=127.0.0.1:{self.lab.registry_port}",
                            *(["--cache-to", cache_to] if cache_to else []),
                            *(["--cache-from", cache_from] if cache_from else []), "-t", tag, str(context))
        self._buildah("push", "--tls-verify=false", tag, f"oci-archive:{out}")
        seconds = round(time.monotonic() - start, 3)
        total, cached = steps(log)
        return Build(seconds, cached, total)


def steps(log: str) -> tuple[int, int]:
    """(steps, cached steps) of a `buildah bud` log: the STEP lines of the instructions
    BuildKit also counts, cached when "--> Using cache" comes before the next STEP (after
    "--> Cache pulled from remote" when the step came from --cache-from)."""
    total = cached = 0
    counting = False
    for line in log.splitlines():
        match = STEP.match(line)
        if match:
            counting = match.group("instruction") in WORK
            total += counting
        elif counting and line.startswith("--> Using cache"):
            cached += 1
            counting = False
    return total, cached


@contextmanager
def builder(tool: str, lab: Lab, meter: Meter) -> Iterator[BuildkitBuilder | BuildahBuilder]:
    """A new, empty builder of `tool` in `meter`; gone after."""
    scratch = Path(tempfile.mkdtemp(prefix=f"bk-peers-{tool}-", dir="/var/tmp"))
    if tool == "buildah":
        try:
            yield BuildahBuilder(scratch, meter, lab)
        finally:
            subprocess.run(["umount", "-R", "-l", str(scratch)], capture_output=True)
            subprocess.run([BUILDAH, "--root", str(scratch / "storage"), "--runroot", str(scratch / "run"),
                            "--storage-driver", "overlay", "rm", "--all"], capture_output=True)
            shutil.rmtree(scratch, ignore_errors=True)
        return
    if tool == "buildkit-kit":
        config = scratch_config(lab.layout.config_path, scratch, free_port(), meter.parent)
    else:
        config = defaults_config(scratch, f'[worker.oci]\ndefaultCgroupParent = "{meter.parent}"\n\n'
                                          f'[registry."127.0.0.1:{lab.registry_port}"]\nhttp = true\n')
    with throwaway(lab.layout.bin_dir, config, scratch, f"the {tool} builder", preexec=meter.enter) as client:
        yield BuildkitBuilder(client, lab)


# --------------------------------------------------------------------------------------
# running it
# --------------------------------------------------------------------------------------
def unavailable(tool: str) -> str:
    """Why `tool` cannot run here ("" when it can)."""
    if tool == "buildah" and not Path(BUILDAH).is_file():
        return "buildah is not installed (apt-get install buildah)"
    return ""


def run(lab: Lab, chosen: list[Workload], tools: tuple[str, ...], scenarios: tuple[str, ...], repetitions: int,
        stamp: str, say: Callable[[str], None] = print) -> list[Record]:
    """Every repetition, workload and tool, interleaved in that order (each tool's turn
    comes between the others', so a drift of the machine touches all three), the tools'
    order rotated from one workload and repetition to the next (rotation), so no tool
    always follows the same one."""
    records: list[Record] = []
    for rep in range(1, repetitions + 1):
        for index, workload in enumerate(chosen):
            for tool in rotation(tools, rep - 1 + index):
                why = unavailable(tool)
                if why:
                    records += [Record(tool, workload.name, s, rep, reason=why) for s in scenarios]
                    continue
                say(f"repetition {rep}/{repetitions}: {workload.name} with {tool}")
                got: list[Record] = []
                try:
                    _one(lab, workload, tool, scenarios, rep, f"{stamp}-{rep}", say, got)
                except KitError as exc:  # recorded, and the run goes on with the next tool
                    say(f"  {tool} failed: {exc.problem}")
                    done = {r.scenario for r in got}
                    got += [Record(tool, workload.name, s, rep, reason=f"failed: {exc.problem[:300]}")
                            for s in scenarios if s not in done]
                records += [r for r in got if r.scenario in scenarios]
    return records


def rotation(tools: tuple[str, ...], turn: int) -> tuple[str, ...]:
    """The tools in the order of one turn: the first one moves to the end each turn."""
    k = turn % len(tools) if tools else 0
    return tools[k:] + tools[:k]


def _cache_ref(lab: Lab, tool: str, workload: str, stamp: str) -> str:
    run = f"{workload}-{stamp}".replace(".", "-").lower()
    if tool == "buildah":  # buildah's cache is a repository of its own, one tag per step
        return f"127.0.0.1:{lab.registry_port}/kit/peers-buildah-{run}"
    return f"127.0.0.1:{lab.registry_port}/kit/peers-cache:{tool}-{run}"


def _one(lab: Lab, workload: Workload, tool: str, scenarios: tuple[str, ...], rep: int, stamp: str,
         say: Callable[[str], None], out: list[Record]) -> None:
    """The scenarios of one tool on one workload, appended to `out` as they are measured;
    the registry cache it exported removed after."""
    ref = _cache_ref(lab, tool, workload.name, stamp)
    with tempfile.TemporaryDirectory(prefix=f"bk-peers-{workload.name}-") as tmp:
        context = Path(tmp) / workload.name
        shutil.copytree(workload.path, context)
        try:
            with metered(tool, lab) as (meter, main):
                for scenario in ("cold", "warm", "edit"):
                    if scenario == "edit":
                        workload.edit(context, uuid.uuid4().hex[:12])
                    export = ref if scenario == "edit" else ""
                    out.append(_measure(lab, meter, tool, workload, scenario, rep, Path(tmp),
                                        lambda o: main.build(context, o, cache_to=export)))
                    say(f"  {_line(out[-1])}")
                if "concurrent" in scenarios:
                    out.append(_concurrent(lab, meter, main, tool, workload, rep, context, Path(tmp)))
                    say(f"  {_line(out[-1])}")
            if "fresh-remote" in scenarios:
                with metered(tool, lab) as (meter, fresh):
                    out.append(_measure(lab, meter, tool, workload, "fresh-remote", rep, Path(tmp),
                                        lambda o: fresh.build(context, o, cache_from=ref)))
                    say(f"  {_line(out[-1])}")
        finally:
            _remove_cache(lab, ref)


@contextmanager
def metered(tool: str, lab: Lab):
    """(a meter of its own, a new builder of `tool` in it)."""
    meter = Meter(f"bk-peers-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    try:
        with builder(tool, lab, meter) as made:
            yield meter, made
    finally:
        meter.close()


def _measure(lab: Lab, meter: Meter, tool: str, workload: Workload, scenario: str, rep: int, tmp: Path,
             build: Callable[[Path], Build]) -> Record:
    archive = tmp / f"{scenario}.tar"
    before = registry.storage_bytes(lab.layout)
    meter.reset()
    try:
        done = build(archive)
    except KitError as exc:
        raise BenchError(f"{workload.name} {scenario} with {tool}: the build failed: {exc.problem}", exc.fix) from None
    peak, cpu = meter.read()
    exported = archive.stat().st_size + max(0, registry.storage_bytes(lab.layout) - before)
    archive.unlink()
    return Record(tool, workload.name, scenario, rep, done.seconds, done.cached, done.total, peak, cpu, exported)


def _concurrent(lab: Lab, meter: Meter, main, tool: str, workload: Workload, rep: int, context: Path,
                tmp: Path) -> Record:
    """CONCURRENCY copies of the source, each with an edit of its own, built at once."""
    copies = []
    for i in range(CONCURRENCY):
        copy = tmp / f"concurrent-{i}" / workload.name
        shutil.copytree(context, copy)
        workload.edit(copy, uuid.uuid4().hex[:12])
        copies.append(copy)
    meter.reset()
    start = time.monotonic()
    try:
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            builds = list(pool.map(lambda c: main.build(c, c.parent / "out.tar"), copies))
    except KitError as exc:
        raise BenchError(f"{workload.name} concurrent with {tool}: a build failed: {exc.problem}", exc.fix) from None
    wall = round(time.monotonic() - start, 3)
    peak, cpu = meter.read()
    seconds = [b.seconds for b in builds]
    return Record(tool, workload.name, "concurrent", rep, wall, sum(b.cached for b in builds),
                  sum(b.total for b in builds), peak, cpu, sum((c.parent / "out.tar").stat().st_size for c in copies),
                  builds=CONCURRENCY, p95_seconds=round(p95(seconds), 3),
                  builds_per_minute=round(CONCURRENCY / wall * 60, 1))


def _remove_cache(lab: Lab, ref: str) -> None:
    repository = ref.split("/", 1)[1].split(":")[0]
    prefix = ref.rsplit(":", 1)[1] if ":" in ref.split("/", 1)[1] else ""
    for tag in registry.tags(lab.registry_port, repository):
        if tag.startswith(prefix):
            registry.delete_tag(lab.registry_port, repository, tag)


def _line(r: Record) -> str:
    extra = f", {r.builds_per_minute} builds/min, p95 {r.p95_seconds}s" if r.scenario == "concurrent" else ""
    return (f"{r.tool} {r.scenario}: {r.seconds:.2f}s, {r.cached_steps}/{r.total_steps} CACHED, peak"
            f" {human_bytes(r.peak_memory_bytes or 0)}, {r.cpu_seconds} CPU s{extra}")


# --------------------------------------------------------------------------------------
# records, medians, what it shows
# --------------------------------------------------------------------------------------
def write_results(records: list[Record], base: Path, stamp: str) -> Path:
    return write_records(records, base, "peers", stamp)


def read_results(path: Path) -> list[Record]:
    return read_records(path, Record, RECORD_FIELDS, "peers")


def medians(records: list[Record]) -> list[Record]:
    """One record per (tool, workload, scenario): the repetition with the median seconds."""
    return median_runs(records, lambda r: (r.tool, r.workload, r.scenario))


def spread(records: list[Record], tool: str, workload: str, scenario: str) -> float:
    """max - min seconds over the repetitions: the noise a comparison must clear."""
    seconds = [r.seconds for r in records if (r.tool, r.workload, r.scenario) == (tool, workload, scenario)
               and r.seconds is not None]
    return max(seconds) - min(seconds) if len(seconds) > 1 else 0.0


def _cell(r: Record | None) -> str:
    if r is None:
        return ""
    if r.seconds is None:
        return f"— ({r.reason})"
    return f"{r.seconds:.2f} ({r.cached_steps}/{r.total_steps})"


def markdown_table(records: list[Record]) -> str:
    """Median seconds (cached/total steps) per tool, and each peer's time over the kit's
    (above 1: the kit's BuildKit is faster); then memory and CPU."""
    med = {(r.tool, r.workload, r.scenario): r for r in medians(records)}
    rows = sorted({(w, s) for _, w, s in med}, key=lambda k: (k[0], SCENARIOS.index(k[1])))
    tools = [t for t in TOOLS if any(k[0] == t for k in med)]
    head = "| workload | scenario | " + " | ".join(f"{t} s" for t in tools) + " | defaults / kit | buildah / kit |"
    lines = [head, "|---|---|" + "---:|" * (len(tools) + 2)]
    for w, s in rows:
        got = [med.get((t, w, s)) for t in tools]
        kit = med.get(("buildkit-kit", w, s))

        def ratio(tool: str) -> str:
            other = med.get((tool, w, s))
            if not kit or not other or not kit.seconds or other.seconds is None:
                return ""
            return f"{other.seconds / kit.seconds:.2f}"

        lines.append(f"| {w} | {s} | " + " | ".join(_cell(g) for g in got)
                     + f" | {ratio('buildkit-defaults')} | {ratio('buildah')} |")
    lines += ["", "| workload | scenario | " + " | ".join(f"{t} peak memory / CPU s" for t in tools) + " |",
              "|---|---|" + "---:|" * len(tools)]
    for w, s in rows:
        cells = []
        for t in tools:
            r = med.get((t, w, s))
            cells.append(f"{human_bytes(r.peak_memory_bytes)} / {r.cpu_seconds:.1f}"
                         if r and r.peak_memory_bytes is not None else "")
        lines.append(f"| {w} | {s} | " + " | ".join(cells) + " |")
    concurrent = [r for r in medians(records) if r.scenario == "concurrent" and r.seconds is not None]
    if concurrent:
        lines += ["", "| workload | tool | builds at once | builds/min | p95 s |", "|---|---|---:|---:|---:|"]
        lines += [f"| {r.workload} | {r.tool} | {r.builds} | {r.builds_per_minute} | {r.p95_seconds} |"
                  for r in sorted(concurrent, key=lambda r: (r.workload, TOOLS.index(r.tool)))]
    return "\n".join(lines)


def plot(records: list[Record], dest: Path, caption: str) -> Path:
    """Median seconds per scenario and tool (log scale), one panel per workload."""
    plt = figures.pyplot()
    med = [r for r in medians(records) if r.seconds is not None]
    names = list(dict.fromkeys(r.workload for r in med)) or ["(none)"]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4.4), dpi=110, squeeze=False)
    tools = [t for t in TOOLS if any(r.tool == t for r in med)]
    width = 0.8 / max(1, len(tools))
    for ax, name in zip(axes[0], names):
        scenarios = [s for s in SCENARIOS if any(r.workload == name and r.scenario == s for r in med)]
        for i, tool in enumerate(tools):
            xs, ys = [], []
            for j, s in enumerate(scenarios):
                r = next((r for r in med if (r.tool, r.workload, r.scenario) == (tool, name, s)), None)
                if r:
                    xs.append(j + (i - (len(tools) - 1) / 2) * width)
                    ys.append(max(r.seconds, 0.01))
            ax.bar(xs, ys, width, label=tool)
        ax.set_yscale("log")
        ax.set_xticks(range(len(scenarios)), scenarios, fontsize=8)
        ax.set_title(name, fontsize=10)
    axes[0][0].set_ylabel("median wall seconds (log scale)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("BuildKit as the kit configures it, BuildKit defaults and Buildah", fontsize=10)
    return figures.save(fig, dest, caption)


def verdict(records: list[Record]) -> list[str]:
    """Where the kit's BuildKit is slower than BuildKit's defaults by more than the noise:
    the larger spread of the two over the repetitions, and at least 5% or NOISE_FLOOR
    seconds (a sub-second build's own jitter)."""
    med = {(r.tool, r.workload, r.scenario): r for r in medians(records)}
    misses = []
    for (tool, w, s), kit in med.items():
        other = med.get(("buildkit-defaults", w, s))
        if tool != "buildkit-kit" or not other or kit.seconds is None or other.seconds is None:
            continue
        noise = max(spread(records, "buildkit-kit", w, s), spread(records, "buildkit-defaults", w, s),
                    0.05 * other.seconds, NOISE_FLOOR)
        if kit.seconds - other.seconds > noise:
            misses.append(f"{w} {s}: the kit's {kit.seconds:.2f}s against the defaults' {other.seconds:.2f}s"
                          f" (noise {noise:.2f}s)")
    return misses


def publish(records: list[Record], png: Path, page: Path, caption: str) -> None:
    figures.publish(page, "bench:results", png, "peers-benchmark.png", caption, markdown_table(records), BenchError)
