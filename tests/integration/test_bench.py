"""The cache benchmark end to end on the busybox workload (seconds): the benchmark runbook
on real builders, the registry and local backends of the session's registry builder,
two repetitions. Counts, not timings."""

from __future__ import annotations

import json
from pathlib import Path

from runbook_checks.cache import bench, benchmarks, registry
from runbook_checks.core import runner


def test_the_small_workload_through_every_scenario_as_a_recorded_runbook(registry_builder, runs_base):
    layout, port = registry_builder
    sets = (f"state_dir={layout.state_dir}", f"registry_port={port}", "s3_port=0", "workloads=[small]",
            "scenarios=[cold, warm, edit, fresh-registry, fresh-local]", "repetitions=2")
    check = runner.run("benchmark", "ci", "check", sets, base=runs_base, progress=False)
    assert check.report.status == "ok", check.report.to_json()
    assert {s.name: s.status for s in check.report.steps}["measure"] == "skipped"

    result = runner.run("benchmark", "ci", "apply", sets, base=runs_base, progress=False)
    assert result.report.status == "changed", result.report.to_json()
    records = bench.read_results(Path(result.report.facts["results"]))
    assert [(r.repetition, r.scenario) for r in records] == [
        (rep, s) for rep in (1, 2) for s in ("cold", "warm", "edit", "fresh-registry", "fresh-local")]
    for got in ({r.scenario: r for r in records if r.repetition == rep} for rep in (1, 2)):
        assert got["cold"].cached_steps == 0 and got["cold"].total_steps == 4
        assert got["cold"].exported["registry"] > 0 and got["cold"].exported["local"] > 0
        assert got["warm"].all_cached
        assert 0 < got["edit"].cached_steps < got["edit"].total_steps  # the edited COPY and what follows re-ran
        for name in ("fresh-registry", "fresh-local"):
            assert got[name].all_cached, got[name]
            assert got[name].bytes_imported > 0 and got[name].bytes_exported == 0  # the base's layer, fetched
    medians = benchmarks.medians(records)
    assert len(medians) == 5 and all(m in records for m in medians)
    # the record: the medians' table and the plot inline in the executed notebook
    cells = json.loads(result.notebook.read_text())["cells"]
    outputs = [o for c in cells for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert any("| small | fresh-registry |" in "".join(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    assert Path(result.report.facts["plot"]).read_bytes()[:4] == b"\x89PNG"
    goal = {s.name: s for s in result.report.steps}["goal"]
    assert goal.status == "ok" and "no Debian workload" in goal.message
    # the run's caches are gone: the registry tags and the local directories
    assert not [t for t in registry.tags(port, "kit/bench-cache") if t.startswith("small-")]
    assert not list((layout.state_dir / "bench-cache").glob("small-*"))
