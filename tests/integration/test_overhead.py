"""The overhead benchmark end to end on the busybox workload (seconds): the session's
registry builder, two raw builds and two cache-warm runbook runs, interleaved. What the
records say, not how fast."""

from __future__ import annotations

import json
from pathlib import Path

from runbook_checks.cache import overhead, registry

STAMP = "20260101T000000.000000Z"


def test_the_same_build_raw_and_through_the_runbook(registry_builder, runs_base, tmp_path):
    layout, port = registry_builder
    plan = overhead.plan(overhead.context_of("small"), "ci", str(layout.state_dir), port)
    lines: list[str] = []
    records = overhead.run(plan, 2, say=lines.append, base=runs_base)

    assert [(r.path, r.repetition) for r in records] == [("raw", 1), ("runbook", 1), ("raw", 2), ("runbook", 2)]
    for r in records:  # the same warm build on both paths: every step CACHED
        assert r.total_steps == 4 and r.cached_steps == 4, r
        assert r.build_seconds > 0
    for r in (r for r in records if r.path == "runbook"):
        data = json.loads(Path(r.report).read_text())
        assert data["status"] == "ok" and data["summary"]["failed"] == 0, data
        assert data["parameters"]["warm_contexts"] == ["workloads/small"]
        assert r.steps == {s["name"]: s["seconds"] for s in data["steps"]}
        assert r.seconds > sum(r.steps.values()) >= r.build_seconds  # papermill's own time is outside the steps
    assert any("warm-up" in line for line in lines)

    doc = overhead.document(records, plan, STAMP, "test")
    summary = doc["summary"]
    assert summary["runbook"]["median_s"] > summary["raw"]["median_s"]
    assert summary["overhead_s"] > 0 and summary["overhead_ratio"] > 1
    path = overhead.write_results(doc, tmp_path, STAMP)
    back, rows = overhead.read_results(path)
    assert rows == records and back["context"] == "workloads/small" and back["address"] == layout.address
    # the run's cache is gone from the registry
    assert "warm-small" not in registry.tags(port, overhead.REPOSITORY)
