"""The peers benchmark end to end on the busybox workload: the benchmark runbook builds it
with the three tools (BuildKit as the kit configures it, BuildKit's defaults, Buildah) on
real builders beside the session's registry builder, one repetition. What the records
say, not how fast."""

from __future__ import annotations

import json
from pathlib import Path

from runbook_checks.cache import peers, registry
from runbook_checks.core import runner


def test_three_tools_build_every_scenario_and_each_builder_is_measured(registry_builder, runs_base):
    layout, port = registry_builder
    sets = (f"state_dir={layout.state_dir}", f"registry_port={port}", "benchmark=peers", "workloads=[small]")
    result = runner.run("benchmark", "ci", "apply", sets, base=runs_base, progress=False)
    steps = {s.name: s for s in result.report.steps}
    assert steps["measure"].status == "changed", result.report.to_json()
    assert "goal" in steps  # ok or failed: one repetition's seconds decide it, and the test does not time
    records = peers.read_results(Path(result.report.facts["results"]))
    assert {(r.tool, r.scenario) for r in records} == {(t, s) for t in peers.TOOLS for s in peers.SCENARIOS}
    for r in records:
        assert not r.reason and r.total_steps, r
        assert r.peak_memory_bytes > 1_000_000 and r.cpu_seconds > 0 and r.bytes_exported > 0, r
    got = {(r.tool, r.scenario): r for r in records}
    for tool in peers.TOOLS:
        assert got[(tool, "cold")].cached_steps == 0, tool
        assert got[(tool, "warm")].cached_steps == got[(tool, "warm")].total_steps == 4, tool
        assert 0 < got[(tool, "edit")].cached_steps < 4, tool  # the edited COPY and what follows re-ran
        assert got[(tool, "fresh-remote")].cached_steps == 4, tool  # all from the registry cache edit exported
        concurrent = got[(tool, "concurrent")]
        assert concurrent.builds == peers.CONCURRENCY and concurrent.total_steps == 4 * peers.CONCURRENCY
        assert concurrent.builds_per_minute > 0 and concurrent.p95_seconds > 0
    cells = json.loads(result.notebook.read_text())["cells"]
    outputs = [o for c in cells for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert any("buildah / kit" in "".join(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    # the registry caches the run exported are gone, and so are the builders' cgroups
    assert not [t for t in registry.tags(port, "kit/peers-cache")]
    assert not list(Path("/sys/fs/cgroup/memory").glob("bk-peers-*"))
    assert not list(Path("/var/tmp").glob("bk-peers-*"))
