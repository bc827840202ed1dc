"""Scanning's pure parts: BuildKit's lint report parsed, lint levels, the deny list's
rules and refusals, source policy refusals, and the scanner refusal without a registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runbook_checks.core.errors import ConfigError, ScanError
from runbook_checks.core.layout import for_params
from runbook_checks.core.paths import PROJECT_ROOT
from runbook_checks.daemon import sourcepolicy
from runbook_checks.scanning import gate, lint, sbom

# the frontend.lint report as buildctl prints it (BuildKit v0.34)
REPORT = """
WARNING: StageNameCasing - https://docs.docker.com/go/dockerfile/rule/stage-name-casing/
Stage name 'Build' should be lowercase
Dockerfile:1
--------------------
   1 | >>> FROM debian:latest AS Build
   2 |     MAINTAINER me
--------------------

WARNING: ConsistentInstructionCasing - https://docs.docker.com/go/dockerfile/rule/consistent-instruction-casing/
Command 'from' should match the case of the command majority (uppercase)
Dockerfile:5
--------------------
   5 | >>> from scratch
--------------------
"""


def test_buildkit_lint_report_is_parsed_into_findings():
    found = lint.parse_build_checks(REPORT)
    assert [(f.code, f.line, f.level) for f in found] == [("StageNameCasing", 1, "warning"),
                                                          ("ConsistentInstructionCasing", 5, "warning")]
    assert found[0].message == "Stage name 'Build' should be lowercase"
    assert lint.parse_build_checks("") == []


@pytest.mark.parametrize("fail_on, level, fails", [("error", "warning", False), ("warning", "warning", True),
                                                   ("info", "error", True), ("none", "error", False),
                                                   ("style", "style", True), ("error", "error", True)])
def test_lint_levels(fail_on, level, fails):
    finding = lint.Finding("hadolint", "DL0000", level, 1, "m")
    assert lint.fails(finding, fail_on) is fails


def test_verdict_names_the_failing_findings_and_ignores_codes():
    findings = [lint.Finding("hadolint", "DL4000", "error", 2, "MAINTAINER is deprecated"),
                lint.Finding("hadolint", "DL3007", "warning", 1, "Using latest")]
    with pytest.raises(ScanError) as err:
        lint.verdict("hadolint", findings, "error", [])
    assert "Dockerfile:2 DL4000 (hadolint, error): MAINTAINER is deprecated" in err.value.problem
    assert "lint_ignore" in err.value.fix
    out = lint.verdict("hadolint", findings, "error", ["DL4000"])
    assert out.status == "ok" and "1 warning" in out.message and "warnings" not in out.message and "ignored: DL4000" in out.message


def test_hadolint_runs_here():
    found = lint.hadolint(PROJECT_ROOT / "workloads/small/Dockerfile")
    assert all(f.tool == "hadolint" and f.level in lint.LEVELS for f in found)
    assert not [f for f in found if f.level == "error"]


def pkg(name: str, version: str) -> dict[str, str]:
    return {"name": name, "version": version, "purl": ""}


def test_deny_rules_match_by_glob(tmp_path):
    rules = gate.load(PROJECT_ROOT / "docs/examples/deny-list.yaml")
    assert [r.package for r in rules] == ["busybox", "log4j-*"]
    assert rules[0].matches(pkg("busybox", "1.35.0")) and not rules[0].matches(pkg("busybox", "1.36.1"))
    assert rules[1].matches(pkg("log4j-core", "2.14.1")) and not rules[1].matches(pkg("log4j-core", "2.17.1"))
    assert not rules[0].matches(pkg("busybox-static", "1.35.0"))
    assert gate.Rule(package="openssl", reason="r").matches(pkg("openssl", ""))  # no versions: every version


@pytest.mark.parametrize("text, said", [
    ("package: busybox\n", "is not a list of rules"),
    ("- package: busybox\n", "entry 1: reason: Field required"),
    ("- package: a\n  reason: r\n- pakage: b\n  reason: r\n", "entry 2: package: Field required; pakage: Extra inputs are not permitted"),
    ("- package: a\n  reason: [r\n", "deny.yaml:3 is not YAML"),
    ("- package: ''\n  reason: r\n", "entry 1: package: String should have at least 1 character"),
])
def test_bad_deny_lists_are_refused_with_the_entry(tmp_path, text, said):
    path = tmp_path / "deny.yaml"
    path.write_text(text)
    with pytest.raises(ScanError) as err:
        gate.load(path)
    assert said in err.value.problem and "docs/examples/deny-list.yaml" in err.value.fix


def test_gate_reads_the_kept_sbom(tmp_path):
    doc = {"spdxVersion": "SPDX-2.3", "packages": [
        {"SPDXID": "SPDXRef-DocumentRoot-Directory-x", "name": "/x"},
        {"SPDXID": "SPDXRef-Package-1", "name": "busybox", "versionInfo": "1.35.0",
         "externalRefs": [{"referenceType": "purl", "referenceLocator": "pkg:generic/busybox@1.35.0"}]}]}
    path = tmp_path / "sbom.json"
    path.write_text(json.dumps(doc))
    assert sbom.packages(doc) == [{"name": "busybox", "version": "1.35.0", "purl": "pkg:generic/busybox@1.35.0"}]
    assert gate.check(str(path), "").status == "skipped"
    with pytest.raises(ScanError, match="busybox 1.35.0"):
        gate.check(str(path), str(PROJECT_ROOT / "docs/examples/deny-list.yaml"))
    assert gate.check("", "x").status == "skipped"


@pytest.mark.parametrize("doc, said", [
    ({}, 'needs a non-empty "rules" list'),
    ({"rules": [], "version": 1}, 'needs a non-empty "rules" list'),
    ({"rules": [{"action": "deny", "selector": {"identifier": "docker-image://x/*"}}]}, "action 'deny' is not one of"),
    ({"rules": [{"action": "DENY"}]}, "rule 1: needs a selector with an identifier"),
    ({"rules": [{"action": "DENY", "selector": {"identifier": "x/*"}}]}, "names no source type"),
    ({"rules": [{"action": "CONVERT", "selector": {"identifier": "docker-image://x"}}]}, "CONVERT needs updates"),
    ({"rules": [{"action": "DENY", "selector": {"identifier": "docker-image://x", "match_type": "GLOB"}}]},
     "match_type 'GLOB' is not one of"),
    ({"rules": [{"action": "ALLOW", "selector": {"identifier": "docker-image://x"}, "updates": {}}]},
     "ALLOW takes no updates"),
    ({"rule": []}, 'needs a non-empty "rules" list'),
])
def test_bad_source_policies_are_refused_with_the_rule(tmp_path, doc, said):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as err:
        sourcepolicy.load(path)
    assert said in err.value.problem and str(path) in err.value.problem


def test_the_example_source_policy_is_valid():
    rules = sourcepolicy.load(PROJECT_ROOT / "docs/examples/source-policy.json")
    assert sourcepolicy.summary(rules) == "1 deny, 1 convert"


def test_no_scanner_without_a_registry_or_a_profile_image(tmp_path):
    layout = for_params({"profile": "ci", "state_dir": str(tmp_path)})
    with pytest.raises(ScanError) as err:
        sbom.ensure_scanner(layout, 0, "", apply=True)
    assert "sbom_scanner=REF" in err.value.fix
    out = sbom.ensure_scanner(layout, 0, "registry.example:5000/scan/syft:1", apply=True)
    assert out.status == "ok" and out.facts["sbom_scanner"] == "registry.example:5000/scan/syft:1"
