"""The benchmark runbook's steps: a benchmark is a runbook too, so each run is a recorded
notebook with its tables and plot inline and its JSON beside it (`invoke bench.cache` and
`invoke bench.peers` execute it through papermill).

Two benchmarks share the steps: `cache` (cache.bench: what a remote cache saves) and
`peers` (cache.peers: the kit's BuildKit against BuildKit's defaults and Buildah). Each
module gives its records' reading and writing, medians, table, plot, verdict and docs
block. Check mode measures nothing: it says what apply would measure and whether the lab
answers."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from ..core import files
from ..core.errors import BenchError
from ..core.layout import Layout
from ..core.params import BENCHMARK_SCENARIOS, Semantics
from ..core.paths import PROJECT_ROOT, runs_dir
from ..core.results import Outcome
from . import bench, peers, registry

MODULES = {"cache": bench, "peers": peers}


@dataclass(frozen=True)
class Plan:
    """What one run measures."""

    benchmark: str
    lab: bench.Lab
    workloads: tuple[bench.Workload, ...]
    scenarios: tuple[str, ...]
    repetitions: int
    keep_caches: bool
    tools: tuple[str, ...] = ()

    @property
    def backends(self) -> tuple[str, ...]:
        """The cache backends the cache benchmark's fresh-builder scenarios import from (the
        peers benchmark's remote cache is the registry's)."""
        if self.benchmark != "cache":
            return ()
        return tuple(s.removeprefix("fresh-") for s in self.scenarios if s.startswith("fresh-"))

    def describe(self) -> str:
        tools = f" with {', '.join(self.tools)}" if self.tools else ""
        return (f"{self.benchmark}: {', '.join(w.name for w in self.workloads)} x {', '.join(self.scenarios)}{tools},"
                f" {self.repetitions} repetition(s), beside {self.lab.layout.address}")


PAGES = {"cache": PROJECT_ROOT / "docs/guides/cache-benchmark.md", "peers": PROJECT_ROOT / "docs/guides/peers.md"}


def plan(params: Semantics, layout: Layout) -> Plan:
    """The run the parameters ask for (core.params has refused unknown workloads and
    scenarios already)."""
    known = BENCHMARK_SCENARIOS[params.benchmark]
    chosen = tuple(s for s in known if s in params.scenarios) if params.scenarios else known
    lab = bench.Lab(layout, params.registry_port, params.s3_port)
    tools = (tuple(t for t in peers.TOOLS if t in params.tools) or peers.TOOLS) if params.benchmark == "peers" else ()
    return Plan(params.benchmark, lab, tuple(bench.workloads(params.workloads)), chosen, params.repetitions,
                params.keep_caches, tools)


def describe(params: Semantics, layout: Layout) -> Outcome:
    p = plan(params, layout)
    unavailable = {t: peers.unavailable(t) for t in p.tools if peers.unavailable(t)}
    note = "".join(f"; {t} cannot run here: {why}" for t, why in unavailable.items())
    return Outcome.ok(p.describe() + note, benchmark=p.benchmark, workloads=[w.name for w in p.workloads],
                      scenarios=list(p.scenarios), repetitions=p.repetitions, **({"tools": list(p.tools)}
                                                                                   if p.tools else {}))


def lab_answers(params: Semantics, layout: Layout, apply: bool) -> Outcome:
    """The builder and the services the scenarios need answer (apply also makes the S3
    bucket); nothing is built."""
    p = plan(params, layout)
    if apply:
        bench.check_lab(p.lab, p.backends)
    elif not p.lab.layout.buildctl.exists() or not registry.answers(p.lab.registry_port):
        raise BenchError(f"no lab at {layout.state_dir}: buildctl or the registry on 127.0.0.1:{p.lab.registry_port}"
                         " is missing", "bring the lab up first: ./kit up")
    return Outcome.ok(f"buildctl and the registry on 127.0.0.1:{p.lab.registry_port} answer"
                      + (f"; backends {', '.join(p.backends)} ready" if apply and p.backends else ""))


def measure(params: Semantics, layout: Layout, apply: bool, say: Callable[[str], None] = print) -> Outcome:
    """Every repetition of the plan, each with new caches and builders; the records
    (runs/bench/BENCHMARK-STAMP.json) and the plot of their medians beside them."""
    p = plan(params, layout)
    if not apply:
        return Outcome.skipped("check mode builds nothing: apply measures " + p.describe())
    stamp = files.stamp()
    if p.benchmark == "peers":
        bench.seed_bases(p.lab, list(p.workloads), say)
        records = peers.run(p.lab, list(p.workloads), p.tools, p.scenarios, p.repetitions, stamp, say)
    else:
        records = []
        for rep in range(1, p.repetitions + 1):
            say(f"repetition {rep} of {p.repetitions}")
            got = bench.run(p.lab, list(p.workloads), f"{stamp}-{rep}", p.backends, say=say,
                            keep_caches=p.keep_caches)
            records += [replace(r, repetition=rep) for r in got if r.scenario in p.scenarios]
    module = MODULES[p.benchmark]
    path = module.write_results(records, runs_dir(), stamp)
    caption = f"run {stamp} on {bench.machine()}" + (f", medians of {p.repetitions}" if p.repetitions > 1 else "")
    png = module.plot(records if module is peers else medians(records), path.with_suffix(".png"), caption)
    return Outcome.changed(f"{len(records)} records: {path}", results=str(path), plot=str(png), caption=caption)


def medians(records: list[bench.Record]) -> list[bench.Record]:
    """One record per (workload, scenario) of the cache benchmark: its median run."""
    return bench.median_runs(records, lambda r: (r.workload, r.scenario))


def results(facts: dict) -> list:
    if not facts.get("results"):
        return []
    return MODULES[facts.get("benchmark", "cache")].read_results(Path(facts["results"]))


def table(facts: dict, records: list) -> str:
    """The medians' Markdown table."""
    if facts.get("benchmark") == "peers":
        return peers.markdown_table(records)
    return bench.markdown_table(medians(records))


def show(facts: dict) -> None:
    """The table and the plot, inline in the notebook (nothing in check mode)."""
    from IPython.display import Image, Markdown, display

    records = results(facts)
    if not records:
        return
    display(Markdown(table(facts, records)))
    display(Image(filename=facts["plot"]))


def goal(params: Semantics, facts: dict) -> Outcome:
    """The benchmark's goal on the medians. cache: a fresh builder importing the registry
    or S3 cache of a Debian workload is at least 5x faster than cold, all CACHED. peers:
    the kit's BuildKit is nowhere slower than BuildKit's defaults by more than the noise."""
    records = results(facts)
    if not records:
        return Outcome.skipped("nothing was measured")
    if params.benchmark == "peers":
        misses = peers.verdict(records)
        if misses:
            return Outcome.failed("the kit's configuration is slower than BuildKit's defaults: " + "; ".join(misses))
        return Outcome.ok("the kit's configuration is nowhere slower than BuildKit's defaults beyond the noise")
    p_workloads = bench.workloads(params.workloads)
    debian = tuple(w.name for w in p_workloads if any("debian" in b for b in w.bases))
    misses = bench.verdict(medians(records), debian)
    if misses:
        return Outcome.failed("below the goal (5x faster than cold, every step CACHED): " + "; ".join(misses))
    checked = ", ".join(debian) or "no Debian workload"
    return Outcome.ok(f"fresh builders importing the registry or S3 cache met the goal ({checked})")


def publish(params: Semantics, facts: dict) -> Outcome:
    """The medians' plot and table into the benchmark's docs page (publish=true)."""
    records = results(facts)
    if not params.publish:
        return Outcome.skipped("publish is false: the docs page keeps its published run")
    if not records:
        return Outcome.skipped("nothing was measured")
    page = PAGES[params.benchmark]
    if params.benchmark == "peers":
        peers.publish(records, Path(facts["plot"]), page, facts["caption"])
    else:
        bench.publish(medians(records), Path(facts["plot"]), page, facts["caption"])
    return Outcome.changed(f"published to {page.relative_to(PROJECT_ROOT)}", published=str(page))
