"""Prometheus for the lab stack (Debian's `prometheus` package, 127.0.0.1 only): its
supervisord programs (Prometheus itself and Debian's node exporter), the scrape
configuration, the recording and alert rules with the profile's thresholds, their
promtool unit tests, and the way a new configuration replaces the running one.

A configuration replaces the running one only after `promtool check config` and
`promtool test rules` (generated tests: every alert fires on one input and stays silent
on another) pass on a scratch copy. Then the old files are backed up, the new ones
written atomically and Prometheus reloaded (POST /-/reload); if the reload is refused,
the old files go back, Prometheus reloads them, and the step fails with its error.

Prometheus starts on a bootstrap file (itself as its only target) that install and
configure write; `python -m runbook_checks.monitoring serve` copies it into place only
while the monitoring runbook has written none, so the two never fight over one file."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from . import files
from .errors import KitError
from .layout import Layout
from .results import Outcome

PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
NODE_EXPORTER = Path("/usr/bin/prometheus-node-exporter")
RULES_FILE = "buildkit.rules.yml"
WINDOW = "5m"  # the rate window of every recording rule
NATIVE_HISTOGRAMS = "--enable-feature=native-histograms"  # makes Prometheus 2.4x scrape protobuf


class MonitoringError(KitError):
    """Prometheus, its configuration or its targets are missing, invalid or down."""


# --------------------------------------------------------------------------------------
# where things go: Prometheus and Alertmanager each have <config>/<service>/<service>.yml,
# a bootstrap file beside it and data under <state_dir>/<service>
# --------------------------------------------------------------------------------------
def config_dir(layout: Layout, service: str = "prometheus") -> Path:
    return layout.config_path.parent / service


def config_path(layout: Layout, service: str = "prometheus") -> Path:
    return config_dir(layout, service) / f"{service}.yml"


def bootstrap_path(layout: Layout, service: str = "prometheus") -> Path:
    return config_dir(layout, service) / f"{service}.bootstrap.yml"


def data_dir(layout: Layout, service: str = "prometheus") -> Path:
    return layout.state_dir / service


def rules_path(layout: Layout) -> Path:
    return config_dir(layout) / "rules" / RULES_FILE


def rule_tests_path(layout: Layout) -> Path:
    return config_dir(layout) / "rules" / "buildkit.rules.test.yml"


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def require_binary(path: Path, package: str) -> Path:
    if not path.exists():
        raise MonitoringError(f"{path} is not installed", f"apt-get install {package} (./kit setup installs it)")
    return path


# --------------------------------------------------------------------------------------
# supervisord programs
# --------------------------------------------------------------------------------------
def served_program(layout: Layout, service: str, binary: Path, port: int, flags: str, bootstrap: str):
    """`service` (prometheus or alertmanager) under supervisord through `serve` below:
    it starts on its bootstrap file until a runbook writes <service>.yml."""
    from .params import PROJECT_ROOT
    from .programs import Program

    return Program(service, f"{sys.executable} -m runbook_checks.monitoring serve --binary {binary}"
                   f" --config {config_path(layout, service)} --bootstrap {bootstrap_path(layout, service)} -- {flags}",
                   port, layout.log_dir / f"{service}.log", f"{url(port)}/-/ready",
                   files={bootstrap_path(layout, service): bootstrap}, dirs=(data_dir(layout, service),),
                   directory=str(PROJECT_ROOT), error_patterns=("level=error", "err=", "address already in use"))


def program(layout: Layout, params: dict):
    """Prometheus beside buildkitd (runbook_checks.programs): lifecycle API on (for
    reloads), native histograms on (protobuf scrape), data under <state_dir>/prometheus."""
    port = params["prometheus_port"]
    flags = (f"--web.listen-address=127.0.0.1:{port} --storage.tsdb.path={data_dir(layout)}"
             f" --storage.tsdb.retention.time=7d --web.enable-lifecycle {NATIVE_HISTOGRAMS}")
    return served_program(layout, "prometheus", PROMETHEUS, port, flags, render_bootstrap(port))


def node_exporter_program(layout: Layout, params: dict):
    """Debian's node exporter on 127.0.0.1: CPU, memory, filesystems, disk I/O, load."""
    from .programs import Program

    port = params["node_exporter_port"]
    collectors = " ".join(f"--collector.{c}" for c in ("cpu", "meminfo", "filesystem", "diskstats", "loadavg", "stat"))
    return Program("node_exporter", f"{NODE_EXPORTER} --web.listen-address=127.0.0.1:{port}"
                   f" --collector.disable-defaults {collectors}",
                   port, layout.log_dir / "node_exporter.log", f"{url(port)}/metrics",
                   error_patterns=("level=error", "err=", "address already in use"))


def render_bootstrap(port: int) -> str:
    """What Prometheus starts on before the monitoring runbook writes its configuration."""
    return ("# Managed by buildkit-ops (install/configure): Prometheus starts on this file until the\n"
            "# monitoring runbook writes prometheus.yml beside it.\n"
            + yaml.safe_dump({"scrape_configs": [{"job_name": "prometheus",
                                                  "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]},
                             sort_keys=False))


def serve(argv: list[str]) -> None:
    """Exec the binary on --config, copying --bootstrap there first if it is missing."""
    parser = argparse.ArgumentParser(prog="python -m runbook_checks.monitoring serve")
    parser.add_argument("--binary", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--config-flag", default="--config.file")
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    config, bootstrap = Path(args.config), Path(args.bootstrap)
    if not config.exists():
        files.atomic_write(config, bootstrap.read_text())
    rest = [a for a in args.rest if a != "--"]
    os.execv(args.binary, [args.binary, f"{args.config_flag}={config}", *rest])


# --------------------------------------------------------------------------------------
# the scrape configuration
# --------------------------------------------------------------------------------------
def scrape_jobs(params: dict, debug_port: int) -> list[dict[str, Any]]:
    """(job, target) pairs for what the parameters run; every target carries `builder`."""
    builder = params.get("builder_name") or "buildkitd"
    jobs = [("buildkitd", debug_port, {}), ("buildkit-ops-exporter", params.get("exporter_port"), {"honor_labels": True}),
            ("node", params.get("node_exporter_port"), {}), ("prometheus", params.get("prometheus_port"), {}),
            ("alertmanager", params.get("alertmanager_port"), {})]
    out = []
    for job, port, extra in jobs:
        if port:
            out.append({"job_name": job, **extra,
                        "static_configs": [{"targets": [f"127.0.0.1:{port}"], "labels": {"builder": builder}}]})
    return out


def render_config(params: dict, debug_port: int) -> str:
    """prometheus.yml: intervals from the profile, the rules file, Alertmanager, targets."""
    doc: dict[str, Any] = {
        "global": {"scrape_interval": params.get("scrape_interval", "15s"),
                   "evaluation_interval": params.get("evaluation_interval", "15s")},
        "rule_files": [f"rules/{RULES_FILE}"],
    }
    if params.get("alertmanager_port"):
        doc["alerting"] = {"alertmanagers": [{"static_configs": [
            {"targets": [f"127.0.0.1:{params['alertmanager_port']}"]}]}]}
    doc["scrape_configs"] = scrape_jobs(params, debug_port)
    return "# Managed by buildkit-ops (runbook: monitoring). Changes here are overwritten.\n" + \
        yaml.safe_dump(doc, sort_keys=False)


# --------------------------------------------------------------------------------------
# recording and alert rules
# --------------------------------------------------------------------------------------
def _p(quantile: float) -> str:
    """A quantile of buildkit_build_duration_seconds that works on the native histogram
    BuildKit exports (scraped as protobuf) and on a classic one (_bucket series)."""
    return (f"histogram_quantile({quantile}, sum by (builder) (rate(buildkit_build_duration_seconds[{WINDOW}])))"
            f" or histogram_quantile({quantile}, sum by (builder, le)"
            f" (rate(buildkit_build_duration_seconds_bucket[{WINDOW}])))")


RECORDING_RULES: list[tuple[str, str]] = [
    ("buildkit:builds:rate5m", f"sum by (builder) (rate(buildkit_builds_total[{WINDOW}]))"),
    ("buildkit:build_failures:ratio_rate5m",
     f'sum by (builder) (rate(buildkit_builds_total{{status="failure"}}[{WINDOW}]))'
     f" / sum by (builder) (rate(buildkit_builds_total[{WINDOW}]))"),
    ("buildkit:build_duration_seconds:p50_5m", _p(0.5)),
    ("buildkit:build_duration_seconds:p95_5m", _p(0.95)),
    ("buildkit:cache_hit:ratio_rate5m",
     f'sum by (builder) (rate(buildkit_builds_steps_total{{kind="cached"}}[{WINDOW}]))'
     f' / sum by (builder) (rate(buildkit_builds_steps_total{{kind="total"}}[{WINDOW}]))'),
    ("buildkit:cache_usage:bytes", "sum by (builder) (buildkit_cache_disk_usage_bytes)"),
    ("buildkit:cache_usage:ratio",
     "sum by (builder) (buildkit_cache_disk_usage_bytes)"
     " / on (builder) (max by (builder) (buildkit_cache_gc_max_used_space_bytes) > 0)"),
]

ESCALATION_ALERT = "BuildkitAlertEscalated"


def alert_specs(params: dict) -> list[dict[str, Any]]:
    """Every alert: name, expression, `for`, severity, team, summary, description."""
    p = params
    down_for, for_ = p.get("builder_down_for", "1m"), p.get("alert_for", "5m")
    fr, p95 = p.get("failure_ratio_max", 0.2), p.get("build_p95_max_seconds", 600.0)
    hit, usage, hours = p.get("cache_hit_ratio_min", 0.5), p.get("cache_usage_max_ratio", 0.9), p.get("disk_fill_hours", 4.0)
    esc = p.get("escalate_after", "30m")
    fs = 'fstype!~"tmpfs|ramfs|squashfs|nsfs|proc|sysfs"'
    return [
        dict(alert="BuildkitdDown", expr='up{job="buildkitd"} == 0', for_=down_for, severity="critical", team="build",
             summary="buildkitd {{ $labels.builder }} is down",
             description=f"Prometheus has not reached buildkitd's debug address {{{{ $labels.instance }}}} for"
                         f" {down_for}: builds on {{{{ $labels.builder }}}} fail. Its build alerts (team build) are"
                         " inhibited while it is down; host alerts are not."),
        dict(alert="BuildFailureRatioHigh", expr=f"buildkit:build_failures:ratio_rate5m > {num(fr)}", for_=for_,
             severity="warning", team="build", summary="Builds fail on {{ $labels.builder }}",
             description=f"More than {pct(fr)} of the builds on {{{{ $labels.builder }}}} failed over {WINDOW}"
                         f" for {for_} (threshold failure_ratio_max={num(fr)})."),
        dict(alert="BuildDurationP95High", expr=f"buildkit:build_duration_seconds:p95_5m > {num(p95)}", for_=for_,
             severity="warning", team="build", summary="Builds are slow on {{ $labels.builder }}",
             description=f"The 95th percentile of build durations on {{{{ $labels.builder }}}} has been above"
                         f" {num(p95)}s for {for_} (threshold build_p95_max_seconds)."),
        dict(alert="CacheHitRatioLow", expr=f"buildkit:cache_hit:ratio_rate5m < {num(hit)}", for_=for_,
             severity="warning", team="build", summary="Few build steps come from the cache on {{ $labels.builder }}",
             description=f"Less than {pct(hit)} of the build steps on {{{{ $labels.builder }}}} were cached over"
                         f" {WINDOW} for {for_} (threshold cache_hit_ratio_min={num(hit)})."),
        dict(alert="CacheNearLimit", expr=f"buildkit:cache_usage:ratio > {num(usage)}", for_=for_,
             severity="warning", team="build", summary="The build cache of {{ $labels.builder }} is near its limit",
             description=f"The build cache of {{{{ $labels.builder }}}} uses more than {pct(usage)} of the GC"
                         f" policy's maxUsedSpace (threshold cache_usage_max_ratio={num(usage)})."),
        dict(alert="DiskFilling",
             expr=f"predict_linear(node_filesystem_avail_bytes{{{fs}}}[30m], {num(hours)} * 3600) < 0",
             for_=for_, severity="warning", team="platform",
             summary="{{ $labels.mountpoint }} fills up within hours",
             description=f"At the rate of the last 30m, {{{{ $labels.mountpoint }}}} ({{{{ $labels.device }}}}) on"
                         f" {{{{ $labels.instance }}}} runs out of space within {num(hours)}h"
                         " (threshold disk_fill_hours)."),
        dict(alert="InvalidCliPluginsPresent", expr='buildkit_ops_cli_plugins{validity="invalid"} > 0', for_=for_,
             severity="warning", team="platform", summary="Invalid Docker CLI plugins on the build host",
             description="The last plugins-audit found invalid Docker CLI plugins on {{ $labels.builder }}'s host:"
                         " `docker` prints warnings and may load a broken binary."),
        dict(alert="ExporterDown", expr='up{job="buildkit-ops-exporter"} == 0', for_=down_for, severity="warning",
             team="platform", summary="The buildkit-ops exporter is down",
             description=f"Prometheus has not reached the kit's exporter {{{{ $labels.instance }}}} for {down_for}:"
                         " the cache and plugin alerts see no data."),
        dict(alert=ESCALATION_ALERT,
             expr=("max without (alertname, alertstate) (label_replace(ALERTS{alertstate=\"firing\","
                   f" severity=\"warning\", alertname!=\"{ESCALATION_ALERT}\"}}, \"escalated_alert\", \"$1\","
                   " \"alertname\", \"(.+)\"))"),
             for_=esc, severity="warning", team="", extra={"escalated": "true"},
             summary="{{ $labels.escalated_alert }} has been firing for " + esc,
             description=f"The warning {{{{ $labels.escalated_alert }}}} on {{{{ $labels.builder }}}} is still firing"
                         f" after {esc} (escalate_after): it goes to the escalation receiver."),
    ]


def slug(alert: str) -> str:
    """BuildkitdDown -> buildkitd-down: the alert's docs page."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", alert).lower()


def runbook_url(params: dict, alert: str) -> str:
    return f"{(params.get('docs_url') or 'http://127.0.0.1:8000').rstrip('/')}/alerts/{slug(alert)}/"


def num(value: float) -> str:
    """A threshold as PromQL writes it: 0.2, 600, 1e+09 stay short and exact."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def pct(value: float) -> str:
    return f"{float(value) * 100:g}%"


def _rule(spec: dict, params: dict) -> dict[str, Any]:
    labels = {"severity": spec["severity"]}
    if spec["team"]:
        labels["team"] = spec["team"]
    labels.update(spec.get("extra", {}))
    return {"alert": spec["alert"], "expr": spec["expr"], "for": spec["for_"], "labels": labels,
            "annotations": {"summary": spec["summary"], "description": spec["description"],
                            "runbook_url": runbook_url(params, spec["alert"])}}


def render_rules(params: dict) -> str:
    """buildkit.rules.yml: the recording rules, then the alerts with the thresholds."""
    interval = params.get("evaluation_interval", "15s")
    doc = {"groups": [
        {"name": "buildkit-recording", "interval": interval,
         "rules": [{"record": name, "expr": expr} for name, expr in RECORDING_RULES]},
        {"name": "buildkit-alerts", "interval": interval,
         "rules": [_rule(spec, params) for spec in alert_specs(params)]},
    ]}
    return "# Managed by buildkit-ops (runbook: monitoring). Thresholds come from the profile.\n" + \
        yaml.safe_dump(doc, sort_keys=False, width=1000)


# --------------------------------------------------------------------------------------
# promtool unit tests generated from the thresholds
# --------------------------------------------------------------------------------------
def minutes(duration: str) -> float:
    """A Prometheus duration ("90s", "5m", "2h", "1d") in minutes."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d|w|y)", duration.strip())
    if not match:
        raise MonitoringError(f"{duration!r} is not a Prometheus duration", 'write it like "30s", "5m" or "2h"')
    factor = {"ms": 1 / 60000, "s": 1 / 60, "m": 1, "h": 60, "d": 1440, "w": 10080, "y": 525600}[match.group(2)]
    return int(match.group(1)) * factor


def _expand(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), template)


def seconds(duration: str) -> int:
    return round(minutes(duration) * 60)


def _case(spec: dict, params: dict, fires: bool, series: list[tuple[str, str]], extra_labels: dict[str, str],
          checks: list[tuple[int, bool]], samples: int) -> dict[str, Any]:
    """One promtool test case: `series` sampled every minute, and the alert checked at
    each (seconds, firing?) of `checks`."""
    rule = _rule(spec, params)
    labels = {**extra_labels, **rule["labels"]}
    ann = {k: _expand(v, labels) for k, v in rule["annotations"].items()}
    return {"interval": "1m", "name": f"{spec['alert']} {'fires' if fires else 'stays silent'}",
            "input_series": [{"series": s, "values": v.replace("N", str(samples))} for s, v in series],
            "alert_rule_test": [{"eval_time": f"{at}s", "alertname": spec["alert"],
                                 "exp_alerts": [{"exp_labels": labels, "exp_annotations": ann}] if firing else []}
                                for at, firing in checks]}


def _margin(threshold: float, below: float = 0.0, above: float = 1.0) -> float:
    """How far from a ratio threshold the test inputs sit: 1% of the threshold, and
    less than half the room to 0 and 1 (so both sides stay valid ratios)."""
    return min(0.01 * threshold, (threshold - below) / 2, (above - threshold) / 2)


def render_rule_tests(params: dict, rules_file: str = RULES_FILE) -> str:
    """`promtool test rules` input. For every alert, a case where it fires — checked
    silent one evaluation step before its `for` ends and firing when it ends — and a case
    where it stays silent, with inputs a small margin either side of the profile's
    thresholds. The silent cases also hold near misses: BuildkitdDown with another job
    down, ExporterDown with buildkitd down, no escalation of a critical alert."""
    specs = {s["alert"]: s for s in alert_specs(params)}
    down, for_, esc = (seconds(specs[a]["for_"]) for a in ("BuildkitdDown", "BuildFailureRatioHigh", ESCALATION_ALERT))
    step = math.gcd(60, down, for_, esc)  # the test's evaluation interval: every `for` ends on a step
    rated = 60  # a rate over 5m of series sampled each minute has its second sample at 1m
    end = 60 * math.ceil((max(down, rated + for_, 120 + for_) + esc + 600) / 60)
    n = end // 60 + 1
    b = {"builder": "lab"}
    bk_labels = {"job": "buildkitd", "instance": "127.0.0.1:16060", "builder": "lab"}
    ex_labels = {"job": "buildkit-ops-exporter", "instance": "127.0.0.1:16061", "builder": "lab"}
    bk = ", ".join(f'{k}="{v}"' for k, v in bk_labels.items())
    ex = ", ".join(f'{k}="{v}"' for k, v in ex_labels.items())
    cases = []

    def fires(name, series, labels, true_from):
        """The condition holds from `true_from`: silent one step before `for` ends, firing then."""
        ends = true_from + seconds(specs[name]["for_"])
        cases.append(_case(specs[name], params, True, series, labels, [(ends - step, False), (ends, True)], n))
        return ends

    def silent(name, series, labels, at):
        cases.append(_case(specs[name], params, False, series, labels, [(a, False) for a in sorted(set(at))], n))

    fires("BuildkitdDown", [(f"up{{{bk}}}", "0xN")], bk_labels, 0)
    silent("BuildkitdDown", [(f"up{{{bk}}}", "1xN"), (f"up{{{ex}}}", "0xN")], bk_labels, [down, end])
    fires("ExporterDown", [(f"up{{{ex}}}", "0xN")], ex_labels, 0)
    silent("ExporterDown", [(f"up{{{ex}}}", "1xN"), (f"up{{{bk}}}", "0xN")], ex_labels, [down, end])

    def counters(metric, label, part, rest, share, rest_is_total):
        """Two counters growing 600 per minute in all, `share` of it in `part`."""
        other = 600.0 if rest_is_total else 600.0 * (1 - share)
        return [(f'{metric}{{{bk}, {label}="{part}"}}', f"0+{600.0 * share!r}xN"),
                (f'{metric}{{{bk}, {label}="{rest}"}}', f"0+{other!r}xN")]

    fr = float(params.get("failure_ratio_max", 0.2))
    m = min(_margin(fr), fr * fr / (2 * (1 + fr)))  # below fr²/(1+fr): failures/successes would cross fr
    fires("BuildFailureRatioHigh", counters("buildkit_builds_total", "status", "failure", "success", fr + m, False),
          b, rated)
    silent("BuildFailureRatioHigh", counters("buildkit_builds_total", "status", "failure", "success", fr - m, False),
           b, [rated + for_, end])

    hit = float(params.get("cache_hit_ratio_min", 0.5))
    m = _margin(hit)
    fires("CacheHitRatioLow", counters("buildkit_builds_steps_total", "kind", "cached", "total", hit - m, True),
          b, rated)
    silent("CacheHitRatioLow", counters("buildkit_builds_steps_total", "kind", "cached", "total",
                                        min(hit + m, 1.0), True), b, [rated + for_, end])

    # p95 of the classic buckets (promtool cannot feed native histograms; the integration
    # test checks that half on a real buildkitd): every build in (0.97, 0.99]·t or
    # (0.99, 1.01]·t interpolates to 0.989·t (silent) or 1.009·t (fires)
    p95 = float(params.get("build_p95_max_seconds", 600.0))
    les = [p95 * 0.97, p95 * 0.99, p95 * 1.01]

    def hist(cumulative):
        out = [(f'buildkit_build_duration_seconds_bucket{{{bk}, le="{num(le)}"}}', f"0+{c}xN")
               for le, c in zip(les, cumulative)]
        return out + [(f'buildkit_build_duration_seconds_bucket{{{bk}, le="+Inf"}}', "0+10xN")]

    fires("BuildDurationP95High", hist([0, 0, 10]), b, rated)
    silent("BuildDurationP95High", hist([0, 10, 10]), b, [rated + for_, end])

    usage = float(params.get("cache_usage_max_ratio", 0.9))
    m = _margin(usage)
    limit = 1_000_000_000

    def cache(share):
        return [(f'buildkit_cache_disk_usage_bytes{{{ex}, record_type="regular"}}', f"{round(limit * share)}xN"),
                (f"buildkit_cache_gc_max_used_space_bytes{{{ex}}}", f"{limit}xN")]

    fires("CacheNearLimit", cache(usage + m), b, 0)
    silent("CacheNearLimit", cache(usage - m), b, [for_, end])

    # a filesystem falling at a steady rate whose predicted empty time comes within
    # disk_fill_hours half a step before `begins`: firing exactly `for` after it pins the
    # threshold to within a step
    hours = float(params.get("disk_fill_hours", 4.0))
    fs = {"job": "node", "instance": "127.0.0.1:9100", "builder": "lab", "device": "/dev/sda1", "fstype": "ext4",
          "mountpoint": "/"}
    fs_sel = ", ".join(f'{k}="{v}"' for k, v in fs.items())
    start, begins = 100_000_000_000, 120
    empty_at = begins - step / 2 + hours * 3600  # seconds
    per_minute = start / empty_at * 60
    fires("DiskFilling", [(f"node_filesystem_avail_bytes{{{fs_sel}}}", f"{start}-{per_minute!r}xN")], fs, begins)
    silent("DiskFilling", [(f"node_filesystem_avail_bytes{{{fs_sel}}}", f"{start}xN")], fs, [begins + for_, end])

    plug = [(f'buildkit_ops_cli_plugins{{{ex}, validity="invalid"}}', "2xN")]
    plug_labels = {**ex_labels, "validity": "invalid"}
    plugin_fires = fires("InvalidCliPluginsPresent", plug, plug_labels, 0)
    silent("InvalidCliPluginsPresent", [(f'buildkit_ops_cli_plugins{{{ex}, validity="invalid"}}', "0xN")],
           plug_labels, [for_, end])

    # escalation: the plugin warning, once firing, escalates after escalate_after; a
    # critical alert (BuildkitdDown) firing as long never does
    plugin = specs["InvalidCliPluginsPresent"]
    esc_labels = {**plug_labels, "severity": "warning", "team": plugin["team"],
                  "escalated_alert": "InvalidCliPluginsPresent"}
    fires(ESCALATION_ALERT, plug, esc_labels, plugin_fires)
    silent(ESCALATION_ALERT, [(f"up{{{bk}}}", "0xN")], esc_labels, [down + esc, end])
    doc = {"rule_files": [rules_file], "evaluation_interval": f"{step}s",
           "group_eval_order": ["buildkit-recording", "buildkit-alerts"], "tests": cases}
    return "# Generated by buildkit-ops from the profile's thresholds: each alert fires and stays silent.\n" + \
        yaml.safe_dump(doc, sort_keys=False, width=1000)


# --------------------------------------------------------------------------------------
# validation with promtool, on a scratch copy
# --------------------------------------------------------------------------------------
def _promtool(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    require_binary(PROMTOOL, "prometheus")
    return subprocess.run([str(PROMTOOL), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def validate(config_text: str, rules_text: str, tests_text: str) -> str:
    """`promtool check config` (which checks the rules too) and `promtool test rules` on
    scratch copies; a MonitoringError with promtool's words if either refuses."""
    with tempfile.TemporaryDirectory(prefix="kit-prom-") as scratch:
        root = Path(scratch)
        (root / "rules").mkdir()
        (root / "prometheus.yml").write_text(config_text)
        (root / "rules" / RULES_FILE).write_text(rules_text)
        (root / "rules" / "test.yml").write_text(tests_text)
        check = _promtool("check", "config", "prometheus.yml", cwd=root)
        if check.returncode:
            raise MonitoringError(f"promtool check config refused the generated configuration:\n"
                                  f"{(check.stdout + check.stderr).strip()}",
                                  "fix the parameter named above; nothing was written")
        test = _promtool("test", "rules", "test.yml", cwd=root / "rules")
        if test.returncode:
            raise MonitoringError(f"promtool test rules failed on the generated rules:\n"
                                  f"{(test.stdout + test.stderr).strip()[-3000:]}",
                                  "the failing case names its alert: check that alert's threshold and duration"
                                  " parameters (failure_ratio_max, build_p95_max_seconds, cache_hit_ratio_min,"
                                  " cache_usage_max_ratio, disk_fill_hours, builder_down_for, alert_for,"
                                  " escalate_after); nothing was written")
    cases = tests_text.count("  name: ")
    return f"promtool check config: SUCCESS; promtool test rules: {cases} cases SUCCESS"


# --------------------------------------------------------------------------------------
# Prometheus' HTTP API
# --------------------------------------------------------------------------------------
def api(port: int, path: str, query: dict[str, Any] | None = None, method: str = "GET", timeout: float = 10) -> Any:
    """GET or POST on Prometheus; the parsed JSON `data` (or the body for /-/ paths)."""
    from .programs import http_text

    target = f"{url(port)}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    body = http_text(target, "Prometheus", "prometheus_port", data=b"" if method == "POST" else None, method=method,
                     timeout=timeout, error=MonitoringError)
    if path.startswith("/-/"):
        return body
    return json.loads(body)["data"]


def query(port: int, expr: str) -> list[dict]:
    return api(port, "/api/v1/query", {"query": expr})["result"]


def query_range(port: int, expr: str, start: float, end: float, step: float) -> list[dict]:
    return api(port, "/api/v1/query_range", {"query": expr, "start": start, "end": end, "step": step})["result"]


def answers(port: int) -> bool:
    from .programs import answers as http_answers

    return bool(port) and http_answers(f"{url(port)}/-/ready")


def own_metrics(port: int) -> dict[str, float]:
    """A service's own /metrics (Prometheus or Alertmanager), read now, as
    {'name{labels}': value}."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"{url(port)}/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        raise MonitoringError(f"no /metrics on {url(port)} ({exc})", "start the service (apply the configure runbook)") \
            from None
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return out


def last_reload(port: int) -> tuple[bool, float]:
    """(the last reload succeeded, when the configuration was last loaded), read from
    Prometheus' own /metrics at the moment of asking: its scraped copy of these series
    lags up to a scrape behind, and /api/v1/status/runtimeinfo (2.42) truncates
    lastConfigTime to whole seconds, so a file written in the second of a reload would
    look newer than it."""
    m = own_metrics(port)
    return (m.get("prometheus_config_last_reload_successful") == 1,
            m.get("prometheus_config_last_reload_success_timestamp_seconds", 0.0))


def needs_reload(port: int, wanted: dict[Path, str]) -> bool:
    """The last reload failed, or a file of `wanted` is newer than the loaded configuration."""
    ok, when = last_reload(port)
    newest = max((p.stat().st_mtime for p in wanted if p.exists()), default=0.0)
    return not ok or newest > when


def reload(port: int, timeout: float = 30) -> None:
    """POST /-/reload; a refusal is a MonitoringError with Prometheus' words."""
    api(port, "/-/reload", method="POST", timeout=timeout)


# --------------------------------------------------------------------------------------
# steps
# --------------------------------------------------------------------------------------
def binaries_present(params: dict) -> Outcome:
    found = []
    for port_key, path, package in (("prometheus_port", PROMETHEUS, "prometheus"), (None, PROMTOOL, "prometheus"),
                                    ("node_exporter_port", NODE_EXPORTER, "prometheus-node-exporter")):
        if port_key is None or params.get(port_key):
            require_binary(path, package)
            found.append(str(path))
    version = subprocess.run([str(PROMTOOL), "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    return Outcome.ok(f"{', '.join(found)} ({version.strip()})", prometheus_version=version.strip())


def desired_files(layout: Layout, params: dict, debug_port: int) -> dict[Path, str]:
    return {config_path(layout): render_config(params, debug_port), rules_path(layout): render_rules(params),
            rule_tests_path(layout): render_rule_tests(params)}


def replace_config(layout: Layout, wanted: dict[Path, str], port: int, apply: bool, check: str,
                   reload_fn=None, needs_reload_fn=None, what: str = "Prometheus") -> Outcome:
    """Write `wanted` (already validated) with backups and reload the running service
    (`reload_fn()`); a refused reload puts the old files back and reloads them, then
    fails. With nothing to change, a service for which `needs_reload_fn(port, wanted)`
    (its files are newer than its last successful reload) is reloaded."""
    from .programs import answers as http_answers

    reload_fn = reload_fn or (lambda: reload(port))
    needs_reload_fn = needs_reload_fn or needs_reload
    stale = {p: t for p, t in wanted.items() if files.read_text(p) != t}
    running = bool(port) and http_answers(f"{url(port)}/-/ready")
    if not stale:
        if running and apply and needs_reload_fn(port, wanted):
            reload_fn()
            return Outcome.changed(f"{what} reloaded {', '.join(p.name for p in wanted)} (newer than its last reload)")
        return Outcome.ok(f"{', '.join(str(p) for p in wanted)} up to date; {check}")
    diff = "".join(files.unified_diff(files.read_text(p), t, p) for p, t in stale.items())
    names = ", ".join(str(p) for p in stale)
    if not apply:
        files.writable_dir(next(iter(stale)).parent)
        return Outcome.changed(f"would write {names} and reload {what}; {check}", diff)
    old = {p: files.read_text(p) for p in stale}
    for path, text in stale.items():
        files.backup(path, layout.backup_dir)
        files.atomic_write(path, text)
    if not running:
        return Outcome.changed(f"wrote {names}; {check}; no {what} answers on port {port or '(none)'}"
                               " to reload, so it reads them at its next start", diff)
    try:
        reload_fn()
    except KitError as exc:
        for path, text in old.items():
            if text is None:
                path.unlink(missing_ok=True)
            else:
                files.atomic_write(path, text)
        try:
            reload_fn()
            restored = "the previous files are back and serving"
        except KitError as again:
            restored = f"the previous files are back, but reloading them failed too: {again.problem}"
        raise MonitoringError(f"{what} refused the new configuration ({exc.problem}); {restored}",
                              "read the error above, fix the parameter behind it and apply again") from None
    return Outcome.changed(f"wrote {names} and {what} reloaded them; {check}", diff)


def converge_config(layout: Layout, params: dict, debug_port: int, apply: bool) -> Outcome:
    """The scrape configuration and the rules, validated by promtool, in place and loaded."""
    wanted = desired_files(layout, params, debug_port)
    check = validate(wanted[config_path(layout)], wanted[rules_path(layout)], wanted[rule_tests_path(layout)])
    outcome = replace_config(layout, wanted, params.get("prometheus_port") or 0, apply, check)
    outcome.facts.update(prometheus_config=str(config_path(layout)), prometheus_rules=str(rules_path(layout)),
                         prometheus_url=url(params["prometheus_port"]) if params.get("prometheus_port") else "")
    return outcome


def loaded(layout: Layout, params: dict, debug_port: int, apply: bool) -> bool:
    """Whether what Prometheus serves can be checked now: it answers and runs on the
    files this run wants (in check mode with a pending change, it cannot)."""
    port = params.get("prometheus_port") or 0
    if not port:
        return False
    if not apply and any(files.read_text(p) != t for p, t in desired_files(layout, params, debug_port).items()):
        return False
    return True


def targets_up(layout: Layout, params: dict, debug_port: int, apply: bool, timeout: float = 60) -> Outcome:
    """Every configured scrape target reports up (waits one scrape cycle or two)."""
    port = params.get("prometheus_port") or 0
    if not port:
        return Outcome.skipped("prometheus_port is 0: no Prometheus under supervisord (add the rendered"
                               f" configuration to yours: {config_path(layout)})")
    if not loaded(layout, params, debug_port, apply):
        return Outcome.skipped("the configuration changes on apply: the targets are checked then")
    jobs = {j["job_name"] for j in scrape_jobs(params, debug_port)}
    deadline = time.monotonic() + timeout
    while True:
        active = api(port, "/api/v1/targets", {"state": "active"})["activeTargets"]
        seen = {t["labels"].get("job"): t for t in active}
        down = {j: (seen[j]["lastError"] or seen[j]["health"]) if j in seen else "not scraped yet" for j in jobs
                if j not in seen or seen[j]["health"] != "up"}
        if not down:
            listing = ", ".join(f"{j} {seen[j]['scrapeUrl']}" for j in sorted(jobs))
            return Outcome.ok(f"{len(jobs)} targets up: {listing}", scrape_targets=sorted(jobs))
        if time.monotonic() > deadline:
            raise MonitoringError("scrape targets not up: " + "; ".join(f"{j}: {e}" for j, e in sorted(down.items())),
                                  "start the service behind each (apply the configure runbook) and check its port")
        time.sleep(1)


def rules_loaded(layout: Layout, params: dict, debug_port: int, apply: bool) -> Outcome:
    """Prometheus evaluates the kit's rules: every group healthy, every alert present."""
    port = params.get("prometheus_port") or 0
    if not loaded(layout, params, debug_port, apply):
        return Outcome.skipped("no Prometheus to ask, or its configuration changes on apply")
    groups = api(port, "/api/v1/rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    broken = [f"{r['name']}: {r.get('lastError')}" for r in rules if r.get("health") == "err"]
    if broken:
        raise MonitoringError("rules fail to evaluate: " + "; ".join(broken), "read the rule and the metric it uses")
    alerts = sorted(r["name"] for r in rules if r["type"] == "alerting")
    missing = sorted({s["alert"] for s in alert_specs(params)} - set(alerts))
    if missing:
        raise MonitoringError(f"Prometheus does not evaluate {', '.join(missing)}", "apply the monitoring runbook")
    firing = sorted({r["name"] for r in rules if r["type"] == "alerting" and r.get("state") == "firing"})
    recorded = len([r for r in rules if r["type"] == "recording"])
    return Outcome.ok(f"{recorded} recording rules and {len(alerts)} alerts evaluated; firing now:"
                      f" {', '.join(firing) or 'none'}", alerts_firing=firing)


def native_histogram(layout: Layout, params: dict, debug_port: int, apply: bool) -> Outcome:
    """buildkit_build_duration_seconds is stored as a native histogram (protobuf scrape):
    histogram_count() over it answers; its p95 from the recording rule is shown."""
    port = params.get("prometheus_port") or 0
    if not loaded(layout, params, debug_port, apply):
        return Outcome.skipped("no Prometheus to ask, or its configuration changes on apply")
    expr = "histogram_count(sum by (builder) (buildkit_build_duration_seconds))"
    found = query(port, expr)
    if not found:
        return Outcome.ok(f"{expr}: no builds recorded yet (buildkitd exports the histogram after its first build)")
    count = found[0]["value"][1]
    p95 = query(port, "buildkit:build_duration_seconds:p95_5m")
    shown = f"{float(p95[0]['value'][1]):.3g}s" if p95 and p95[0]["value"][1] not in ("NaN",) else "no builds in 5m"
    return Outcome.ok(f"{expr} = {count} builds (native histogram); p95 over 5m: {shown}",
                      native_histogram_builds=float(count))


if __name__ == "__main__":
    if sys.argv[1:2] != ["serve"]:
        sys.exit("usage: python -m runbook_checks.monitoring serve --binary B --config FILE --bootstrap FILE -- FLAGS")
    serve(sys.argv[2:])
