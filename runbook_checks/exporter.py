"""The kit's Prometheus exporter (prometheus-client, 127.0.0.1 only).

It reads the kit's latest run reports on each scrape, so what it serves is what the
runbooks last saw. Now: the Docker CLI plugin audit (totals, invalid, insecure), so an
alert can fire on an invalid plugin. Run it with
`python -m runbook_checks.exporter --listen 127.0.0.1:PORT [--runs-dir DIR]`; the lab's
supervisord runs it beside buildkitd."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path
from typing import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from . import runner


def latest_report(runs: Path, runbook: str) -> dict | None:
    path = runner.latest_reports(runs).get(runbook)
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class PluginAuditCollector:
    """buildkit_ops_cli_plugins* from the newest plugins-audit report."""

    def __init__(self, runs: Path):
        self.runs = runs

    def collect(self) -> Iterator[Metric]:
        report = latest_report(self.runs, "plugins-audit")
        inventory = (report or {}).get("facts", {}).get("inventory")
        up = GaugeMetricFamily("buildkit_ops_cli_plugins_audit_present",
                               "1 if a plugins-audit report with an inventory was found")
        up.add_metric([], 1 if inventory is not None else 0)
        yield up
        if inventory is None:
            return
        total = GaugeMetricFamily("buildkit_ops_cli_plugins", "Docker CLI plugin candidates by validity",
                                  labels=["validity"])
        valid = sum(1 for p in inventory if p.get("valid"))
        total.add_metric(["valid"], valid)
        total.add_metric(["invalid"], len(inventory) - valid)
        yield total
        insecure = GaugeMetricFamily("buildkit_ops_cli_plugins_insecure",
                                     "Docker CLI plugins with a security finding (world-writable, foreign owner)")
        insecure.add_metric([], sum(1 for p in inventory if p.get("insecure")))
        yield insecure
        stamp = GaugeMetricFamily("buildkit_ops_cli_plugins_audit_timestamp_seconds",
                                  "When the audit behind these numbers finished (Unix time)")
        import datetime as _dt

        finished = _dt.datetime.fromisoformat(report["finished"].replace("Z", "+00:00")).timestamp()
        stamp.add_metric([], finished)
        yield stamp


def program(layout, params: dict):
    """The exporter beside buildkitd (runbook_checks.programs)."""
    import sys

    from .params import PROJECT_ROOT
    from .programs import Program

    port = params["exporter_port"]
    return Program("exporter", f"{sys.executable} -m runbook_checks.exporter --listen 127.0.0.1:{port}"
                   f" --runs-dir {runner.runs_dir()} --buildkit-addr {layout.address}",
                   port, layout.log_dir / "exporter.log", f"http://127.0.0.1:{port}/metrics",
                   directory=str(PROJECT_ROOT), error_patterns=("error", "traceback"))


def registry(runs: Path) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(PluginAuditCollector(runs))
    return reg


def serve(host: str, port: int, runs: Path):
    """Start serving /metrics; returns (server, thread) from prometheus-client."""
    from prometheus_client import start_http_server

    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"the exporter listens on loopback only, not {host}")
    return start_http_server(port, addr=host, registry=registry(runs))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:16061", help="HOST:PORT on loopback")
    parser.add_argument("--runs-dir", default="", help="where the run reports are (default: the kit's runs/)")
    parser.add_argument("--buildkit-addr", action="append", default=[],
                        help="a buildkitd address whose cache to report (repeat for several builders)")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    server, _thread = serve(host or "127.0.0.1", int(port), Path(args.runs_dir) if args.runs_dir else runner.runs_dir())
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"buildkit-ops exporter on http://{host}:{port}/metrics", flush=True)
    stop.wait()
    server.shutdown()


if __name__ == "__main__":
    main()
