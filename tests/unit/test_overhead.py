"""The overhead benchmark's pieces without a daemon: the build it plans (the runbook's own
parameters), a runbook record split from its report, the statistics, the JSON written
and read back, and the table."""

from __future__ import annotations

import json
from io import StringIO

import pytest

from runbook_checks.cache import overhead
from runbook_checks.core.errors import BenchError
from runbook_checks.core.paths import WORKLOADS_DIR

STEPS = [{"name": "daemon up", "status": "ok", "seconds": 0.05},
         {"name": "build and export mode=max", "status": "ok", "seconds": 0.2},
         {"name": "a fresh builder rebuilds all CACHED", "status": "ok", "seconds": 2.25}]


def report(build=0.15):
    return {"runbook": "cache-warm", "status": "ok", "steps": STEPS,
            "facts": {"warm_steps": 4, "warm_ran": 0, "warm_seconds": build}}


def records(raw=(0.1, 0.12, 0.3), book=(4.0, 4.5, 9.0)):
    out = []
    for i, (r, b) in enumerate(zip(raw, book), 1):
        out.append(overhead.Record("raw", i, r, r, 4, 4))
        out.append(overhead.runbook_record(i, b, report(), f"runs/cache-warm/{i}.json"))
    return out


def test_a_runbook_record_splits_its_seconds_from_the_report():
    r = overhead.runbook_record(2, 4.0, report(), "runs/cache-warm/x.json")
    assert (r.path, r.repetition, r.seconds, r.build_seconds) == ("runbook", 2, 4.0, 0.15)
    assert (r.cached_steps, r.total_steps) == (4, 4)
    assert r.steps == {"daemon up": 0.05, "build and export mode=max": 0.2, "a fresh builder rebuilds all CACHED": 2.25}
    assert r.outside_steps_seconds == 1.5  # 4.0 - 2.5 in the steps
    ran = overhead.runbook_record(1, 1.0, {"steps": STEPS, "facts": {"warm_steps": 4, "warm_ran": 3}})
    assert (ran.cached_steps, ran.outside_steps_seconds) == (1, 0.0)  # never negative


def test_spread_median_p95_min_max():
    assert overhead.spread([3.0, 1.0, 2.0, 10.0, 4.0]) == {"n": 5, "median_s": 3.0, "p95_s": 10.0, "min_s": 1.0,
                                                           "max_s": 10.0}
    assert overhead.spread([1.0, 2.0])["median_s"] == 1.5
    assert overhead.spread([])["n"] == 0


def test_the_summary_gives_the_overhead_and_the_runbooks_split():
    s = overhead.summarise(records())
    assert s["raw"]["median_s"] == 0.12 and s["raw"]["p95_s"] == 0.3 and s["raw"]["n"] == 3
    assert s["runbook"]["median_s"] == 4.5 and s["runbook"]["p95_s"] == 9.0
    assert s["overhead_s"] == 4.38
    assert s["overhead_ratio"] == 37.5
    split = s["runbook"]["split"]
    assert split["outside_steps_s"] == 2.0  # median of 1.5, 2.0, 6.5
    assert list(split["steps_s"]) == [step["name"] for step in STEPS]  # in the runbook's order
    assert split["steps_s"]["a fresh builder rebuilds all CACHED"] == 2.25
    assert split["build_s"] == 0.15 and s["build_difference_s"] == 0.03


def test_a_summary_needs_both_paths():
    with pytest.raises(BenchError, match="both paths"):
        overhead.summarise([r for r in records() if r.path == "raw"])


class FakePlan:
    """What document() reads of a plan (a real one needs the runbook's resolution)."""
    profile = "lab"

    class target:
        spec = "workloads/small"

    class layout:
        address = "unix:///x/run/buildkitd.sock"

    class backend:
        @staticmethod
        def export_option():
            return "type=registry,ref=127.0.0.1:15000/kit/bench-overhead:warm-small,mode=max"


def test_the_json_has_the_conditions_the_summary_and_every_record_and_reads_back(tmp_path):
    doc = overhead.document(records(), FakePlan, "20260101T000000.000000Z", "Debian, 2 cores")
    path = overhead.write_results(doc, tmp_path, "20260101T000000.000000Z")
    assert path == tmp_path / "bench" / "overhead-20260101T000000.000000Z.json"
    data = json.loads(path.read_text())
    assert {"stamp", "machine", "runbook", "profile", "context", "address", "cache", "repetitions", "order",
            "summary", "records"} <= set(data)
    assert data["runbook"] == "cache-warm" and data["repetitions"] == 3
    assert [r["path"] for r in data["records"]] == ["raw", "runbook"] * 3  # interleaved
    assert all(set(overhead.RECORD_FIELDS) <= set(r) for r in data["records"])
    back, rows = overhead.read_results(path)
    assert rows == records() and back["summary"] == overhead.summarise(records())


def test_a_file_that_is_not_an_overhead_result_is_refused(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"records": [{"path": "raw"}]}))
    with pytest.raises(BenchError, match="not an overhead benchmark"):
        overhead.read_results(path)
    path.write_text("[]")
    with pytest.raises(BenchError, match="not an overhead benchmark"):
        overhead.read_results(path)


def test_the_table_shows_both_paths_the_overhead_and_each_step():
    from rich.console import Console

    doc = overhead.document(records(), FakePlan, "20260101T000000.000000Z", "test")
    buf = StringIO()
    Console(file=buf, width=140, color_system=None).print(overhead.recap_table(doc))
    text = buf.getvalue()
    for shown in ("raw buildctl build", "cache-warm runbook", "+4.38", "37.5x", overhead.OUTSIDE_STEPS,
                  "step: a fresh builder rebuilds all CACHED", "of which the buildctl build itself"):
        assert shown in text, text


def test_a_workload_is_a_context_the_runbook_takes():
    assert overhead.context_of("small") == "workloads/small"
    with pytest.raises(BenchError, match="no workload named 'nope'"):
        overhead.context_of("nope")
    with pytest.raises(BenchError, match="choose one of"):
        overhead.context_of("../workloads/small")
    assert (WORKLOADS_DIR / "small" / "Dockerfile").is_file()


def test_the_plan_is_the_runbooks_own_build_with_a_cache_of_its_own(tmp_path):
    p = overhead.plan("workloads/small", "ci", str(tmp_path / "state"), 15123)
    assert p.sets == ("warm_contexts=workloads/small", f"state_dir={tmp_path / 'state'}", "registry_port=15123",
                      "cache_backend=registry", "cache_ref=127.0.0.1:15123/kit/bench-overhead")
    assert p.target.spec == "workloads/small" and p.target.context == WORKLOADS_DIR / "small"
    assert p.backend.export_option().startswith("type=registry,ref=127.0.0.1:15123/kit/bench-overhead:warm-small,")
    assert "mode=max" in p.backend.export_option()
    assert p.build_args == {"BASE_REGISTRY": "127.0.0.1:15123"}
    assert p.layout.state_dir == tmp_path / "state"
    with pytest.raises(BenchError, match="no local registry"):
        overhead.plan("workloads/small", "ci", str(tmp_path / "state"))  # the ci profile runs none of its own
