"""The cache benchmark end to end on the busybox workload (seconds): real builders, the
registry and local backends of the session's registry builder. Counts, not timings."""

from __future__ import annotations

from runbook_checks.cache import bench, registry


def test_the_small_workload_through_every_scenario(registry_builder):
    layout, port = registry_builder
    lab = bench.Lab(layout, port, 0)
    lines: list[str] = []
    records = bench.run(lab, bench.workloads(["small"]), "20260101T000000.000000Z", ("registry", "local"),
                        say=lines.append)
    got = {r.scenario: r for r in records}
    assert list(got) == ["cold", "warm", "edit", "fresh-registry", "fresh-local"]
    assert got["cold"].cached_steps == 0 and got["cold"].total_steps == 4
    assert got["cold"].exported["registry"] > 0 and got["cold"].exported["local"] > 0
    assert got["warm"].all_cached
    assert 0 < got["edit"].cached_steps < got["edit"].total_steps  # the edited COPY and what follows re-ran
    for name in ("fresh-registry", "fresh-local"):
        assert got[name].all_cached, got[name]
        assert got[name].bytes_imported > 0 and got[name].bytes_exported == 0  # the base's layer, fetched
    assert any("fresh builder" in line for line in lines)
    # the run's caches are gone: the registry tag and the local directory
    assert not [t for t in registry.tags(port, "kit/bench-cache") if t.startswith("small-20260101")]
    assert not (layout.state_dir / "bench-cache" / "small-20260101t000000-000000z").exists()
