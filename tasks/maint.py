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


@task(iterable=["set_"], help={
    "host": "the rehearsal host whose front door it is (default: the installation on this machine)",
    "profile": "production, or a site profile's path that extends it (default: production)",
    "set_": "override a parameter: --set frontdoor_names=[bk.example.org]",
})
@refusals
def certs(c, host="", profile="production", set_=None):
    """Renew the front door's server certificate when it expires within 30 days: the
    access runbook in apply mode (it changes nothing else that is in order, and the
    front door reloads without dropping builds). CertificateExpiresSoon fires 14 days
    before any expiry when this has not run."""
    run_and_show("access", profile, "apply", sets_of(set_), host)
