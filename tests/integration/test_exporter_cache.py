"""The exporter's buildkit_cache_* numbers equal what buildctl reports on a real daemon,
and move as builds and prunes happen."""

import os
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from runbook_checks.daemon import recovery, service
from runbook_checks.daemon.buildctl import Buildctl
from runbook_checks.monitoring import exporter


def scrape(url: str) -> dict:
    text = urllib.request.urlopen(url, timeout=20).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def expected(client: Buildctl) -> dict:
    """What the exporter must say, computed here straight from buildctl's JSON."""
    du = client.disk_usage()
    history = [h["record"] for h in client.histories()]
    want = {("buildkit_cache_builder_up", (("builder", "ci"),)): 1.0,
            ("buildkit_cache_reclaimable_bytes", (("builder", "ci"),)):
                float(sum(r["size"] for r in du if not r.get("inUse") and r["size"] > 0)),
            ("buildkit_cache_history_builds", (("builder", "ci"),)): float(len(history))}
    for kind in {r["recordType"] for r in du}:
        labels = (("builder", "ci"), ("record_type", kind))
        want[("buildkit_cache_disk_usage_bytes", labels)] = float(sum(r["size"] for r in du if r["recordType"] == kind))
        want[("buildkit_cache_records", labels)] = float(sum(1 for r in du if r["recordType"] == kind))
    for kind, key in (("total", "numTotalSteps"), ("cached", "numCachedSteps")):
        want[("buildkit_cache_history_steps", (("builder", "ci"), ("kind", kind)))] = \
            float(sum(int(r.get(key) or 0) for r in history))
    want[("buildkit_cache_gc_max_used_space_bytes", (("builder", "ci"),))] = float(
        max(int(rule.get("maxUsedSpace") or 0) for w in client.workers() for rule in w["gcPolicy"]))
    return want


UNITS = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}


def buildctl_summary(client: Buildctl) -> dict[str, tuple[float, float]]:
    """`buildctl du`'s own printed summary: {"Reclaimable": (value, unit factor), "Total": ...}."""
    import re

    text = client.run("du").stdout
    return {key: (float(num), UNITS[unit]) for key, num, unit in
            re.findall(r"^(Reclaimable|Total):\s+([\d.]+)\s*([kKMGT]?B)\s*$", text, flags=re.M)}


def cache_samples(got: dict) -> dict:
    return {k: v for k, v in got.items() if k[0].startswith("buildkit_cache_") and ("kind", "completed") not in k[1]}


def agrees(url: str, client: Buildctl) -> dict:
    """Scrape between two buildctl readings; they must match (GC may run in between, so
    retry a few times until both readings agree)."""
    for _ in range(5):
        before = expected(client)
        got = cache_samples(scrape(url))
        if expected(client) == before:
            assert got == before
            return got
    raise AssertionError("the daemon's cache kept changing during the comparison")


def test_cache_metrics_equal_buildctl_and_move_with_builds_and_prunes(ci_daemon, tmp_path):
    client = Buildctl.for_layout(ci_daemon)
    port = service.free_port()
    server, _ = exporter.serve("127.0.0.1", port, tmp_path, ci_daemon.buildctl, {"ci": ci_daemon.address})
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        first = agrees(url, client)
        ctx = tmp_path / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text("FROM scratch\nCOPY blob /blob\n")
        (ctx / "blob").write_bytes(os.urandom(3_000_000))
        client.build(ctx)
        after_build = agrees(url, client)
        key = ("buildkit_cache_disk_usage_bytes", (("builder", "ci"), ("record_type", "regular")))
        assert after_build[key] >= first.get(key, 0) + 3_000_000
        builds = ("buildkit_cache_history_builds", (("builder", "ci"),))
        assert after_build[builds] == first[builds] + 1
        client.build(ctx)  # the same build again: its step comes from the cache
        cached = ("buildkit_cache_history_steps", (("builder", "ci"), ("kind", "cached")))
        assert agrees(url, client)[cached] > after_build[cached]
        # the reclaimable and total bytes are buildctl's own, as `buildctl du` prints them (2 decimals)
        summary = buildctl_summary(client)
        now = cache_samples(scrape(url))
        total = sum(v for k, v in now.items() if k[0] == "buildkit_cache_disk_usage_bytes")
        for line, ours in (("Reclaimable", now[("buildkit_cache_reclaimable_bytes", (("builder", "ci"),))]),
                           ("Total", total)):
            value, factor = summary[line]
            assert abs(ours / factor - value) <= 0.006, (line, ours, summary[line])
        client.run("prune", "--all")
        after_prune = agrees(url, client)
        assert after_prune.get(key, 0) < after_build[key] - 3_000_000
    finally:
        server.shutdown()


def test_an_unreachable_builder_is_reported_down(tmp_path, ci_daemon):
    port = service.free_port()
    server, _ = exporter.serve("127.0.0.1", port, tmp_path, ci_daemon.buildctl,
                               {"gone": f"unix://{tmp_path}/none.sock"})
    try:
        got = scrape(f"http://127.0.0.1:{port}/metrics")
        assert got[("buildkit_cache_builder_up", (("builder", "gone"),))] == 0
        assert not any(k[0] == "buildkit_cache_disk_usage_bytes" for k in got)
    finally:
        server.shutdown()


def test_the_probe_builds_on_the_builder_and_stays_out_of_the_history_metrics(ci_daemon, tmp_path):
    client = Buildctl.for_layout(ci_daemon)
    port = service.free_port()
    # a long interval: the exporter probes once at start, then not during the test
    server, _ = exporter.serve("127.0.0.1", port, tmp_path, ci_daemon.buildctl, {"ci": ci_daemon.address}, 3600)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 60
        while ("buildkit_ops_probe_success", (("builder", "ci"),)) not in (got := scrape(url)):
            assert time.monotonic() < deadline, "no probe result within 60s"
            time.sleep(0.5)
        assert got[("buildkit_ops_probe_success", (("builder", "ci"),))] == 1
        assert 0 < got[("buildkit_ops_probe_duration_seconds", (("builder", "ci"),))] < 60
        probes = [h for h in client.histories() if recovery.is_probe(h["record"])]
        assert probes, "the probe is not in the daemon's build history"
        builds = ("buildkit_cache_history_builds", (("builder", "ci"),))
        assert got[builds] == len([h for h in client.histories() if not recovery.is_probe(h["record"])])
    finally:
        server.shutdown()


def test_a_probe_of_a_builder_that_does_not_answer_fails(ci_daemon, tmp_path):
    probe = exporter.ProbeCollector(ci_daemon.buildctl, {"gone": f"unix://{tmp_path}/none.sock"}, 60)
    probe.probe_all()
    assert probe.results["gone"][0] == 0
