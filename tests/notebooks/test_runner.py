"""The runner records every run, also one whose kernel dies, and leaves no kernel sockets."""

from __future__ import annotations

import tempfile
from pathlib import Path

import nbformat

from runbook_checks.core import profiles, runner


def test_a_dead_kernel_is_a_recorded_failed_run(tmp_path, monkeypatch):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('mode: str = "check"  # m\nprofile: str = "lab"  # p'),
                nbformat.v4.new_code_cell("import os\nos._exit(9)")]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "99-dying.ipynb"
    nbformat.write(nb, path)
    monkeypatch.setattr(profiles, "runbook_path", lambda name: path)  # a runbook of this test's own
    tmp = Path(tempfile.gettempdir())
    sockets_before = set(tmp.glob("bk-kernel-*"))
    result = runner.run("dying", "ci", "check", base=tmp_path / "runs", progress=False)
    assert result.report.status == "failed"
    assert "kernel died" in result.report.steps[-1].message
    assert result.report_path.exists()
    assert not set(tmp.glob("bk-kernel-*")) - sockets_before  # the kernel's socket directory is gone
