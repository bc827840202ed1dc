"""The cache benchmark (`invoke bench.cache`): for each workload under workloads/, six
scenarios on real builders, timed and counted.

| scenario | builder | source | cache |
|---|---|---|---|
| cold | a fresh buildkitd (empty root) | as committed | exports mode=max to registry, s3, local |
| warm | the same builder | unchanged | exports again |
| edit | the same builder | one line appended to one file | exports again |
| fresh-registry / fresh-s3 / fresh-local | a new fresh buildkitd each | the edited source | imports that backend |

Every build writes its image as an OCI tarball (so a fresh builder must really fetch the
final image's layers, as a CI job that ships the image would). Each record carries wall
seconds, cached/total Dockerfile steps, bytes exported (the growth of the backends'
storage, summed) and bytes imported (the layer transfers the build's progress reported:
base image and cache layers). Results: runs/bench/cache-<stamp>.json (a list of records)
and a PNG plot beside it."""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..core import figures, files
from ..core.errors import BenchError, KitError
from ..core.layout import Layout
from ..core.params import BENCHMARK_SCENARIOS, validate
from ..core.paths import PROJECT_ROOT, WORKLOADS_DIR
from ..core.units import human_bytes as human
from ..daemon.buildctl import Buildctl
from ..daemon.fresh import fresh_builder
from ..daemon.install import BUILDKIT_VERSION
from . import images, registry
from .backends import CacheBackend, backend_from_params
from .proof import uncached, work_steps

SCENARIOS = BENCHMARK_SCENARIOS["cache"]
BACKENDS = ("registry", "s3", "local")
RECORD_FIELDS = ("workload", "scenario", "seconds", "cached_steps", "total_steps", "bytes_exported",
                 "bytes_imported")


# --------------------------------------------------------------------------------------
# workloads and scenarios
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Workload:
    """A build context under workloads/: its Dockerfile names its bases as
    ${BASE_REGISTRY}/kit/...; edit.txt names the file the edit scenario appends to (line
    1) and the line (line 2, `{nonce}` replaced)."""

    name: str
    path: Path

    @property
    def bases(self) -> list[str]:
        return images.bases_of(self.path / "Dockerfile")

    def edit(self, copy: Path, nonce: str) -> str:
        """Append one line to the copy's edit file; returns the file's relative path."""
        spec = (self.path / "edit.txt").read_text().splitlines()
        if len(spec) < 2 or not (copy / spec[0]).is_file():
            raise BenchError(f"{self.path}/edit.txt must hold a file of the workload and a line to append",
                             "write two lines: e.g. main.go and '// benchmark edit {nonce}'")
        with open(copy / spec[0], "a") as fh:
            fh.write(spec[1].replace("{nonce}", nonce) + "\n")
        return spec[0]


def workloads(names: list[str] | tuple[str, ...] = (), root: Path = WORKLOADS_DIR) -> list[Workload]:
    """The named workloads (all of them when none is named), or an error naming the choices."""
    found = {p.name: Workload(p.name, p) for p in sorted(root.iterdir()) if (p / "Dockerfile").is_file()}
    unknown = [n for n in names if n not in found]
    if unknown:
        raise BenchError(f"no workload named {', '.join(unknown)} under {root}", f"choose from: {', '.join(found)}")
    return [found[n] for n in names] if names else list(found.values())


@dataclass(frozen=True)
class Scenario:
    name: str
    builder: str       # "main": the cold builder, kept for warm and edit; "fresh": a new one
    edited: bool       # build the edited source
    imports: str = ""  # the backend the build imports from
    exports: tuple[str, ...] = ()


def plan(backends: tuple[str, ...] = BACKENDS) -> list[Scenario]:
    """The scenarios in the order they run: the main builder exports to every backend on
    each of its builds, so each fresh builder finds the edited source's cache."""
    exports = tuple(backends)
    steps = [Scenario("cold", "main", False, exports=exports), Scenario("warm", "main", False, exports=exports),
             Scenario("edit", "main", True, exports=exports)]
    return steps + [Scenario(f"fresh-{b}", "fresh", True, imports=b) for b in backends]


@dataclass
class Record:
    workload: str
    scenario: str
    seconds: float
    cached_steps: int
    total_steps: int
    bytes_exported: int
    bytes_imported: int
    exported: dict[str, int] = field(default_factory=dict)  # per backend
    export_seconds: float = 0.0  # of `seconds`: from the first cache export's start to the last one's end
    repetition: int = 1

    @property
    def all_cached(self) -> bool:
        return self.total_steps > 0 and self.cached_steps == self.total_steps


def export_span(vertices: list[dict]) -> float:
    """Seconds the build spent exporting its cache: from the first "exporting cache to ..."
    vertex's start to the last one's end (the backends are written in parallel)."""
    import datetime as _dt

    def when(stamp: str) -> _dt.datetime:
        head, _, frac = stamp.rstrip("Z").partition(".")
        return _dt.datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}" if frac else head)

    spans = [(when(v["started"]), when(v["completed"])) for v in vertices
             if v.get("name", "").startswith("exporting cache") and v.get("started") and v.get("completed")]
    if not spans:
        return 0.0
    return round((max(end for _, end in spans) - min(start for start, _ in spans)).total_seconds(), 3)


def write_records(records: list, base: Path, name: str, stamp: str) -> Path:
    """base/bench/NAME-<stamp>.json: a benchmark's list of records (dataclasses)."""
    folder = base / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{stamp}.json"
    files.atomic_write(path, json.dumps([asdict(r) for r in records], indent=2) + "\n")
    return path


def read_records(path: Path, record: type, fields: tuple[str, ...], name: str) -> list:
    """The records write_records wrote, or a refusal naming the fields missing."""
    data = json.loads(path.read_text())
    missing = [f for r in data for f in fields if f not in r] if isinstance(data, list) else list(fields)
    if not isinstance(data, list) or missing:
        raise BenchError(f"{path} is not a list of {name} benchmark records (missing {sorted(set(missing))})",
                         f"give a runs/bench/{name}-<stamp>.json written by invoke bench.{name}")
    return [record(**r) for r in data]


def median_runs(records: list, key: Callable) -> list:
    """One record per key(record): the run with the median seconds (the lower of the two
    middle ones for an even count), so its counts are a real build's; a group where no
    run has seconds (a tool that could not run) keeps its first record."""
    groups: dict = {}
    for r in records:
        groups.setdefault(key(r), []).append(r)
    out = []
    for group in groups.values():
        done = [r for r in group if r.seconds is not None]
        if not done:
            out.append(group[0])
            continue
        middle = statistics.median_low([r.seconds for r in done])
        out.append(next(r for r in done if r.seconds == middle))
    return out


def write_results(records: list[Record], base: Path, stamp: str) -> Path:
    return write_records(records, base, "cache", stamp)


def read_results(path: Path) -> list[Record]:
    return read_records(path, Record, RECORD_FIELDS, "cache")


def speedups(records: list[Record]) -> dict[str, dict[str, float]]:
    """Per workload: cold seconds / scenario seconds, for each other scenario."""
    out: dict[str, dict[str, float]] = {}
    for r in records:
        cold = next((c for c in records if c.workload == r.workload and c.scenario == "cold"), None)
        if cold and r.scenario != "cold" and r.seconds > 0:
            out.setdefault(r.workload, {})[r.scenario] = round(cold.seconds / r.seconds, 1)
    return out


def machine() -> str:
    """A one-line description of the machine: OS, cores, memory, BuildKit."""
    os_name = platform.system()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f", {kib / 1048576:.0f} GiB RAM"
    except (OSError, IndexError, ValueError):
        pass
    return f"{os_name}, {os.cpu_count()} cores{mem}, BuildKit {BUILDKIT_VERSION}"


# --------------------------------------------------------------------------------------
# running it
# --------------------------------------------------------------------------------------
@dataclass
class Lab:
    """The lab the benchmark uses: its daemon's layout (binaries, registry storage) and ports."""

    layout: Layout
    registry_port: int
    s3_port: int
    bucket: str = "buildkit-cache"

    def params(self) -> dict:
        """The lab's parameters the backends are made from: each kind's cache lives
        under kit/bench-cache, the S3 prefix bench, the directory bench-cache."""
        return {"profile": "ci" if self.layout.state_dir != PROJECT_ROOT / ".lab" else "lab",
                "state_dir": str(self.layout.state_dir), "registry_port": self.registry_port,
                "s3_port": self.s3_port, "cache_bucket": self.bucket, "cache_prefix": "bench",
                "cache_ref": f"127.0.0.1:{self.registry_port}/kit/bench-cache",
                "cache_dir": str(self.layout.state_dir / "bench-cache")}


def backends_for(lab: Lab, workload: str, stamp: str, names: tuple[str, ...]) -> dict[str, CacheBackend]:
    """The cache backends of one workload in one run, each a cache of its own named
    WORKLOAD-STAMP (a tag, an S3 prefix, a directory), so a run starts from empty caches."""
    run = f"{workload}-{stamp}".replace(".", "-").lower()
    return {name: backend_from_params({**lab.params(), "cache_backend": name}, lab.layout).within(run)
            for name in names}


def check_lab(lab: Lab, names: tuple[str, ...]) -> None:
    """Before any build: the services the chosen backends need answer."""
    if not lab.layout.buildctl.exists():
        raise BenchError(f"{lab.layout.buildctl} does not exist", "bring the lab up first: ./kit up")
    if not lab.registry_port or not registry.answers(lab.registry_port):
        raise BenchError(f"the local registry does not answer on 127.0.0.1:{lab.registry_port}",
                         "bring the lab up (./kit up), or pass --state-dir and --registry-port of a running stack")
    if "s3" in names and not lab.s3_port:
        raise BenchError("the s3 backend needs the lab's S3 server", "pass --s3-port, or --backends registry,local")
    semantics = validate(lab.params())
    for name in names:
        backend_from_params({**lab.params(), "cache_backend": name}, lab.layout).ensure(semantics, apply=True)


def seed_bases(lab: Lab, chosen: list[Workload], say: Callable[[str], None]) -> None:
    seeders = images.seeders(lab.layout, lab.registry_port, progress=say)
    for base in sorted({b for w in chosen for b in w.bases}):
        if base not in seeders:
            raise BenchError(f"no kit recipe makes the base image {base}", f"use one of: {', '.join(seeders)}")
        say(f"base {base}: {seeders[base]().message}")


def measure(lab: Lab, builder: Layout, workload: Workload, scenario: Scenario, context: Path, backends: dict,
            timeout: float = 1800) -> Record:
    """One build of one scenario, timed and counted."""
    before = {name: backends[name].stored_bytes(lab.layout) for name in scenario.exports}
    with tempfile.TemporaryDirectory(prefix="bk-bench-out-") as out:
        try:
            result = Buildctl.for_layout(builder).build(
                context, build_args={"BASE_REGISTRY": f"127.0.0.1:{lab.registry_port}"},
                output=f"type=oci,dest={out}/image.tar",
                export_cache=[backends[name].export_option() for name in scenario.exports],
                import_cache=[backends[scenario.imports].import_option()] if scenario.imports else [],
                timeout=timeout)
        except KitError as exc:
            raise BenchError(f"{workload.name} {scenario.name}: the build failed: {exc.problem}", exc.fix) from None
    exported = {name: max(0, backends[name].stored_bytes(lab.layout) - before[name]) for name in scenario.exports}
    total = len(work_steps(result))
    return Record(workload.name, scenario.name, result.seconds, total - len(uncached(result)), total,
                  sum(exported.values()), result.bytes_transferred, exported, export_span(result.vertices))


def run(lab: Lab, chosen: list[Workload], stamp: str, backend_names: tuple[str, ...] = BACKENDS,
        say: Callable[[str], None] = print, keep_caches: bool = False) -> list[Record]:
    """Every scenario of every chosen workload; progress lines through `say`. What the
    run exported is removed after each workload unless `keep_caches` (a registry tag's
    blobs wait for the registry's garbage collector)."""
    check_lab(lab, backend_names)
    seed_bases(lab, chosen, say)
    records: list[Record] = []
    for workload in chosen:
        backends = backends_for(lab, workload.name, stamp, backend_names)
        with tempfile.TemporaryDirectory(prefix=f"bk-bench-{workload.name}-") as tmp:
            context = Path(tmp) / workload.name
            shutil.copytree(workload.path, context)
            try:
                records += _run_workload(lab, workload, context, backends, backend_names, say)
            finally:
                if not keep_caches:
                    for backend in backends.values():
                        backend.remove()
    return records


def _run_workload(lab, workload, context, backends, backend_names, say) -> list[Record]:
    records = []
    scenarios = plan(backend_names)
    with fresh_builder(lab.layout) as main:
        for scenario in (s for s in scenarios if s.builder == "main"):
            if scenario.edited:
                edited = workload.edit(context, uuid.uuid4().hex[:12])
                say(f"{workload.name}: appended one line to {edited}")
            say(f"{workload.name} {scenario.name}: building on {main.state_dir} ...")
            records.append(measure(lab, main, workload, scenario, context, backends))
            say(f"  {_line(records[-1])}")
    for scenario in (s for s in scenarios if s.builder == "fresh"):
        with fresh_builder(lab.layout) as fresh:
            say(f"{workload.name} {scenario.name}: a fresh builder {fresh.state_dir} imports {scenario.imports} ...")
            records.append(measure(lab, fresh, workload, scenario, context, backends))
            say(f"  {_line(records[-1])}")
    return records


def _line(r: Record) -> str:
    return (f"{r.seconds:.2f}s, {r.cached_steps}/{r.total_steps} CACHED, exported {human(r.bytes_exported)},"
            f" imported {human(r.bytes_imported)}")


# --------------------------------------------------------------------------------------
# what it shows: a recap table, a plot, the docs page's results
# --------------------------------------------------------------------------------------
def recap_table(records: list[Record], title: str = "cache benchmark"):
    from rich.table import Table

    ratio = speedups(records)
    table = Table(title=title, title_justify="left")
    for col in ("workload", "scenario", "seconds", "of which export", "vs cold", "cached/total", "exported",
                "imported"):
        table.add_column(col, justify="left" if col in ("workload", "scenario") else "right")
    for r in records:
        x = ratio.get(r.workload, {}).get(r.scenario)
        table.add_row(r.workload, r.scenario, f"{r.seconds:.2f}", f"{r.export_seconds:.2f}" if r.export_seconds else "",
                      f"{x:.1f}x" if x else "",
                      f"{r.cached_steps}/{r.total_steps}", human(r.bytes_exported), human(r.bytes_imported))
    return table


def markdown_table(records: list[Record]) -> str:
    ratio = speedups(records)
    lines = ["| workload | scenario | seconds | of which export | vs cold | cached / total | exported | imported |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        x = ratio.get(r.workload, {}).get(r.scenario)
        export = f"{r.export_seconds:.2f}" if r.export_seconds else ""
        lines.append(f"| {r.workload} | {r.scenario} | {r.seconds:.2f} | {export} | {f'{x:.1f}x' if x else ''} |"
                     f" {r.cached_steps}/{r.total_steps} | {human(r.bytes_exported)} | {human(r.bytes_imported)} |")
    return "\n".join(lines)


def plot(records: list[Record], dest: Path, caption: str) -> Path:
    """Seconds per scenario (log scale), one group of bars per workload, each bar labelled
    with its CACHED steps."""
    plt = figures.pyplot()
    names = list(dict.fromkeys(r.workload for r in records))
    scenarios = [s for s in SCENARIOS if any(r.scenario == s for r in records)]
    fig, ax = plt.subplots(figsize=(10, 4.8), dpi=110)
    width = 0.8 / max(1, len(scenarios))
    for i, scenario in enumerate(scenarios):
        xs, ys, labels = [], [], []
        for j, name in enumerate(names):
            r = next((r for r in records if r.workload == name and r.scenario == scenario), None)
            if r:
                xs.append(j + (i - (len(scenarios) - 1) / 2) * width)
                ys.append(max(r.seconds, 0.01))
                labels.append(f"{r.cached_steps}/{r.total_steps}")
        bars = ax.bar(xs, ys, width, label=scenario)
        for bar, label in zip(bars, labels):
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                        fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_yscale("log")
    ax.set_ylabel("wall seconds (log scale)")
    ax.set_xticks(range(len(names)), names)
    ax.set_title("BuildKit cache: wall seconds per scenario (labels: CACHED/total steps)", fontsize=10)
    ax.legend(fontsize=8, ncols=3)
    return figures.save(fig, dest, caption)


def publish(records: list[Record], png: Path, page: Path, caption: str) -> None:
    """The plot and the table into the page's bench:results block."""
    figures.publish(page, "bench:results", png, "cache-benchmark.png", caption, markdown_table(records), BenchError)


def verdict(records: list[Record], workloads_checked: tuple[str, ...], factor: float = 5.0,
            scenarios: tuple[str, ...] = ("fresh-registry", "fresh-s3")) -> list[str]:
    """What falls short of the goal: a fresh builder importing the cache at least `factor`
    times faster than cold, with every step CACHED. Empty: all met."""
    ratio = speedups(records)
    misses = []
    for r in records:
        if r.workload in workloads_checked and r.scenario in scenarios:
            x = ratio.get(r.workload, {}).get(r.scenario, 0)
            if x < factor or not r.all_cached:
                misses.append(f"{r.workload} {r.scenario}: {x:.1f}x faster than cold,"
                              f" {r.cached_steps}/{r.total_steps} CACHED")
    return misses
