"""The local registry under a state directory's supervisord, the busybox base pushed to
it, and remote cache that works: the ci daemon exports, a fresh buildkitd (new state
directory, empty root) imports and rebuilds with every step CACHED."""

from __future__ import annotations

import os
import socket
import tomllib

import pytest

from runbook_checks.cache import backends, images, proof, registry
from runbook_checks.core.errors import CacheError
from runbook_checks.daemon import service, supervisor

from ..conftest import apply, installed_builder, stop_and_remove


@pytest.fixture(scope="module")
def base_image(ci_daemon, registry_builder):
    _, port = registry_builder
    images.push_busybox_base(ci_daemon, port)
    return images.base_ref(port)


def test_the_registry_runs_beside_buildkitd(registry_builder):
    layout, port = registry_builder
    assert registry.answers(port)
    info = supervisor.Supervisor(layout).rpc().getProcessInfo("registry")
    assert info["statename"] in ("STARTING", "RUNNING")  # startsecs=2: RUNNING after 2 s up
    assert f"127.0.0.1:{port}" in registry.config_path(layout).read_text()
    assert registry.storage_dir(layout) == layout.state_dir / "registry" and registry.storage_dir(layout).is_dir()
    doc = tomllib.loads(layout.config_path.read_text())
    assert doc["registry"][f"127.0.0.1:{port}"] == {"http": True}


def test_the_busybox_base_is_pushed_once_and_builds_from(ci_daemon, registry_builder, base_image):
    _, port = registry_builder
    assert registry.tags(port, images.BASE_REPOSITORY) == ["latest"]
    again = images.push_busybox_base(ci_daemon, port)
    assert again.status == "ok", again.message  # same busybox, same digest
    assert images.push_busybox_base(ci_daemon, port, apply=False).status == "ok"
    out = images.build_from_registry_base(ci_daemon, port)
    assert out.status == "ok" and "3 RUN steps ran" in out.message


def test_registry_cache_into_a_fresh_builder(ci_daemon, registry_builder, base_image):
    fresh, port = registry_builder  # it has built nothing yet: its root is empty
    backend = backends.make("registry", f"127.0.0.1:{port}/kit/cache:verify", mode="max")
    out = proof.prove_fresh_import(ci_daemon, fresh, backend, base_image)
    assert out.facts["cached_steps"] == out.facts["total_steps"] == 4, out.message
    assert "verify" in registry.tags(port, "kit/cache")


def test_local_cache_into_a_fresh_builder(ci_daemon, base_image, runs_base, tmp_path):
    fresh = installed_builder("bkloc-", runs_base)
    try:
        backend = backends.make("local", str(tmp_path / "cache"), mode="max", compression="zstd")
        out = proof.prove_fresh_import(ci_daemon, fresh, backend, base_image)
        assert out.facts["cached_steps"] == out.facts["total_steps"] == 4, out.message
        assert (tmp_path / "cache" / "index.json").exists()
    finally:
        stop_and_remove(fresh.state_dir)


def test_export_to_a_registry_that_is_down(ci_daemon, base_image, tmp_path):
    down = f"127.0.0.1:{service.free_port()}/kit/cache:down"  # nothing listens there
    ctx, args = proof.proof_context(tmp_path / "ctx", base_image)
    kept = proof.export_cache(ci_daemon, backends.make("registry", down, ignore_error=True), ctx, args)
    assert proof.work_steps(kept), "the build went on despite the failed export"
    with pytest.raises(CacheError, match="cache_ignore_error"):
        proof.export_cache(ci_daemon, backends.make("registry", down), ctx, {"NONCE": "other"})


def test_a_registry_port_taken_by_another_process_fails_configure(ci_daemon, runs_base):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = apply("configure", ci_daemon.state_dir, f"registry_port={port}", base=runs_base)
    failed = result.report.steps[-1]
    assert result.report.status == "failed" and failed.name == "service definition and resource limits", \
        result.report.to_json()
    assert f"127.0.0.1:{port} is taken by another process" in failed.message and "registry_port=N" in failed.message
    assert service.daemon_answers(ci_daemon)  # buildkitd itself is untouched by the registry's failure
    back = apply("configure", ci_daemon.state_dir, base=runs_base)  # the ci profile: no registry
    assert back.report.summary["failed"] == 0 and back.report.steps[-1].status == "skipped", back.report.to_json()
    assert "[program:registry]" not in ci_daemon.supervisor_conf.read_text()


def test_deleted_cache_is_reclaimed_by_the_registry_gc(ci_daemon, registry_builder, base_image, tmp_path):
    layout, port = registry_builder
    backend = backends.make("registry", f"127.0.0.1:{port}/kit/cache:gc", mode="max")
    ctx, args = proof.proof_context(tmp_path / "ctx", base_image)
    (ctx / "input.txt").write_bytes(os.urandom(2_000_000))  # blobs no other manifest shares
    proof.export_cache(ci_daemon, backend, ctx, args)
    manager = supervisor.Supervisor(layout)
    assert registry.delete_tag(port, "kit/cache", "gc")
    assert "gc" not in registry.tags(port, "kit/cache")
    out = registry.garbage_collect(layout, manager, port)
    assert out.status == "changed" and out.facts["registry_reclaimed_bytes"] > 2_000_000, out.message
    assert registry.answers(port) and registry.tags(port, images.BASE_REPOSITORY) == ["latest"]
    assert registry.garbage_collect(layout, manager, port).status == "ok"  # nothing left to reclaim


def test_export_to_an_s3_server_that_is_down(registry_builder, s3_port, base_image, tmp_path):
    from runbook_checks.cache import s3
    from runbook_checks.daemon import programs
    from runbook_checks.daemon.buildctl import Buildctl

    layout, _ = registry_builder
    store = s3.store_for(layout, {"s3_port": s3_port})
    store.ensure_bucket("down", apply=True)
    backend = dict(target="down", store=store)
    ctx, args = proof.proof_context(tmp_path / "ctx", base_image)
    rpc = supervisor.Supervisor(layout).rpc()
    rpc.stopProcess("s3")
    try:
        kept = proof.export_cache(layout, backends.make("s3", ignore_error=True, **backend), ctx, args)
        assert proof.uncached(kept), "the build ran its steps and succeeded despite the failed export"
        with pytest.raises(CacheError, match="cache_ignore_error"):
            proof.export_cache(layout, backends.make("s3", **backend), ctx, args)
        # the daemon's local cache is intact: the same build again is all CACHED, no import needed
        again = Buildctl.for_layout(layout).build(ctx, build_args=args)
        assert proof.work_steps(again) and proof.uncached(again) == []
    finally:
        rpc.startProcess("s3", True)
    assert programs.answers(f"{s3.endpoint(s3_port)}/health")


def test_a_running_program_moved_to_a_taken_port_is_refused(registry_builder):
    """Its own running port is no objection; a port another process holds is."""
    from runbook_checks import session
    from runbook_checks.core.errors import ProgramError
    from runbook_checks.daemon import programs

    layout, port = registry_builder
    manager = supervisor.Supervisor(layout)
    programs.check_ports_free(session.programs(layout, {"registry_port": port}), manager)
    with socket.socket() as theirs:
        theirs.bind(("127.0.0.1", 0))
        theirs.listen()
        moved = session.programs(layout, {"registry_port": theirs.getsockname()[1]})
        with pytest.raises(ProgramError, match="is taken by another process"):
            programs.check_ports_free(moved, manager)
