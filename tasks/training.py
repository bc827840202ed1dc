"""`invoke lab.*`: practice labs for trainees. Each lab runs in a sandbox builder of its
own under the labs home (never the operator's lab, never the host's Docker config); its
check inspects that real builder."""

from __future__ import annotations

from invoke import Exit, task

from ._kit import console, refusals

NAME = {"name": "a lab (invoke lab.list)"}


def _say(message: str) -> None:
    console().print(message, soft_wrap=True, highlight=False)


def _minutes(seconds) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d} min" if seconds is not None else "-"


@task(name="list")
def list_(c):
    """The labs in order: the seed area each practises, and this trainee's state in each."""
    from rich.table import Table

    from runbook_checks.labs import catalogue, engine

    labs = catalogue.all_labs()
    table = Table(title="practice labs (invoke lab.start NAME)", title_justify="left")
    for col in ("#", "lab", "seed area", "what you practise", "you"):
        table.add_column(col, overflow="fold")
    for lab, row in zip(labs, engine.progress_rows(labs)):
        table.add_row(f"{lab.number:02d}", lab.name, lab.area_name, lab.title, row["state"])
    console().print(table)


@task(help=NAME)
@refusals
def start(c, name):
    """Set the lab up: a sandbox builder of its own, then the lab's starting state (a real
    broken config, a real full cache...). Prints how to reach it and where the task is."""
    from runbook_checks.labs import catalogue, engine

    lab = catalogue.find(name)
    box, seconds = engine.start(lab, say=_say)
    _started(lab, box, seconds)


def _started(lab, box, seconds: float) -> None:
    _say(f"\n[bold green]lab {lab.name} is ready[/] ({seconds:.0f} s): {lab.title}")
    _say(f"  your shell:  source {box.home / 'env'}   (LAB, LAB_PROFILE, BUILDKIT_HOST, DOCKER_CONFIG, PATH)")
    _say(f"  the task:    {lab.folder / 'task.md'} (or the site: Training > Labs)")
    _say(f"  then:        invoke lab.check {lab.name}   ·   invoke lab.hint {lab.name}")


@task(help=NAME)
@refusals
def check(c, name):
    """Inspect the lab's real builder: exit 0 with what was proven, or exit 1 with what is
    still wrong and the first hint."""
    from runbook_checks.labs import catalogue, engine

    lab = catalogue.find(name)
    verdict = engine.check(lab)
    for finding in verdict.findings:
        _say(("[green]ok[/]    " if finding.ok else "[red]FAIL[/]  ") + finding.said)
    if not verdict.passed:
        _say(f"\nhint: {verdict.hint}\n(more: invoke lab.hint {lab.name} --level 2)")
        raise Exit(code=1)
    _say(f"\n[bold green]passed[/] in {verdict.seconds:.0f} s of checking; time on this lab: "
         f"{_minutes(verdict.progress.get('seconds'))}")


@task(help={**NAME, "level": "which hint: 1 is a nudge, the last one nearly the answer"})
@refusals
def hint(c, name, level=1):
    """One of the lab's hints."""
    from runbook_checks.labs import catalogue, engine

    lab = catalogue.find(name)
    _say(f"hint {int(level)} of {len(lab.hints)}: {engine.hint(lab, int(level))}")


@task(help=NAME)
@refusals
def solve(c, name):
    """Bring the lab's builder to the solved state, the way the solution in task.md does
    (progress then says the kit solved it)."""
    from runbook_checks.labs import catalogue, engine

    lab = catalogue.find(name)
    engine.solve(lab)
    _say(f"solved: invoke lab.check {lab.name} now passes")


@task(help=NAME)
@refusals
def reset(c, name):
    """Start the lab over: its sandbox removed and made again in the starting state."""
    from runbook_checks.labs import catalogue, engine

    lab = catalogue.find(name)
    box, seconds = engine.reset(lab, say=_say)
    _started(lab, box, seconds)


@task(help=NAME)
@refusals
def stop(c, name):
    """Take the lab's sandbox down and remove it; your progress stays."""
    from runbook_checks.labs import catalogue, engine

    lab = catalogue.find(name)
    _say(f"lab {lab.name}: " + ("stopped and removed" if engine.stop(lab) else "was not started"))


@task
def progress(c):
    """Which labs you have passed, with the time from first start to first pass, hints and checks."""
    from rich.table import Table

    from runbook_checks.core.paths import labs_home
    from runbook_checks.labs import catalogue, engine

    labs = catalogue.all_labs()
    rows = engine.progress_rows(labs)
    table = Table(title=f"your labs ({labs_home()})", title_justify="left")
    for col in ("lab", "seed area", "state", "time to pass", "hints", "checks"):
        table.add_column(col)
    for row in rows:
        table.add_row(row["lab"], row["area"], row["state"], _minutes(row["seconds"]), str(row["hints"]),
                      str(row["checks"]))
    console().print(table)
    passed = sum(1 for r in rows if r["state"].startswith("passed"))
    _say(f"{passed} of {len(rows)} labs passed")
