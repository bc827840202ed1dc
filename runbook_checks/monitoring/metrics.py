"""Every metric the kit's rules, alerts and dashboards read, by source: buildkitd's own,
the kit's exporter (read from its collectors, as its registry sees them), Debian's node
exporter, Prometheus' own series, and the kit's recording rules. The dashboards check
their queries against it, and docs/reference/metrics.md is generated from it."""

from __future__ import annotations

from dataclasses import dataclass

from ..daemon import schedule
from ..daemon.cgroups import USAGE_SERIES
from . import exporter

SLICE_SERIES = tuple(USAGE_SERIES.values())
from .rules import RECORDING_RULES


@dataclass(frozen=True)
class Source:
    """A metric the kit reads but does not define."""

    name: str
    type: str
    labels: str
    meaning: str


BUILDKITD = (
    Source("buildkit_builds_total", "counter",
           "`status` = `success` \\| `failure`; on failed builds also `error_code` (the code BuildKit gives the"
           " build's error; absent on successes)",
           "builds that finished, by outcome. The kit's rules sum over `error_code`, so a new code never splits"
           " the failure ratio"),
    Source("buildkit_builds_steps_total", "counter", "`kind` = `total` \\| `cached` \\| `completed` \\| `warnings`",
           "build steps (vertices) of finished builds: all of them, the ones served from the cache, the ones"
           " executed, and warnings"),
    Source("buildkit_build_duration_seconds", "**native histogram**", "`status`",
           "how long builds took. Only the protobuf exposition carries its buckets; the text format shows `+Inf`"
           " alone. Prometheus needs `--enable-feature=native-histograms` (2.40 to 2.x) to ask for protobuf. Query"
           " it with `histogram_quantile(0.95, sum by (builder) (rate(buildkit_build_duration_seconds[5m])))` or"
           " `histogram_count(...)`"),
)

# the audit shipper on a production builder (production.auditlog.Metrics; a unit test keeps
# the two the same), served by the front door's metrics listener at /audit/metrics
AUDIT = (
    Source("buildkit_frontdoor_calls_total", "counter", "`team`, `method`, `status` = `ok` \\| `failed`",
           "gRPC calls through the front door by team, method and status"),
    Source("buildkit_frontdoor_refused_total", "counter",
           "`team` (what the certificate claims, `-` without one), `reason` = `no-certificate` \\| `other-ca` \\|"
           " `expired` \\| `revoked` \\| `not-yet-valid` \\| `queue-timeout` \\| `other`",
           "connections the front door refused; AccessDeniedBurst reads it"),
    *(Source(name, kind, "`slice` (the builder's: `buildkit.slice`, `buildkit_LEVEL.slice`)", f"{doc} (from the"
             " slice's cgroup)") for name, kind, doc in SLICE_SERIES),
    Source("buildkit_ops_certificate_expiry_timestamp_seconds", "gauge",
           "`certificate` = `ca` \\| `server` \\| `client:TEAM`",
           "when each certificate in force expires (Unix time, a team's soonest); CertificateExpiresSoon reads it"),
)

# HAProxy's own Prometheus exporter (promex) on the front door's metrics listener, /metrics
# (the kit reads these; HAProxy serves many more)
HAPROXY = (
    Source("haproxy_frontend_current_sessions", "gauge", "`proxy` = `door` \\| `calls` \\| `metrics`",
           "connections open now; on `door`, the teams' TLS connections"),
    Source("haproxy_frontend_connections_total", "counter", "`proxy`",
           "connections accepted, allowed or refused"),
    Source("haproxy_process_nbthread", "gauge", "—", "HAProxy's threads; a scrape that has it reached HAProxy itself"),
    Source("haproxy_backend_current_queue", "gauge", "`proxy` = `calls`",
           "connections waiting in the build queue now (max_concurrent_builds reached)"),
    Source("haproxy_backend_queue_time_average_seconds", "gauge", "`proxy` = `calls`",
           "how long the last 1024 queued connections waited, on average; BuildQueueWaitHigh reads it"),
)

NODE = (
    *(Source(f"{schedule.TEXTFILE_PREFIX}_{name}", "gauge", "`maintenance` (the job: `prune`, `drift`, `certs`,"
             " `backup`, `plugins-audit`, `version`), `unit` (its service, `buildkit-drift.service`)",
             f"{doc}: written by the job's run for the node exporter's textfile collector (daemon.schedule)")
      for name, doc in schedule.TEXTFILE_SERIES),
    Source("node_cpu_seconds_total", "counter", "`cpu`, `mode`",
           'CPU time per core and mode; `1 - rate(mode="idle")` is how busy the host is'),
    Source("node_memory_MemAvailable_bytes", "gauge", "—", "memory available for new work (`/proc/meminfo`)"),
    Source("node_filesystem_avail_bytes", "gauge", "`device`, `fstype`, `mountpoint`",
           "free bytes per filesystem; DiskFilling extrapolates it"),
    Source("node_filesystem_size_bytes", "gauge", "`device`, `fstype`, `mountpoint`", "total bytes per filesystem"),
    Source("node_disk_read_bytes_total", "counter", "`device`", "bytes read from each disk"),
    Source("node_disk_written_bytes_total", "counter", "`device`", "bytes written to each disk"),
)

PROMETHEUS = (
    Source("up", "gauge", "`job`, `instance`, `builder`",
           "1 if the last scrape succeeded; BuildkitdDown and ExporterDown read it"),
    Source("ALERTS", "gauge", "`alertname`, `alertstate`, the alert's labels",
           "every pending and firing alert; BuildkitAlertEscalated reads it"),
)


def exporter_rows() -> list[tuple[str, str, str, str]]:
    """(name, type, labels, help) of every family the kit's exporter serves."""
    return [(f.name, "gauge", ", ".join(f"`{label}`" for label in f.labels) or "—", f.help)
            for f in exporter.families()]


def known() -> set[str]:
    """Every name a query may read: the sources above (HAProxy's, the audit shipper's
    among them), the exporter's families, the recording rules."""
    return ({s.name for s in BUILDKITD + NODE + PROMETHEUS + HAPROXY} | {name for name, *_ in exporter_rows()}
            | {s.name for s in AUDIT} | {r.name for r in RECORDING_RULES})


def table(source: str) -> str:
    """The Markdown table of one source: buildkitd, exporter, node, prometheus or rules."""
    if source == "rules":
        rows = ["| series | meaning | PromQL |", "|---|---|---|"]
        rows += [f"| `{r.name}` | {r.meaning} | `{_cell(r.expr)}` |" for r in RECORDING_RULES]
        return "\n".join(rows)
    if source == "exporter":
        found = exporter_rows()
    else:
        found = [(s.name, s.type, s.labels, s.meaning) for s in SOURCES[source]]
    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    rows += [f"| `{name}` | {kind} | {labels} | {meaning} |" for name, kind, labels, meaning in found]
    return "\n".join(rows)


SOURCES = {"buildkitd": BUILDKITD, "audit": AUDIT, "haproxy": HAPROXY, "node": NODE, "prometheus": PROMETHEUS}
TABLES = ("buildkitd", "exporter", "audit", "haproxy", "node", "prometheus", "rules")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
