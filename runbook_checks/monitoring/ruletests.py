"""promtool unit tests generated from the profile's thresholds: for every alert, a case
where it fires exactly when its `for` ends and a case where it stays silent, with inputs
a small margin either side of each threshold."""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

from ..core.units import prom_seconds as seconds
from .rules import ESCALATION_ALERT, RULES_FILE, WINDOW, alert_specs, num, rule


def _expand(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), template)


def _case(spec: dict, params: dict, fires: bool, series: list[tuple[str, str]], extra_labels: dict[str, str],
          checks: list[tuple[int, bool]], samples: int) -> dict[str, Any]:
    """One promtool test case: `series` sampled every minute, and the alert checked at
    each (seconds, firing?) of `checks`."""
    rendered = rule(spec, params)
    labels = {**extra_labels, **rendered["labels"]}
    ann = {k: _expand(v, labels) for k, v in rendered["annotations"].items()}
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
    fires("BuildkitdCannotBuild", [(f"buildkit_ops_probe_success{{{ex}}}", "0xN")], ex_labels, 0)
    silent("BuildkitdCannotBuild", [(f"buildkit_ops_probe_success{{{ex}}}", "1xN"), (f"up{{{bk}}}", "0xN")], ex_labels,
           [down, end])
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

    # the front door: down, refusing one team again and again, a certificate near its end
    fd_labels = {"job": "buildkit-frontdoor", "instance": "10.213.1.2:8405", "builder": "10.213.1.2"}
    au_labels = {"job": "buildkit-audit", "instance": "10.213.1.2:8405", "builder": "10.213.1.2"}
    fd = ", ".join(f'{k}="{v}"' for k, v in fd_labels.items())
    au = ", ".join(f'{k}="{v}"' for k, v in au_labels.items())
    fires("FrontDoorDown", [(f"up{{{fd}}}", "0xN")], fd_labels, 0)
    silent("FrontDoorDown", [(f"up{{{fd}}}", "1xN"), (f"up{{{bk}}}", "0xN")], fd_labels, [down, end])
    denied = float(params.get("denied_per_minute_max", 5.0))
    m = 0.01 * denied

    def refused(per_minute, team="web"):
        return [(f'buildkit_frontdoor_refused_total{{{au}, team="{team}", reason="revoked"}}', f"0+{per_minute!r}xN")]

    burst = {"builder": au_labels["builder"], "client_team": "web"}
    # rate() divides by the whole window: a steady count reads true only once the window is full
    window = seconds(WINDOW)
    fires("AccessDeniedBurst", refused(denied + m), burst, window)
    # above the threshold in all, but split over two teams: neither is refused that often
    # and as many again for web, but of builds that waited too long in the queue: not an access problem
    timeouts = [(f'buildkit_frontdoor_refused_total{{{au}, team="web", reason="queue-timeout"}}',
                 f"0+{denied + m!r}xN")]
    silent("AccessDeniedBurst", refused((denied + m) / 2) + refused((denied + m) / 2, "api") + timeouts, burst,
           [window + down, end])
    wait = float(params.get("queue_wait_max_seconds", 120.0))
    queue_labels = {**fd_labels, "proxy": "calls"}
    q = ", ".join(f'{k}="{v}"' for k, v in queue_labels.items())
    fires("BuildQueueWaitHigh", [(f"haproxy_backend_queue_time_average_seconds{{{q}}}", f"{num(wait * 1.5)}xN")],
          {"builder": fd_labels["builder"]}, 0)
    silent("BuildQueueWaitHigh", [(f"haproxy_backend_queue_time_average_seconds{{{q}}}", f"{num(wait * 0.9)}xN")],
           {"builder": fd_labels["builder"]}, [for_, end])
    # the builder's slice: memory near its limit, CPU held at its quota
    slice_labels = {**au_labels, "slice": "buildkit.slice"}
    sl = ", ".join(f'{k}="{v}"' for k, v in slice_labels.items())
    ratio = float(params.get("builder_memory_max_ratio", 0.9))
    limit = 4 * 2**30

    def memory(used_share):
        return [(f"buildkit_ops_builder_memory_bytes{{{sl}}}", f"{num(round(limit * used_share))}xN"),
                (f"buildkit_ops_builder_memory_limit_bytes{{{sl}}}", f"{limit}xN")]

    fires("BuilderMemoryNearLimit", memory(ratio + _margin(ratio)), slice_labels, 0)
    silent("BuilderMemoryNearLimit", memory(ratio - _margin(ratio)), slice_labels, [for_, end])
    share = float(params.get("cpu_throttled_ratio_max", 0.5))

    def periods(throttled_share):
        per_min = 600  # 10 periods a second
        return [(f"buildkit_ops_builder_cpu_periods_total{{{sl}}}", f"0+{per_min}xN"),
                (f"buildkit_ops_builder_cpu_throttled_periods_total{{{sl}}}", f"0+{num(per_min * throttled_share)}xN")]

    fires("BuilderCpuThrottled", periods(share + _margin(share)), slice_labels, rated)
    silent("BuilderCpuThrottled", periods(share - _margin(share)), slice_labels, [window + for_, end])
    days = float(params.get("cert_expiry_warn_days", 14))
    cert_labels = {**au_labels, "certificate": "client:web"}
    cert = ", ".join(f'{k}="{v}"' for k, v in cert_labels.items())
    # it expires `days` days after t=600: the condition holds from the first step after 600
    fires("CertificateExpiresSoon", [(f"buildkit_ops_certificate_expiry_timestamp_seconds{{{cert}}}",
                                      f"{num(days * 86400 + 600)}xN")], cert_labels, 600 + step)
    silent("CertificateExpiresSoon", [(f"buildkit_ops_certificate_expiry_timestamp_seconds{{{cert}}}",
                                       f"{num(days * 86400 + end + 600)}xN")], cert_labels, [600 + step + for_, end])

    job_labels = {"job": "node", "instance": "127.0.0.1:9100", "builder": "lab", "maintenance": "drift",
                  "unit": "buildkit-drift.service"}
    job = ", ".join(f'{k}="{v}"' for k, v in job_labels.items())
    fires("MaintenanceJobFailed", [(f"buildkit_ops_maintenance_last_success{{{job}}}", "1 1 0xN")], job_labels, 120)
    silent("MaintenanceJobFailed", [(f"buildkit_ops_maintenance_last_success{{{job}}}", "1xN")], job_labels, [120, end])

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


