"""Alertmanager for the lab stack (Debian's `prometheus-alertmanager`, 127.0.0.1 only,
clustering off): its configuration, routes, HTTP API and the runbook's checks.

The generated alertmanager.yml routes by severity and team, repeats critical alerts
sooner, sends a warning that is still firing after `escalate_after` (the rules'
BuildkitAlertEscalated) to a second receiver, and lets a builder that is down inhibit
its other alerts. Channels: a webhook, email through an SMTP server, and a chat-style
webhook (Alertmanager's Slack payload, posted to any URL). In the lab all three land in
the notification sink (monitoring.sink: HTTP webhooks and an aiosmtpd SMTP server
writing one JSON line per notification), so a test alert can be followed to its delivery.

Like Prometheus' files, the configuration replaces the running one only after `amtool
check-config` passes on a scratch copy, and a refused reload puts the old file back."""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import AlertingError
from ..core.layout import Layout
from ..core.results import Outcome
from ..daemon.programs import http_text
from . import prometheus, sink
from .prometheus import replace_config, url
from .rules import ESCALATION_ALERT

ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")
AMTOOL = Path("/usr/bin/amtool")
TEST_ALERT = "KitTestAlert"
# what a down buildkitd mutes on its builder: the build team's alerts, which follow from it
# (no builds, no cache). Host alerts (team platform: DiskFilling, ExporterDown,
# InvalidCliPluginsPresent) may be its cause and stay loud.
INHIBITED_WHILE_DOWN = ['team="build"', 'alertname!="BuildkitdDown"']


# --------------------------------------------------------------------------------------
# where things go (the same shape as Prometheus': runbook_checks.monitoring)
# --------------------------------------------------------------------------------------
def config_path(layout: Layout) -> Path:
    return prometheus.config_path(layout, "alertmanager")


# --------------------------------------------------------------------------------------
# supervisord programs
# --------------------------------------------------------------------------------------
def program(layout: Layout, params: dict):
    """Alertmanager beside buildkitd: 127.0.0.1 only, no cluster listener (it would bind
    0.0.0.0:9094), data under <state_dir>/alertmanager."""
    port = params["alertmanager_port"]
    flags = (f"--web.listen-address=127.0.0.1:{port} --storage.path={prometheus.data_dir(layout, 'alertmanager')}"
             f" --cluster.listen-address= --web.external-url={url(port)}")
    return prometheus.served_program(layout, "alertmanager", ALERTMANAGER, port, flags, BOOTSTRAP)


class _NoAliases(yaml.SafeDumper):
    """Receivers share channel lists: write them out in full, not as YAML anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


BOOTSTRAP = ("# Managed by buildkit-ops (install/configure): Alertmanager starts on this file until the\n"
             "# alerting runbook writes alertmanager.yml beside it. It routes every alert nowhere.\n"
             "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n")


# --------------------------------------------------------------------------------------
# the configuration
# --------------------------------------------------------------------------------------
def channels(params: dict) -> dict[str, Any]:
    """Where each channel sends: explicit URLs win, else the lab's notification sink."""
    sink_port = params.get("notify_sink_port") or 0
    base = url(sink_port) if sink_port else ""
    smarthost = params.get("smtp_smarthost") or (f"127.0.0.1:{params['smtp_port']}" if params.get("smtp_port") else "")
    return {"webhook": params.get("webhook_url") or (f"{base}/hook/webhook" if base else ""),
            "escalation": params.get("escalation_webhook_url") or (f"{base}/hook/escalation" if base else ""),
            "chat": params.get("chat_webhook_url") or (f"{base}/chat" if base else ""),
            "smarthost": smarthost, "email_to": params.get("email_to") or ""}


def receivers(params: dict) -> dict[str, dict[str, Any]]:
    """The receivers the channels allow: webhook, email, chat, oncall (all of them) and
    escalation (the second line)."""
    ch = channels(params)
    hook = [{"url": ch["webhook"], "send_resolved": True}] if ch["webhook"] else []
    mail = ([{"to": ch["email_to"], "from": "alertmanager@buildkit-ops.localhost", "smarthost": ch["smarthost"],
              "require_tls": False, "send_resolved": True}] if ch["smarthost"] and ch["email_to"] else [])
    chat = ([{"api_url": ch["chat"], "channel": "#buildkit", "send_resolved": True,
              "title": '[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }} on {{ .CommonLabels.builder }}',
              "text": "{{ range .Alerts }}{{ .Annotations.summary }}: {{ .Annotations.description }}"
                      " ({{ .Annotations.runbook_url }})\n{{ end }}"}] if ch["chat"] else [])
    escalation = [{"url": ch["escalation"], "send_resolved": True}] if ch["escalation"] else []
    out: dict[str, dict[str, Any]] = {}
    for name, parts in (("webhook", {"webhook_configs": hook}), ("email", {"email_configs": mail}),
                        ("chat", {"slack_configs": chat}),
                        ("oncall", {"webhook_configs": hook, "email_configs": mail, "slack_configs": chat}),
                        ("escalation", {"webhook_configs": escalation, "email_configs": mail})):
        kept = {k: v for k, v in parts.items() if v}
        if kept:
            out[name] = {"name": name, **kept}
    return out


def check_routes(params: dict) -> dict[str, dict[str, Any]]:
    """The receivers, after checking that every route names one: a team routed to an
    unknown receiver is an error before anything is written."""
    known = receivers(params)
    for team, receiver in (params.get("team_receivers") or {}).items():
        if receiver not in known:
            raise AlertingError(
                f"team_receivers routes team {team!r} to the receiver {receiver!r}, which does not exist"
                f" (receivers with a channel here: {', '.join(known) or 'none'})",
                f"route {team} to one of {', '.join(known) or '(set webhook_url or notify_sink_port first)'}")
    if "webhook" not in known:
        raise AlertingError("no webhook channel: webhook_url is empty and there is no notification sink",
                            "set webhook_url, or notify_sink_port for the lab's sink")
    return known


def render_config(params: dict) -> str:
    known = check_routes(params)
    routes: list[dict[str, Any]] = [
        {"matchers": [f'alertname="{TEST_ALERT}"'], "receiver": "oncall" if "oncall" in known else "webhook",
         "group_by": ["alertname", "test_id"], "group_wait": "0s", "repeat_interval": "24h"},
        {"matchers": ['escalated="true"'], "receiver": "escalation" if "escalation" in known else "webhook"},
        # oncall holds every channel already: no `continue` into the team routes (which
        # would send a critical alert twice to the team's channel)
        {"matchers": ['severity="critical"'], "receiver": "oncall" if "oncall" in known else "webhook",
         "repeat_interval": params.get("critical_repeat_interval", "30m")},
    ]
    for team, receiver in sorted((params.get("team_receivers") or {}).items()):
        routes.append({"matchers": [f'team="{team}"'], "receiver": receiver})
    doc = {
        "route": {"receiver": "webhook", "group_by": ["alertname", "builder"],
                  "group_wait": params.get("group_wait", "30s"), "group_interval": params.get("group_interval", "5m"),
                  "repeat_interval": params.get("warning_repeat_interval", "4h"), "routes": routes},
        "inhibit_rules": [{"source_matchers": ['alertname="BuildkitdDown"'],
                           "target_matchers": INHIBITED_WHILE_DOWN, "equal": ["builder"]}],
        "receivers": list(known.values()),
    }
    return "# Managed by buildkit-ops (runbook: alerting). Changes here are overwritten.\n" + \
        yaml.dump(doc, Dumper=_NoAliases, sort_keys=False, width=1000)


def _amtool(*args: str, timeout: float = 60):
    if not AMTOOL.exists():
        raise AlertingError(f"{AMTOOL} is not installed", "apt-get install prometheus-alertmanager (./kit setup)")
    return subprocess.run([str(AMTOOL), *args], capture_output=True, text=True, timeout=timeout)


def validate(text: str) -> str:
    """`amtool check-config` on a scratch copy."""
    with tempfile.TemporaryDirectory(prefix="kit-am-") as scratch:
        path = Path(scratch) / "alertmanager.yml"
        path.write_text(text)
        proc = _amtool("check-config", str(path))
    if proc.returncode:
        raise AlertingError(f"amtool check-config refused the generated configuration:\n"
                            f"{(proc.stdout + proc.stderr).strip()}", "fix the parameter named above; nothing was written")
    found = [ln.strip(" -") for ln in proc.stdout.splitlines() if ln.strip().startswith("- ")]
    return f"amtool check-config: SUCCESS ({len(found)} receivers)"


def routing_tree(text: str, labels: dict[str, str]) -> list[str]:
    """The receivers Alertmanager would pick for `labels` (amtool config routes test)."""
    with tempfile.TemporaryDirectory(prefix="kit-am-") as scratch:
        path = Path(scratch) / "alertmanager.yml"
        path.write_text(text)
        proc = _amtool("config", "routes", "test", f"--config.file={path}", *(f"{k}={v}" for k, v in labels.items()))
    if proc.returncode:
        raise AlertingError(f"amtool config routes test failed: {proc.stderr.strip()}", "read amtool's message")
    return [r.strip() for r in proc.stdout.strip().split(",") if r.strip()]


# --------------------------------------------------------------------------------------
# Alertmanager's HTTP API
# --------------------------------------------------------------------------------------
def am_api(port: int, path: str, body: Any = None, method: str | None = None, timeout: float = 10) -> Any:
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    raw = http_text(f"{url(port)}{path}", "Alertmanager", "alertmanager_port", data=data, method=method,
                    headers={"Content-Type": "application/json"}, timeout=timeout, error=AlertingError)
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError:
        return raw


def metrics(port: int) -> dict[str, float]:
    """Alertmanager's own /metrics as {'name{labels}': value}."""
    return prometheus.own_metrics(port)


def needs_reload(port: int, wanted: dict[Path, str]) -> bool:
    """From Alertmanager's own /metrics (read now, not scraped): the last reload failed,
    or a file of `wanted` is newer than it."""
    m = metrics(port)
    ok = m.get("alertmanager_config_last_reload_successful", 0) == 1
    when = m.get("alertmanager_config_last_reload_success_timestamp_seconds", 0)
    newest = max((p.stat().st_mtime for p in wanted if p.exists()), default=0.0)
    return not ok or newest > when


def reload(port: int) -> None:
    am_api(port, "/-/reload", method="POST", timeout=30)


# --------------------------------------------------------------------------------------
# steps
# --------------------------------------------------------------------------------------
def binaries_present(params: dict) -> Outcome:
    need = [AMTOOL] + ([ALERTMANAGER] if params.get("alertmanager_port") else [])
    for path in need:
        if not path.exists():
            raise AlertingError(f"{path} is not installed", "apt-get install prometheus-alertmanager (./kit setup)")
    return Outcome.ok(", ".join(str(p) for p in need))


def converge_config(layout: Layout, params: dict, apply: bool) -> Outcome:
    """alertmanager.yml from the parameters, checked by amtool, in place and loaded."""
    text = render_config(params)
    check = validate(text)
    port = params.get("alertmanager_port") or 0
    outcome = replace_config(layout, {config_path(layout): text}, port, apply, check, reload_fn=lambda: reload(port),
                             needs_reload_fn=needs_reload, what="Alertmanager")
    outcome.facts.update(alertmanager_config=str(config_path(layout)),
                         alertmanager_url=url(port) if port else "")
    return outcome


def routes_as_designed(params: dict) -> Outcome:
    """amtool's routing of sample alerts agrees with the design: critical to oncall,
    escalated to escalation, each team to its receiver."""
    text = render_config(params)
    known = receivers(params)
    cases = [({"alertname": "BuildkitdDown", "severity": "critical", "team": "build", "builder": "b"},
              "oncall" if "oncall" in known else "webhook"),
             ({"alertname": ESCALATION_ALERT, "severity": "warning", "escalated": "true", "builder": "b"},
              "escalation" if "escalation" in known else "webhook"),
             ({"alertname": "Unrouted", "severity": "warning", "team": "nobody", "builder": "b"}, "webhook")]
    for team, receiver in sorted((params.get("team_receivers") or {}).items()):
        cases.append(({"alertname": "X", "severity": "warning", "team": team, "builder": "b"}, receiver))
    lines = []
    for labels, expected in cases:
        got = routing_tree(text, labels)
        if expected not in got:
            raise AlertingError(f"amtool routes {labels} to {got}, not to {expected}", "report this as a kit bug")
        lines.append(f"{labels.get('team') or labels['alertname']}/{labels['severity']} → {', '.join(got)}")
    return Outcome.ok("; ".join(lines))


def delivered(before: dict[str, float], after: dict[str, float], integration: str) -> tuple[int, int]:
    """(notification requests that succeeded, that failed) through `integration` between
    two reads of Alertmanager's metrics. Alertmanager counts a request when it has
    returned (and a failure right after), so a send still in flight counts as neither."""
    def grew(name: str) -> int:
        key = f'{name}{{integration="{integration}"}}'
        return round(after.get(key, 0) - before.get(key, 0))

    requests, failed = grew("alertmanager_notification_requests_total"), \
        grew("alertmanager_notification_requests_failed_total")
    return requests - failed, failed


def test_alert_delivered(layout: Layout, params: dict, apply: bool, timeout: float = 60) -> Outcome:
    """A test alert posted to Alertmanager reaches every channel of its receiver: a
    request that succeeded (alertmanager_notification_requests_total grew by more than
    _failed_total) and, for a channel pointing at the lab's sink, the sink has it. Check
    mode sends nothing."""
    port = params.get("alertmanager_port") or 0
    if not port:
        return Outcome.skipped("alertmanager_port is 0: no Alertmanager under supervisord")
    known = receivers(params)
    receiver = known["oncall" if "oncall" in known else "webhook"]
    integration = {"webhook_configs": "webhook", "email_configs": "email", "slack_configs": "slack"}
    wanted = [integration[k] for k in receiver if k in integration]
    if not apply:
        return Outcome.skipped(f"check mode sends nothing: apply posts a {TEST_ALERT} to {receiver['name']}"
                               f" ({', '.join(wanted)}), waits for each channel, then resolves it")
    test_id = uuid.uuid4().hex[:12]
    now = _dt.datetime.now(_dt.timezone.utc)
    alert = {"labels": {"alertname": TEST_ALERT, "severity": "warning", "test_id": test_id,
                        "builder": params.get("builder_name") or "buildkitd"},
             "annotations": {"summary": "buildkit-ops test alert", "description": "sent by the alerting runbook"},
             "startsAt": now.isoformat(), "endsAt": (now + _dt.timedelta(minutes=5)).isoformat()}
    sink_port = params.get("notify_sink_port") or 0
    ch = channels(params)
    in_sink = {"webhook": bool(sink_port) and ch["webhook"].startswith(url(sink_port)),
               "slack": bool(sink_port) and ch["chat"].startswith(url(sink_port)),
               "email": bool(sink_port) and ch["smarthost"] == f"127.0.0.1:{params.get('smtp_port')}"}
    sink_name = {"webhook": "webhook", "slack": "chat", "email": "email"}
    before = metrics(port)
    am_api(port, "/api/v2/alerts", [alert])
    deadline = time.monotonic() + timeout
    while True:
        after = metrics(port)
        counts = {i: delivered(before, after, i) for i in wanted}
        landed = {m["channel"] for m in sink.messages(sink_port) if test_id in json.dumps(m)} if sink_port else set()
        done = {i for i in wanted if counts[i][0] >= 1 and (not in_sink[i] or sink_name[i] in landed)}
        if len(done) == len(wanted):
            break
        if time.monotonic() > deadline:
            failing = [f"{i}: {counts[i][1]} failed requests" for i in wanted if i not in done and counts[i][1]]
            raise AlertingError(f"the test alert {test_id} was not delivered through every channel within {timeout:.0f}s"
                                f" (delivered: {', '.join(sorted(done)) or 'none'} of {', '.join(wanted)}"
                                + (f"; {'; '.join(failing)}" if failing else "") + ")",
                                f"read {layout.log_dir / 'alertmanager.log'} (\"Notify attempt failed\");"
                                " check the channels' URLs and the SMTP server's port")
        time.sleep(0.5)
    seen = [f"{i} ({'seen in the sink' if in_sink[i] else 'request succeeded'})" for i in wanted]
    alert["endsAt"] = _dt.datetime.now(_dt.timezone.utc).isoformat()  # resolve it
    am_api(port, "/api/v2/alerts", [alert])
    return Outcome.ok(f"test alert {test_id} delivered through {', '.join(seen)}", test_alert=test_id)


def alerts_reach_alertmanager(params: dict, apply: bool) -> Outcome:
    """Prometheus sends its alerts to this Alertmanager (its alertmanagers API lists it)."""
    prom, am = params.get("prometheus_port") or 0, params.get("alertmanager_port") or 0
    if not (prom and am):
        return Outcome.skipped("needs both prometheus_port and alertmanager_port")
    if not prometheus.answers(prom):
        if not apply:
            return Outcome.skipped(f"Prometheus does not answer on {url(prom)}: checked on apply")
        raise AlertingError(f"Prometheus does not answer on {url(prom)}", "apply the configure runbook")
    deadline = time.monotonic() + 15  # after a reload, Prometheus rediscovers its Alertmanagers
    while True:
        active = [a["url"] for a in prometheus.api(prom, "/api/v1/alertmanagers")["activeAlertmanagers"]]
        if any(f"127.0.0.1:{am}" in a for a in active) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if not any(f"127.0.0.1:{am}" in a for a in active):
        if not apply:
            return Outcome.skipped("Prometheus is not pointed at this Alertmanager yet: apply the monitoring runbook")
        raise AlertingError(f"Prometheus sends alerts to {active or 'no Alertmanager'}, not to 127.0.0.1:{am}",
                            "apply the monitoring runbook with the same alertmanager_port")
    return Outcome.ok(f"Prometheus sends alerts to {', '.join(active)}")


