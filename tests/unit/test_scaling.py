"""The scaling benchmark's parts without a host: the workload on the local base, what the
numbers say (builds per core, memory per build, the knee), the published page and the
verdict (the rehearsal host's test runs the whole benchmark)."""

from __future__ import annotations

import pytest

from runbook_checks.production import scaling


def test_a_workload_builds_on_the_local_base_with_its_edit(tmp_path):
    ctx = scaling.workload_context("small", tmp_path / "ctx", "n1")
    dockerfile = (ctx / "Dockerfile").read_text()
    assert dockerfile.startswith("FROM scratch AS base\nCOPY rootfs/ /\n") and "FROM base" in dockerfile
    assert "BASE_REGISTRY}/kit/busybox" not in dockerfile and (ctx / "rootfs/bin/busybox").exists()
    assert (ctx / "src/message.txt").read_text().endswith("edited n1\n")
    with pytest.raises(scaling.ScalingError) as err:
        scaling.workload_context("go-app", tmp_path / "go", "n1")
    assert "pulls no image" in err.value.problem
    with pytest.raises(scaling.ScalingError) as err:
        scaling.workload_context("nosuch", tmp_path / "x", "n1")
    assert "small" in err.value.fix


def row(teams: int, per_min: float, peak: int, idle: int = 100 << 20) -> dict:
    return {"teams": teams, "builds": teams * 3, "wall_s": 1.0, "builds_per_min": per_min, "median_s": 0.5,
            "p95_s": 0.9, "idle_memory_bytes": idle, "peak_memory_bytes": peak, "cpu_s": teams * 0.3}


def test_the_numbers_say_builds_per_core_memory_per_build_and_the_knee():
    rows = [row(1, 100, 110 << 20), row(2, 180, 120 << 20), row(4, 200, 140 << 20), row(8, 190, 180 << 20)]
    said = scaling.sizing(rows, cores=2)
    assert said["best_builds_per_min"] == 200 and said["best_at"] == 4 and said["builds_per_core_per_min"] == 100
    assert said["knee"] == 2  # 2 -> 4 gained 11%, under 15%
    assert said["memory_per_concurrent_build_bytes"] == 10 << 20  # (180 - 100) MiB over 8 builds
    assert said["cpu_seconds_per_build"] == pytest.approx(0.1)
    rising = scaling.sizing([row(1, 100, 1), row(2, 190, 1)], cores=2)
    assert rising["knee"] == 0


def record(overhead: float) -> dict:
    rows = [row(1, 100, 110 << 20), row(2, 180, 120 << 20)]
    return {"workload": "small", "concurrency": rows, "sizing": scaling.sizing(rows, 2),
            "pool": [{"builders": 1, "teams": 8, "builds": 8, "builds_per_min": 150, "p95_s": 1.0,
                      "per_builder": {"buildkit": 8}},
                     {"builders": 2, "teams": 8, "builds": 8, "builds_per_min": 160, "p95_s": 1.1,
                      "per_builder": {"buildkit": 5, "buildkit-p2": 3}}],
            "queue": {"rounds": 20, "median_straight_s": 0.1, "median_queued_s": 0.1 * (1 + overhead),
                      "overhead": overhead}}


def test_the_sizing_page_gets_the_numbers_the_tables_and_the_plot(tmp_path):
    rec = record(0.01)
    page = tmp_path / "sizing.md"
    page.write_text("# Sizing\n\n<!-- bench:scaling -->\nold\n<!-- /bench:scaling -->\n\nafter\n")
    png = scaling.plot(rec, tmp_path / "run.png", "run X")
    scaling.publish(rec, png, page, "run X")
    text = page.read_text()
    assert "old" not in text and text.endswith("after\n") and (tmp_path / "img/sizing.png").exists()
    assert "90.0 builds per minute per core" in text and "buildkit: 5, buildkit-p2: 3" in text
    assert "not within 2 builds at once" in text and "+1.0% (target within 5%)" in text
    assert scaling.verdict(rec) == []
    assert "the queue adds 8.0%" in scaling.verdict(record(0.08))[0]
    bare = tmp_path / "bare.md"
    bare.write_text("# no markers\n")
    with pytest.raises(scaling.ScalingError) as err:
        scaling.publish(rec, png, bare, "run X")
    assert "add the two markers" in err.value.fix and bare.read_text() == "# no markers\n"
