"""The kit's Prometheus rules: recording rules over BuildKit's and the exporter's metrics,
and the alerts with the profile's thresholds, each with a runbook_url to its docs page."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import yaml

from ..core.params import RULE_WINDOW as WINDOW

RULES_FILE = "buildkit.rules.yml"


def _p(quantile: float) -> str:
    """A quantile of buildkit_build_duration_seconds that works on the native histogram
    BuildKit exports (scraped as protobuf) and on a classic one (_bucket series)."""
    return (f"histogram_quantile({quantile}, sum by (builder) (rate(buildkit_build_duration_seconds[{WINDOW}])))"
            f" or histogram_quantile({quantile}, sum by (builder, le)"
            f" (rate(buildkit_build_duration_seconds_bucket[{WINDOW}])))")


class Recording(NamedTuple):
    """One recording rule: the series it records, its PromQL, what it means."""

    name: str
    expr: str
    meaning: str


RECORDING_RULES: tuple[Recording, ...] = (
    Recording("buildkit:builds:rate5m", f"sum by (builder) (rate(buildkit_builds_total[{WINDOW}]))",
              f"builds per second over {WINDOW}"),
    Recording("buildkit:build_failures:ratio_rate5m",
              f'sum by (builder) (rate(buildkit_builds_total{{status="failure"}}[{WINDOW}]))'
              f" / sum by (builder) (rate(buildkit_builds_total[{WINDOW}]))",
              f"failed builds / all builds over {WINDOW}"),
    Recording("buildkit:build_duration_seconds:p50_5m", _p(0.5),
              f"the median build duration over {WINDOW} (the native histogram, or classic _bucket series)"),
    Recording("buildkit:build_duration_seconds:p95_5m", _p(0.95),
              f"the 95th percentile build duration over {WINDOW} (the native histogram, or classic _bucket series)"),
    Recording("buildkit:cache_hit:ratio_rate5m",
              f'sum by (builder) (rate(buildkit_builds_steps_total{{kind="cached"}}[{WINDOW}]))'
              f' / sum by (builder) (rate(buildkit_builds_steps_total{{kind="total"}}[{WINDOW}]))',
              f"cached steps / all steps over {WINDOW}"),
    Recording("buildkit:cache_usage:bytes", "sum by (builder) (buildkit_cache_disk_usage_bytes)",
              "the build cache's size, all record types"),
    Recording("buildkit:cache_usage:ratio",
              "sum by (builder) (buildkit_cache_disk_usage_bytes)"
              " / on (builder) (max by (builder) (buildkit_cache_gc_max_used_space_bytes) > 0)",
              "the cache's size / the GC policy's maxUsedSpace (absent when there is no limit)"),
)

ESCALATION_ALERT = "BuildkitAlertEscalated"


def alert_specs(params: dict) -> list[dict[str, Any]]:
    """Every alert: name, expression, `for`, severity, team, summary, description."""
    p = params
    down_for, for_ = p.get("builder_down_for", "1m"), p.get("alert_for", "5m")
    fr, p95 = p.get("failure_ratio_max", 0.2), p.get("build_p95_max_seconds", 600.0)
    hit, usage, hours = p.get("cache_hit_ratio_min", 0.5), p.get("cache_usage_max_ratio", 0.9), p.get("disk_fill_hours", 4.0)
    esc = p.get("escalate_after", "30m")
    denied, days = p.get("denied_per_minute_max", 5.0), p.get("cert_expiry_warn_days", 14)
    queue_wait = p.get("queue_wait_max_seconds", 120.0)
    mem_ratio, throttled = p.get("builder_memory_max_ratio", 0.9), p.get("cpu_throttled_ratio_max", 0.5)
    fs = 'fstype!~"tmpfs|ramfs|squashfs|nsfs|proc|sysfs"'
    return [
        dict(alert="BuildkitdDown", expr='up{job="buildkitd"} == 0', for_=down_for, severity="critical", team="build",
             summary="buildkitd {{ $labels.builder }} is down",
             description=f"Prometheus has not reached buildkitd's debug address {{{{ $labels.instance }}}} for"
                         f" {down_for}: builds on {{{{ $labels.builder }}}} fail. Its build alerts (team build) are"
                         " inhibited while it is down; host alerts are not."),
        dict(alert="BuildkitdCannotBuild", expr="buildkit_ops_probe_success == 0", for_=down_for, severity="critical",
             team="build", summary="buildkitd {{ $labels.builder }} answers but cannot build",
             description=f"The exporter's probe build (a RUN step no cache holds) on {{{{ $labels.builder }}}} has"
                         f" failed for {down_for}, while the daemon may still answer every API call: a full disk or"
                         " a damaged database under its root does this. Run the recover runbook: check, then apply."),
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
        dict(alert="FrontDoorDown", expr='up{job="buildkit-frontdoor"} == 0', for_=down_for, severity="critical",
             team="platform", summary="The front door of {{ $labels.builder }} is down",
             description=f"Prometheus has not reached the front door's metrics listener {{{{ $labels.instance }}}} for"
                         f" {down_for}: no team can build on {{{{ $labels.builder }}}} remotely."),
        dict(alert="AccessDeniedBurst",
             # the client's team as client_team: `team` is the alert's routing label
             # a build that waited too long in the queue was not denied access
             expr=(f'sum by (builder, client_team) (label_replace(rate(buildkit_frontdoor_refused_total'
                   f'{{reason!="queue-timeout"}}[{WINDOW}]), "client_team", "$1", "team", "(.*)")) * 60 > {num(denied)}'),
             for_=down_for, severity="warning", team="platform",
             summary="The front door of {{ $labels.builder }} refuses {{ $labels.client_team }} again and again",
             description=f"More than {num(denied)} connections a minute claiming team {{{{ $labels.client_team }}}} were"
                         f" refused on {{{{ $labels.builder }}}} over {WINDOW}, for {down_for}"
                         " (threshold denied_per_minute_max): a revoked or expired bundle still in use, or"
                         " someone trying certificates. `invoke report.audit` shows the reasons."),
        dict(alert="BuildQueueWaitHigh",
             expr=(f'max by (builder) (haproxy_backend_queue_time_average_seconds{{job="buildkit-frontdoor",'
                   f' proxy="calls"}}) > {num(queue_wait)}'),
             for_=for_, severity="warning", team="platform",
             summary="Builds wait in the queue of {{ $labels.builder }}",
             description=f"Connections queued at the front door of {{{{ $labels.builder }}}} waited more than"
                         f" {num(queue_wait)}s on average (HAProxy's last 1024, threshold queue_wait_max_seconds) for"
                         f" {for_}: max_concurrent_builds is too low for the load, or builds got slower."),
        dict(alert="BuilderMemoryNearLimit",
             expr=(f"buildkit_ops_builder_memory_bytes / buildkit_ops_builder_memory_limit_bytes > {num(mem_ratio)}"),
             for_=for_, severity="warning", team="platform",
             summary="The builder {{ $labels.slice }} on {{ $labels.builder }} is near its memory limit",
             description=f"{{{{ $labels.slice }}}} (the daemon and its build containers) on {{{{ $labels.builder }}}}"
                         f" has used more than {pct(mem_ratio)} of its memory_max for {for_} (threshold"
                         " builder_memory_max_ratio): the next large step is OOM-killed."),
        dict(alert="BuilderCpuThrottled",
             expr=(f"rate(buildkit_ops_builder_cpu_throttled_periods_total[{WINDOW}])"
                   f" / rate(buildkit_ops_builder_cpu_periods_total[{WINDOW}]) > {num(throttled)}"),
             for_=for_, severity="warning", team="platform",
             summary="The builder {{ $labels.slice }} on {{ $labels.builder }} is held at its CPU quota",
             description=f"In more than {pct(throttled)} of the CPU periods over {WINDOW}, for {for_}, {{{{ $labels.slice }}}}"
                         f" on {{{{ $labels.builder }}}} hit its cpu_quota and was throttled (threshold"
                         " cpu_throttled_ratio_max): builds run slower than the machine could run them."),
        dict(alert="CertificateExpiresSoon",
             expr=f"buildkit_ops_certificate_expiry_timestamp_seconds - time() < {num(days)} * 86400",
             for_=for_, severity="warning", team="platform",
             summary="The certificate {{ $labels.certificate }} of {{ $labels.builder }} expires soon",
             description=f"The certificate {{{{ $labels.certificate }}}} on {{{{ $labels.builder }}}} expires in less"
                         f" than {num(days)} days (threshold cert_expiry_warn_days). The server's renews when the"
                         " access runbook is applied; a team's needs a new bundle: invoke certs.issue TEAM."),
        dict(alert="MaintenanceJobFailed",
             expr="buildkit_ops_maintenance_last_success == 0",
             for_="0m", severity="warning", team="platform",
             summary="The maintenance job {{ $labels.maintenance }} failed on {{ $labels.builder }}",
             description="The last run of {{ $labels.unit }} on {{ $labels.builder }} failed (drift: the builder is no"
                         " longer as configure would make it). Read `invoke maint.schedule` and"
                         " `journalctl -u {{ $labels.unit }}`; the alert clears when the job next succeeds."),
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


def rule(spec: dict, params: dict) -> dict[str, Any]:
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
         "rules": [{"record": r.name, "expr": r.expr} for r in RECORDING_RULES]},
        {"name": "buildkit-alerts", "interval": interval,
         "rules": [rule(spec, params) for spec in alert_specs(params)]},
    ]}
    return "# Managed by buildkit-ops (runbook: monitoring). Thresholds come from the profile.\n" + \
        yaml.safe_dump(doc, sort_keys=False, width=1000)


