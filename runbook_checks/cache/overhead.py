"""The kit's overhead (`invoke bench.overhead`): one warm build of a workload done two ways
on the same builder, interleaved (raw, runbook, raw, runbook, ...):

| path | what runs | timed |
|---|---|---|
| raw | `buildctl build`, the argv of the cache-warm runbook's build step | around the buildctl subprocess |
| runbook | `invoke runbook cache-warm --mode apply` for that one context, executed by papermill | around `runner.run` |

Before the first recorded build, the base image is seeded and one raw build warms the
builder and the cache, so the build itself is near-constant and the difference is what
the runbook adds: papermill and the kernel, its checks before the build, its proof on a
fresh builder after. The runbook's report gives each step's seconds and the buildctl
build's own seconds, so the overhead is split where the time goes.

The cache goes to its own repository (kit/bench-overhead) in the builder's local
registry, removed at the end, never over the operator's warmed caches."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..core import files, profiles, runner
from ..core import layout as layout_mod
from ..core.errors import BenchError, KitError
from ..core.layout import Layout
from ..core.params import Semantics, validate
from ..core.paths import PROJECT_ROOT, WORKLOADS_DIR
from ..core.units import p95
from ..daemon.buildctl import Buildctl, BuildResult
from . import images, registry, warm
from .backends import CacheBackend
from .proof import uncached, work_steps

RUNBOOK = "cache-warm"
REPOSITORY = "kit/bench-overhead"
PATHS = ("raw", "runbook")
RECORD_FIELDS = ("path", "repetition", "seconds", "build_seconds", "cached_steps", "total_steps")
OUTSIDE_STEPS = "papermill, kernel, imports (outside the steps)"


# --------------------------------------------------------------------------------------
# the build, two ways
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """The one build: the runbook's parameters (`sets`) and what they resolve to, so the
    raw path runs exactly the build the runbook's build step runs."""

    profile: str
    sets: tuple[str, ...]
    layout: Layout
    params: Semantics
    target: warm.WarmTarget
    backend: CacheBackend

    @property
    def build_args(self) -> dict[str, str]:
        return warm.build_args(self.params)


def context_of(workload: str, root: Path = WORKLOADS_DIR) -> str:
    """A workload's build context as the runbook's warm_contexts takes it (relative to the
    checkout when it is inside it)."""
    path = root / workload
    if not workload or "/" in workload or not (path / "Dockerfile").is_file():
        found = sorted(p.name for p in root.iterdir() if (p / "Dockerfile").is_file())
        raise BenchError(f"no workload named {workload!r} under {root}", f"choose one of: {', '.join(found)}")
    try:
        return str(path.relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def plan(context: str, profile: str = "lab", state_dir: str = "", registry_port: int = 0) -> Plan:
    """The runbook's parameters for one context on a builder (the profile's, or the one
    under `state_dir`), its cache in REPOSITORY of the builder's local registry."""
    base = [f"warm_contexts={context}"]
    if state_dir:
        base.append(f"state_dir={state_dir}")
    if registry_port:
        base.append(f"registry_port={registry_port}")
    port = _everything(profile, base)["registry_port"]
    if not port:
        raise BenchError(f"the {profile} profile runs no local registry (registry_port=0)",
                         "pass the registry port of the running stack, e.g. --registry-port 15000")
    sets = (*base, "cache_backend=registry", f"cache_ref=127.0.0.1:{port}/{REPOSITORY}")
    params = validate({k: v for k, v in _everything(profile, sets).items() if k in Semantics.model_fields})
    layout = layout_mod.for_params(params.model_dump())
    target = warm.targets(params)[0]
    return Plan(profile, sets, layout, params, target, warm.warm_backend(params, layout).for_context(target.name))


def _everything(profile: str, sets) -> dict[str, Any]:
    """Every parameter the runbook gets: what papermill passes, and its cell's defaults."""
    resolved = profiles.resolve_sources(RUNBOOK, profile, "apply", tuple(sets))
    return {key: value for key, (value, _) in resolved.everything().items()}


def check_builder(p: Plan) -> None:
    """Before any build: buildctl is there and the local registry answers."""
    if not p.layout.buildctl.exists():
        raise BenchError(f"{p.layout.buildctl} does not exist", "bring the lab up first: ./kit up")
    if not registry.answers(p.params.registry_port):
        raise BenchError(f"the local registry does not answer on 127.0.0.1:{p.params.registry_port}",
                         "bring the lab up (./kit up), or pass --state-dir and --registry-port of a running stack")


@dataclass
class Record:
    """One build on one path. `seconds` is what the path costs; `build_seconds` the buildctl
    build's own (the same as `seconds` on the raw path). On the runbook path, `steps` holds
    each step's seconds from its report and `outside_steps_seconds` the rest (papermill,
    the kernel's start, the session's imports, writing the record)."""

    path: str
    repetition: int
    seconds: float
    build_seconds: float
    cached_steps: int
    total_steps: int
    steps: dict[str, float] = field(default_factory=dict)
    outside_steps_seconds: float = 0.0
    report: str = ""


def raw_build(p: Plan) -> BuildResult:
    """The runbook's build step, without the runbook: the same Buildctl call."""
    try:
        return Buildctl.for_layout(p.layout).build(p.target.context, build_args=p.build_args, opts=p.target.opts,
                                                   export_cache=[p.backend.export_option()], timeout=1800)
    except KitError as exc:
        raise BenchError(f"the raw build of {p.target.spec} failed: {exc.problem}", exc.fix) from None


def raw_record(repetition: int, result: BuildResult) -> Record:
    total = len(work_steps(result))
    return Record("raw", repetition, result.seconds, result.seconds, total - len(uncached(result)), total)


def runbook_record(repetition: int, seconds: float, report: dict[str, Any], report_path: str = "") -> Record:
    """A runbook run's record from its wall seconds and its report (the JSON it wrote)."""
    steps = {s["name"]: round(float(s.get("seconds", 0.0)), 3) for s in report.get("steps", [])}
    facts = report.get("facts", {})
    total = int(facts.get("warm_steps", 0))
    return Record("runbook", repetition, round(seconds, 3), round(float(facts.get("warm_seconds", 0.0)), 3),
                  total - int(facts.get("warm_ran", 0)), total, steps,
                  round(max(0.0, seconds - sum(steps.values())), 3), report_path)


def runbook_build(p: Plan, repetition: int, base: Path | None = None) -> Record:
    """The runbook run, timed around runner.run (papermill, kernel, every step, the record)."""
    start = time.monotonic()
    result = runner.run(RUNBOOK, p.profile, "apply", p.sets, base=base, progress=False)
    seconds = time.monotonic() - start
    if result.report.status == "failed":
        failed = next((s for s in result.report.steps if s.status == "failed"), None)
        raise BenchError(f"the {RUNBOOK} runbook failed" + (f" at {failed.name!r}: {failed.message}" if failed else ""),
                         f"read its record: {result.notebook}")
    return runbook_record(repetition, seconds, json.loads(result.report_path.read_text()), str(result.report_path))


def run(p: Plan, repetitions: int = 5, say: Callable[[str], None] = print, base: Path | None = None,
        keep_cache: bool = False) -> list[Record]:
    """Seed the base images, warm with one raw build (not recorded), then raw and runbook
    in turn, `repetitions` times each. The cache in REPOSITORY is removed at the end
    unless `keep_cache`."""
    if repetitions < 1:
        raise BenchError(f"{repetitions} repetitions measure nothing", "give 1 or more, e.g. 5")
    check_builder(p)
    seeders = images.seeders(p.layout, p.params.registry_port, progress=say)
    for name in p.target.bases():
        if name not in seeders:
            raise BenchError(f"no kit recipe makes the base image {name}", f"use one of: {', '.join(seeders)}")
        say(f"base {name}: {seeders[name]().message}")
    records: list[Record] = []
    try:
        say(f"warm-up: a raw build of {p.target.spec} on {p.layout.address} ...")
        say(f"  {_line(raw_record(0, raw_build(p)))}")
        for repetition in range(1, repetitions + 1):
            records.append(raw_record(repetition, raw_build(p)))
            say(f"{repetition}/{repetitions} raw:     {_line(records[-1])}")
            records.append(runbook_build(p, repetition, base))
            say(f"{repetition}/{repetitions} runbook: {_line(records[-1])}")
    finally:
        if not keep_cache:
            p.backend.remove()
    return records


def _line(r: Record) -> str:
    text = f"{r.seconds:.2f}s, {r.cached_steps}/{r.total_steps} CACHED"
    return text + (f", of which the build {r.build_seconds:.2f}s" if r.path == "runbook" else "")


# --------------------------------------------------------------------------------------
# what it shows
# --------------------------------------------------------------------------------------
def spread(values) -> dict[str, float | int]:
    """n, median, p95 (core.units.p95), min and max of some seconds."""
    values = list(values)
    if not values:
        return {"n": 0, "median_s": 0.0, "p95_s": 0.0, "min_s": 0.0, "max_s": 0.0}
    return {"n": len(values), "median_s": round(statistics.median(values), 3), "p95_s": round(p95(values), 3),
            "min_s": round(min(values), 3), "max_s": round(max(values), 3)}


def summarise(records: list[Record]) -> dict[str, Any]:
    """Per path its spread; the overhead (runbook median - raw median, and their ratio);
    and the runbook's median split: outside the steps, each step, the buildctl build."""
    raw = [r for r in records if r.path == "raw"]
    book = [r for r in records if r.path == "runbook"]
    if not raw or not book:
        raise BenchError("the overhead needs builds on both paths", "run at least one repetition")
    raw_s, book_s = spread(r.seconds for r in raw), spread(r.seconds for r in book)
    names = list(dict.fromkeys(name for r in book for name in r.steps))
    split = {"outside_steps_s": round(statistics.median(r.outside_steps_seconds for r in book), 3),
             "steps_s": {n: round(statistics.median(r.steps.get(n, 0.0) for r in book), 3) for n in names},
             "build_s": round(statistics.median(r.build_seconds for r in book), 3)}
    return {"raw": raw_s, "runbook": {**book_s, "split": split},
            "overhead_s": round(book_s["median_s"] - raw_s["median_s"], 3),
            "overhead_ratio": round(book_s["median_s"] / raw_s["median_s"], 2) if raw_s["median_s"] > 0 else None,
            "build_difference_s": round(split["build_s"] - raw_s["median_s"], 3)}


def document(records: list[Record], p: Plan, stamp: str, machine: str) -> dict[str, Any]:
    """The JSON the benchmark writes: the conditions, the summary and every record."""
    return {"stamp": stamp, "machine": machine, "runbook": RUNBOOK, "profile": p.profile, "context": p.target.spec,
            "address": p.layout.address, "cache": p.backend.export_option(),
            "repetitions": max((r.repetition for r in records), default=0),
            "order": "one raw warm-up build (not recorded), then raw, runbook, raw, runbook, ...",
            "summary": summarise(records), "records": [asdict(r) for r in records]}


def write_results(doc: dict[str, Any], base: Path, stamp: str) -> Path:
    """base/bench/overhead-<stamp>.json."""
    folder = base / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"overhead-{stamp}.json"
    files.atomic_write(path, json.dumps(doc, indent=2) + "\n")
    return path


def read_results(path: Path) -> tuple[dict[str, Any], list[Record]]:
    """The document and its records; refused when it is not what write_results writes."""
    try:
        doc = json.loads(path.read_text())
        rows = doc["records"]
        missing = sorted({f for r in rows for f in RECORD_FIELDS if f not in r})
    except (OSError, ValueError, KeyError, TypeError):
        doc, missing = None, ["records"]
    if doc is None or missing or "summary" not in doc:
        raise BenchError(f"{path} is not an overhead benchmark's results (missing {missing or ['summary']})",
                         "give a runs/bench/overhead-<stamp>.json written by invoke bench.overhead")
    return doc, [Record(**r) for r in rows]


def recap_table(doc: dict[str, Any]):
    """The two paths, the overhead, and where the runbook's time goes (medians)."""
    from rich.markup import escape
    from rich.table import Table

    s = doc["summary"]
    raw, book, split = s["raw"], s["runbook"], s["runbook"]["split"]
    table = Table(title=f"kit overhead {doc['stamp']}", title_justify="left",
                  caption=f"{doc['context']} on {doc['address']}: {raw['n']} builds per path, interleaved")
    for col in ("measure", "median s", "p95 s"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    table.add_row("raw buildctl build", f"{raw['median_s']:.2f}", f"{raw['p95_s']:.2f}")
    table.add_row(f"through the {doc['runbook']} runbook (apply)", f"{book['median_s']:.2f}", f"{book['p95_s']:.2f}")
    ratio = f" ({s['overhead_ratio']:.1f}x raw)" if s["overhead_ratio"] else ""
    table.add_row(f"[bold]overhead: runbook - raw{ratio}[/]", f"[bold]{s['overhead_s']:+.2f}[/]", "")
    table.add_row(f"  {OUTSIDE_STEPS}", f"{split['outside_steps_s']:.2f}", "")
    for name, seconds in split["steps_s"].items():
        table.add_row(f"  step: {escape(name)}", f"{seconds:.2f}", "")
    table.add_row("    of which the buildctl build itself", f"{split['build_s']:.2f}", "")
    return table
