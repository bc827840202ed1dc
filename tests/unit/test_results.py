import json

import pytest

from runbook_checks.core.errors import KitError, StepFailed
from runbook_checks.core.results import Outcome, Report, render_recap


def test_report_contract_and_recap():
    report = Report("install", "ci", "apply")
    report.step("one", lambda: Outcome.ok("fine", buildkit_version="v0.34.2"))
    report.step("two", lambda: Outcome.changed("did it", "-a\n+b\n"))
    report.step("three", lambda: Outcome.skipped("not here"))
    data = json.loads(report.finish(display=False).to_json())
    assert set(data) == {"runbook", "profile", "mode", "status", "started", "finished", "summary", "steps", "facts"}
    assert data["status"] == "changed"
    assert data["summary"] == {"ok": 1, "changed": 1, "failed": 0, "skipped": 1}
    assert data["steps"][1]["diff"] == "-a\n+b\n"
    assert data["facts"] == {"buildkit_version": "v0.34.2"}
    assert Report.from_dict(data).to_dict()["steps"] == data["steps"]
    recap = render_recap(report)
    for word in ("one", "two", "three", "changed", "skipped", "ok=1 changed=1 failed=0 skipped=1"):
        assert word in recap


def test_failed_step_stops_and_records():
    report = Report("configure", "ci", "apply")

    def broken():
        raise KitError("the thing broke", "mend the thing")

    with pytest.raises(StepFailed, match="the thing broke"):
        report.step("broken", broken)
    assert report.status == "failed"
    assert "fix: mend the thing" in report.steps[0].message
    assert report.finished


def test_a_checklist_item_that_fails_is_recorded_and_the_run_goes_on():
    report = Report("handover", "ci", "check")
    failed = report.check("one item", lambda: (_ for _ in ()).throw(KitError("no receiver", "set webhook_url")))
    assert failed.status == "failed" and not report.finished
    report.check("next item", lambda: Outcome.ok("fine"))
    assert [s.status for s in report.steps] == ["failed", "ok"] and report.status == "failed"
    assert "fix: set webhook_url" in report.steps[0].message


def test_unexpected_exception_is_a_failed_step_not_a_pass():
    report = Report("verify", "ci", "check")
    with pytest.raises(StepFailed):
        report.step("bug", lambda: 1 / 0)
    assert report.steps[0].status == "failed" and "ZeroDivisionError" in report.steps[0].message
    with pytest.raises(StepFailed):
        report.step("wrong type", lambda: "ok")
    assert "not Outcome" in report.steps[1].message


def test_outcome_rejects_unknown_status():
    with pytest.raises(ValueError):
        Outcome("great")



def test_recap_prints_messages_that_look_like_markup(capsys):
    """A message quoting a path in brackets is text, not a rich closing tag."""
    from runbook_checks.core.results import print_recap

    report = Report("plugins-audit", "ci", "check")
    report.step("plugins [all]", lambda: Outcome.ok("hello [/tmp/x/docker-hello] [bold]"))
    assert "hello [/tmp/x/docker-hello] [bold]" in render_recap(report.finish(display=False), width=200)
    print_recap(report)
    assert "plugins [all]" in capsys.readouterr().out
