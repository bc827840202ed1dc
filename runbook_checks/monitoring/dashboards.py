"""Dashboards from one list of panels: a Grafana dashboard JSON (built with Grafana's
grafana-foundation-sdk) and the same panels drawn as PNG plots (matplotlib) from a live
Prometheus, so the docs site shows real pictures of a real run.

Each panel is a title, a unit and PromQL queries with a legend; the Grafana JSON and the
plots read the same `PANELS`, so what the docs show is what an imported dashboard shows."""

from __future__ import annotations

import datetime as _dt
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import files
from ..core.errors import DashboardError
from ..core.paths import PROJECT_ROOT
from ..core.results import Outcome
from ..core.units import prom_minutes as minutes
from . import metrics, prometheus
from .prometheus import query_range, url

DASHBOARD_UID = "buildkit-ops"
DEFAULT_DIR = PROJECT_ROOT / "docs" / "dashboards"
DASHBOARD_FILE = "buildkit-ops.dashboard.json"


@dataclass(frozen=True)
class PanelSpec:
    row: str
    title: str
    unit: str  # a Grafana unit id: s, bytes, percentunit, ops, Bps, short
    queries: tuple[tuple[str, str], ...]  # (PromQL, legend with {{label}})
    description: str = ""

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


PANELS: tuple[PanelSpec, ...] = (
    PanelSpec("Builds", "Build rate", "ops", (("buildkit:builds:rate5m", "{{builder}}"),),
              "Builds per second over 5m (buildkit_builds_total)."),
    PanelSpec("Builds", "Builds by status", "short",
              (('sum by (status) (increase(buildkit_builds_total[5m]))', "{{status}}"),),
              "Finished builds in the last 5m, success and failure."),
    PanelSpec("Builds", "Failure ratio", "percentunit", (("buildkit:build_failures:ratio_rate5m", "{{builder}}"),),
              "Failed builds / all builds over 5m; the BuildFailureRatioHigh alert fires above failure_ratio_max."),
    PanelSpec("Durations", "Build duration p50 and p95", "s",
              (("buildkit:build_duration_seconds:p50_5m", "p50 {{builder}}"),
               ("buildkit:build_duration_seconds:p95_5m", "p95 {{builder}}")),
              "From buildkit_build_duration_seconds, a native histogram (scraped as protobuf)."),
    PanelSpec("Durations", "Builds observed (native histogram count)", "short",
              (("histogram_count(sum by (builder) (buildkit_build_duration_seconds))", "{{builder}}"),),
              "histogram_count() works on the native histogram only: this panel proves the protobuf scrape."),
    PanelSpec("Cache", "Cache hit ratio", "percentunit", (("buildkit:cache_hit:ratio_rate5m", "{{builder}}"),),
              "Cached steps / all steps over 5m (buildkit_builds_steps_total{kind})."),
    PanelSpec("Cache", "Cache usage and its limit", "bytes",
              (("buildkit:cache_usage:bytes", "used {{builder}}"),
               ("max by (builder) (buildkit_cache_gc_max_used_space_bytes)", "maxUsedSpace {{builder}}")),
              "buildctl du against the GC policy's largest maxUsedSpace (the kit's exporter)."),
    PanelSpec("Resources", "CPU busy", "percentunit",
              (('1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m]))', "{{instance}}"),),
              "Share of CPU time not idle, all cores (node exporter)."),
    PanelSpec("Resources", "Memory available", "bytes", (("node_memory_MemAvailable_bytes", "{{instance}}"),),
              "MemAvailable from /proc/meminfo (node exporter)."),
    PanelSpec("Resources", "Disk space available", "bytes",
              (('node_filesystem_avail_bytes{mountpoint="/"}', "{{mountpoint}}"),),
              "Free bytes of the root filesystem; DiskFilling predicts when it reaches 0."),
    PanelSpec("Resources", "Disk I/O", "Bps",
              (("sum by (instance) (rate(node_disk_read_bytes_total[5m]))", "read"),
               ("sum by (instance) (rate(node_disk_written_bytes_total[5m]))", "written")),
              "Bytes per second read and written, all disks (node exporter)."),
    PanelSpec("Plugins", "Docker CLI plugins", "short",
              (("sum by (validity) (buildkit_ops_cli_plugins)", "{{validity}}"),
               ("sum(buildkit_ops_cli_plugins_insecure)", "insecure")),
              "From the last plugins-audit (the kit's exporter); InvalidCliPluginsPresent fires on invalid > 0."),
    # production builders, scraped through their front doors (frontdoor_targets)
    PanelSpec("Front door", "Calls by team", "ops",
              (("sum by (team) (rate(buildkit_frontdoor_calls_total[5m]))", "{{team}}"),),
              "gRPC calls per second through the front door, per team (the audit shipper's counts)."),
    PanelSpec("Front door", "Refused connections by reason", "short",
              (("sum by (reason) (increase(buildkit_frontdoor_refused_total[5m]))", "{{reason}}"),),
              "Connections refused in the last 5m: no certificate, another CA, expired, revoked;"
              " AccessDeniedBurst fires above denied_per_minute_max."),
    PanelSpec("Front door", "Open connections", "short",
              (('sum by (builder) (haproxy_frontend_current_sessions{proxy="door"})', "{{builder}}"),),
              "Teams' TLS connections open on the front door now (HAProxy's own metrics)."),
    PanelSpec("Front door", "Build queue", "short",
              (('sum by (builder) (haproxy_backend_current_queue{proxy="calls"})', "waiting {{builder}}"),
               ('max by (builder) (haproxy_backend_queue_time_average_seconds{proxy="calls"})', "avg wait s {{builder}}")),
              "Connections waiting for one of max_concurrent_builds slots, and how long the last ones waited;"
              " BuildQueueWaitHigh fires above queue_wait_max_seconds."),
    PanelSpec("Front door", "Days until a certificate expires", "short",
              (("min by (certificate) ((buildkit_ops_certificate_expiry_timestamp_seconds - time()) / 86400)",
                "{{certificate}}"),),
              "The CA, the front door's and each team's soonest; CertificateExpiresSoon fires below"
              " cert_expiry_warn_days."),
    # a production builder's slice (the audit shipper serves its cgroup usage)
    PanelSpec("Builder limits", "Builder memory against its limit", "bytes",
              (("buildkit_ops_builder_memory_bytes", "used {{builder}} {{slice}}"),
               ("buildkit_ops_builder_memory_limit_bytes", "memory_max {{builder}} {{slice}}")),
              "The builder's slice: the daemon and its build containers (BuilderMemoryNearLimit)."),
    PanelSpec("Builder limits", "Builder CPU throttled", "percentunit",
              (("rate(buildkit_ops_builder_cpu_throttled_periods_total[5m])"
                " / rate(buildkit_ops_builder_cpu_periods_total[5m])", "{{builder}} {{slice}}"),),
              "Share of CPU periods in which the builder's slice hit its cpu_quota (BuilderCpuThrottled)."),
)


# --------------------------------------------------------------------------------------
# Grafana dashboard JSON
# --------------------------------------------------------------------------------------
def grafana_dashboard(panels: tuple[PanelSpec, ...] = PANELS) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model, built with grafana-foundation-sdk; its
    datasource is a variable, so it imports into any Grafana with a Prometheus."""
    from grafana_foundation_sdk.builders import dashboard, prometheus, timeseries
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

    ds = DataSourceRef(type_val="prometheus", uid="${datasource}")
    board = (dashboard.Dashboard("BuildKit (buildkit-ops)").uid(DASHBOARD_UID)
             .tags(["buildkit", "buildkit-ops"]).refresh("30s").time("now-6h", "now").timezone("utc")
             .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")))
    row = None
    for panel in panels:
        if panel.row != row:
            row = panel.row
            board = board.with_row(dashboard.Row(row))
        ts = (timeseries.Panel().title(panel.title).description(panel.description).unit(panel.unit)
              .datasource(ds).height(8).span(12))
        for i, (expr, legend) in enumerate(panel.queries):
            ts = ts.with_target(prometheus.Dataquery().expr(expr).legend_format(legend).ref_id("ABCDEFGH"[i])
                                .datasource(ds))
        board = board.with_panel(ts)
    return json.loads(json.dumps(board.build(), cls=JSONEncoder))


def render_dashboard_json() -> str:
    return json.dumps(grafana_dashboard(), indent=2, sort_keys=True) + "\n"


def output_dir(params: dict) -> Path:
    given = params.get("dashboards_dir") or ""
    return Path(given) if given else DEFAULT_DIR


def write_dashboard(params: dict, apply: bool) -> Outcome:
    """The Grafana dashboard JSON file (changed only when the panels change; under docs/
    by default, where git keeps its history, so no backup)."""
    path = output_dir(params) / DASHBOARD_FILE
    outcome = files.converge({path: render_dashboard_json()}, apply)
    outcome.message += f" ({len(PANELS)} panels)"
    if outcome.status == "ok" or apply:
        outcome.facts["dashboard_json"] = str(path)
    return outcome


# --------------------------------------------------------------------------------------
# plots from a live Prometheus
# --------------------------------------------------------------------------------------
def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip() or "value"


def fetch(port: int, panel: PanelSpec, start: float, end: float, step: float) -> list[tuple[str, list, list]]:
    """[(legend, times, values)] for every series every query of the panel returns."""
    out = []
    for expr, template in panel.queries:
        for series in query_range(port, expr, start, end, step):
            points = [(t, float(v)) for t, v in series["values"] if v not in ("NaN", "+Inf", "-Inf")]
            if not points:  # a ratio with nothing to divide, a quantile of no builds
                continue
            times = [_dt.datetime.fromtimestamp(float(t), _dt.timezone.utc) for t, _ in points]
            out.append((legend(template, series["metric"]), times, [v for _, v in points]))
    return out


def _formatter(unit: str):
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    if unit == "percentunit":
        return PercentFormatter(1.0)
    if unit in ("bytes", "Bps"):
        def fmt(v, _pos):
            for suffix in ("B", "KiB", "MiB", "GiB", "TiB"):
                if abs(v) < 1024:
                    return f"{v:.3g} {suffix}" + ("/s" if unit == "Bps" else "")
                v /= 1024
            return f"{v:.3g} PiB"
        return FuncFormatter(fmt)
    if unit == "s":
        return FuncFormatter(lambda v, _p: f"{v:.3g} s")
    return FuncFormatter(lambda v, _p: f"{v:.3g}")


def draw(panel: PanelSpec, series: list[tuple[str, list, list]], stamp: str) -> bytes:
    """The panel as PNG bytes; the figure is closed even if drawing or saving fails."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=100)
    try:
        for label, times, values in series:
            ax.plot(times, values, label=label, linewidth=1.5)
        ax.set_title(f"{panel.row}: {panel.title}", fontsize=11, loc="left")
        ax.yaxis.set_major_formatter(_formatter(panel.unit))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=_dt.timezone.utc))
        ax.grid(alpha=0.3)
        if series:
            ax.legend(fontsize=8, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data in this range", ha="center", va="center", transform=ax.transAxes,
                    color="grey")
        ax.set_xlabel(f"UTC — Prometheus data at {stamp}", fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)


def render_plots(params: dict, apply: bool) -> Outcome:
    """Each panel queried from the live Prometheus over `dashboard_range` and drawn as
    a PNG, with an index (run time, Prometheus, series per panel). Every image is drawn
    in memory first; a file is written (atomically) only if it differs, and the step
    reports changed with the files it wrote — under docs/ by default, where they are
    committed, so a new drawing there is a change to review."""
    port = params.get("prometheus_port") or 0
    if not port:
        return Outcome.skipped("prometheus_port is 0: no Prometheus to draw from")
    folder = output_dir(params) / "live"
    if not prometheus.answers(port):
        if not apply:
            return Outcome.skipped(f"Prometheus does not answer on {url(port)}: nothing to draw")
        raise DashboardError(f"Prometheus does not answer on {url(port)}",
                             "bring the lab up (invoke up) or apply the configure runbook with prometheus_port set")
    if not apply:
        return Outcome.skipped(f"check mode draws nothing; apply draws {len(PANELS)} panels from {url(port)}"
                               f" into {folder}")
    end = time.time()
    span = minutes(params.get("dashboard_range") or "1h") * 60
    start = end - span
    step = max(span / 240, 1.0)
    stamp = _dt.datetime.fromtimestamp(end, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    drawn, empty, images = [], [], {}
    for panel in PANELS:
        series = fetch(port, panel, start, end, step)
        images[folder / f"{panel.slug}.png"] = draw(panel, series, stamp)
        (drawn if series else empty).append({"title": panel.title, "row": panel.row, "image": f"{panel.slug}.png",
                                             "series": len(series),
                                             "points": sum(len(v) for _, _, v in series)})
    if not drawn:
        raise DashboardError(f"Prometheus at {url(port)} returned no data for any panel; nothing was written",
                             "apply the monitoring runbook, run a few builds, and draw again")
    index = {"rendered": stamp, "prometheus": url(port), "range": params.get("dashboard_range") or "1h",
             "panels": drawn + empty}
    wanted = {**images, folder / "index.json": json.dumps(index, indent=2) + "\n", folder / "index.md": render_page(index)}
    written = [path.name for path, content in wanted.items() if files.write_if_changed(path, content)]
    facts = {"plots_dir": str(folder), "panels_with_data": len(drawn)}
    summary = (f"{len(drawn)} of {len(PANELS)} panels with data from {url(port)} at {stamp}"
               + (f"; no data: {', '.join(p['title'] for p in empty)}" if empty else ""))
    if not written:
        return Outcome.ok(f"{folder} up to date: {summary}", **facts)
    return Outcome.changed(f"wrote {len(written)} files into {folder} ({', '.join(written)}): {summary}", **facts)


def render_page(index: dict) -> str:
    """The docs page of one run's plots: every panel's PNG, captioned with the run's time."""
    lines = ["# Dashboards from a real run", "",
             f"Drawn by the dashboards runbook from the Prometheus at `{index['prometheus']}` on"
             f" **{index['rendered']}**, over the {index['range']} before it. The same panels, as a Grafana"
             " dashboard: [buildkit-ops.dashboard.json](../buildkit-ops.dashboard.json)"
             " ([how to import it](../../guides/monitoring.md)).", ""]
    row = None
    by_title = {p["title"]: p for p in index["panels"]}
    for panel in PANELS:
        info = by_title[panel.title]
        if panel.row != row:
            row = panel.row
            lines += [f"## {row}", ""]
        data = f"{info['series']} series, {info['points']} points" if info["series"] else "no data in this range"
        lines += [f"![{panel.title}]({info['image']})", "",
                  f"*{panel.title}* — {panel.description} ({data}; {index['rendered']})", ""]
    return "\n".join(lines)


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: every identifier that is not a
    function (followed by `(`), a keyword, a label inside {...} or a by/without/on list."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    bare = re.sub(r"\{[^}]*\}", " ", bare)  # label matchers
    bare = re.sub(r"\[[^\]]*\]", " ", bare)  # range selectors
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", bare):
        word, call = match.group(1), match.group(2)
        if not call and word.lower() not in PROMQL_WORDS:
            names.add(word)
    return names


def check_dashboard_json(text: str) -> list[str]:
    """Problems of a dashboard JSON: panels without a query, queries on metrics that are
    neither a recording rule nor a source metric (monitoring.metrics), duplicate titles."""
    known = metrics.known()
    doc = json.loads(text)
    problems, titles = [], set()
    for panel in doc.get("panels", []):
        if panel.get("type") == "row":
            continue
        if panel["title"] in titles:
            problems.append(f"duplicate title {panel['title']!r}")
        titles.add(panel["title"])
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{panel['title']}: no query")
        for target in targets:
            expr = target.get("expr", "")
            names = metric_names(expr)
            if not names:
                problems.append(f"{panel['title']}: {expr!r} reads no metric")
            for name in sorted(names - known):
                problems.append(f"{panel['title']}: {expr!r} reads {name}, which is neither a recording rule nor"
                                " a metric of buildkitd, the kit's exporter or the node exporter")
    return problems
