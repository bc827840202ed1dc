"""plugins-audit and plugins-clean executed by papermill with the ci profile on a tree of
crafted plugins: check changes nothing, apply converges, apply again changes nothing, the
audit's facts carry the inventory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runbook_checks import runner

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
