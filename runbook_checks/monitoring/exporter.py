"""The kit's Prometheus exporter (prometheus-client, 127.0.0.1 only).

On each scrape it reads the kit's latest run reports (the Docker CLI plugin audit:
totals, invalid, insecure, so an alert can fire on an invalid plugin) and asks each
builder given with --buildkit-addr for its cache (`buildctl du`, `debug workers`,
`debug histories`): disk usage, reclaimable bytes and records by record type, the GC
limit, and the cached/total steps of the builds in its history; and, every
--probe-interval seconds, whether a probe build runs on each. Run it with
`python -m runbook_checks.monitoring.exporter --listen 127.0.0.1:PORT [--runs-dir DIR]`; the lab's
supervisord runs it beside buildkitd."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from ..core import runner
from ..core.errors import KitError
from ..core.layout import Layout
from ..core.paths import PROJECT_ROOT, runs_dir
from ..daemon import recovery
from ..daemon.buildctl import Buildctl
from ..daemon.programs import Program


@dataclass(frozen=True)
class Family:
    """One metric family the exporter serves: every one is a gauge."""

    name: str
    help: str
    labels: tuple[str, ...] = ()

    def empty(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.name, self.help, labels=list(self.labels))


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

    PRESENT = Family("buildkit_ops_cli_plugins_audit_present", "1 if a plugins-audit report with an inventory was found")
    PLUGINS = Family("buildkit_ops_cli_plugins", "Docker CLI plugin candidates by validity", ("validity",))
    INSECURE = Family("buildkit_ops_cli_plugins_insecure",
                      "Docker CLI plugins with a security finding (world-writable, foreign owner)")
    AUDITED = Family("buildkit_ops_cli_plugins_audit_timestamp_seconds",
                     "When the audit behind these numbers finished (Unix time)")
    FAMILIES = (PRESENT, PLUGINS, INSECURE, AUDITED)

    def __init__(self, runs: Path):
        self.runs = runs

    def describe(self) -> Iterator[Metric]:
        return (f.empty() for f in self.FAMILIES)

    def collect(self) -> Iterator[Metric]:
        report = latest_report(self.runs, "plugins-audit")
        inventory = (report or {}).get("facts", {}).get("inventory")
        present = self.PRESENT.empty()
        present.add_metric([], 1 if inventory is not None else 0)
        yield present
        if inventory is None:
            return
        total = self.PLUGINS.empty()
        valid = sum(1 for p in inventory if p.get("valid"))
        total.add_metric(["valid"], valid)
        total.add_metric(["invalid"], len(inventory) - valid)
        yield total
        insecure = self.INSECURE.empty()
        insecure.add_metric([], sum(1 for p in inventory if p.get("insecure")))
        yield insecure
        audited = self.AUDITED.empty()
        audited.add_metric([], _dt.datetime.fromisoformat(report["finished"].replace("Z", "+00:00")).timestamp())
        yield audited


def program(layout: Layout, params: dict) -> Program:
    """The exporter beside buildkitd (daemon.programs)."""
    port = params["exporter_port"]
    return Program("exporter", f"{sys.executable} -m runbook_checks.monitoring.exporter --listen 127.0.0.1:{port}"
                   f" --runs-dir {runs_dir()} --buildctl {layout.buildctl}"
                   f" --buildkit-addr {params.get('builder_name') or 'buildkitd'}={layout.address}"
                   f" --probe-interval {params.get('probe_interval', 120)}",
                   port, layout.log_dir / "exporter.log", f"http://127.0.0.1:{port}/metrics",
                   directory=str(PROJECT_ROOT), error_patterns=("error", "traceback"))


class CacheCollector:
    """buildkit_cache_* per builder, read from buildctl on each scrape. Every number is
    what buildctl reports at that moment: sizes from `du -v`, the GC limit from `debug
    workers`, steps from the build history (which the daemon itself trims by
    history_max_age / history_max_entries, so those are gauges over the kept history)."""

    UP = Family("buildkit_cache_builder_up", "1 if buildctl reached the builder on this scrape", ("builder",))
    USAGE = Family("buildkit_cache_disk_usage_bytes", "Build cache size by record type (buildctl du)",
                   ("builder", "record_type"))
    RECORDS = Family("buildkit_cache_records", "Build cache records by record type (buildctl du)",
                     ("builder", "record_type"))
    RECLAIMABLE = Family("buildkit_cache_reclaimable_bytes",
                         "Cache bytes not in use, shared or not: buildctl du's Reclaimable", ("builder",))
    LIMIT = Family("buildkit_cache_gc_max_used_space_bytes",
                   "The largest maxUsedSpace of the worker's GC policy (0: no limit)", ("builder",))
    BUILDS = Family("buildkit_cache_history_builds", "Builds in the daemon's kept build history", ("builder",))
    STEPS = Family("buildkit_cache_history_steps",
                   "Steps of the builds in the kept history, by kind (total, cached, completed)", ("builder", "kind"))
    FAMILIES = (UP, USAGE, RECORDS, RECLAIMABLE, LIMIT, BUILDS, STEPS)

    def __init__(self, buildctl: Path, builders: dict[str, str]):
        self.buildctl = buildctl
        self.builders = builders  # name -> address

    def describe(self) -> Iterator[Metric]:
        return (f.empty() for f in self.FAMILIES)

    def collect(self) -> Iterator[Metric]:
        up, usage, records, reclaimable, limit, builds, steps = (f.empty() for f in self.FAMILIES)
        for name, address in self.builders.items():
            client = Buildctl(self.buildctl, address, timeout=3)
            try:
                du = client.disk_usage()
                workers = client.workers()
                history = [h["record"] for h in client.histories()
                           if h.get("record") and not recovery.is_probe(h["record"])]
            except (KitError, ValueError):
                up.add_metric([name], 0)
                continue
            up.add_metric([name], 1)
            for kind, (size, count) in sorted(summarize_usage(du).items()):
                usage.add_metric([name, kind], size)
                records.add_metric([name, kind], count)
            reclaimable.add_metric([name], reclaimable_bytes(du))
            limit.add_metric([name], max_used_space(workers))
            builds.add_metric([name], len(history))
            for kind, value in history_steps(history).items():
                steps.add_metric([name, kind], value)
        yield from (up, usage, records, reclaimable, limit, builds, steps)


class ProbeCollector:
    """buildkit_ops_probe_* per builder: every `interval` seconds, in a thread of its own,
    a probe build with a RUN step no cache holds (daemon.recovery.probe). A daemon can
    answer every API call and still build nothing (a garbled snapshots database, a full
    disk): only a build shows it. Probes carry a build-arg that the history metrics above
    leave out; buildkitd's own build counters count them."""

    SUCCESS = Family("buildkit_ops_probe_success", "1 if the builder's last probe build succeeded", ("builder",))
    DURATION = Family("buildkit_ops_probe_duration_seconds", "How long the last probe build took", ("builder",))
    FINISHED = Family("buildkit_ops_probe_timestamp_seconds", "When the last probe build ended (Unix time)",
                      ("builder",))
    FAMILIES = (SUCCESS, DURATION, FINISHED)

    def __init__(self, buildctl: Path, builders: dict[str, str], interval: float):
        self.buildctl = buildctl
        self.builders = builders
        self.interval = interval
        self.results: dict[str, tuple[int, float, float]] = {}  # builder -> (success, seconds, ended)
        self.stop = threading.Event()

    def probe_all(self) -> None:
        for name, address in self.builders.items():
            start = time.time()
            try:
                recovery.probe(Buildctl(self.buildctl, address, timeout=5), timeout=max(self.interval, 60))
                ok = 1
            except KitError:
                ok = 0
            self.results[name] = (ok, round(time.time() - start, 3), time.time())

    def start(self) -> threading.Thread:
        def loop() -> None:
            while True:
                self.probe_all()
                if self.stop.wait(self.interval):
                    return

        thread = threading.Thread(target=loop, name="probe", daemon=True)
        thread.start()
        return thread

    def describe(self) -> Iterator[Metric]:
        return (f.empty() for f in self.FAMILIES)

    def collect(self) -> Iterator[Metric]:
        success, duration, finished = (f.empty() for f in self.FAMILIES)
        for name, (ok, seconds, ended) in sorted(self.results.items()):
            success.add_metric([name], ok)
            duration.add_metric([name], seconds)
            finished.add_metric([name], ended)
        yield from (success, duration, finished)


def summarize_usage(du: list[dict]) -> dict[str, tuple[int, int]]:
    """{record type: (bytes, records)} of `buildctl du -v` records."""
    out: dict[str, tuple[int, int]] = {}
    for rec in du:
        kind = rec.get("recordType") or "unknown"
        size, count = out.get(kind, (0, 0))
        out[kind] = (size + int(rec.get("size") or 0), count + 1)
    return out


def reclaimable_bytes(du: list[dict]) -> int:
    """buildctl du's own "Reclaimable": every record not in use, shared or not."""
    return sum(int(r.get("size") or 0) for r in du if not r.get("inUse") and int(r.get("size") or 0) > 0)


def max_used_space(workers: list[dict]) -> int:
    return max((int(rule.get("maxUsedSpace") or 0) for w in workers for rule in (w.get("gcPolicy") or [])), default=0)


def history_steps(history: list[dict]) -> dict[str, int]:
    """Sum of the history records' step counters (absent counters are 0: protobuf JSON)."""
    keys = {"total": "numTotalSteps", "cached": "numCachedSteps", "completed": "numCompletedSteps"}
    return {kind: sum(int(r.get(key) or 0) for r in history) for kind, key in keys.items()}


def parse_builders(values: list[str]) -> dict[str, str]:
    """--buildkit-addr values: ADDRESS or NAME=ADDRESS (the name is the `builder` label)."""
    out = {}
    for value in values:
        name, sep, address = value.partition("=")
        if not sep:
            name, address = value, value
        out[name] = address
    return out


def collectors(runs: Path, buildctl: Path | None = None, builders: dict[str, str] | None = None,
               probe_interval: float = 0) -> list:
    """The collectors the exporter registers: the plugin audit's, the cache's when it is
    given builders to ask, and the probe's when it also has a probe interval."""
    found: list = [PluginAuditCollector(runs)]
    if buildctl and builders:
        found.append(CacheCollector(buildctl, builders))
        if probe_interval > 0:
            found.append(ProbeCollector(buildctl, builders, probe_interval))
    return found


def registry(runs: Path, buildctl: Path | None = None, builders: dict[str, str] | None = None,
             probe_interval: float = 0) -> CollectorRegistry:
    """The exporter's registry; its probes (if any) start probing."""
    reg = CollectorRegistry()
    for collector in collectors(runs, buildctl, builders, probe_interval):
        reg.register(collector)
        if isinstance(collector, ProbeCollector):
            collector.start()
    return reg


def families() -> list[Family]:
    """Every metric family the exporter serves: what its collectors describe to the
    registry (no builder is asked). The dashboards and the metrics reference read these."""
    return [f for c in collectors(Path("/nonexistent"), Path("buildctl"), {"builder": "unix:///nonexistent"}, 60)
            for f in c.FAMILIES]


def serve(host: str, port: int, runs: Path, buildctl: Path | None = None, builders: dict[str, str] | None = None,
          probe_interval: float = 0):
    """Start serving /metrics; returns (server, thread) from prometheus-client."""
    from prometheus_client import start_http_server

    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"the exporter listens on loopback only, not {host}")
    return start_http_server(port, addr=host, registry=registry(runs, buildctl, builders, probe_interval))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:16061", help="HOST:PORT on loopback")
    parser.add_argument("--runs-dir", default="", help="where the run reports are (default: the kit's runs/)")
    parser.add_argument("--buildkit-addr", action="append", default=[],
                        help="[NAME=]ADDRESS of a buildkitd whose cache to report (repeat for several builders)")
    parser.add_argument("--buildctl", default="", help="the buildctl binary that asks the builders")
    parser.add_argument("--probe-interval", type=float, default=0,
                        help="seconds between probe builds on each builder (0: no probes)")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    server, _thread = serve(host or "127.0.0.1", int(port), Path(args.runs_dir) if args.runs_dir else runs_dir(),
                            Path(args.buildctl) if args.buildctl else None, parse_builders(args.buildkit_addr),
                            args.probe_interval)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"buildkit-ops exporter on http://{host}:{port}/metrics", flush=True)
    stop.wait()
    server.shutdown()


if __name__ == "__main__":
    main()
