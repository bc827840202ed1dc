"""The handover report: signed with the sha256 of its content, failed naming each item
that failed (the lab test runs the whole checklist against a real builder)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from runbook_checks.core import layout as layout_mod
from runbook_checks.core.errors import KitError
from runbook_checks.core.paths import runs_dir
from runbook_checks.core.results import Outcome, Report
from runbook_checks.reports import handover


@pytest.fixture
def layout(tmp_path, monkeypatch):
    monkeypatch.setenv("BUILDKIT_OPS_RUNS_DIR", str(tmp_path / "runs"))
    return layout_mod.for_params({"profile": "ci", "state_dir": str(tmp_path / "state")})


def signed(path: Path) -> tuple[str, str]:
    content, _, signature = path.read_text().rpartition("\nsha256 of the content above: ")
    return content, signature.strip().strip("`")


def test_a_report_whose_items_hold_is_signed_and_links_the_documents(layout):
    report = Report("handover", "ci", "check")
    report.check("the builder builds", lambda: Outcome.ok("a probe build ran a RUN step in 1.2s"))
    report.check("certificates valid long enough", lambda: Outcome.skipped("no front door"))
    done = handover.handover_report(report, layout)
    path = Path(done.facts["handover_report"])
    content, signature = signed(path)
    assert done.status == "ok" and done.facts["handover_failed"] == []
    assert hashlib.sha256(content.encode()).hexdigest() == signature == done.facts["handover_sha256"]
    assert "| the builder builds | ok | a probe build ran a RUN step in 1.2s |" in content
    assert all(doc in content for doc in handover.DOCUMENTS.values())
    assert path.parent == runs_dir() / "handover"


def test_one_failed_item_fails_the_report_naming_it_and_an_edit_breaks_the_signature(layout):
    report = Report("handover", "ci", "check")
    report.check("on-call channels answer", lambda: (_ for _ in ()).throw(
        KitError("on-call channels that do not answer: webhook http://127.0.0.1:9", "start the receiver")))
    report.check("the builder builds", lambda: Outcome.ok("fine"))
    done = handover.handover_report(report, layout)
    assert done.status == "failed" and done.facts["handover_failed"] == ["on-call channels answer"]
    assert "1 item(s) failed: on-call channels answer" in done.message
    path = Path(done.facts["handover_report"])
    content, signature = signed(path)
    assert "| on-call channels answer | failed | on-call channels that do not answer" in content
    edited = content.replace("| failed |", "| ok |")
    assert hashlib.sha256(edited.encode()).hexdigest() != signature


def test_the_docs_item_fails_on_no_site_and_on_a_site_older_than_its_pages(tmp_path):
    with pytest.raises(KitError) as none:
        handover.docs_built(tmp_path / "site")
    assert "no built site" in none.value.problem and "invoke docs.build" in none.value.fix
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<html></html>")
    os.utime(tmp_path / "site" / "index.html", (0, 0))
    with pytest.raises(KitError) as stale:
        handover.docs_built(tmp_path / "site")
    assert "older than" in stale.value.problem and "build it again" in stale.value.fix
    os.utime(tmp_path / "site" / "index.html")
    assert handover.docs_built(tmp_path / "site").status == "ok"
