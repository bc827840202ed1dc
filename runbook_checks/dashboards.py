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

from . import files
from .errors import KitError
from .monitoring import minutes, query_range, url
from .params import PROJECT_ROOT
from .results import Outcome

DASHBOARD_UID = "buildkit-ops"
DEFAULT_DIR = PROJECT_ROOT / "docs" / "dashboards"
DASHBOARD_FILE = "buildkit-ops.dashboard.json"


class DashboardError(KitError):
    """The dashboard could not be generated, or Prometheus gave no data to draw."""


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
    """The Grafana dashboard JSON file (changed only when the panels change)."""
    path = output_dir(params) / DASHBOARD_FILE
    text = render_dashboard_json()
    old = files.read_text(path)
    count = len(PANELS)
    if old == text:
        return Outcome.ok(f"{path} up to date ({count} panels)", dashboard_json=str(path))
    diff = files.unified_diff(old, text, path)
    if not apply:
        return Outcome.changed(f"would write {path} ({count} panels)", diff)
    files.atomic_write(path, text)
    return Outcome.changed(f"wrote {path} ({count} panels)", diff, dashboard_json=str(path))


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


def draw(panel: PanelSpec, series: list[tuple[str, list, list]], path: Path, stamp: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=100)
    for label, times, values in series:
        ax.plot(times, values, label=label, linewidth=1.5)
    ax.set_title(f"{panel.row}: {panel.title}", fontsize=11, loc="left")
    ax.yaxis.set_major_formatter(_formatter(panel.unit))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=_dt.timezone.utc))
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8, loc="upper left")
    else:
        ax.text(0.5, 0.5, "no data in this range", ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xlabel(f"UTC — Prometheus data at {stamp}", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def render_plots(params: dict, apply: bool) -> Outcome:
    """Each panel queried from the live Prometheus over `dashboard_range` and drawn as
    a PNG, with an index (run time, Prometheus, series per panel). These are records of
    a run, like the run reports: the step reports ok with what it drew."""
    from . import monitoring

    port = params.get("prometheus_port") or 0
    if not port:
        return Outcome.skipped("prometheus_port is 0: no Prometheus to draw from")
    if not monitoring.answers(port):
        if not apply:
            return Outcome.skipped(f"Prometheus does not answer on {url(port)}: nothing to draw")
        raise DashboardError(f"Prometheus does not answer on {url(port)}",
                             "bring the lab up (invoke up) or apply the configure runbook with prometheus_port set")
    if not apply:
        return Outcome.skipped(f"check mode draws nothing; apply draws {len(PANELS)} panels from {url(port)}")
    end = time.time()
    span = minutes(params.get("dashboard_range") or "1h") * 60
    start = end - span
    step = max(span / 240, 1.0)
    stamp = _dt.datetime.fromtimestamp(end, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    folder = output_dir(params) / "live"
    folder.mkdir(parents=True, exist_ok=True)
    drawn, empty = [], []
    for panel in PANELS:
        series = fetch(port, panel, start, end, step)
        draw(panel, series, folder / f"{panel.slug}.png", stamp)
        (drawn if series else empty).append({"title": panel.title, "row": panel.row, "image": f"{panel.slug}.png",
                                             "series": len(series),
                                             "points": sum(len(v) for _, _, v in series)})
    index = {"rendered": stamp, "prometheus": url(port), "range": params.get("dashboard_range") or "1h",
             "panels": drawn + empty}
    files.atomic_write(folder / "index.json", json.dumps(index, indent=2) + "\n")
    files.atomic_write(folder / "index.md", render_page(index))
    if not drawn:
        raise DashboardError(f"Prometheus at {url(port)} returned no data for any panel",
                             "apply the monitoring runbook, run a few builds, and draw again")
    return Outcome.ok(f"drew {len(PANELS)} panels into {folder} from {url(port)} at {stamp}:"
                      f" {len(drawn)} with data" + (f", no data: {', '.join(p['title'] for p in empty)}" if empty else ""),
                      plots_dir=str(folder), panels_with_data=len(drawn))


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


def check_dashboard_json(text: str) -> list[str]:
    """Problems of a dashboard JSON: panels without a query, queries on unknown metrics
    (neither a recording rule nor a known source metric), duplicate titles."""
    from .monitoring import RECORDING_RULES

    known = {name for name, _ in RECORDING_RULES}
    doc = json.loads(text)
    problems, titles = [], set()
    prefixes = ("buildkit_", "node_", "histogram_count", "sum", "max", "1 -")
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
            if not (expr in known or expr.startswith(prefixes)):
                problems.append(f"{panel['title']}: {expr!r} reads neither a recording rule nor a source metric")
    return problems
