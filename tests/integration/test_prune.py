"""Size limits, cleanup and retention on real daemons: GC keeps the cache under a small
maxUsedSpace, the prune runbook frees and reports bytes, expired registry tags go and
the registry's garbage collector reclaims their blobs, old S3 objects are removed."""

from __future__ import annotations

import datetime as dt
import json
import os
import time

from runbook_checks.cache import backends, proof, registry, s3
from runbook_checks.daemon.buildctl import Buildctl

from ..conftest import apply, installed_builder, stop_and_remove
from . import test_cache

base_image = test_cache.base_image  # the fixture: the busybox base in registry_builder's registry


def blob_context(path, size: int):
    path.mkdir(parents=True, exist_ok=True)
    (path / "Dockerfile").write_text("FROM scratch\nCOPY blob /blob\n")
    (path / "blob").write_bytes(os.urandom(size))
    return path


def du_total(client: Buildctl) -> int:
    return sum(r["size"] for r in client.disk_usage())


def test_gc_keeps_the_cache_under_a_small_max_used_space(runs_base, tmp_path):
    rule = [{"all": True, "max_used_space": "20MB"}]
    layout = installed_builder("bkgc-", runs_base)
    try:
        reconfigured = apply("configure", layout.state_dir, f"gc_policy={json.dumps(rule)}", base=runs_base)
        assert reconfigured.report.status != "failed", reconfigured.report.to_json()
        client = Buildctl.for_layout(layout)
        assert client.workers()[0]["gcPolicy"][0]["maxUsedSpace"] == 20_000_000  # in force, as configured
        for i in range(4):  # 36MB of layers against a 20MB limit
            client.build(blob_context(tmp_path / f"c{i}", 9_000_000))
        deadline = time.monotonic() + 150  # the daemon's GC runs after builds, at most once a minute
        while du_total(client) > 20_000_000:
            assert time.monotonic() < deadline, f"GC left {du_total(client)} bytes, over the 20MB limit"
            time.sleep(3)
        assert du_total(client) > 0  # it removed the oldest-used records, not everything
    finally:
        stop_and_remove(layout.state_dir)


def steps(result) -> dict:
    return {s.name: s for s in result.report.steps}


def test_prune_runbook_frees_and_reports_bytes(ci_daemon, runs_base, tmp_path):
    client = Buildctl.for_layout(ci_daemon)
    client.build(blob_context(tmp_path / "ctx", 3_000_000))
    before = du_total(client)
    sets = ("prune_keep_duration=0", "prune_keep_storage=0", "registry_port=0", "s3_port=0")
    first = apply("prune", ci_daemon.state_dir, *sets, base=runs_base)
    assert first.report.status != "failed", first.report.to_json()
    assert first.report.facts["reclaimed_bytes"] >= 3_000_000
    assert du_total(client) < before - 3_000_000
    again = apply("prune", ci_daemon.state_dir, *sets, base=runs_base)
    s = steps(again)
    assert s["daemon cache prune"].status == "ok" and again.report.facts["reclaimed_bytes"] == 0
    assert s["registry cache retention"].status == s["S3 cache retention"].status == "skipped"


def test_prune_check_mode_deletes_nothing(ci_daemon, runs_base, tmp_path):
    from runbook_checks.core import runner

    client = Buildctl.for_layout(ci_daemon)
    client.build(blob_context(tmp_path / "ctx", 1_000_000))
    before = client.disk_usage()
    result = runner.run("prune", "ci", "check", (f"state_dir={ci_daemon.state_dir}", "prune_keep_duration=0",
                                                 "prune_keep_storage=0", "registry_port=0", "s3_port=0"),
                        base=runs_base, progress=False)
    assert steps(result)["daemon cache prune"].status == "changed", result.report.to_json()
    assert result.report.facts["eligible_bytes"] >= 1_000_000
    assert client.disk_usage() == before


def test_registry_retention_untags_old_tags_and_reclaims_blobs(ci_daemon, registry_builder, base_image,
                                                               runs_base, tmp_path):
    layout, port = registry_builder
    builds = []
    for i in range(4):
        ctx, args = proof.proof_context(tmp_path / f"c{i}", base_image)
        (ctx / "input.txt").write_bytes(os.urandom(1_000_000))  # each tag has blobs of its own
        builds.append((ctx, args))
    # "twin" is t3's build exported first: the same cache, so the same manifest digest
    for tag, (ctx, args) in [("twin", builds[3])] + [(f"t{i}", b) for i, b in enumerate(builds)]:
        proof.export_cache(ci_daemon, backends.make("registry", f"127.0.0.1:{port}/kit/retain:{tag}"), ctx, args)
        time.sleep(0.05)
    assert registry.manifest_digest(port, "kit/retain", "twin") == registry.manifest_digest(port, "kit/retain", "t3")
    sets = (f"registry_port={port}", "retention_repositories=[\"kit/retain\"]", "retention_keep_tags=2",
            "s3_port=0", "prune_keep_storage=10GB")
    from runbook_checks.core import runner

    check = runner.run("prune", "ci", "check", (f"state_dir={layout.state_dir}", *sets), base=runs_base,
                       progress=False)
    assert steps(check)["registry cache retention"].status == "changed"
    assert check.report.facts["deleted_tags"] == ["kit/retain:twin", "kit/retain:t0", "kit/retain:t1"]
    assert sorted(registry.tags(port, "kit/retain")) == ["t0", "t1", "t2", "t3", "twin"]  # check deleted nothing
    done = apply("prune", layout.state_dir, *sets, base=runs_base)
    assert steps(done)["registry cache retention"].status == "changed", done.report.to_json()
    assert done.report.facts["registry_reclaimed_bytes"] > 2_000_000
    # only the expired tags went: t3 shares twin's digest and stays
    assert sorted(registry.tags(port, "kit/retain")) == ["t2", "t3"]
    again = apply("prune", layout.state_dir, *sets, base=runs_base)
    assert steps(again)["registry cache retention"].status == "ok", again.report.to_json()
    ctx, args = builds[3]  # what is left still imports: t3 rebuilds with every step CACHED
    assert proof.import_and_rebuild(layout, backends.make("registry", f"127.0.0.1:{port}/kit/retain:t3"),
                                    ctx, args)


def test_s3_expiry_keeps_blobs_a_young_manifest_uses_and_removes_the_rest(registry_builder, s3_port, base_image,
                                                                           tmp_path):
    layout, _ = registry_builder
    store = s3.store_for(layout, {"s3_port": s3_port})
    store.ensure_bucket("retain", apply=True)
    backend = backends.make("s3", "retain", prefix="team-a", store=store)
    ctx, args = proof.proof_context(tmp_path / "ctx", base_image)
    proof.export_cache(layout, backend, ctx, args)  # this daemon has the credentials file in its environment
    time.sleep(3)
    proof.export_cache(layout, backend, ctx, args)  # the same build: the manifest is rewritten, the blobs reused
    stored = store.objects("retain", "team-a/")
    manifest = next(o for o in stored if o["Key"] == "team-a/manifests/kit")
    blobs = [o for o in stored if "/blobs/" in o["Key"]]
    assert blobs and all(b["LastModified"] < manifest["LastModified"] for b in blobs)
    # an age cut-off between the blobs and the manifest: the blobs are old, but the kept manifest uses them
    now = dt.datetime.now(dt.timezone.utc)
    cut = int((now - max(b["LastModified"] for b in blobs)).total_seconds()) - 1
    kept = store.expire("retain", "team-a/", cut, apply=True, now=now)
    assert kept.status == "ok" and "old blobs kept: a younger manifest uses them" in kept.message, kept.message
    assert len(store.objects("retain", "team-a/")) == len(stored)
    # three days on, everything is old and unused: check lists it and removes nothing, apply removes it all
    later = now + dt.timedelta(days=3)
    plan = store.expire("retain", "team-a/", 2 * 86400, apply=False, now=later)
    assert plan.status == "changed" and len(store.objects("retain", "team-a/")) == len(stored)
    out = store.expire("retain", "team-a/", 2 * 86400, apply=True, now=later)
    assert out.facts["s3_removed_objects"] == len(stored)
    assert out.facts["s3_reclaimed_bytes"] == sum(o["Size"] for o in stored)
    assert store.objects("retain", "team-a/") == []


def test_registry_retention_on_a_registry_that_holds_nothing_yet(runs_base):
    from runbook_checks.daemon import service

    port = service.free_port()
    layout = installed_builder("bkemp-", runs_base, f"registry_port={port}")
    try:
        registry.wait_ready(port, log=registry.log_path(layout))
        done = apply("prune", layout.state_dir, f"registry_port={port}", "s3_port=0", base=runs_base)
        assert steps(done)["registry cache retention"].status == "ok", done.report.to_json()
        assert "holds no repository" in steps(done)["registry cache retention"].message
    finally:
        stop_and_remove(layout.state_dir)
