"""The cache-warm runbook executed by papermill (ci profile: the busybox workload) against
the ci daemon, with the local registry of the session's registry builder: check builds
nothing and changes nothing, apply warms and a fresh builder rebuilds all CACHED, apply
again changes nothing, and a bad target fails before any build."""

from __future__ import annotations

from runbook_checks.cache import registry
from runbook_checks.core import runner


def run(mode, state, port, runs_base, *sets):
    return runner.run("cache-warm", "ci", mode, (f"state_dir={state}", f"registry_port={port}", *sets),
                      base=runs_base, progress=False)


def snapshot(layout, port):
    return registry.tags(port, "kit/cache"), registry.storage_bytes(layout)


def test_check_then_apply_twice_then_check(ci_daemon, registry_builder, runs_base):
    reg_layout, port = registry_builder
    registry.delete_tag(port, "kit/cache", "warm-small")  # another test of this session may have warmed it
    before = snapshot(reg_layout, port)
    check = run("check", ci_daemon.state_dir, port, runs_base)
    steps = {s.name: s for s in check.report.steps}
    assert check.report.summary["failed"] == 0, check.report.to_json()
    assert "no cache yet for: workloads/small" in steps["build and export mode=max"].message
    assert steps["a fresh builder rebuilds all CACHED"].status == "skipped"
    assert "warm-small" not in registry.tags(port, "kit/cache")

    first = run("apply", ci_daemon.state_dir, port, runs_base)
    assert first.report.summary["failed"] == 0, first.report.to_json()
    assert first.report.facts["fresh_cached_steps"] == first.report.facts["fresh_total_steps"] == 4
    assert "warm-small" in registry.tags(port, "kit/cache")

    second = run("apply", ci_daemon.state_dir, port, runs_base)
    assert second.report.summary["changed"] == 0, second.report.to_json()
    assert second.report.summary["failed"] == 0

    warmed = snapshot(reg_layout, port)
    again = run("check", ci_daemon.state_dir, port, runs_base)
    assert again.report.status == "ok", again.report.to_json()
    assert snapshot(reg_layout, port) == warmed  # check mode changed nothing in the registry
    assert before != warmed


def test_a_bad_target_or_mode_min_fails_before_any_build(ci_daemon, registry_builder, runs_base):
    _, port = registry_builder
    bad = run("apply", ci_daemon.state_dir, port, runs_base, "warm_contexts=workloads/go-app#nope")
    assert bad.report.status == "failed" and bad.report.steps[-1].name == "targets and backend"
    assert "the Dockerfile has no stage 'nope'" in bad.report.steps[-1].message
    low = run("apply", ci_daemon.state_dir, port, runs_base, "cache_mode=min")
    assert low.report.steps[-1].name == "targets and backend" and "mode=max" in low.report.steps[-1].message
