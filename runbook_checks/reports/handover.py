"""Handover (seed §9.3): every item of the checklist is a check against the real
installation (the runbooks converge in check mode, the builder builds, on-call gets the
alerts, certificates and backups are sound, the routine work is recent, the docs are
built), and the handover report records each item's evidence with a sha256 of its
content, linking the documents no code can check (RACI, support, transition plan)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import socket
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from ..core import files, runner
from ..core.errors import KitError
from ..core.layout import Layout
from ..core.paths import PROJECT_ROOT, runs_dir
from ..core.results import Outcome, Report
from ..monitoring import alertmanager
from ..production import ca

DOCUMENTS = {"RACI": "docs/handover/raci.md", "support process": "docs/handover/support.md",
             "transition plan": "docs/handover/transition.md"}
ON_CALL_ALERT = {"alertname": "BuildkitdDown", "severity": "critical"}


def _fails(problem: str, fix: str) -> None:
    raise KitError(problem, fix)


# --------------------------------------------------------------------------------------
# the items
# --------------------------------------------------------------------------------------
def what_to_converge(params) -> tuple[list[str], str, list[str]]:
    """(runbooks, profile, --set values) the convergence item runs in check mode: install
    and configure, and the monitoring runbooks where their services run; against the site
    profile when one is named, on the same builder."""
    names = ["install", "configure"]
    names += [name for name, port in (("monitoring", params.prometheus_port), ("alerting", params.alertmanager_port))
              if port]
    sets = [f"{key}={getattr(params, key)}" for key in ("state_dir", "trust_level") if getattr(params, key)]
    return names, params.site_profile or params.profile, sets


def runbooks_converge(names: list[str], profile: str, sets: list[str]) -> Outcome:
    """Each runbook in check mode changes nothing (changed=0) and fails nothing: the
    installation is what its profile says."""
    drift, lines = [], []
    for name in names:
        result = runner.run(name, profile, "check", sets, progress=False)
        r = result.report
        changed = [s.name for s in r.steps if s.status in ("changed", "failed")]
        lines.append(f"{name}: {r.status} ({r.summary['changed']} changed, {r.summary['failed']} failed)"
                     f" {result.notebook.name}")
        if changed:
            drift.append(f"{name} ({', '.join(changed)})")
    if drift:
        _fails(f"in check mode these runbooks would still change something: {'; '.join(drift)}",
               "apply them (or put the change that was made by hand into the profile), then hand over")
    return Outcome("ok", f"{len(names)} runbooks converge: " + ", ".join(names), "\n".join(lines))


def _on_call_receivers(layout: Layout, port: int) -> tuple[list[str], dict]:
    """The receivers of a critical alert and their configs, from alertmanager.yml (the
    running Alertmanager shows its config with the URLs redacted; that it loaded this file
    is the convergence item's: the alerting runbook's check reports a pending reload)."""
    if not port:
        _fails("no Alertmanager on this builder (alertmanager_port is 0): no alert reaches anyone",
               "apply the monitoring and alerting runbooks with alertmanager_port set")
    alertmanager.am_api(port, "/-/ready")  # it answers, or a clear error naming alertmanager_port
    path = alertmanager.config_path(layout)
    if not path.is_file():
        _fails(f"no {path}: Alertmanager routes nothing the kit configured", "apply the alerting runbook")
    text = path.read_text()
    names = alertmanager.routing_tree(text, ON_CALL_ALERT)
    config = yaml.safe_load(text)
    return names, {r["name"]: r for r in config.get("receivers", []) if r["name"] in names}


def _endpoints(receiver: dict) -> list[tuple[str, str]]:
    """(kind, URL or HOST:PORT) of each channel of a receiver."""
    found = [("webhook", c["url"]) for c in receiver.get("webhook_configs", [])]
    found += [("chat", c.get("api_url", "")) for c in receiver.get("slack_configs", [])]
    found += [("email", c.get("smarthost", "")) for c in receiver.get("email_configs", [])]
    return found


def on_call_route(layout: Layout, port: int) -> Outcome:
    """Alertmanager routes a critical alert to a receiver that has at least one channel."""
    names, receivers = _on_call_receivers(layout, port)
    channels = [kind for r in receivers.values() for kind, _ in _endpoints(r)]
    if not channels:
        _fails(f"a critical alert goes to {', '.join(names) or 'no receiver'}, which has no channel: nobody is paged",
               "set webhook_url (or email_to and smtp_smarthost) in the profile and apply the alerting runbook")
    return Outcome.ok(f"a critical alert ({ON_CALL_ALERT['alertname']}) goes to {', '.join(names)}: "
                      + ", ".join(sorted(set(channels))), on_call_receivers=names)


def _where(address: str) -> str:
    """Where a channel sends, without its path (a chat webhook's path is its secret)."""
    parts = urlsplit(address if "//" in address else f"//{address}")
    return f"{parts.scheme + '://' if parts.scheme else ''}{parts.hostname}:{parts.port or ''}".rstrip(":")


def _answers(address: str, timeout: float = 3) -> bool:
    parts = urlsplit(address if "//" in address else f"//{address}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def on_call_endpoints(layout: Layout, port: int) -> Outcome:
    """Every channel of the on-call receivers accepts connections (a TCP connect: no test
    page is sent to a real pager)."""
    _, receivers = _on_call_receivers(layout, port)
    ends = [(kind, where) for r in receivers.values() for kind, where in _endpoints(r)]
    dead = [f"{kind} {_where(where)}" for kind, where in ends if not _answers(where)]
    if dead:
        _fails(f"on-call channels that do not answer: {', '.join(dead)}",
               "fix the URL in the profile (webhook_url, chat_webhook_url, smtp_smarthost) or bring the receiver"
               " up, then apply the alerting runbook")
    return Outcome.ok(f"{len(ends)} on-call channel(s) answer: " + ", ".join(f"{k} {_where(w)}" for k, w in ends))


def certificates(layout: Layout, min_days: int) -> Outcome:
    """No certificate in use (CA, front door, teams') expires within `min_days`."""
    found = ca.expiries(layout)
    if not found:
        return Outcome.skipped("no front door on this builder: no certificates to hand over")
    now = _dt.datetime.now(_dt.timezone.utc).timestamp()
    days = {name: (when - now) / 86400 for name, when in found.items()}
    soon = {name: d for name, d in days.items() if d < min_days}
    if soon:
        _fails("certificates expire within " + f"{min_days} days: "
               + ", ".join(f"{n} in {d:.0f} days" for n, d in sorted(soon.items())),
               "renew them (invoke certs.issue TEAM; the access runbook renews the server certificate) first")
    return Outcome.ok(f"{len(days)} certificate(s), the first to expire in {min(days.values()):.0f} days")


def config_backups(layout: Layout) -> Outcome:
    """Every kept buildkitd.toml backup is a whole TOML file naming the same root: each
    could be put back (operations/rollback)."""
    kept = sorted(layout.backup_dir.glob(f"{layout.config_path.name}.*"))
    bad = []
    for path in kept:
        try:
            if tomllib.loads(path.read_text()).get("root") != str(layout.root_dir):
                bad.append(f"{path.name} (another root)")
        except (OSError, tomllib.TOMLDecodeError) as exc:
            bad.append(f"{path.name} ({exc})")
    if bad:
        _fails(f"backups that could not be restored: {', '.join(bad)}",
               f"move them out of {layout.backup_dir} (keep them for the record) so a rollback never picks them")
    if not kept:
        return Outcome.ok(f"no buildkitd.toml backups yet in {layout.backup_dir} (nothing was ever replaced)")
    return Outcome.ok(f"{len(kept)} buildkitd.toml backup(s) in {layout.backup_dir}, each restorable")


def recent_run(name: str, layout: Layout, max_age: int, modes: tuple[str, ...] = ("check", "apply")) -> Outcome:
    """The newest run of `name` on this builder (its state directory) did not fail and is
    younger than `max_age` seconds."""
    newest = next(((path, report) for path, report in runner.records(name)
                   if report.get("mode") in modes and runner.state_dir_of(report) == layout.state_dir), None)
    how = f"invoke runbook {name}" + (" --mode apply" if modes == ("apply",) else "")
    if newest is None:
        _fails(f"no {name} run on this builder under {runs_dir() / name}", f"run it ({how}), then hand over")
    path, report = newest
    finished = _dt.datetime.strptime(report["finished"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc)
    age = (_dt.datetime.now(_dt.timezone.utc) - finished).total_seconds()
    if report["status"] == "failed" or age > max_age:
        why = "failed" if report["status"] == "failed" else \
            f"is {age / 86400:.1f} days old (more than {max_age / 86400:.0f})"
        _fails(f"the last {name} run ({path.name}) {why}", f"run it ({how}), then hand over")
    return Outcome.ok(f"the last {name} run, {report['mode']}, {report['status']}, {age / 3600:.1f} h ago"
                      f" ({path.name})")


def docs_built(site: Path) -> Outcome:
    """The site is built, and no page source is newer than it."""
    index = site / "index.html"
    if not index.is_file():
        _fails(f"no built site at {site}", "build it: invoke docs.build")
    sources = [p for p in (PROJECT_ROOT / "docs").rglob("*.md")] + [PROJECT_ROOT / "mkdocs.yml"]
    newer = [str(p.relative_to(PROJECT_ROOT)) for p in sources if p.stat().st_mtime > index.stat().st_mtime]
    if newer:
        _fails(f"the site at {site} is older than {len(newer)} page source(s): {', '.join(newer[:3])}",
               "build it again: invoke docs.build")
    return Outcome.ok(f"the site at {site} is built from the current pages")


# --------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------
def handover_report(report: Report, layout: Layout) -> Outcome:
    """The handover report (Markdown): each item with its status and evidence, the links
    to the documents, and the sha256 of that content; failed when any item failed, naming
    each one."""
    items = list(report.steps)
    failed = [s.name for s in items if s.status == "failed"]
    lines = [f"# Handover: {layout.address}", "", f"- builder: `{layout.state_dir}`",
             f"- checked: {report.started}", f"- profile: {report.profile}", "",
             "| item | status | evidence |", "|---|---|---|"]
    lines += [f"| {s.name} | {s.status} | {(s.message or '').splitlines()[0] if s.message else ''} |" for s in items]
    lines += ["", "## What no check can prove", ""]
    lines += [f"- [{title}]({PROJECT_ROOT / path}): read and agreed by both sides" for title, path in DOCUMENTS.items()]
    content = "\n".join(lines) + "\n"
    digest = hashlib.sha256(content.encode()).hexdigest()
    path = runs_dir() / "handover" / f"handover-{files.stamp()}.md"
    files.atomic_write(path, content + f"\nsha256 of the content above: `{digest}`\n")
    facts = {"handover_report": str(path), "handover_sha256": digest, "handover_failed": failed}
    if failed:
        return Outcome("failed", f"not ready to hand over: {len(failed)} item(s) failed: {', '.join(failed)}"
                       f" (report {path}, sha256 {digest[:16]}…)\n  fix: each item's message says what to do",
                       facts=facts)
    return Outcome.ok(f"ready to hand over: {len(items)} items hold; report {path} (sha256 {digest[:16]}…)", **facts)
