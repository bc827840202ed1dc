"""Real runs for the site: each runbook's newest run record that did not fail (from the
lab, a rehearsal host or a test run), copied into docs/recorded/ with machine paths and
anything secret-looking replaced, so its page shows what a good run prints. Recorded
runs are the only notebook outputs kept in git."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from . import files, profiles, runner
from .paths import PROJECT_ROOT

# docs/recorded/notebooks/NN-name.ipynb: the site serves it where notebooks/NN-name.ipynb would be
RECORDED = PROJECT_ROOT / "docs" / "recorded"
STATE = "/STATE_DIR"
# what a run prints that says where or who, not what: each replaced by a placeholder
_TMP = re.compile(r"/tmp/[A-Za-z0-9._-]+")
_SECRET = re.compile(r"(?i)\b(aws_secret_access_key|aws_access_key_id|password|token|secret)(\s*[=:]\s*)\S+")
_KEY_BLOCK = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S)


@dataclass
class Record:
    runbook: str
    notebook: Path
    report: dict

    @property
    def description(self) -> str:
        r = self.report
        where = f" on rehearsal host {r['host']}" if r.get("host") else ""
        return f"{r['runbook']} · {r['profile']} · {r['mode']} → {r['status']} · {r['finished']}{where}"


def newest(name: str, runs: Path | None = None) -> Record | None:
    """The newest record of `name` whose report did not fail."""
    for report_path, report in runner.records(name, runs):
        notebook = report_path.with_suffix(".ipynb")
        if report.get("status") in ("ok", "changed") and notebook.is_file():
            return Record(name, notebook, report)
    return None


def sanitise(text: str, state_dir: str = "") -> str:
    """Machine paths and secret-looking values out of a run's text: the state directory
    as /STATE_DIR, the checkout as ., the home directory as ~, other temporary
    directories as /tmp/…, private keys and key=value secrets as <redacted>."""
    text = _KEY_BLOCK.sub("<redacted private key>", text)
    text = _SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}<redacted>", text)
    if state_dir and state_dir != "/":
        text = text.replace(state_dir.rstrip("/"), STATE)
    text = _path(PROJECT_ROOT).sub(".", text)
    text = _path(Path.home()).sub("~", text)
    return _TMP.sub("/tmp/…", text)


def _path(path: Path) -> re.Pattern:
    """`path` as a whole path: not /root inside /rootfs, nor /work/main inside /x/work/main
    (but after an escaped newline, as a repr() writes it)."""
    return re.compile(r"(?:(?<![\w.-])|(?<=\\n))" + re.escape(str(path)) + r"(?![\w.-])")


def step_repr(output: dict) -> bool:
    """A step's Outcome shown again as the cell's value (runs from before Outcome stopped
    displaying itself): the line above it says the same."""
    text = output.get("data", {}).get("text/plain", "") if output.get("output_type") == "execute_result" else ""
    return "".join(text).startswith("Outcome(")


def sanitised_notebook(record: Record) -> dict:
    """The executed notebook with every source and output sanitised, papermill's timings
    and the kernel's ids dropped (a record says what ran, not how long a cell sat)."""
    state_dir = str(runner.state_dir_of(record.report))
    notebook = json.loads(record.notebook.read_text())

    def clean(value):
        if isinstance(value, str):
            return sanitise(value, state_dir)
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, dict):  # plots (image/*) stay as they are
            return {k: v if k.startswith("image/") else clean(v) for k, v in value.items()}
        return value

    for cell in notebook["cells"]:
        cell["source"] = clean(cell["source"])
        cell.get("metadata", {}).pop("papermill", None)
        cell.get("metadata", {}).pop("execution", None)
        if "outputs" in cell:
            cell["outputs"] = [clean(o) for o in cell["outputs"] if not step_repr(o)]
    notebook["metadata"].pop("papermill", None)
    notebook["metadata"]["buildkit_ops_recorded"] = record.description
    return notebook


def record(name: str, runs: Path | None = None, target: Path = RECORDED) -> Record | None:
    """Copy `name`'s newest good run, sanitised, to docs/recorded/notebooks/NN-name.ipynb
    (and its report beside it); None when there is no such run."""
    found = newest(name, runs)
    if found is None:
        return None
    stem = profiles.runbook_path(name).stem
    notebook = json.dumps(sanitised_notebook(found), indent=1, ensure_ascii=False) + "\n"
    report = {k: v for k, v in found.report.items() if k not in ("notebook", "facts")}
    files.atomic_write(target / "notebooks" / f"{stem}.ipynb", notebook)
    files.atomic_write(target / "notebooks" / f"{stem}.json",
                       sanitise(json.dumps(report, indent=1), str(runner.state_dir_of(found.report))) + "\n")
    return found


def recorded(name: str, target: Path = RECORDED) -> tuple[Path, dict] | None:
    """(the recorded notebook, its report) for the site, or None."""
    stem = profiles.runbook_path(name).stem
    notebook, report = target / "notebooks" / f"{stem}.ipynb", target / "notebooks" / f"{stem}.json"
    if notebook.is_file() and report.is_file():
        return notebook, json.loads(report.read_text())
    return None
