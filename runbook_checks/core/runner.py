"""The runbook engine: validate parameters, execute notebooks/NN-NAME.ipynb with
papermill, and keep the executed notebook and its JSON report as an immutable run
record under runs/NAME/."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import files, profiles
from .paths import PROJECT_ROOT, runs_dir
from .results import REPORT_MIME, Report, Step


@dataclass
class RunResult:
    report: Report
    notebook: Path
    report_path: Path


def _ipc_kernel_manager(socket_dir: Path):
    """Kernels talk to papermill over unix sockets (IPC) instead of unencrypted TCP on
    loopback, which ipykernel rightly warns about. Each run's kernel has its sockets in a
    private directory (`socket_dir`): jupyter's default ("kernel-ipc-N" in the working
    directory) lets two runs started at once pick the same socket and read each other's
    messages."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class IPCKernelManager(AsyncKernelManager):
        @default("transport")
        def _transport_default(self) -> str:
            return "ipc"

        @default("ip")
        def _ip_default(self) -> str:
            return str(socket_dir / "k")

    return IPCKernelManager


def _stamp_paths(base: Path, name: str) -> tuple[Path, Path]:
    folder = base / name
    files.writable_dir(folder, what="run records (BUILDKIT_OPS_RUNS_DIR)")
    folder.mkdir(parents=True, exist_ok=True)
    stamp = files.stamp()
    return folder / f"{stamp}.ipynb", folder / f"{stamp}.json"


def report_from_notebook(path: Path) -> Report | None:
    """The last report the notebook emitted (each failed step and the last cell emit one)."""
    import nbformat  # imported here: it takes seconds (jsonschema's format checkers), and kernels need none of it

    nb = nbformat.read(path, as_version=4)
    found = None
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if REPORT_MIME in data:
                found = data[REPORT_MIME]
    return Report.from_dict(found) if found else None


def run(name: str, profile: str = "lab", mode: str = "check", sets: tuple[str, ...] | list[str] = (),
        base: Path | None = None, progress: bool = True) -> RunResult:
    """Execute one runbook. Raises ParameterError before anything runs if a parameter
    is wrong; otherwise always writes the run record, failed or not."""
    import tempfile

    import papermill
    from nbclient.exceptions import DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    resolved = profiles.resolve_sources(name, profile, mode, sets)
    values = resolved.values
    source = profiles.runbook_path(name)
    notebook, report_path = _stamp_paths(base or runs_dir(), name)
    error = ""
    try:
        with tempfile.TemporaryDirectory(prefix="bk-kernel-") as sockets:
            papermill.execute_notebook(str(source), str(notebook), parameters=values, progress_bar=progress,
                                       kernel_name="python3", cwd=str(PROJECT_ROOT), log_output=False,
                                       kernel_manager_class=_ipc_kernel_manager(Path(sockets)),
                                       stdout_file=sys.stdout if progress else None)
    except PapermillExecutionError as exc:
        error = f"{exc.ename}: {exc.evalue}"
    except DeadKernelError as exc:  # the kernel died (killed, out of memory): still a recorded, failed run
        error = f"the notebook's kernel died: {exc}"
    report = report_from_notebook(notebook) if notebook.exists() else None
    if report is None:  # the notebook broke before any step ran: still a failed, recorded run
        report = Report(name, resolved.profile.name, mode)
        report.steps.append(Step("runbook", "failed", error or "the notebook emitted no report"))
        report.finished = report.started
    data: dict[str, Any] = report.to_dict()
    data["parameters"] = values
    if resolved.profile.site:
        data["site_profile"] = str(resolved.profile.site)
    data["notebook"] = str(notebook)
    files.atomic_write(report_path, json.dumps(data, indent=2) + "\n")
    return RunResult(report, notebook, report_path)


def describe() -> dict[str, dict[str, dict[str, Any]]]:
    """{runbook: {parameter: {type, default, help}}} read from each parameters cell."""
    return {name: profiles.declared_parameters(profiles.runbook_path(name)) for name in profiles.list_runbooks()}


def latest_reports(base: Path | None = None) -> dict[str, Path]:
    found = {}
    root = base or runs_dir()
    if root.exists():
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            reports = sorted(folder.glob("*.json"))
            if reports:
                found[folder.name] = reports[-1]
    return found


def records(name: str, base: Path | None = None):
    """(report path, report) of each recorded run of `name`, newest first (unreadable ones
    left out): what the handover, the labs and the site read back."""
    for path in sorted(((base or runs_dir()) / name).glob("*.json"), reverse=True):
        try:
            yield path, json.loads(path.read_text())
        except (OSError, ValueError):
            continue


def state_dir_of(report: dict) -> Path:
    """The state directory a run worked on: its facts, else its parameters, else its
    profile's default."""
    from .layout import default_state_dir

    given = (report.get("facts") or {}).get("state_dir") or (report.get("parameters") or {}).get("state_dir")
    return Path(given) if given else default_state_dir(report.get("profile", "lab"))[0]
