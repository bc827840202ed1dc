"""Fault drills for real: every drill, three trials in a sandbox of its own, detected,
recovered, nothing lost; and the checks that say so fail when something is lost."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from runbook_checks.core.clock import wait_until
from runbook_checks.daemon import recovery, service
from runbook_checks.drills import run as drills
from runbook_checks.drills.faults import (FAULTS, Fault, Injected, daemon_pid, garble, probe_fails,
                                          restarted_by_supervisor, run_trial)
from runbook_checks.monitoring.exporter import ProbeCollector
from runbook_checks.drills.sandbox import sandbox


@pytest.mark.parametrize("name", list(FAULTS))
def test_every_drill_passes_three_trials(name, tmp_path):
    trials = drills.run([FAULTS[name]], 3, tmp_path, say=lambda m: None)
    records = [json.loads(p.read_text()) for p in sorted(tmp_path.glob(f"{name}-*.json"))]
    assert len(records) == 3
    for trial in trials:
        assert trial.passed, drills.line(trial)
        assert trial.detected_by and trial.recovered_by and trial.recover_seconds > 0
        assert set(trial.checks) >= {"daemon answers", "a new build runs", "the baseline rebuilds CACHED",
                                     "registry cache whole", "s3 cache whole", "buildkitd.toml unchanged"}
    if name.startswith("corrupt-"):  # the recover runbook moved the worker aside and says what went with it
        assert all(t.lost and "local build cache" in t.lost[0] for t in trials)
    if name == "disk-full":  # filled again when BuildKit gave the failed step's space back first
        assert all(t.notes["fills"] in (1, 2, 3) for t in trials)
    if name.startswith("kill-export"):
        assert all(t.notes["interrupted_cache"] in ("complete", "absent") for t in trials)


@pytest.fixture(scope="module")
def box():
    with sandbox() as b:
        yield b


def test_a_trial_fails_when_the_config_is_left_changed(box):
    def touch_config(b, n):
        with open(b.layout.config_path, "a") as fh:
            fh.write("\n# changed by a fault\n")
        return Injected("nothing", 0.0, "nothing", 0.0)

    good = box.layout.config_path.read_bytes()
    try:
        trial = run_trial(box, Fault("touch-config", "the config changed behind the kit", "", touch_config), 1)
    finally:
        box.layout.config_path.write_bytes(good)
    assert not trial.passed and trial.checks["buildkitd.toml unchanged"] == "buildkitd.toml changed"


def lay_unrecorded_snapshots(box) -> list[Path]:
    """What a crash can leave: snapshot directories the database never recorded, at the
    next ids, and a temporary one a rename never took. The next id is the database's
    sequence, which removed snapshots (views) may have moved past the highest directory,
    so they are laid at the next 30 ids. With the daemon stopped; started after."""
    snapshots = next(box.layout.root_dir.glob("*/snapshots/metadata.db")).parent / "snapshots"
    box.manager.stop_daemon()
    top = max(int(d.name) for d in snapshots.iterdir() if d.name.isdigit())
    laid = [snapshots / str(top + n) for n in range(1, 31)] + [snapshots / "new-123456"]
    for orphan in laid:
        orphan.mkdir()
    box.manager.start()
    service.wait_ready(box.layout, box.manager, 60)
    return laid


def test_unrecorded_snapshots_fail_the_next_build_unless_the_recover_runbook_moves_them_aside(box):
    laid = lay_unrecorded_snapshots(box)
    assert recovery.unrecorded_snapshots(box.layout) == laid
    said = probe_fails(box)
    assert "file exists" in said, said  # the harm: the next build fails ...
    wait_until(lambda: not recovery.unrecorded_snapshots(box.layout), 30, "the daemon's own cleanup", "")
    assert probe_fails(box) == ""  # ... then the daemon's garbage collection removes them

    laid = lay_unrecorded_snapshots(box)
    check = recovery.snapshots_recorded(box.layout, box.manager, apply=False)
    assert check.status == "changed" and f"{len(laid)} snapshot directories" in check.message, check.message
    assert recovery.unrecorded_snapshots(box.layout) == laid  # check mode moved nothing
    applied = box.runbook("recover", "apply")
    aside = Path(applied.report.facts["aside"])
    try:
        assert {s.name: s.status for s in applied.report.steps}["snapshots recorded"] == "changed"
        assert recovery.unrecorded_snapshots(box.layout) == []
        where = aside / laid[0].parent.relative_to(box.layout.root_dir)
        assert sorted(p.name for p in where.iterdir()) == sorted(p.name for p in laid)
        assert probe_fails(box) == ""  # the first build after the repair works
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def test_a_cache_manifest_naming_a_missing_blob_is_found_and_removed_with_a_copy(box):
    cache = box.backend("s3", "broken")
    box.buildctl.build(box.baseline, export_cache=[cache.export_option()])
    assert cache.missing_blobs() == []
    gone = cache._key("blobs", next(b["blob"] for b in cache.manifest()["layers"]))
    cache.store.delete("kit-drills", [gone])
    assert len(cache.missing_blobs()) == 1
    sets = ("cache_backend=s3", "cache_bucket=kit-drills", "cache_prefix=broken")
    check = box.runbook("recover", "check", *sets)
    assert {s.name: s.status for s in check.report.steps}["remote cache complete"] == "changed"
    assert len(cache.missing_blobs()) == 1  # check changed nothing
    applied = box.runbook("recover", "apply", *sets)
    copy = applied.report.facts["manifest_copy"]
    assert cache.missing_blobs() is None and json.loads(open(copy).read())["layers"]
    assert {s.name: s.status for s in box.runbook("recover", "apply", *sets).report.steps}["remote cache complete"] == "ok"
    shutil.rmtree(box.layout.backup_dir, ignore_errors=True)


def test_the_exporters_probe_fails_on_a_daemon_that_answers_but_cannot_build(box):
    """BuildkitdCannotBuild's metric, on the state the corrupt-snapshots-db drill makes."""
    probe = ProbeCollector(box.layout.buildctl, {"sandbox": box.layout.address}, 60)
    probe.probe_all()
    assert probe.results["sandbox"][0] == 1
    pid = daemon_pid(box)
    garble(next(box.layout.root_dir.glob("*/snapshots/metadata.db")))
    os.kill(pid, signal.SIGKILL)
    restarted_by_supervisor(box, pid)
    probe.probe_all()
    assert probe.results["sandbox"][0] == 0 and service.daemon_answers(box.layout)
    assert box.runbook("recover", "apply").report.status == "changed"
    probe.probe_all()
    assert probe.results["sandbox"][0] == 1


def test_a_real_runc_init_left_waiting_is_found_and_killed(tmp_path):
    """What a daemon killed while it makes a build container leaves: `runc create` made the
    container (in a BuildKit cgroup) and went away, so its runc init waits for a start that
    cannot come. The recover runbook's step finds it and kills it."""
    import subprocess

    from runbook_checks.daemon import recovery
    from runbook_checks.daemon.contexts import busybox_rootfs

    bundle, state = tmp_path / "bundle", tmp_path / "runc"
    busybox_rootfs(bundle / "rootfs")
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["/bin/sleep", "600"]
    spec["linux"]["cgroupsPath"] = "/buildkit/kit-drill-stray"
    (bundle / "config.json").write_text(json.dumps(spec))
    subprocess.run(["runc", "--root", str(state), "create", "--bundle", str(bundle), "kit-drill-stray"], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    try:
        assert "kit-drill-stray" in recovery.stray_containers().values()
        check = recovery.stray_containers_gone(apply=False)
        assert check.status == "changed" and "kit-drill-stray" in check.message
        assert recovery.stray_containers_gone(apply=True).status == "changed"
        assert "kit-drill-stray" not in recovery.stray_containers().values()
    finally:
        subprocess.run(["runc", "--root", str(state), "delete", "--force", "kit-drill-stray"], check=False,
                       capture_output=True)
