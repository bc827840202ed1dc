"""`invoke drill.*`: fault drills. Each drill brings up a sandbox builder of its own
(never the operator's lab), injects one real fault under load, and checks that the kit
detects it, recovers and loses nothing."""

from __future__ import annotations

from invoke import Exit, task

from ._kit import console, refusals


@task(name="list")
def list_(c):
    """The drills: the fault each injects, where it runs, and where operators report it."""
    from rich.table import Table

    from runbook_checks.drills.run import catalogue

    table = Table(title="fault drills (invoke drill.run NAME --times N [--host H])", title_justify="left")
    for col in ("drill", "runs on", "the fault", "reported upstream"):
        table.add_column(col, overflow="fold")
    for where, host in (("a sandbox here", ""), ("--host H", "H")):
        for fault in catalogue(host).values():
            table.add_row(fault.name, where, fault.summary, fault.issue or "-")
    console().print(table)


@task(help={"name": "a drill (invoke drill.list), several separated by commas, or all",
            "times": "trials per drill, one sandbox per drill (default 3; the recorded run on the site: 20)",
            "publish": "also put the recap into docs/operations/drills.md (the site's measured results)",
            "host": "run the production drills on this rehearsal host's builder (install, configure, access applied)"})
@refusals
def run(c, name, times=3, publish=False, host=""):
    """Run drills: a JSON record per trial under runs/drills/<stamp>/, a recap; exit 1
    when any trial was not detected, not recovered, or lost something."""
    from runbook_checks.core import files
    from runbook_checks.core.paths import runs_dir
    from runbook_checks.drills import run as drills

    faults = drills.chosen([n.strip() for n in name.split(",") if n.strip()], host)
    stamp = files.stamp()
    folder = runs_dir() / "drills" / stamp
    out = console()
    trials = drills.run(faults, int(times), folder, say=lambda m: out.print(m, soft_wrap=True, highlight=False),
                        host=host)
    out.print(drills.recap_table(trials, f"drills {stamp}"))
    out.print(f"records: {folder}", soft_wrap=True)
    if publish:
        from runbook_checks.cache.bench import machine
        from runbook_checks.core.paths import PROJECT_ROOT

        where = f" --host {host}" if host else ""
        drills.publish(trials, PROJECT_ROOT / "docs/operations/drills.md",
                       f"Run {stamp} on {machine()}: `invoke drill.run {name} --times {times}{where}`.",
                       "results-host" if host else "results")
        out.print("published to docs/operations/drills.md")
    failed = [t for t in trials if not t.passed]
    if failed:
        raise Exit(f"{len(failed)} of {len(trials)} trials failed: " + ", ".join(f"{t.drill} #{t.trial}" for t in failed),
                   code=1)
