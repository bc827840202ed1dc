"""The handover runbook against a real builder with its monitoring (the alert-fires lab's
sandbox, solved: Prometheus, Alertmanager and the notification sink beside buildkitd):
it passes when every item holds, and fails naming the item when one does not."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runbook_checks.core import runner
from runbook_checks.core.paths import PROJECT_ROOT
from runbook_checks.labs import catalogue, engine

from ..conftest import short_tmpdir


@pytest.fixture(scope="module")
def healthy(tmp_path_factory, runs_base):
    """A solved alert-fires sandbox, pruned and audited, and a built site."""
    home = short_tmpdir("kh-")
    os.environ["BUILDKIT_OPS_LABS_DIR"] = str(home)
    lab = catalogue.find("alert-fires")
    try:
        box, _ = engine.start(lab, say=lambda m: None)
        engine.solve(lab)
        for name, mode, sets in (("prune", "apply", ()), ("plugins-audit", "check", ("required_plugins=[]",))):
            # recorded where the handover reads them (runs/, as `invoke runbook` records)
            assert runner.run(name, str(box.profile_path), mode, sets, progress=False).report.status != "failed"
        site = tmp_path_factory.mktemp("site")
        subprocess.run([sys.executable, "-m", "mkdocs", "build", "-q", "-d", str(site)], cwd=PROJECT_ROOT, check=True,
                       capture_output=True, timeout=300)
        yield box, site
    finally:
        engine.stop(lab)
        os.environ.pop("BUILDKIT_OPS_LABS_DIR", None)
        shutil.rmtree(home, ignore_errors=True)


def handover(box, site):
    return runner.run("handover", str(box.profile_path), "check", [f"docs_site={site}"], base=box.runs,
                      progress=False)


def test_handover_passes_on_a_healthy_builder_with_a_signed_report(healthy):
    box, site = healthy
    result = handover(box, site)
    steps = {s.name: s for s in result.report.steps}
    assert result.report.status == "ok", [(s.name, s.message) for s in result.report.steps if s.status == "failed"]
    assert steps["runbooks converge (check mode)"].message.startswith("4 runbooks converge")
    assert steps["certificates valid long enough"].status == "skipped"  # no front door in this sandbox
    assert "webhook http://127.0.0.1:" in steps["on-call channels answer"].message
    path = Path(result.report.facts["handover_report"])
    text = path.read_text()
    content, _, signed = text.rpartition("\nsha256 of the content above: ")
    assert hashlib.sha256(content.encode()).hexdigest() == result.report.facts["handover_sha256"]
    assert result.report.facts["handover_sha256"] in signed
    assert all(f"| {name} | " in text for name in steps if name != "handover report")
    assert "docs/handover/raci.md" in text and "docs/handover/transition.md" in text


def test_one_broken_item_fails_the_handover_naming_it(healthy, runs_base):
    box, site = healthy
    audits = runs_base / "plugins-audit"
    aside = runs_base / "plugins-audit.aside"
    audits.rename(aside)  # no plugin audit was ever run on this builder
    try:
        result = handover(box, site)
    finally:
        aside.rename(audits)
    failed = [s.name for s in result.report.steps if s.status == "failed"]
    assert failed == ["last plugin audit recent", "handover report"], failed
    assert "1 item(s) failed: last plugin audit recent" in result.report.steps[-1].message
    assert result.report.facts["handover_failed"] == ["last plugin audit recent"]


def test_a_receiver_that_does_not_answer_fails_the_on_call_item(healthy):
    box, site = healthy
    port = json.loads(json.dumps(__import__("yaml").safe_load(box.profile_path.read_text())))["notify_sink_port"]
    box.manager.stop_program("notify_sink")
    try:
        result = handover(box, site)
    finally:
        box.manager.rpc().startProcess("notify_sink")
    steps = {s.name: s for s in result.report.steps}
    assert steps["on-call channels answer"].status == "failed"
    assert re.search(rf"on-call channels that do not answer: webhook http://127\.0\.0\.1:{port}",
                     steps["on-call channels answer"].message)
    assert "on-call channels answer" in steps["handover report"].message
