"""`invoke maint.*`: the maintenance runbooks as tasks (what production's timers run)."""

from __future__ import annotations

from invoke import Exit, task

from runbook_checks.core import profiles, runner

from ._kit import console, refusals, run_and_show, sets_of, show

PROFILE = f"{' | '.join(profiles.PROFILES)} or a site profile's path (default: lab)"


@task(iterable=["set_"], help={
    "profile": PROFILE,
    "set_": "override a parameter: --set key=value (for example docker_config=/home/ci/.docker)",
})
@refusals
def plugins_audit(c, profile="lab", set_=None):
    """Audit the Docker CLI plugins: the plugins-audit runbook, in check mode.

    Prints the recap and where the inventory (JSON and Markdown) went. Exits 1 when the
    audit has findings (invalid, insecure, a required plugin missing) or docker disagrees."""
    result = runner.run("plugins-audit", profile, "check", sets_of(set_))
    show(result)
    facts = result.report.facts
    if facts.get("inventory_json"):
        console().print(f"inventory: {facts['inventory_json']}\n           {facts['inventory_markdown']}",
                        soft_wrap=True)
    if result.report.status == "failed":
        raise Exit("the plugin audit failed: read its last step above", code=1)


@task(iterable=["set_"], help={
    "profile": PROFILE + "; production is what buildkit-prune.timer runs",
    "mode": "check (default) lists what would go; apply frees the space",
    "set_": "override a parameter: --set prune_keep_storage=5GB",
})
@refusals
def prune(c, profile="lab", mode="check", set_=None):
    """Prune the daemon's cache and expire remote cache: the prune runbook.

    Check mode (the default) deletes nothing and says what apply would free. Prints each
    level's reclaimed bytes and a total; exits 1 when a step failed."""
    result = runner.run("prune", profile, mode, sets_of(set_))
    show(result)
    facts = result.report.facts
    total = sum(int(facts.get(k) or 0) for k in ("reclaimed_bytes", "registry_reclaimed_bytes", "s3_reclaimed_bytes"))
    verb = "reclaimed" if mode == "apply" else "would reclaim (daemon cache, eligible)"
    shown = total if mode == "apply" else int(facts.get("eligible_bytes") or 0)
    console().print(f"{verb}: {shown / 1e6:.1f} MB")
    if result.report.status == "failed":
        raise Exit("the prune failed: read its last step above", code=1)


HOST = "a rehearsal host (invoke host.up NAME) it runs inside; default: this machine"
SET = "override a parameter: --set trust_level=b2 (the builder of that trust level)"


def _inside(host: str, argv: list[str]) -> None:
    """This task again, inside a rehearsal host (its output passes through; its exit code
    is this one's)."""
    from runbook_checks.production import hosts, rehearsal

    proc = rehearsal.run_invoke(hosts.load(host), argv)
    if proc.returncode:
        raise Exit(code=proc.returncode)


def _options(profile: str, set_) -> list[str]:
    return ["--profile", profile, *(a for s in sets_of(set_) for a in ("--set", s))]


def _builder(profile: str, set_):
    """(the parameters the configure runbook would run with, defaults filled in; the
    builder's layout)."""
    from runbook_checks.core import layout, params

    values = profiles.resolve("configure", profile, "check", sets_of(set_))
    return params.validate(values), layout.for_params(values)


@task(iterable=["set_"], help={"host": HOST, "profile": "production, or a site profile's path that extends it"
                               " (default: production)", "set_": SET})
@refusals
def certs(c, host="", profile="production", set_=None):
    """Renew the front door's server certificate when it expires within 30 days: the
    access runbook in apply mode, run only then (it changes nothing else that is in
    order, and the front door reloads without dropping builds). CertificateExpiresSoon
    fires 14 days before any expiry when this has not run."""
    from runbook_checks.production import ca

    if host:
        return _inside(host, ["maint.certs", *_options(profile, set_)])
    values = profiles.resolve("access", profile, "apply", sets_of(set_))
    from runbook_checks.core import layout

    due, why = ca.renewal_due(layout.for_params(values))
    console().print(why, highlight=False)
    if due:
        run_and_show("access", profile, "apply", sets_of(set_))


@task(iterable=["set_"], help={"host": HOST, "profile": "production, or the site profile the builder was configured"
                               " with (default: production)", "set_": SET})
@refusals
def drift(c, host="", profile="production", set_=None):
    """Config drift: the configure runbook in check mode. Exits 1 when it would change
    anything (someone edited buildkitd.toml or a unit by hand, or the profile moved on),
    naming each change; the drift job runs this hourly and MaintenanceJobFailed fires."""
    if host:
        return _inside(host, ["maint.drift", *_options(profile, set_)])
    result = runner.run("configure", profile, "check", sets_of(set_))
    show(result)
    steps = [s for s in result.report.steps if s.status in ("changed", "failed")]
    if steps:
        raise Exit("drift: " + "; ".join(f"{s.name}: {s.message}" for s in steps)
                   + " (invoke runbook configure --mode apply puts the profile back, or put the change in the profile)",
                   code=1)
    console().print("no drift: the builder is as configure makes it", highlight=False)


@task(iterable=["set_"], help={"host": HOST, "profile": "production or a site profile's path (default: production)",
                               "set_": SET})
@refusals
def backup(c, host="", profile="production", set_=None):
    """Back up the builder's configuration directory (buildkitd.toml, the front door, the
    CA and what it issued) and its units into BACKUPS/state/NAME-STAMP.tar.gz (0600),
    keeping the newest backup_keep."""
    from runbook_checks.daemon import schedule

    if host:
        return _inside(host, ["maint.backup", *_options(profile, set_)])
    values, lay = _builder(profile, set_)
    console().print(schedule.backup(lay, values.backup_keep).message, highlight=False, soft_wrap=True)


@task(iterable=["set_"], help={"host": HOST, "profile": "production or a site profile's path (default: production)",
                               "set_": SET})
@refusals
def version(c, host="", profile="production", set_=None):
    """Is a newer BuildKit out than the one installed? The newest release the Go module
    proxy lists ($GOPROXY) against `buildkitd --version`; prints the upgrade runbook's
    command when there is one (exit 0 either way; 1 when the check cannot be made)."""
    from runbook_checks.daemon import schedule

    if host:
        return _inside(host, ["maint.version", *_options(profile, set_)])
    _, lay = _builder(profile, set_)
    console().print(schedule.version_check(lay).message, highlight=False, soft_wrap=True)


@task(iterable=["set_"], help={"host": HOST, "profile": "production or a site profile's path (default: production)",
                               "set_": SET, "json": "print JSON"})
@refusals
def schedule(c, host="", profile="production", set_=None, json_=False):
    """What runs when: each maintenance job of the builder, its time (maintenance_schedule),
    its timer's next run, and how its last run ended."""
    import json

    from rich.table import Table

    from runbook_checks.daemon import schedule as sched
    from runbook_checks.daemon.systemd import choose_manager

    if host:
        return _inside(host, ["maint.schedule", *_options(profile, set_), *(["--json"] if json_ else [])])
    values, lay = _builder(profile, set_)
    rows = sched.status(lay, values.maintenance_schedule, values.frontdoor_port, choose_manager(values.service_manager))
    if json_:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"maintenance of {lay.name}", title_justify="left")
    for col in ("job", "when", "next run", "last run", "result", "what"):
        table.add_column(col)
    for r in rows:
        result = {None: "never ran", True: f"ok ({r['seconds']}s)", False: f"FAILED ({r['seconds']}s)"}[r["ok"]]
        table.add_row(r["job"], r["when"], r["next"] or r["timer"] or "-", r["last"] or "-", result,
                      r["message"] if r["ok"] is False else r["what"])
    console().print(table)
