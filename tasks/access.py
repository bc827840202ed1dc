"""`invoke certs.*` (a team's client bundle, revocation, the list) and `invoke report.audit`
(who built what through the front door), for an installation on a rehearsal host
(--host) or on this machine (--state-dir, default /)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from invoke import task

from runbook_checks.core.errors import AccessError
from runbook_checks.core.units import parse_duration
from runbook_checks.production import access, auditlog, ca

from ._kit import console, refusals

WHERE = {"host": "the rehearsal host whose installation it is (invoke host.up NAME)",
         "state_dir": "an installation on this machine rendered under this directory (default /)",
         "trust_level": "the builder of this trust level, when the host has one per level (default: its only one)"}


@task(positional=["team"], help={
    "team": "the team's name: lowercase letters, digits and - (the certificate's CN, the audit log's team)",
    "out": "an empty directory for ca.pem, cert.pem and key.pem (the key 0600; the kit keeps no copy)",
    "days": "how long the certificate is valid (1 to 825 days, default 90)", **WHERE})
@refusals
def issue(c, team, out, host="", state_dir="", days="90", trust_level=""):
    """Issue a team's client certificate and write its bundle to --out, with the command
    lines that build through the front door."""
    layout, _ = access.installation(host, state_dir, trust_level)
    if not str(days).isdigit():
        raise AccessError(f"--days {days!r} is not a number of days", "give 1 to 825")
    target = ca.check_bundle_dir(Path(out).expanduser().absolute())
    where = access.remote(layout)  # refused here if there is no front door yet
    bundle = ca.issue(layout, team, int(days))
    if access.policy_path(layout).exists():  # the profile's source policy, sent by the bundle's command lines
        bundle["source-policy.json"] = access.policy_path(layout).read_bytes()
    ca.write_bundle(bundle, target)
    lines = access.bundle_command(target, where["remote_address"], where["servername"])
    console().print(f"bundle for {team}: {target} (key.pem 0600)\n"
                    f"front door: {where['remote_address']}\n\nbuildctl:\n  {lines['buildctl']}\n\n"
                    f"buildx:\n  {lines['buildx']}", soft_wrap=True, highlight=False)


@task(positional=["team"], help={"team": "the team whose certificates to revoke", **WHERE})
@refusals
def revoke(c, team, host="", state_dir="", trust_level=""):
    """Revoke every certificate of a team; the front door reloads its CRL (other teams'
    builds go on)."""
    layout, h = access.installation(host, state_dir, trust_level)
    rows = ca.revoke(layout, team)
    console().print(f"revoked {len(rows)} certificate(s) of {team}: {', '.join(r.serial for r in rows)}",
                    highlight=False)
    console().print(access.reload_after_revocation(layout, h), highlight=False)


@task(name="list", help={**WHERE, "json": "print JSON"})
@refusals
def list_(c, host="", state_dir="", json_=False, trust_level=""):
    """The certificates the installation's CA issued: serial, team, kind, expiry, revoked."""
    from rich.table import Table

    layout, _ = access.installation(host, state_dir, trust_level)
    rows = ca.issued(layout)
    if json_:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
        return
    table = Table(title=f"certificates issued by the CA in {ca.access_dir(layout)}", title_justify="left")
    for col in ("serial", "team", "kind", "expires", "revoked"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.serial[:16], r.team, r.kind, r.not_after[:10], r.revoked[:19] or "-")
    console().print(table)


@task(help={**WHERE, "since": "only entries this recent: 30m, 2h, 1d (default: all)",
            "json": "print the entries as a JSON list (the summary per team goes to stderr)"})
@refusals
def audit(c, host="", state_dir="", since="", json_=False, trust_level=""):
    """The front door's audit log: every connection and gRPC call, allowed or refused, and
    a summary per team. A build call carries its ref from BuildKit's history."""
    from rich.console import Console
    from rich.table import Table

    layout, h = access.installation(host, state_dir, trust_level)
    start = time.time() - parse_duration(since) if since else 0.0
    path = access.audit_log(layout)
    if not auditlog.log_files(path):
        raise AccessError(f"there is no audit log at {path}", "apply the access runbook first")
    entries = auditlog.read(path, start)
    access.join_history(layout, h, entries)
    teams = auditlog.summary(entries)
    if json_:
        print(json.dumps(entries, indent=2))
    else:
        table = Table(title=f"audit log {path}", title_justify="left")
        for col in ("time", "team", "peer", "method", "status", "ms", "build"):
            table.add_column(col, overflow="fold")
        for e in entries:
            if e.get("tier") == "connection" and e.get("status") == "ok":
                continue  # the calls of an allowed connection say more
            table.add_row(e.get("time", "")[:23], e.get("team", "-"), e.get("peer", "-"), e.get("method", "-"),
                          e.get("status", ""), str(e.get("duration_ms", "")),
                          f"{e['ref']} {e['build']}" if e.get("ref") else "")
        console().print(table)
    out = Console(file=sys.stderr) if json_ else console()
    summary = Table(title="per team", title_justify="left")
    for col in ("team", "calls", "builds", "failed", "refused", "bytes in", "bytes out", "last seen"):
        summary.add_column(col)
    for team, row in sorted(teams.items()):
        summary.add_row(team, *(str(row[k]) for k in ("calls", "builds", "failed", "refused", "bytes_in",
                                                       "bytes_out")), row["last"][:19])
    out.print(summary)


@task(help={**WHERE, "since": "the period: 7d, 30d, 24h (default 30d)",
            "json": "print the report as JSON (the tables go to stderr)",
            "publish": "also copy the plot and the tables into docs/operations/adoption.md"})
@refusals
def adoption(c, host="", state_dir="", since="30d", json_=False, publish=False, trust_level=""):
    """Adoption after go-live: per team builds, success rate, median and p95 seconds,
    cache hit ratio, new teams; builds per day; the slowest and most failing Dockerfiles.
    From the audit log joined with each builder's build history.

    Writes runs/reports/adoption-<stamp>.json and .png."""
    from rich.console import Console

    from runbook_checks.core import files
    from runbook_checks.core.paths import PROJECT_ROOT, runs_dir
    from runbook_checks.reports import adoption as adopt

    layout, h = access.installation(host, state_dir, trust_level)
    path = access.audit_log(layout)
    if not auditlog.log_files(path):
        raise AccessError(f"there is no audit log at {path}", "apply the access runbook first")
    start = time.time() - parse_duration(since)
    every, entries = auditlog.read(path), auditlog.read(path, start)
    records = access.join_history(layout, h, entries)
    result = adopt.report(adopt.builds(entries, records), start, adopt.first_seen(every))
    stamp = files.stamp()
    out_path = runs_dir() / "reports" / f"adoption-{stamp}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    files.atomic_write(out_path, json.dumps({"stamp": stamp, "host": h.name if h else "", **result}, indent=2) + "\n")
    caption = f"{h.name if h else 'this machine'}, since {result['since']} (report {stamp})"
    out = Console(file=sys.stderr) if json_ else console()
    out.print(adopt.markdown(result), highlight=False, soft_wrap=True)
    if result["teams"]:
        png = adopt.plot(result, out_path.with_suffix(".png"), caption)
        out.print(f"report: {out_path}\nplot:   {png}", soft_wrap=True)
        if publish:
            adopt.publish(result, png, PROJECT_ROOT / "docs/operations/adoption.md", caption)
            out.print("published to docs/operations/adoption.md")
    else:
        out.print(f"no builds since {result['since']}; report: {out_path}", soft_wrap=True)
    if json_:
        print(json.dumps(result, indent=2))


@task(help={**WHERE, "profile": "the profile the builder was set up with: its values are the current ones"
                                " (default production)", "json": "print the proposals and the evidence as JSON"})
@refusals
def tuning(c, host="", state_dir="", profile="production", json_=False, trust_level=""):
    """What the builder measured about itself (memory limit hits, CPU throttling, queue
    waits, cache hits, cache size and disk), and the parameter changes that evidence asks
    for: each a --set to pass to its runbook in check mode first."""
    from rich.table import Table

    from runbook_checks.core.paths import PROJECT_ROOT
    from runbook_checks.production import hosts
    from runbook_checks.reports import tuning as advisor

    layout, h = access.installation(host, state_dir, trust_level)
    if h is not None:
        argv = [sys.executable, "-m", "runbook_checks.reports.tuning", *([trust_level] if trust_level else [])]
        evidence = json.loads(hosts.run_in(h, argv, cwd=str(PROJECT_ROOT), timeout=300).stdout.strip()
                              .splitlines()[-1])
    else:
        evidence = advisor.gather(layout)
    proposals, notes = advisor.advise(evidence, advisor.current(profile, trust_level))
    if json_:
        print(json.dumps(advisor.as_json(proposals, notes, evidence), indent=2))
        return
    table = Table(title=f"tuning {layout.name}{' on ' + h.name if h else ''}", title_justify="left")
    for col in ("parameter", "now", "proposed", "try it (check mode)", "evidence"):
        table.add_column(col, overflow="fold")
    where = f" --host {h.name}" if h else ""
    for p in proposals:
        level = f" --set trust_level={trust_level}" if trust_level else ""
        table.add_row(p.parameter, p.current, p.proposed,
                      f"invoke runbook {p.runbook} --profile {profile}{level} --set {p.set}{where}", p.evidence)
    console().print(table if proposals else "nothing to change: the evidence asks for no parameter change",
                    highlight=False)
    for note in notes:
        console().print(f"note: {note}", highlight=False)
