"""The scan runbook for real: hadolint and BuildKit's build checks on a Dockerfile, the
kit's syft scanner image pushed to the local registry, a build that attests its SBOM,
the deny-list gate (refusing, and passing on a rule that does not match), the push that
only follows a pass, and source policies sent with the build (deny, pin)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from runbook_checks.cache import images, registry
from runbook_checks.core import runner
from runbook_checks.scanning import sbom

from ..conftest import apply

BAD = "FROM {base} AS Base\nMAINTAINER someone\nRUN true\n"
GOOD = "FROM {base}\nRUN mkdir -p /app && echo scanned > /app/file\nCOPY Dockerfile /app/\n"


@pytest.fixture(scope="module")
def scan(ci_daemon, registry_builder, runs_base, tmp_path_factory):
    """Run the scan runbook on the ci builder with the local registry, on a context FROM
    the busybox base in that registry: (run, registry port)."""
    _, port = registry_builder
    images.push_busybox_base(ci_daemon, port)
    ctx = tmp_path_factory.mktemp("scan-ctx")
    (ctx / "Dockerfile").write_text(GOOD.format(base=images.base_ref(port)))

    def run(*sets: str, mode: str = "apply"):
        given = {s.split("=", 1)[0] for s in sets}
        defaults = {"scan_context": str(ctx), "registry_port": str(port)}
        chosen = [f"{k}={v}" for k, v in defaults.items() if k not in given]
        result = runner.run("scan", "ci", mode, (f"state_dir={ci_daemon.state_dir}", *chosen, *sets),
                            base=runs_base, progress=False)
        return result.report

    return run, port


def steps(report) -> dict:
    return {s.name: s for s in report.steps}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_clean_image_is_attested_gated_and_pushed_with_its_sbom(scan, tmp_path):
    run, port = scan
    deny = write(tmp_path, "deny.yaml", "- package: busybox\n  versions: '1.36.*'\n  reason: a later version\n")
    target = f"127.0.0.1:{port}/kit/scanned:clean"
    report = run(f"deny_list={deny}", f"push_image={target}")
    by = steps(report)
    assert report.status == "changed", report.to_json()
    assert by["deny-list gate"].status == "ok" and "none on the deny list" in by["deny-list gate"].message
    doc = json.loads(Path(report.facts["sbom"]).read_text())
    assert doc["spdxVersion"].startswith("SPDX-2")
    assert {"name": "busybox", "version": "1.35.0", "purl": "pkg:generic/busybox@1.35.0"} in sbom.packages(doc)
    assert by["push"].status == "changed" and registry.manifest_digest(port, "kit/scanned", "clean")
    # the pushed index carries the attestation manifest beside the image
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/kit/scanned/manifests/clean",
                                 headers={"Accept": registry.MANIFEST_TYPES})
    index = json.loads(urllib.request.urlopen(req, timeout=10).read())
    kinds = [m.get("annotations", {}).get("vnd.docker.reference.type") for m in index["manifests"]]
    assert "attestation-manifest" in kinds
    # the scanner image is made once: a second run finds it
    again = steps(run(f"deny_list={deny}"))
    assert again["SBOM scanner image"].status == "ok" and again["push"].status == "skipped"


def test_a_denied_package_fails_the_gate_and_nothing_is_pushed(scan, tmp_path):
    run, port = scan
    deny = write(tmp_path, "deny.yaml", "- package: busy*\n  versions: '1.35.*'\n  reason: the test's rule\n")
    report = run(f"deny_list={deny}", f"push_image=127.0.0.1:{port}/kit/scanned:denied")
    gate = steps(report)["deny-list gate"]
    assert report.status == "failed" and gate.status == "failed"
    assert "busybox 1.35.0 (denied by busy* 1.35.*: the test's rule)" in gate.message
    assert "push" not in steps(report)
    assert registry.manifest_digest(port, "kit/scanned", "denied") == ""


def test_lint_fails_at_the_level_asked_and_not_below(scan, tmp_path):
    run, port = scan
    ctx = tmp_path / "bad"
    ctx.mkdir()
    write(ctx, "Dockerfile", BAD.format(base=images.base_ref(port)))
    by = steps(run(f"scan_context={ctx}", mode="check"))
    assert by["Dockerfile lint (hadolint)"].status == "failed"
    assert "DL4000" in by["Dockerfile lint (hadolint)"].message  # MAINTAINER is deprecated, an error
    # hadolint's finding ignored, warnings fail: BuildKit's own checks now stop it
    by = steps(run(f"scan_context={ctx}", "lint_fail_on=warning", "lint_ignore=[DL4000,DL3007]", mode="check"))
    assert by["Dockerfile lint (hadolint)"].status == "ok"
    checks = by["BuildKit build checks"]
    assert checks.status == "failed"
    assert "Dockerfile:1 StageNameCasing" in checks.message and "Dockerfile:2 MaintainerDeprecated" in checks.message
    # at the default level (error) BuildKit's warnings are listed, not failed
    by = steps(run(f"scan_context={ctx}", "lint_ignore=[DL4000]", mode="check"))
    assert by["BuildKit build checks"].status == "ok" and "StageNameCasing" in by["BuildKit build checks"].message
    assert by["build with an SBOM"].status == "skipped"  # check mode builds nothing


def test_a_source_policy_pins_the_base_and_denies_what_it_names(scan, tmp_path, ci_daemon):
    run, port = scan
    digest = registry.manifest_digest(port, images.BASE_REPOSITORY, images.BASE_TAG)
    base = f"docker-image://{images.base_ref(port)}"
    pin = write(tmp_path, "pin.json", json.dumps({"rules": [
        {"action": "CONVERT", "selector": {"identifier": base, "match_type": "EXACT"},
         "updates": {"identifier": f"{base}@{digest}"}}]}))
    report = run(f"source_policy={pin}")
    assert report.status != "failed", report.to_json()
    assert "1 convert" in steps(report)["inputs"].message
    deny = write(tmp_path, "deny.json", json.dumps({"rules": [
        {"action": "DENY", "selector": {"identifier": f"docker-image://127.0.0.1:{port}/kit/*"}}]}))
    build = steps(run(f"source_policy={deny}"))["build with an SBOM"]
    assert build.status == "failed" and "denied by policy" in build.message
    # the same build without the policy goes through: buildkitd enforces only what the client sends
    assert steps(run())["build with an SBOM"].status == "ok"


def test_bad_inputs_are_refused_before_anything_is_built(scan, tmp_path):
    run, _ = scan
    policy = write(tmp_path, "policy.json", json.dumps({"rules": [
        {"action": "DENY", "selector": {"identifier": "docker-image://docker.io/*", "matchType": "EXACT"}}]}))
    report = run(f"source_policy={policy}")
    assert [s.name for s in report.steps] == ["inputs"]
    assert "rule 1: says matchType, which buildctl ignores: write match_type" in report.steps[0].message
    deny = write(tmp_path, "deny.yaml", "- package: busybox\n")
    report = run(f"deny_list={deny}")
    assert [s.name for s in report.steps] == ["inputs"] and "entry 1: reason: Field required" in report.steps[0].message
    report = run(f"scan_context={tmp_path}")
    assert "has no Dockerfile" in report.steps[0].message


def test_the_scanner_pushed_to_a_registry_serves_a_builder_without_the_kits(scan, ci_daemon):
    """`invoke scan.scanner --push REF` for production builders, then a scan that uses
    the profile's scanner (registry_port 0: the kit pushes nothing)."""
    import subprocess
    import sys

    run, port = scan
    ref = f"127.0.0.1:{port}/tools/sbom-scanner:1"
    proc = subprocess.run([sys.executable, "-m", "invoke", "scan.scanner", "--push", ref, "--state-dir",
                           str(ci_daemon.state_dir)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert f"sbom_scanner: {ref}" in proc.stdout and registry.manifest_digest(port, "tools/sbom-scanner", "1")
    report = run("registry_port=0", f"sbom_scanner={ref}")
    by = steps(report)
    assert by["SBOM scanner image"].message == f"the profile's scanner image {ref}"
    assert by["build with an SBOM"].status == "ok" and "busybox 1.35.0" in by["build with an SBOM"].message
