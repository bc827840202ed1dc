"""Step outcomes and the Report every runbook returns (ARCHITECTURE section 3)."""

from __future__ import annotations

import datetime as _dt
import json
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from .errors import KitError, StepFailed

STATUSES = ("ok", "changed", "failed", "skipped")
REPORT_MIME = "application/vnd.buildkit-ops.report+json"


def utcnow() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Outcome:
    """What a step function returns: a status, a one-line message, an optional diff
    and facts to merge into the report; `backups` ({file: its backup}) tells the caller
    what the step saved before replacing it (core.files.converge), and stays out of the
    report."""

    status: str
    message: str = ""
    diff: str = ""
    facts: dict[str, Any] = field(default_factory=dict)
    backups: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    @classmethod
    def ok(cls, message: str = "", **facts: Any) -> "Outcome":
        return cls("ok", message, facts=facts)

    @classmethod
    def changed(cls, message: str, diff: str = "", **facts: Any) -> "Outcome":
        return cls("changed", message, diff, facts=facts)

    @classmethod
    def skipped(cls, reason: str, **facts: Any) -> "Outcome":
        return cls("skipped", reason, facts=facts)

    @classmethod
    def failed(cls, message: str, **facts: Any) -> "Outcome":
        return cls("failed", message, facts=facts)

    def _ipython_display_(self) -> None:
        """Nothing: a cell ending in `report.step(...)` has printed the step's line already,
        and the repr would say it again."""


@dataclass
class Step:
    name: str
    status: str
    message: str = ""
    diff: str = ""
    seconds: float = 0.0


@dataclass
class Report:
    runbook: str
    profile: str
    mode: str
    started: str = field(default_factory=utcnow)
    finished: str = ""
    steps: list[Step] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    # -- building ---------------------------------------------------------------
    def step(self, name: str, func: Callable[..., Outcome], *args: Any, **kwargs: Any) -> Outcome:
        """Run one step, record its outcome, and stop the runbook if it failed.

        A KitError becomes a failed step with its message and fix; any other
        exception is a failed step too (with the exception named), never a
        silent pass."""
        outcome = self.check(name, func, *args, **kwargs)
        if outcome.status == "failed":
            self.finish(display=True)
            raise StepFailed(f"step {name!r} failed: {outcome.message}",
                             "read the step's message above; the previous state was left in place")
        return outcome

    def check(self, name: str, func: Callable[..., Outcome], *args: Any, **kwargs: Any) -> Outcome:
        """Run one step and record its outcome, failed or not, and go on: for checklists,
        whose every item is worth knowing (a later step decides whether the run fails)."""
        start = _dt.datetime.now()
        print(f"▶ {name} …", flush=True)
        try:
            outcome = func(*args, **kwargs)
            if not isinstance(outcome, Outcome):
                raise TypeError(f"step {name!r} returned {type(outcome).__name__}, not Outcome")
        except KitError as exc:
            outcome = Outcome.failed(str(exc))
        except Exception as exc:  # a bug or an unexpected host state: still a failed step
            tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
            outcome = Outcome.failed(f"unexpected error: {tb}")
        seconds = round((_dt.datetime.now() - start).total_seconds(), 3)
        self.steps.append(Step(name, outcome.status, outcome.message, outcome.diff, seconds))
        print(f"  {outcome.status} ({seconds:.1f}s): {outcome.message.splitlines()[0] if outcome.message else ''}",
              flush=True)
        self.facts.update(outcome.facts)
        return outcome

    # -- reading ----------------------------------------------------------------
    @property
    def summary(self) -> dict[str, int]:
        counts = {s: 0 for s in STATUSES}
        for step in self.steps:
            counts[step.status] += 1
        return counts

    @property
    def status(self) -> str:
        summary = self.summary
        if summary["failed"]:
            return "failed"
        if summary["changed"]:
            return "changed"
        return "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "runbook": self.runbook,
            "profile": self.profile,
            "mode": self.mode,
            "status": self.status,
            "started": self.started,
            "finished": self.finished or utcnow(),
            "summary": self.summary,
            "steps": [asdict(s) for s in self.steps],
            "facts": self.facts,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Report":
        report = cls(data["runbook"], data["profile"], data["mode"], data["started"], data["finished"])
        report.steps = [Step(**s) for s in data["steps"]]
        report.facts = dict(data.get("facts", {}))
        return report

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def recap(self) -> str:
        """A plain-text recap table (Ansible's PLAY RECAP, one row per step)."""
        return render_recap(self, width=100)

    # -- emitting ---------------------------------------------------------------
    def finish(self, display: bool = True) -> "Report":
        """Stamp the end time and, inside a notebook, emit the report as a rich output
        that `invoke runbook` reads back from the executed notebook."""
        self.finished = utcnow()
        if display:
            try:
                from IPython.display import display as ipy_display
            except ImportError:  # pragma: no cover - IPython ships with ipykernel
                return self
            ipy_display({REPORT_MIME: self.to_dict(), "text/plain": self.recap()}, raw=True)
        return self


COLOURS = {"ok": "green", "changed": "yellow", "failed": "bold red", "skipped": "dim"}


def recap_table(report: Report, first_lines: bool = True):
    """The recap as a rich Table: one row per step, the summary as its caption."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{report.runbook} · {report.profile} · {report.mode} → {report.status}")
    for col in ("step", "status", "s", "message"):
        table.add_column(col, justify="right" if col == "s" else "left", overflow="fold")
    for step in report.steps:
        message = step.message.splitlines()[0] if first_lines and step.message else step.message
        table.add_row(escape(step.name), f"[{COLOURS[step.status]}]{step.status}[/]", f"{step.seconds:.1f}",
                      escape(message))  # messages quote paths and output: "[/tmp/x]" is not markup
    s = report.summary
    table.caption = f"ok={s['ok']} changed={s['changed']} failed={s['failed']} skipped={s['skipped']}"
    return table


def render_recap(report: Report, width: int = 100) -> str:
    """The recap as plain text, with every diff (for notebooks and logs)."""
    from io import StringIO

    from rich.console import Console

    buf = StringIO()
    Console(file=buf, width=width, force_terminal=False, color_system=None).print(recap_table(report))
    diffs = "".join(f"\n--- diff: {step.name}\n{step.diff}" for step in report.steps if step.diff)
    return buf.getvalue() + diffs


def print_recap(report: Report) -> None:
    """Print the recap in colour to the terminal, with full messages and every diff."""
    from rich.console import Console

    console = Console()
    console.print(recap_table(report, first_lines=False))
    for step in report.steps:
        if step.diff:
            console.rule(f"diff: {step.name}")
            console.print(step.diff, markup=False, highlight=False, soft_wrap=True)
