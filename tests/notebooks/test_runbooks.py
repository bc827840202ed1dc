"""Each runbook executed by papermill with the ci profile: check, apply, apply again
(idempotence), check mode changing nothing; then nbval on the stored notebooks."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runbook_checks.core import layout as layout_mod, paths, runner
from runbook_checks.daemon import supervisor

from ..conftest import short_tmpdir, stop_and_remove


def tree_digest(root: Path) -> dict[str, str]:
    """Every path under root with its bytes (or link target, or 'dir')."""
    found = {}
    if not root.exists():
        return found
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[rel] = "dir"
        elif path.is_file():
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[rel] = "special"
    return found


def run(name, mode, state, runs_base, *sets):
    return runner.run(name, "ci", mode, (f"state_dir={state}", *sets), base=runs_base, progress=False)


@pytest.fixture(scope="module")
def state(runs_base):
    path = short_tmpdir("bknb-")
    path.rmdir()  # start from nothing: check mode must not even create it
    yield path
    stop_and_remove(path)


def test_install_check_on_a_fresh_host_changes_nothing(state, runs_base):
    result = run("install", "check", state, runs_base)
    assert result.report.status == "changed", result.report.to_json()
    assert not state.exists()
    assert result.report_path.exists() and result.notebook.exists()


def test_install_apply_then_again(state, runs_base):
    first = run("install", "apply", state, runs_base)
    assert first.report.status == "changed" and first.report.summary["failed"] == 0
    second = run("install", "apply", state, runs_base)
    assert second.report.summary["changed"] == 0, second.report.to_json()


def test_configure_check_apply_again(state, runs_base):
    before = tree_digest(state)
    check = run("configure", "check", state, runs_base)
    assert check.report.status == "changed"
    assert "+max-parallelism = 2" in check.report.steps[1].diff
    assert tree_digest(state) == before
    first = run("configure", "apply", state, runs_base)
    assert first.report.status == "changed"
    second = run("configure", "apply", state, runs_base)
    assert second.report.summary["changed"] == 0, second.report.to_json()


def test_verify_passes_on_the_configured_daemon(state, runs_base):
    result = run("verify", "check", state, runs_base)
    steps = {s.name: s for s in result.report.steps}
    assert result.report.summary["failed"] == 0, result.report.to_json()
    assert steps["build, then rebuild from cache"].status == "ok"
    assert "ran at most 2 at a time" in steps["max-parallelism in force"].message
    # no systemd here: the limits are systemd's, so the step says so (the production
    # host's test reads them in force: tests/production)
    limits = steps["resource limits in force"]
    assert limits.status == "skipped" and "systemd is not PID 1" in limits.message


def test_check_mode_leaves_an_installed_state_dir_byte_identical(state, runs_base):
    lay = layout_mod.for_params({"profile": "ci", "state_dir": str(state)})
    manager = supervisor.Supervisor(lay)
    manager.stop()  # a running daemon writes its own state; stop it to compare bytes
    before = tree_digest(state)
    for name in ("install", "configure"):
        result = run(name, "check", state, runs_base, "max_parallelism=3" if name == "configure" else "tasks_max=4096")
        assert result.report.summary["failed"] == 0
    assert tree_digest(state) == before
    assert run("configure", "apply", state, runs_base).report.summary["failed"] == 0


def test_a_failed_run_is_recorded_and_stops(state, runs_base):
    result = run("verify", "check", state, runs_base, "max_parallelism=3")
    assert result.report.status == "failed"
    assert result.report.steps[-1].name == "GC policy in force" or "max-parallelism" in result.report.steps[-1].name
    recorded = runner.report_from_notebook(result.notebook)
    assert recorded.to_dict()["summary"] == result.report.to_dict()["summary"]


def test_cli_exit_codes_and_list(state, runs_base, tmp_path):
    env = dict(os.environ, BUILDKIT_OPS_RUNS_DIR=str(tmp_path))
    invoke = [sys.executable, "-m", "invoke"]
    listing = subprocess.run(invoke + ["runbook", "--list"], capture_output=True, text=True, cwd=paths.PROJECT_ROOT,
                             env=env, timeout=120)
    assert listing.returncode == 0 and "buildkit_version" in listing.stdout and "max_parallelism" in listing.stdout
    bad = subprocess.run(invoke + ["runbook", "configure", "--profile", "ci", "--set", "colour=blue"],
                         capture_output=True, text=True, cwd=paths.PROJECT_ROOT, env=env, timeout=120)
    assert bad.returncode == 2 and "'colour'" in bad.stderr
    assert not (tmp_path / "configure").exists()  # nothing ran
    failing = subprocess.run(invoke + ["runbook", "verify", "--profile", "ci", "--set", f"state_dir={state}",
                                       "--set", "max_parallelism=3"],
                             capture_output=True, text=True, cwd=paths.PROJECT_ROOT, env=env, timeout=300)
    assert failing.returncode == 1 and "failed" in failing.stdout
    ok = subprocess.run(invoke + ["runbook", "configure", "--profile", "ci", "--set", f"state_dir={state}"],
                        capture_output=True, text=True, cwd=paths.PROJECT_ROOT, env=env, timeout=300)
    assert ok.returncode == 0 and "ok=5 changed=0 failed=0" in ok.stdout


def test_production_tree_renders_and_verifies(runs_base):
    """The production profile rendered into a scratch tree: FHS paths, systemd units
    checked by systemd-analyze, production values; no daemon is started from it."""
    import tomllib

    tree = short_tmpdir("bkprod-")
    try:
        for name, sets in (("install", ()), ("configure", ("debug_port=16123",))):
            result = runner.run(name, "production", "apply", (f"state_dir={tree}", *sets), base=runs_base,
                                progress=False)
            assert result.report.summary["failed"] == 0, result.report.to_json()
            steps = {s.name: s.status for s in result.report.steps}
            if name == "configure":  # no daemon starts from a tree; its maintenance timers are written
                assert steps["services beside buildkitd"] == "skipped" and steps["maintenance timers"] == "changed"
            else:
                assert result.report.steps[-1].status == "skipped"
            again = runner.run(name, "production", "apply", (f"state_dir={tree}", *sets), base=runs_base,
                               progress=False)
            assert again.report.summary["changed"] == 0, again.report.to_json()
        doc = tomllib.loads((tree / "etc/buildkit/buildkitd.toml").read_text())
        assert doc["root"] == f"{tree}/var/lib/buildkit"
        assert doc["worker"]["oci"]["max-parallelism"] == 8
        assert doc["worker"]["oci"]["gcpolicy"][2]["maxUsedSpace"] == "60%"  # the size bound, without keepDuration
        assert "keepDuration" not in doc["worker"]["oci"]["gcpolicy"][2]
        unit = (tree / "etc/systemd/system/buildkit.service").read_text()
        assert "Slice=buildkit.slice" in unit
        limits = (tree / "etc/systemd/system/buildkit.slice").read_text()  # the daemon's and its builds'
        assert "CPUQuota=400%" in limits and "MemoryMax=17179869184" in limits
        assert (tree / "usr/local/bin/buildkitd").exists()
        assert "OnCalendar=hourly" in (tree / "etc/systemd/system/buildkit-drift.timer").read_text()
    finally:
        stop_and_remove(tree)
