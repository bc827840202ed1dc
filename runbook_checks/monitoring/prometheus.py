"""Prometheus for the lab stack (Debian's `prometheus` package, 127.0.0.1 only): its
supervisord programs (Prometheus itself and Debian's node exporter), the scrape
configuration, promtool's checks of it and of the rules (monitoring.rules, tested by
monitoring.ruletests), its HTTP API, and the way a new configuration replaces the
running one (Alertmanager's too).

A configuration replaces the running one only after `promtool check config` and
`promtool test rules` (generated tests: every alert fires on one input and stays silent
on another) pass on a scratch copy. Then the old files are backed up, the new ones
written atomically and Prometheus reloaded (POST /-/reload); if the reload is refused,
the old files go back, Prometheus reloads them, and the step fails with its error.

Prometheus starts on a bootstrap file (itself as its only target) that install and
configure write; `python -m runbook_checks.monitoring.prometheus serve` copies it into place only
while the monitoring runbook has written none, so the two never fight over one file."""

from __future__ import annotations

import argparse
import json
import os
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

from ..core import files
from ..core.errors import KitError, MonitoringError
from ..core.layout import Layout
from ..core.paths import PROJECT_ROOT
from ..core.results import Outcome
from ..daemon import schedule
from ..daemon.programs import Program, answers as http_answers, http_text
from .rules import RULES_FILE, alert_specs, render_rules
from .ruletests import render_rule_tests

PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
NODE_EXPORTER = Path("/usr/bin/prometheus-node-exporter")
NATIVE_HISTOGRAMS = "--enable-feature=native-histograms"  # makes Prometheus 2.4x scrape protobuf


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
    return Program(service, f"{sys.executable} -m runbook_checks.monitoring.prometheus serve --binary {binary}"
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
    """Debian's node exporter on 127.0.0.1: CPU, memory, filesystems, disk I/O, load, and
    the maintenance jobs' records (its textfile collector, as on a production host)."""
    port = params["node_exporter_port"]
    textfiles = schedule.textfile_dir(layout)
    collectors = " ".join(f"--collector.{c}" for c in ("cpu", "meminfo", "filesystem", "diskstats", "loadavg", "stat",
                                                       "textfile"))
    return Program("node_exporter", f"{NODE_EXPORTER} --web.listen-address=127.0.0.1:{port}"
                   f" --collector.disable-defaults {collectors} --collector.textfile.directory={textfiles}",
                   port, layout.log_dir / "node_exporter.log", f"{url(port)}/metrics", dirs=(textfiles,),
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
    parser = argparse.ArgumentParser(prog="python -m runbook_checks.monitoring.prometheus serve")
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
    # production builders, through their front door's metrics listener: its own metrics,
    # buildkitd's and the audit log's counts, in the same jobs as the lab's (so the same
    # alerts cover them), each target's builder label its host
    remote = params.get("frontdoor_targets") or []
    paths = (("buildkit-frontdoor", "/metrics"), ("buildkitd", "/buildkitd/metrics"), ("buildkit-audit", "/audit/metrics"))
    for job, path in paths if remote else ():
        configs = [{"targets": [t], "labels": {"builder": t.rsplit(":", 1)[0], "environment": "production",
                                               "__metrics_path__": path}} for t in remote]
        existing = next((j for j in out if j["job_name"] == job), None)
        if existing is None:
            out.append({"job_name": job, "static_configs": configs})
        else:
            existing["static_configs"] += configs
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
                                  " cache_usage_max_ratio, disk_fill_hours, denied_per_minute_max, queue_wait_max_seconds, builder_memory_max_ratio, cpu_throttled_ratio_max, cert_expiry_warn_days,"
                                  " builder_down_for, alert_for,"
                                  " escalate_after); nothing was written")
    cases = tests_text.count("  name: ")
    return f"promtool check config: SUCCESS; promtool test rules: {cases} cases SUCCESS"


# --------------------------------------------------------------------------------------
# Prometheus' HTTP API
# --------------------------------------------------------------------------------------
def api(port: int, path: str, query: dict[str, Any] | None = None, method: str = "GET", timeout: float = 10) -> Any:
    """GET or POST on Prometheus; the parsed JSON `data` (or the body for /-/ paths)."""
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
    reload_fn = reload_fn or (lambda: reload(port))
    needs_reload_fn = needs_reload_fn or needs_reload
    running = bool(port) and http_answers(f"{url(port)}/-/ready")
    old = {p: files.read_text(p) for p in wanted}
    outcome = files.converge(wanted, apply, layout.backup_dir)
    if outcome.status == "ok":
        if running and apply and needs_reload_fn(port, wanted):
            reload_fn()
            return Outcome.changed(f"{what} reloaded {', '.join(p.name for p in wanted)} (newer than its last reload)")
        outcome.message += f"; {check}"
        return outcome
    if not apply:
        outcome.message += f" and reload {what}; {check}"
        return outcome
    if not running:
        outcome.message += (f"; {check}; no {what} answers on port {port or '(none)'} to reload, so it reads them"
                            " at its next start")
        return outcome
    try:
        reload_fn()
    except KitError as exc:
        for path, text in old.items():
            if text is None:
                path.unlink(missing_ok=True)
            elif text != wanted[path]:
                files.atomic_write(path, text)
        try:
            reload_fn()
            restored = "the previous files are back and serving"
        except KitError as again:
            restored = f"the previous files are back, but reloading them failed too: {again.problem}"
        raise MonitoringError(f"{what} refused the new configuration ({exc.problem}); {restored}",
                              "read the error above, fix the parameter behind it and apply again") from None
    outcome.message += f" and {what} reloaded them; {check}"
    return outcome


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
        sys.exit("usage: python -m runbook_checks.monitoring.prometheus serve --binary B --config FILE --bootstrap FILE -- FLAGS")
    serve(sys.argv[2:])
