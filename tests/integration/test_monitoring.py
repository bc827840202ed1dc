"""The monitoring stack for real: a ci builder whose supervisord also runs Prometheus,
Alertmanager, the node exporter, the kit's exporter and the notification sink on free
ports; the monitoring, alerting and dashboards runbooks applied to it; a stopped
buildkitd followed to a notification at this test's own webhook receiver."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from runbook_checks import alerting, monitoring, runner, service, verify
from runbook_checks.service import Supervisor

from ..conftest import fresh_builder, stop_and_remove

PORTS = ("exporter_port", "prometheus_port", "alertmanager_port", "node_exporter_port",
         "notify_sink_port", "smtp_port")
FAST = ("scrape_interval=1s", "evaluation_interval=1s", "builder_down_for=5s")


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
    layout = fresh_builder("bkmon-", runs_base, *(f"{k}={v}" for k, v in ports.items()))  # debug_port: a free one
    receiver = Receiver()
    try:
        yield layout, ports, receiver, runs_base
    finally:
        receiver.server.shutdown()
        stop_and_remove(layout.state_dir)


def run(name, mode, stack, *sets):
    layout, ports, _, runs_base = stack
    from runbook_checks.params import declared_parameters, runbook_path

    declared = declared_parameters(runbook_path(name))
    mine = [f"{k}={v}" for k, v in ports.items() if k in declared]
    return runner.run(name, "ci", mode, (f"state_dir={layout.state_dir}", *mine, *sets), base=runs_base,
                      progress=False)


def steps(result):
    return {s.name: s for s in result.report.steps}


def test_monitoring_every_target_up_native_histogram_and_idempotent(stack):
    layout, ports, _, _ = stack
    first = run("monitoring", "apply", stack, *FAST)
    assert first.report.summary["failed"] == 0, first.report.to_json()
    assert "18 cases SUCCESS" in steps(first)["configuration and rules (promtool)"].message
    assert first.report.facts["scrape_targets"] == ["alertmanager", "buildkit-ops-exporter", "buildkitd", "node",
                                                    "prometheus"]
    verify.build_and_rebuild(layout)  # buildkitd exports the native histogram after its first build
    expr = "histogram_count(sum by (builder) (buildkit_build_duration_seconds))"
    deadline = time.monotonic() + 30
    while not monitoring.query(ports["prometheus_port"], expr):
        assert time.monotonic() < deadline, "the native histogram never reached Prometheus"
        time.sleep(1)
    assert float(monitoring.query(ports["prometheus_port"], expr)[0]["value"][1]) >= 1
    again = run("monitoring", "apply", stack, *FAST)
    assert again.report.summary["changed"] == 0 and again.report.summary["failed"] == 0, again.report.to_json()
    assert "builds (native histogram)" in steps(again)["native histogram ingested"].message


def test_a_refused_reload_leaves_the_old_config_serving(stack):
    layout, ports, _, _ = stack
    port = ports["prometheus_port"]
    path = monitoring.config_path(layout)
    before = path.read_text()
    with pytest.raises(monitoring.MonitoringError) as err:  # bypassing promtool on purpose: Prometheus refuses it
        monitoring.replace_config(layout, {path: "scrape_configs: [this is not a job]\n"}, port, True, "unchecked")
    assert "refused the new configuration" in err.value.problem and "previous files are back and serving" in err.value.problem
    assert path.read_text() == before
    ok, _ = monitoring.last_reload(port)
    assert ok
    assert monitoring.query(port, 'up{job="buildkitd"}')[0]["value"][1] == "1"


def test_alerting_sends_a_test_alert_through_every_channel_and_is_idempotent(stack):
    _, ports, receiver, _ = stack
    first = run("alerting", "apply", stack, f"webhook_url={receiver.url}", "group_wait=1s", "group_interval=1s")
    assert first.report.summary["failed"] == 0, first.report.to_json()
    delivered = steps(first)["test alert delivered"].message
    assert "webhook (sent)" in delivered and "email (seen in the sink)" in delivered and "slack (seen in the sink)" in delivered
    assert receiver.alerts("KitTestAlert")
    chat = [m for m in alerting.sink_messages(ports["notify_sink_port"]) if m["channel"] == "chat"]
    assert chat and "KitTestAlert" in json.dumps(chat[-1]["payload"]) and "attachments" in chat[-1]["payload"]
    mail = [m for m in alerting.sink_messages(ports["notify_sink_port"]) if m["channel"] == "email"]
    assert mail and mail[-1]["payload"]["to"] == ["buildkit-oncall@localhost"]
    again = run("alerting", "apply", stack, f"webhook_url={receiver.url}", "group_wait=1s", "group_interval=1s")
    assert again.report.summary["changed"] == 0 and again.report.summary["failed"] == 0, again.report.to_json()


def test_a_stopped_buildkitd_reaches_the_webhook_through_prometheus_and_alertmanager(stack):
    layout, ports, receiver, _ = stack
    rpc = Supervisor(layout)._rpc()
    rpc.stopProcess("buildkitd")
    try:
        deadline = time.monotonic() + 90
        while not receiver.alerts("BuildkitdDown"):
            assert time.monotonic() < deadline, f"no BuildkitdDown at the webhook: {receiver.bodies[-3:]}"
            time.sleep(1)
        alert = receiver.alerts("BuildkitdDown")[0]
        assert alert["labels"]["severity"] == "critical" and alert["labels"]["builder"] == "buildkit-ops-ci"
        assert alert["annotations"]["runbook_url"].endswith("/alerts/buildkitd-down/")
        firing = monitoring.query(ports["prometheus_port"], 'ALERTS{alertname="BuildkitdDown", alertstate="firing"}')
        assert firing
    finally:
        rpc.startProcess("buildkitd", True)
        service.wait_ready(layout, Supervisor(layout), 60)


def test_dashboards_draw_every_panel_from_live_data(stack, tmp_path):
    result = run("dashboards", "apply", stack, f"dashboards_dir={tmp_path}", "dashboard_range=10m")
    assert result.report.summary["failed"] == 0, result.report.to_json()
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
    from runbook_checks import layout as layout_mod, programs

    layout = layout_mod.for_params({"profile": "ci", "state_dir": str(tmp_path / "s")})
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        wanted = programs.wanted(layout, {"prometheus_port": taken, "alertmanager_port": service.free_port()})
        with pytest.raises(programs.ProgramError) as err:
            service.write_service_definition(layout, "supervisor", service.Limits("", "", 100, 4096), "", True, wanted)
    assert f"127.0.0.1:{taken} is taken by another process, so prometheus cannot listen there" in err.value.problem
    assert "--set prometheus_port=N" in err.value.fix
    assert not (tmp_path / "s").exists()
