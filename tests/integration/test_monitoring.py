"""The monitoring stack for real: a ci builder whose supervisord also runs Prometheus,
Alertmanager, the node exporter, the kit's exporter and the notification sink on free
ports; the monitoring, alerting and dashboards runbooks applied to it; a stopped
buildkitd followed to a notification at this test's own webhook receiver."""

from __future__ import annotations

import datetime
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from runbook_checks.core import params, runner
from runbook_checks.core.errors import MonitoringError
from runbook_checks.daemon import schedule, service, verify
from runbook_checks.daemon.supervisor import Supervisor
from runbook_checks.monitoring import alertmanager, prometheus, sink

from ..conftest import installed_builder, stop_and_remove

PORTS = ("exporter_port", "prometheus_port", "alertmanager_port", "node_exporter_port",
         "notify_sink_port", "smtp_port")
FAST = ("scrape_interval=1s", "evaluation_interval=1s", "builder_down_for=5s")
ALERTING = ("group_wait=1s", "group_interval=1s")


class Receiver:
    """This test's webhook receiver: every POST body, in order."""

    def __init__(self):
        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, name: str, status: str = "firing") -> list[dict]:
        return [a for b in self.bodies for a in b.get("alerts", [])
                if a["labels"].get("alertname") == name and a["status"] == status]


@pytest.fixture(scope="module")
def stack(runs_base):
    ports = {k: service.free_port() for k in PORTS}
    layout = installed_builder("bkmon-", runs_base, *(f"{k}={v}" for k, v in ports.items()))  # debug_port: a free one
    receiver = Receiver()
    try:
        yield layout, ports, receiver, runs_base
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        stop_and_remove(layout.state_dir)


def run(name, mode, stack, *sets):
    layout, ports, _, runs_base = stack
    from runbook_checks.core.profiles import declared_parameters, runbook_path

    declared = declared_parameters(runbook_path(name))
    mine = [f"{k}={v}" for k, v in ports.items() if k in declared]
    return runner.run(name, "ci", mode, (f"state_dir={layout.state_dir}", *mine, *sets), base=runs_base,
                      progress=False)


def steps(result):
    return {s.name: s for s in result.report.steps}


@pytest.fixture(scope="module")
def monitored(stack):
    """The monitoring runbook applied (fast intervals): Prometheus scrapes everything."""
    result = run("monitoring", "apply", stack, *FAST)
    assert result.report.summary["failed"] == 0, result.report.to_json()
    return result


@pytest.fixture(scope="module")
def alerting_applied(stack, monitored):
    """The alerting runbook applied, its webhook channel pointing at this test's receiver."""
    _, _, receiver, _ = stack
    result = run("alerting", "apply", stack, f"webhook_url={receiver.url}", *ALERTING)
    assert result.report.summary["failed"] == 0, result.report.to_json()
    return result


HISTOGRAM_COUNT = "histogram_count(sum by (builder) (buildkit_build_duration_seconds))"


def builds_seen(layout, prometheus_port):
    """Builds that Prometheus has seen twice: buildkitd exports its build metrics after its
    first build, and a 5m rate needs an increase after the series' first sample."""
    verify.build_and_rebuild(layout)
    deadline = time.monotonic() + 30
    while not prometheus.query(prometheus_port, HISTOGRAM_COUNT):
        assert time.monotonic() < deadline, "the native histogram never reached Prometheus"
        time.sleep(1)
    verify.build_and_rebuild(layout)
    while not prometheus.query(prometheus_port, "buildkit:builds:rate5m > 0"):
        assert time.monotonic() < deadline + 30, "no build rate in Prometheus after two rounds of builds"
        time.sleep(1)


def test_monitoring_every_target_up_native_histogram_and_idempotent(stack, monitored):
    layout, ports, _, _ = stack
    assert "34 cases SUCCESS" in steps(monitored)["configuration and rules (promtool)"].message
    assert monitored.report.facts["scrape_targets"] == ["alertmanager", "buildkit-ops-exporter", "buildkitd", "node",
                                                        "prometheus"]
    builds_seen(layout, ports["prometheus_port"])
    assert float(prometheus.query(ports["prometheus_port"], HISTOGRAM_COUNT)[0]["value"][1]) >= 1
    # the p95 recording rule answers from the native histogram (BuildKit exports no
    # classic buckets, and promtool 2.42 cannot feed native ones: this is its test)
    assert not prometheus.query(ports["prometheus_port"], "buildkit_build_duration_seconds_bucket")
    deadline = time.monotonic() + 30
    while True:
        p95 = prometheus.query(ports["prometheus_port"], "buildkit:build_duration_seconds:p95_5m")
        if p95 and math.isfinite(float(p95[0]["value"][1])):
            break
        assert time.monotonic() < deadline, f"no finite p95 from the native histogram: {p95}"
        time.sleep(1)
    assert 0 < float(p95[0]["value"][1]) < 600
    again = run("monitoring", "apply", stack, *FAST)
    assert again.report.summary["changed"] == 0 and again.report.summary["failed"] == 0, again.report.to_json()
    assert "builds (native histogram)" in steps(again)["native histogram ingested"].message


def test_a_reload_is_seen_at_once_and_not_repeated(stack, monitored):
    """needs_reload reads Prometheus' own /metrics at once, not the scraped copy that lags
    a scrape behind: right after a reload, applying the same files again changes nothing."""
    layout, ports, _, _ = stack
    port = ports["prometheus_port"]
    path = prometheus.config_path(layout)
    before = path.read_text()
    changed = before + "# a comment, to make a change\n"
    try:
        assert prometheus.replace_config(layout, {path: changed}, port, True, "unchecked").status == "changed"
        assert not prometheus.needs_reload(port, {path: changed})
        assert prometheus.replace_config(layout, {path: changed}, port, True, "unchecked").status == "ok"
    finally:
        prometheus.replace_config(layout, {path: before}, port, True, "unchecked")
    ok, when = prometheus.last_reload(port)
    assert ok and when >= path.stat().st_mtime


def test_a_refused_reload_leaves_the_old_config_serving(stack, monitored):
    layout, ports, _, _ = stack
    port = ports["prometheus_port"]
    path = prometheus.config_path(layout)
    before = path.read_text()
    with pytest.raises(MonitoringError) as err:  # bypassing promtool on purpose: Prometheus refuses it
        prometheus.replace_config(layout, {path: "scrape_configs: [this is not a job]\n"}, port, True, "unchecked")
    assert "refused the new configuration" in err.value.problem and "previous files are back and serving" in err.value.problem
    assert path.read_text() == before
    ok, _ = prometheus.last_reload(port)
    assert ok
    assert prometheus.query(port, 'up{job="buildkitd"}')[0]["value"][1] == "1"


def test_alerting_sends_a_test_alert_through_every_channel_and_is_idempotent(stack, alerting_applied):
    _, ports, receiver, _ = stack
    delivered = steps(alerting_applied)["test alert delivered"].message
    assert "webhook (request succeeded)" in delivered and "email (seen in the sink)" in delivered \
        and "slack (seen in the sink)" in delivered
    assert receiver.alerts("KitTestAlert")
    chat = [m for m in sink.messages(ports["notify_sink_port"]) if m["channel"] == "chat"]
    assert chat and "KitTestAlert" in json.dumps(chat[-1]["payload"]) and "attachments" in chat[-1]["payload"]
    mail = [m for m in sink.messages(ports["notify_sink_port"]) if m["channel"] == "email"]
    assert mail and mail[-1]["payload"]["to"] == ["buildkit-oncall@localhost"]
    first_id = alerting_applied.report.facts["test_alert"]
    check = run("alerting", "check", stack, f"webhook_url={receiver.url}", *ALERTING)
    assert steps(check)["test alert delivered"].status == "skipped", check.report.to_json()
    time.sleep(3)  # group_wait and group_interval are 1s: a test alert sent by check mode would be here
    assert {a["labels"]["test_id"] for a in receiver.alerts("KitTestAlert")} == {first_id}
    again = run("alerting", "apply", stack, f"webhook_url={receiver.url}", *ALERTING)
    assert again.report.summary["changed"] == 0 and again.report.summary["failed"] == 0, again.report.to_json()


def _post(port, alerts):
    alertmanager.am_api(port, "/api/v2/alerts", alerts)


def test_a_stopped_buildkitd_reaches_the_webhook_and_inhibits_the_build_alerts_only(stack, alerting_applied):
    layout, ports, receiver, _ = stack
    am = ports["alertmanager_port"]
    rpc = Supervisor(layout).rpc()
    rpc.stopProcess("buildkitd")
    now = datetime.datetime.now(datetime.timezone.utc)
    synthetic = [{"labels": {"alertname": name, "severity": "warning", "team": team, "builder": "buildkit-ops-ci"},
                  "startsAt": now.isoformat(), "endsAt": (now + datetime.timedelta(minutes=5)).isoformat()}
                 for name, team in (("CacheHitRatioLow", "build"), ("DiskFilling", "platform"))]
    try:
        deadline = time.monotonic() + 90
        while not receiver.alerts("BuildkitdDown"):
            assert time.monotonic() < deadline, f"no BuildkitdDown at the webhook: {receiver.bodies[-3:]}"
            time.sleep(1)
        alert = receiver.alerts("BuildkitdDown")[0]
        assert alert["labels"]["severity"] == "critical" and alert["labels"]["builder"] == "buildkit-ops-ci"
        assert alert["annotations"]["runbook_url"].endswith("/alerts/buildkitd-down/")
        firing = prometheus.query(ports["prometheus_port"], 'ALERTS{alertname="BuildkitdDown", alertstate="firing"}')
        assert firing
        # inhibition, in the real Alertmanager: a build alert on the down builder is held
        # back, a host alert is not
        _post(am, synthetic)
        status = {a["labels"]["alertname"]: a["status"] for a in alertmanager.am_api(am, "/api/v2/alerts")
                  if a["labels"].get("builder") == "buildkit-ops-ci"}
        down = [a["fingerprint"] for a in alertmanager.am_api(am, "/api/v2/alerts")
                if a["labels"]["alertname"] == "BuildkitdDown"]
        assert status["CacheHitRatioLow"]["state"] == "suppressed", status
        assert status["CacheHitRatioLow"]["inhibitedBy"] == down, status
        assert status["DiskFilling"]["inhibitedBy"] == [] and status["DiskFilling"]["state"] == "active", status
    finally:
        ended = datetime.datetime.now(datetime.timezone.utc).isoformat()
        _post(am, [a | {"endsAt": ended} for a in synthetic])
        rpc.startProcess("buildkitd", True)
        service.wait_ready(layout, Supervisor(layout), 60)


def test_a_drift_fails_its_maintenance_job_and_fires_in_prometheus_until_a_run_succeeds(stack, monitored):
    """The drift job as its timer runs it, on this builder configured with ports the ci
    profile does not name: configure in check mode finds them, the job fails, its record
    reaches Prometheus through the node exporter's textfile collector and
    MaintenanceJobFailed fires; a successful run clears it."""
    layout, ports, _, runs_base = stack
    env = dict(os.environ, BUILDKIT_OPS_STATE_DIR=str(layout.state_dir), BUILDKIT_OPS_RUNS_DIR=str(runs_base))
    proc = subprocess.run([sys.executable, "-m", "runbook_checks.daemon.schedule", "run", "drift", "--profile", "ci"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    row = {r["job"]: r for r in schedule.status(layout, params.MAINTENANCE, 0, "supervisor")}["drift"]
    assert row["ok"] is False and row["message"].startswith("drift: ") and "supervisord.conf" in row["message"], row
    firing = 'ALERTS{alertname="MaintenanceJobFailed", alertstate="firing", maintenance="drift"}'
    deadline = time.monotonic() + 60
    while not (found := prometheus.query(ports["prometheus_port"], firing)):
        assert time.monotonic() < deadline, "MaintenanceJobFailed never fired"
        time.sleep(1)
    assert found[0]["metric"]["unit"] == "buildkit-drift.service" and found[0]["metric"]["builder"] == "buildkit-ops-ci"
    schedule.record(layout, "drift", time.time() - 1, time.time(), 0, "no drift")
    while prometheus.query(ports["prometheus_port"], firing):
        assert time.monotonic() < deadline + 60, "MaintenanceJobFailed still fires after a successful run"
        time.sleep(1)


def test_dashboards_draw_every_panel_from_live_data(stack, monitored, tmp_path):
    builds_seen(stack[0], stack[1]["prometheus_port"])  # builds in the range, whichever test ran before
    result = run("dashboards", "apply", stack, f"dashboards_dir={tmp_path}", "dashboard_range=10m")
    assert result.report.summary["failed"] == 0, result.report.to_json()
    assert steps(result)["plots from live Prometheus"].status == "changed", result.report.to_json()
    index = json.loads((tmp_path / "live" / "index.json").read_text())
    with_data = {p["title"] for p in index["panels"] if p["series"]}
    assert {"Build rate", "Builds observed (native histogram count)", "CPU busy", "Memory available",
            "Cache usage and its limit"} <= with_data, index
    for panel in index["panels"]:
        assert (tmp_path / "live" / panel["image"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert index["rendered"] in (tmp_path / "live" / "index.md").read_text()
    assert json.loads((tmp_path / "buildkit-ops.dashboard.json").read_text())["uid"] == "buildkit-ops"


def test_a_taken_port_is_refused_before_anything_is_written(tmp_path):
    """A new Prometheus or Alertmanager port held by another process: the service
    definition step fails naming the port, and writes no file."""
    from runbook_checks import session
    from runbook_checks.core import layout as layout_mod
    from runbook_checks.core.errors import ProgramError
    from runbook_checks.daemon import systemd

    layout = layout_mod.for_params({"profile": "ci", "state_dir": str(tmp_path / "s")})
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        wanted = session.programs(layout, {"prometheus_port": taken, "alertmanager_port": service.free_port()})
        with pytest.raises(ProgramError) as err:
            service.write_service_definition(layout, "supervisor", systemd.Limits("", "", 100, 4096), "", True, wanted)
    assert f"127.0.0.1:{taken} is taken by another process, so prometheus cannot listen there" in err.value.problem
    assert "--set prometheus_port=N" in err.value.fix
    assert not (tmp_path / "s").exists()
