"""buildkit-ops tasks: `invoke --list`. One explicit Collection; logic lives in runbook_checks."""

from __future__ import annotations

import sys
from pathlib import Path

from invoke import Collection, Exit, task

from runbook_checks.core import layout, profiles, runner
from runbook_checks.core.errors import KitError
from runbook_checks.core.paths import PROJECT_ROOT, runs_dir
from runbook_checks.core.results import print_recap
from runbook_checks.daemon import stack
from runbook_checks.plugins import quarantine

RUNBOOKS = profiles.list_runbooks()


def _console():
    from rich.console import Console

    return Console()


def _print_list() -> None:
    from rich.table import Table

    for name, declared in runner.describe().items():
        table = Table(title=f"runbook {name}", title_justify="left")
        for col in ("parameter", "type", "default", "help"):
            table.add_column(col, overflow="fold")
        for pname, p in declared.items():
            table.add_row(pname, p["type"], str(p["default"]), p["help"])
        _console().print(table)


def _show(result: runner.RunResult) -> None:
    print_recap(result.report)
    _console().print(f"record: {result.notebook}\nreport: {result.report_path}")


LIST_WORDS = ("--list", "-l", "list")


@task(iterable=["set_"], positional=["name"], help={
    "name": f"the runbook to run ({', '.join(RUNBOOKS)}), or --list to list them with their parameters",
    "profile": " | ".join(profiles.PROFILES),
    "mode": "check (change nothing, show the diff) | apply",
    "set_": "override a parameter: --set key=value (repeatable)",
})
def runbook(c, name, profile="lab", mode="check", set_=None):
    """Run a runbook with papermill; write runs/NAME/<stamp>.{ipynb,json}; print the recap.

    `invoke runbook --list` lists the runbooks and their parameters (read from each
    notebook's parameters cell)."""
    if name in LIST_WORDS:
        return _print_list()
    if name in ("-h", "--help"):  # a required positional swallows --help: give it back
        return c.run(f"{sys.executable} -m invoke --help runbook", pty=False)
    if mode not in ("check", "apply"):
        raise Exit(f"--mode {mode!r}: use check or apply", code=2)
    try:
        result = runner.run(name, profile, mode, tuple(set_ or ()))
    except KitError as exc:
        raise Exit(f"error: {exc}", code=2)
    _show(result)
    if result.report.status == "failed":
        raise Exit(code=1)


@task(iterable=["set_"], help={"set_": "override a lab parameter for every runbook that has it: --set key=value"})
def up(c, set_=None):
    """Bring up the lab: install, configure and verify a real buildkitd; print where it is."""
    try:
        results = stack.up(tuple(set_ or ()), on_report=_show)
    except KitError as exc:
        raise Exit(f"error: {exc}", code=2)
    _status_table()
    if results[-1].report.status == "failed":
        raise Exit("the lab is not up: see the failed step above", code=1)
    st = stack.status()
    _console().print(f"\n[bold green]lab is up[/]: try\n  {st.state_dir}/bin/buildctl --addr {st.address} debug workers",
                     soft_wrap=True)


def _status_table():
    from rich.table import Table

    table = Table(title="lab stack", show_header=False)
    for key, value in stack.status().rows():
        table.add_row(key, value)
    _console().print(table)


@task
def status(c):
    """Show the lab daemon's state, address, metrics URL, log path and latest reports."""
    _status_table()


@task(help={"purge": "also remove the lab state directory (binaries, config, cache, logs)"})
def down(c, purge=False):
    """Stop the lab daemon (and its supervisord); --purge removes the lab state too."""
    try:
        lines = stack.down(purge)
    except KitError as exc:
        raise Exit(f"error: {exc}", code=2)
    for line in lines:
        print(line)


@task(help={"strict": "fail on warnings (default true)"})
def docs_build(c, strict=True):
    """Build the MkDocs Material site into site/ (notebooks rendered, never executed)."""
    c.run(f"{sys.executable} -m mkdocs build {'--strict' if strict else ''}", pty=False)


@task
def docs_serve(c):
    """Serve the site on 127.0.0.1:8000 with live reload."""
    c.run(f"{sys.executable} -m mkdocs serve -a 127.0.0.1:8000", pty=False)


@task(iterable=["set_"], help={
    "set_": "override a parameter: --set key=value (for example docker_config=/home/ci/.docker)",
})
def plugins_audit(c, set_=None):
    """Audit the Docker CLI plugins: the plugins-audit runbook, lab profile, check mode.

    Prints the recap and where the inventory (JSON and Markdown) went. Exits 1 when the
    audit has findings (invalid, insecure, a required plugin missing) or docker disagrees."""
    try:
        result = runner.run("plugins-audit", "lab", "check", tuple(set_ or ()))
    except KitError as exc:
        raise Exit(f"error: {exc}", code=2)
    _show(result)
    facts = result.report.facts
    if facts.get("inventory_json"):
        _console().print(f"inventory: {facts['inventory_json']}\n           {facts['inventory_markdown']}",
                         soft_wrap=True)
    if result.report.status == "failed":
        raise Exit("the plugin audit failed: read its last step above", code=1)


@task(iterable=["set_"], help={
    "profile": "lab (default) or production (what buildkit-prune.timer runs)",
    "mode": "apply (default) frees space; check lists what would go",
    "set_": "override a parameter: --set prune_keep_storage=5GB",
})
def prune(c, profile="lab", mode="apply", set_=None):
    """Prune the daemon's cache and expire remote cache: the prune runbook.

    Prints each level's reclaimed bytes and a total; exits 1 when a step failed."""
    try:
        result = runner.run("prune", profile, mode, tuple(set_ or ()))
    except KitError as exc:
        raise Exit(f"error: {exc}", code=2)
    _show(result)
    facts = result.report.facts
    total = sum(int(facts.get(k) or 0) for k in ("reclaimed_bytes", "registry_reclaimed_bytes", "s3_reclaimed_bytes"))
    verb = "reclaimed" if mode == "apply" else "would reclaim (daemon cache, eligible)"
    shown = total if mode == "apply" else int(facts.get("eligible_bytes") or 0)
    _console().print(f"{verb}: {shown / 1e6:.1f} MB")
    if result.report.status == "failed":
        raise Exit("the prune failed: read its last step above", code=1)


def _lab_quarantine_dir() -> Path:
    values = profiles.load_profile("lab")
    lab = layout.for_params({"profile": "lab", "state_dir": values.get("state_dir") or ""})
    return quarantine.resolve_dir(values.get("quarantine_dir") or "", lab)


@task(positional=["name"], help={
    "name": "the plugin to put back (for example buildx), --all for every quarantined plugin,"
            " or --list to show what the quarantine holds",
    "quarantine_dir": "the quarantine to restore from; default: the lab profile's quarantine_dir",
})
def plugins_restore(c, name, quarantine_dir=""):
    """Put quarantined Docker CLI plugins back, byte-identical, with their mode.

    As root, their owner too. A file that is in the original place again is never replaced:
    the restore of that plugin fails and says so."""
    if name in ("-h", "--help"):
        return c.run(f"{sys.executable} -m invoke --help plugins.restore", pty=False)
    directory = Path(quarantine_dir).expanduser() if quarantine_dir else _lab_quarantine_dir()
    try:
        if name in LIST_WORDS:
            lines = quarantine.listing(directory) or [f"the quarantine {directory} is empty"]
        elif name == "--all":
            lines = quarantine.restore(directory, everything=True)
        else:
            lines = quarantine.restore(directory, name)
    except KitError as exc:
        raise Exit(f"error: {exc}", code=2)
    for line in lines:
        print(line)


@task(help={
    "workloads": "comma-separated workloads under workloads/ (default: all: small, go-app, py-app)",
    "backends": "comma-separated cache backends for the fresh-builder scenarios (default: registry,s3,local)",
    "state_dir": "the lab's state directory (default: the lab profile's, .lab)",
    "registry_port": "its local registry's port (default: the lab profile's, 15000)",
    "s3_port": "its S3 server's port (default: the lab profile's, 19000)",
    "publish": "also copy the plot and the table into docs/guides/cache-benchmark.md",
    "keep_caches": "keep what the run exported (registry tags, S3 prefix, local directories)",
})
def bench_cache(c, workloads="", backends="registry,s3,local", state_dir="", registry_port=0, s3_port=0,
                publish=False, keep_caches=False):
    """Measure the build cache: cold, warm, edit, and fresh builders importing each backend.

    Needs the running lab (./kit up). Writes runs/bench/cache-<stamp>.json (a list of
    records) and cache-<stamp>.png; prints a recap. Exits 1 when a fresh builder importing
    the registry or S3 cache of a Debian workload is not 5x faster than cold, all CACHED."""
    from rich.console import Console

    from runbook_checks.cache import bench
    from runbook_checks.core import files

    values = profiles.load_profile("lab")
    lab = bench.Lab(layout.for_params({"profile": "lab", "state_dir": state_dir or values.get("state_dir") or ""}),
                    int(registry_port or values["registry_port"]), int(s3_port or values["s3_port"]))
    names = tuple(b.strip() for b in backends.split(",") if b.strip())
    stamp = files.stamp()
    # a pipe or a log gets the whole recap table, not one cut to 80 columns
    console = _console() if sys.stdout.isatty() else Console(width=120)
    try:
        unknown = [b for b in names if b not in bench.BACKENDS]
        if unknown:
            raise Exit(f"--backends: {', '.join(unknown)} is not a benchmark backend; use {', '.join(bench.BACKENDS)}",
                       code=2)
        chosen = bench.workloads([w.strip() for w in workloads.split(",") if w.strip()])
        records = bench.run(lab, chosen, stamp, names, say=lambda m: console.print(m, soft_wrap=True,
                                                                                     highlight=False),
                            keep_caches=keep_caches)
    except KitError as exc:
        raise Exit(f"error: {exc}", code=2)
    caption = f"run {stamp} on {bench.machine()}"
    path = bench.write_results(records, runs_dir(), stamp)
    png = bench.plot(records, path.with_suffix(".png"), caption)
    console.print(bench.recap_table(records, f"cache benchmark {stamp}"))
    console.print(f"results: {path}\nplot:    {png}", soft_wrap=True)
    if publish:
        bench.publish(records, png, PROJECT_ROOT / "docs/guides/cache-benchmark.md", caption)
        console.print("published to docs/guides/cache-benchmark.md")
    debian = tuple(w.name for w in chosen if any("debian" in b for b in w.bases))
    misses = bench.verdict(records, debian)
    if misses:
        raise Exit("below the goal (5x faster than cold, every step CACHED):\n  " + "\n  ".join(misses), code=1)


docs = Collection("docs")
docs.add_task(docs_build, "build")
docs.add_task(docs_serve, "serve")

maint = Collection("maint")
maint.add_task(plugins_audit, "plugins-audit")
maint.add_task(prune, "prune")

plugins = Collection("plugins")
plugins.add_task(plugins_restore, "restore")

bench = Collection("bench")
bench.add_task(bench_cache, "cache")

ns = Collection(runbook, up, down, status, docs, maint, plugins, bench)
