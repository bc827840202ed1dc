"""Recorded runs for the site: the newest good record is chosen, and what it prints about
the machine (paths, home, temporary directories) or secrets never reaches docs/."""

import json
from pathlib import Path

from runbook_checks.core import recorded
from runbook_checks.core.paths import PROJECT_ROOT


def write_run(runs: Path, name: str, stamp: str, status: str, state_dir: str, output: str) -> None:
    folder = runs / name
    folder.mkdir(parents=True, exist_ok=True)
    report = {"runbook": name, "profile": "ci", "mode": "apply", "status": status, "started": "2026-11-30T10:00:00Z",
              "finished": "2026-11-30T10:00:09Z", "summary": {"ok": 1, "changed": 0, "failed": 0, "skipped": 0},
              "steps": [{"name": "daemon up", "status": "ok", "message": f"serving {state_dir}/run/buildkitd.sock",
                         "diff": "", "seconds": 0.1}],
              "facts": {"state_dir": state_dir}, "parameters": {"state_dir": state_dir}, "notebook": "x", "host": ""}
    (folder / f"{stamp}.json").write_text(json.dumps(report))
    notebook = {"cells": [{"cell_type": "code", "source": [f'state_dir = "{state_dir}"\n'], "metadata":
                           {"papermill": {"duration": 1.2}}, "outputs": [{"output_type": "stream", "name": "stdout",
                                                                            "text": [output]}]},
                          {"cell_type": "code", "source": ["plot()"], "metadata": {}, "outputs": [
                              {"output_type": "display_data", "data": {"image/png": "iVBORw0KGgo/tmp/xyz",
                                                                       "text/plain": [f"<Figure {state_dir}>"]}}]},
                          {"cell_type": "code", "source": ['report.step("daemon up", f)'], "metadata": {}, "outputs": [
                              {"output_type": "stream", "name": "stdout", "text": ["ok: serving\n"]},
                              {"output_type": "execute_result", "execution_count": 3,
                               "data": {"text/plain": ["Outcome(status='ok', message='serving')"]}}]}],
                "metadata": {"papermill": {"parameters": {}}}, "nbformat": 4, "nbformat_minor": 5}
    (folder / f"{stamp}.ipynb").write_text(json.dumps(notebook))


def test_the_newest_run_that_did_not_fail_is_recorded_and_sanitised(tmp_path):
    runs, target = tmp_path / "runs", tmp_path / "recorded"
    state = "/tmp/bkci-abc123"
    write_run(runs, "verify", "20261130T100000Z", "ok", state,
              f"ok from {PROJECT_ROOT}/runs and {Path.home()}/.cache; aws_secret_access_key = s3cr3t\n")
    write_run(runs, "verify", "20261130T110000Z", "failed", state, "a failed run is never shown\n")
    found = recorded.record("verify", runs, target)
    assert found and found.notebook.name == "20261130T100000Z.ipynb"
    text = (target / "notebooks/03-verify.ipynb").read_text()
    assert state not in text and "/STATE_DIR/run/buildkitd.sock" in (target / "notebooks/03-verify.json").read_text()
    assert str(PROJECT_ROOT) not in text and str(Path.home()) not in text and "s3cr3t" not in text
    assert "./runs" in text and "~/.cache" in text and "aws_secret_access_key = <redacted>" in text
    assert "iVBORw0KGgo/tmp/xyz" in text, "plots are kept byte for byte"
    assert "papermill" not in text and "<Figure /STATE_DIR>" in text
    assert "ok: serving" in text and "Outcome(" not in text  # the step's line, not its repr again
    notebook, report = recorded.recorded("verify", target)
    assert report["status"] == "ok" and "facts" not in report
    assert json.loads(notebook.read_text())["metadata"]["buildkit_ops_recorded"].startswith("verify · ci · apply → ok")


def test_no_good_run_records_nothing(tmp_path):
    write_run(tmp_path / "runs", "prune", "20261130T100000Z", "failed", "/tmp/x", "nope\n")
    assert recorded.record("prune", tmp_path / "runs", tmp_path / "recorded") is None
    assert recorded.recorded("prune", tmp_path / "recorded") is None


def test_private_keys_are_redacted():
    key = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEI\n-----END EC PRIVATE KEY-----"
    assert recorded.sanitise(f"a {key} b") == "a <redacted private key> b"
    assert recorded.sanitise("token: abc123 and password=hunter2") == "token: <redacted> and password=<redacted>"


def test_only_whole_paths_are_replaced():
    home = str(Path.home())
    assert recorded.sanitise(f"{home}/.cache {home}fs /x{home}") == f"~/.cache {home}fs /x{home}"
    assert recorded.sanitise(f"{PROJECT_ROOT}/drill/rootfs") == "./drill/rootfs"
    assert recorded.sanitise(f"'a\\n{PROJECT_ROOT}/runs'") == "'a\\n./runs'"  # repr() of a message


def test_slides_without_npm_say_what_to_install(tmp_path, monkeypatch):
    """reveal.js comes from the npm registry: with no copy cached and no npm, the site
    build stops naming what is missing and how to get it."""
    import pytest

    from runbook_checks.core import slides
    from runbook_checks.core.errors import KitError

    monkeypatch.setenv("BUILDKIT_OPS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm here
    with pytest.raises(KitError) as missing:
        slides.reveal_js()
    assert "npm is not on PATH" in missing.value.problem and "./kit setup" in missing.value.fix
