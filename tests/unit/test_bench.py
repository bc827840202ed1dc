"""The cache benchmark's pieces without a daemon: workloads, the scenario plan, the
records and their JSON, speed-ups and the verdict, the plot and the docs block."""

from __future__ import annotations

import json

import pytest

from runbook_checks.cache import bench
from runbook_checks.core.errors import BenchError


def records(cold=60.0, fresh=2.0, cached=8):
    out = [bench.Record("go-app", "cold", cold, 0, 8, 10_000, 50_000)]
    for name in ("warm", "edit", "fresh-registry", "fresh-s3", "fresh-local"):
        out.append(bench.Record("go-app", name, fresh, cached, 8, 0, 1_000))
    return out


def test_the_plan_builds_cold_warm_edit_on_one_builder_then_one_fresh_builder_per_backend():
    plan = bench.plan()
    assert [s.name for s in plan] == list(bench.SCENARIOS)
    assert [s.builder for s in plan] == ["main"] * 3 + ["fresh"] * 3
    assert [s.edited for s in plan] == [False, False, True, True, True, True]
    assert all(s.exports == bench.BACKENDS and not s.imports for s in plan[:3])
    assert [(s.imports, s.exports) for s in plan[3:]] == [("registry", ()), ("s3", ()), ("local", ())]
    assert [s.name for s in bench.plan(("registry", "local"))] == ["cold", "warm", "edit", "fresh-registry",
                                                                   "fresh-local"]


def test_records_are_written_as_a_list_with_the_documented_fields_and_read_back(tmp_path):
    path = bench.write_results(records(), tmp_path, "20260101T000000.000000Z")
    assert path == tmp_path / "bench" / "cache-20260101T000000.000000Z.json"
    data = json.loads(path.read_text())
    assert isinstance(data, list) and len(data) == 6
    assert set(bench.RECORD_FIELDS) <= set(data[0])
    assert data[0]["scenario"] == "cold" and data[0]["bytes_imported"] == 50_000
    assert bench.read_results(path) == records()


def test_a_file_that_is_not_a_list_of_records_is_refused(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps([{"workload": "w", "scenario": "cold"}]))
    with pytest.raises(BenchError, match="missing"):
        bench.read_results(path)


def test_speedups_and_the_verdict():
    assert bench.speedups(records())["go-app"]["fresh-registry"] == 30.0
    assert bench.verdict(records(), ("go-app",)) == []
    slow = bench.verdict(records(cold=6.0, fresh=2.0), ("go-app",))
    assert slow == ["go-app fresh-registry: 3.0x faster than cold, 8/8 CACHED",
                    "go-app fresh-s3: 3.0x faster than cold, 8/8 CACHED"]
    assert len(bench.verdict(records(cached=7), ("go-app",))) == 2  # fast, but not every step CACHED
    assert bench.verdict(records(cached=7), ("py-app",)) == []  # only the named workloads count


def test_workloads_name_their_bases_and_the_edit(tmp_path):
    found = {w.name: w for w in bench.workloads()}
    assert {"small", "go-app", "py-app"} <= set(found)
    assert found["small"].bases == ["kit/busybox:latest"]
    assert found["go-app"].bases == ["kit/debian:bookworm"]
    with pytest.raises(BenchError, match="no workload named nope"):
        bench.workloads(["nope"])
    import shutil

    copy = tmp_path / "small"
    shutil.copytree(found["small"].path, copy)
    before = (copy / "src/message.txt").read_text()
    assert found["small"].edit(copy, "n1") == "src/message.txt"
    after = (copy / "src/message.txt").read_text()
    assert after == before + "edited n1\n"
    assert (found["small"].path / "src/message.txt").read_text() == before  # the repository's copy is untouched


def test_the_plot_is_a_png_and_publish_replaces_only_the_results_block(tmp_path):
    png = bench.plot(records(), tmp_path / "p.png", "run X on a test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = tmp_path / "page.md"
    page.write_text("# T\n\nintro\n\n<!-- bench:results -->\nprevious results\n<!-- /bench:results -->\n\nafter\n")
    bench.publish(records(), png, page, "run X on a test")
    text = page.read_text()
    assert text.startswith("# T\n\nintro\n\n") and text.endswith("\n\nafter\n") and "previous results" not in text
    assert "![run X on a test](img/cache-benchmark.png)" in text
    assert "| go-app | fresh-s3 | 2.00 |  | 30.0x | 8/8 |" in text
    assert (tmp_path / "img" / "cache-benchmark.png").exists()
    page.write_text("no markers")
    with pytest.raises(BenchError, match="bench:results"):
        bench.publish(records(), png, page, "c")


def test_human_sizes():
    assert bench.human(0) == "0 B" and bench.human(2048) == "2.0 KiB" and bench.human(3 << 30) == "3.0 GiB"


def test_the_export_span_runs_from_the_first_export_to_the_last():
    vertices = [{"name": "[2/3] RUN x", "started": "2026-01-01T00:00:00Z", "completed": "2026-01-01T00:00:09Z"},
                {"name": "exporting cache to registry", "started": "2026-01-01T00:00:10.250000123Z",
                 "completed": "2026-01-01T00:00:12.5Z"},
                {"name": "exporting cache to client directory", "started": "2026-01-01T00:00:10.25Z",
                 "completed": "2026-01-01T00:00:13.75Z"},
                {"name": "exporting cache to Amazon S3", "started": "2026-01-01T00:00:11Z"}]  # never completed
    assert bench.export_span(vertices) == 3.5
    assert bench.export_span(vertices[:1]) == 0.0


def test_the_medians_are_real_runs_and_the_plan_keeps_the_scenarios_order(tmp_path):
    from dataclasses import replace

    from runbook_checks.cache import benchmarks
    from runbook_checks.core import layout as layout_mod
    from runbook_checks.core import params

    runs = [replace(r, repetition=rep, seconds=r.seconds * f)
            for rep, f in ((1, 1.0), (2, 3.0), (3, 2.0), (4, 10.0)) for r in records()]
    medians = benchmarks.medians(runs)
    assert len(medians) == 6 and all(m in runs for m in medians)
    assert {m.repetition for m in medians} == {3}  # the lower middle of 1, 2, 3, 10
    lay = layout_mod.for_params({"profile": "ci", "state_dir": str(tmp_path)})
    p = params.validate({"scenarios": ["fresh-local", "edit", "warm", "cold"], "workloads": ["small"],
                         "repetitions": 2})
    plan = benchmarks.plan(p, lay)
    assert plan.scenarios == ("cold", "warm", "edit", "fresh-local") and plan.backends == ("local",)
    assert benchmarks.describe(p, lay).facts == {"benchmark": "cache", "workloads": ["small"],
                                                 "scenarios": list(plan.scenarios), "repetitions": 2}
    assert benchmarks.measure(p, lay, apply=False).status == "skipped"
    with pytest.raises(BenchError, match="no lab at"):
        benchmarks.lab_answers(p, lay, apply=False)
    assert benchmarks.goal(p, {}).status == "skipped"
    assert benchmarks.publish(p, {}).status == "skipped"
