"""plugins-audit and plugins-clean executed by papermill with the ci profile on a tree of
crafted plugins: check changes nothing, apply converges, apply again changes nothing, the
audit's facts carry the inventory; then `invoke plugins.restore` and
`invoke maint.plugins-audit` as an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runbook_checks.core import paths, runner

from .. import plugin_fixtures as pf
from ..conftest import short_tmpdir

KEYS = ["buildx", "hello", "exitthree", "upper", "twice", "twice-shadowed"]


@pytest.fixture(scope="module")
def lab(runs_base):
    root = short_tmpdir("bkplug-")
    tree = pf.build(root / "tree", KEYS)
    state = root / "state"
    yield tree, state, runs_base
    import shutil

    shutil.rmtree(root, ignore_errors=True)


def run(name, mode, lab, *sets):
    tree, state, runs_base = lab
    return runner.run(name, "ci", mode, (f"state_dir={state}", f"docker_config={tree.config_dir}", *sets),
                      base=runs_base, progress=False)


def steps(result):
    return {s.name: s for s in result.report.steps}


def test_audit_reports_the_inventory_and_fails_on_findings(lab):
    tree, _, runs_base = lab
    result = run("plugins-audit", "check", lab)
    got = steps(result)
    assert result.report.status == "failed" and list(got)[-1] == "findings", result.report.to_json()
    assert got["docker CLI agrees"].status in ("ok", "skipped")
    assert "exit status 3" in got["findings"].message and "plugins-clean" in got["findings"].message
    inventory = {p["path"]: p for p in result.report.facts["inventory"]}
    exitthree = inventory[str(tree.plugin_dir / "docker-exitthree")]
    assert exitthree["valid"] is False and exitthree["error"] == "failed to fetch metadata: exit status 3"
    assert inventory[str(tree.plugin_dir / "docker-buildx")]["required"] == "required"
    assert inventory[str(tree.plugin_dir / "docker-twice")]["shadowed_by"] == str(tree.extra_dir / "docker-twice")
    for entry in inventory.values():
        assert {"name", "path", "valid", "error"} <= set(entry)
    written = json.loads(Path(result.report.facts["inventory_json"]).read_text())
    assert Path(result.report.facts["inventory_json"]).parent == runs_base / "plugins-audit" / "inventory"
    assert {p["path"] for p in written["plugins"]} == set(inventory)
    assert runner.latest_reports(runs_base)["plugins-audit"] == result.report_path  # not the inventory file


def test_clean_check_changes_nothing(lab):
    tree, state, _ = lab
    before = pf.tree_state(tree.root)
    result = run("plugins-clean", "check", lab)
    got = steps(result)
    assert result.report.status == "changed", result.report.to_json()
    assert got["quarantine"].status == "changed" and "docker-exitthree" in got["quarantine"].diff
    assert got["config.json"].status == "changed" and str(tree.gone_dir) in got["config.json"].diff
    assert got["stability"].status == "skipped"
    assert pf.tree_state(tree.root) == before
    assert not state.exists()


def test_clean_apply_then_again(lab):
    tree, state, _ = lab
    first = run("plugins-clean", "apply", lab)
    got = steps(first)
    assert first.report.status == "changed" and first.report.summary["failed"] == 0, first.report.to_json()
    assert got["stability"].status == "ok" and "buildx" in got["stability"].message
    quarantined = {e["original_path"] for e in first.report.facts["quarantined"]}
    assert quarantined == {str(tree.plugin_dir / "docker-exitthree"), str(tree.plugin_dir / "docker-Upper")}
    assert (state / "quarantine/cli-plugins/manifest.json").exists()
    second = run("plugins-clean", "apply", lab)
    assert second.report.summary["changed"] == 0 and second.report.summary["failed"] == 0, second.report.to_json()


def test_audit_after_clean_passes_and_is_idempotent(lab):
    for mode in ("check", "apply", "apply"):
        result = run("plugins-audit", mode, lab)
        assert result.report.status == "ok", result.report.to_json()
        assert result.report.summary["changed"] == 0
    assert {p["name"] for p in result.report.facts["inventory"]} == {"buildx", "hello", "twice"}


def invoke(*args, env):
    return subprocess.run([sys.executable, "-m", "invoke", *args], capture_output=True, text=True,
                          cwd=paths.PROJECT_ROOT, env=env, timeout=300)


def test_restore_and_maint_audit_from_invoke(lab, tmp_path):
    tree, state, _ = lab
    env = dict(os.environ, BUILDKIT_OPS_RUNS_DIR=str(tmp_path), BUILDKIT_OPS_STATE_DIR=str(state), COLUMNS="200")
    listing = invoke("plugins.restore", "--list", env=env)  # the lab profile's quarantine: $STATE/quarantine
    assert listing.returncode == 0 and "exitthree" in listing.stdout, listing.stdout + listing.stderr
    missing = invoke("plugins.restore", "nosuch", env=env)
    assert missing.returncode == 2 and "no quarantined plugin named 'nosuch'" in missing.stderr
    restored = invoke("plugins.restore", "--all", "--quarantine-dir", str(state / "quarantine/cli-plugins"), env=env)
    assert restored.returncode == 0 and "exitthree" in restored.stdout, restored.stdout + restored.stderr
    assert (tree.plugin_dir / "docker-exitthree").exists() and (tree.plugin_dir / "docker-Upper").exists()
    audit = invoke("maint.plugins-audit", "--set", f"docker_config={tree.config_dir}", env=env)
    assert audit.returncode == 1, audit.stdout + audit.stderr  # the restored plugins are findings again
    assert "inventory:" in audit.stdout and str(tmp_path / "plugins-audit" / "inventory") in audit.stdout
