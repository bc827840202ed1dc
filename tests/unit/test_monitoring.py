"""Prometheus configuration, rules and their promtool tests, Alertmanager routes, and the
Grafana dashboard, checked with the real promtool and amtool (Debian's packages)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from runbook_checks.core import params, paths, profiles
from runbook_checks.core.errors import AlertingError, MonitoringError, ParameterError, ProgramError
from runbook_checks.core.layout import for_params
from runbook_checks.monitoring import alertmanager, dashboards, exporter, prometheus, ruletests
from runbook_checks.monitoring import rules as rules_mod

ALERTS = ["BuildkitdDown", "BuildkitdCannotBuild", "BuildFailureRatioHigh", "BuildDurationP95High", "CacheHitRatioLow", "CacheNearLimit",
          "DiskFilling", "InvalidCliPluginsPresent", "ExporterDown", "FrontDoorDown", "AccessDeniedBurst",
          "BuildQueueWaitHigh", "BuilderMemoryNearLimit", "BuilderCpuThrottled", "CertificateExpiresSoon",
          "MaintenanceJobFailed", rules_mod.ESCALATION_ALERT]


def monitoring_params(profile: str, *sets: str) -> dict:
    values = profiles.resolve("monitoring", profile, "check", sets)
    return params.validate(values).model_dump()


@pytest.mark.parametrize("profile", profiles.PROFILES)
def test_promtool_checks_the_config_and_every_alert_fires_and_stays_silent(profile):
    p = monitoring_params(profile)
    config, rules, tests = prometheus.render_config(p, 16060), rules_mod.render_rules(p), ruletests.render_rule_tests(p)
    assert "promtool test rules: 34 cases SUCCESS" in prometheus.validate(config, rules, tests)
    names = [case["name"] for case in yaml.safe_load(tests)["tests"]]
    assert sorted(names) == sorted([f"{a} fires" for a in ALERTS] + [f"{a} stays silent" for a in ALERTS])
    doc = yaml.safe_load(tests)
    step = int(doc["evaluation_interval"].rstrip("s"))
    for case in doc["tests"]:
        checks = [(int(c["eval_time"].rstrip("s")), bool(c["exp_alerts"])) for c in case["alert_rule_test"]]
        if case["name"].endswith(" fires"):  # silent one evaluation step before `for` ends, then firing
            assert [f for _, f in checks] == [False, True] and checks[1][0] - checks[0][0] == step, case["name"]
        else:
            assert not any(f for _, f in checks), case["name"]


def test_other_thresholds_are_tested_too():
    p = monitoring_params("lab", "failure_ratio_max=0.05", "build_p95_max_seconds=30.5", "cache_hit_ratio_min=0.9",
                          "cache_usage_max_ratio=0.5", "disk_fill_hours=1", "alert_for=1m", "builder_down_for=30s",
                          "escalate_after=2h")
    rules = rules_mod.render_rules(p)
    assert "buildkit:build_failures:ratio_rate5m > 0.05" in rules and "> 30.5" in rules
    prometheus.validate(prometheus.render_config(p, 1), rules, ruletests.render_rule_tests(p))


def test_the_promtool_tests_catch_a_rule_that_does_not_match_its_threshold():
    rules = rules_mod.render_rules(monitoring_params("lab", "failure_ratio_max=0.2"))
    tests = ruletests.render_rule_tests(monitoring_params("lab", "failure_ratio_max=0.9"))
    with pytest.raises(MonitoringError) as err:
        prometheus.validate(prometheus.render_config(monitoring_params("lab"), 1), rules, tests)
    assert "BuildFailureRatioHigh" in str(err.value) and "nothing was written" in err.value.fix


MUTATIONS = {  # a wrong rule the generated promtool tests must catch: (what, the edit)
    "BuildkitdDown on any job": lambda r: r.replace('up{job="buildkitd"} == 0', "up == 0"),
    "every `for` 0s": lambda r: re.sub(r"(?m)^(\s+for: )\S+$", r"\g<1>0s", r),
    "every `for` one step short": lambda r: r.replace("for: 5m", "for: 4m").replace("for: 1m", "for: 45s"),
    "failures divided by successes": lambda r: r.replace(
        '/ sum by (builder) (rate(buildkit_builds_total[5m]))',
        '/ sum by (builder) (rate(buildkit_builds_total{status="success"}[5m]))'),
    "critical alerts escalate too": lambda r: r.replace(' severity="warning", alertname!=', " alertname!="),
    "p95 threshold 600 -> 1500": lambda r: r.replace("p95_5m > 600", "p95_5m > 1500"),
    "p95 threshold 600 -> 610": lambda r: r.replace("p95_5m > 600", "p95_5m > 610"),
    "failure ratio 0.2 -> 0.21": lambda r: r.replace("ratio_rate5m > 0.2", "ratio_rate5m > 0.21"),
    "cache hit 0.5 -> 0.49": lambda r: r.replace("ratio_rate5m < 0.5", "ratio_rate5m < 0.49"),
    "cache usage 0.9 -> 0.91": lambda r: r.replace("ratio > 0.9", "ratio > 0.91"),
    "disk fills within 4h -> 4.1h": lambda r: r.replace("4 * 3600", "4.1 * 3600"),
}


@pytest.mark.parametrize("what", MUTATIONS)
def test_the_generated_promtool_tests_fail_on_a_wrong_rule(what):
    p = monitoring_params("lab")
    rules = rules_mod.render_rules(p)
    wrong = MUTATIONS[what](rules)
    assert wrong != rules, f"the mutation {what!r} changed nothing: update it to the rules' text"
    with pytest.raises(MonitoringError, match="promtool test rules failed"):
        prometheus.validate(prometheus.render_config(p, 1), wrong, ruletests.render_rule_tests(p))


def test_the_p95_rule_reads_the_native_histogram_and_the_classic_one():
    """promtool 2.42 cannot feed a native histogram, so this half is proven by the
    integration test (a finite p95 after real builds); here: both halves are there."""
    p95 = {r.name: r.expr for r in rules_mod.RECORDING_RULES}["buildkit:build_duration_seconds:p95_5m"]
    assert "rate(buildkit_build_duration_seconds[5m])" in p95
    assert "rate(buildkit_build_duration_seconds_bucket[5m])" in p95


def test_promtool_refuses_a_broken_rule():
    p = monitoring_params("lab")
    broken = rules_mod.render_rules(p).replace("buildkit:builds:rate5m", "buildkit builds rate", 1)
    with pytest.raises(MonitoringError, match="promtool check config refused"):
        prometheus.validate(prometheus.render_config(p, 1), broken, ruletests.render_rule_tests(p))


def test_a_threshold_that_is_not_a_number_names_the_parameter():
    with pytest.raises(ParameterError, match="failure_ratio_max"):
        profiles.resolve("monitoring", "lab", "apply", ["failure_ratio_max=lots"])
    with pytest.raises(ParameterError, match="cache_hit_ratio_min"):
        profiles.resolve("monitoring", "lab", "apply", ["cache_hit_ratio_min=1.5"])
    with pytest.raises(ParameterError, match="scrape_interval"):
        profiles.resolve("monitoring", "lab", "apply", ["scrape_interval=15"])


def test_every_alert_carries_severity_summary_description_and_its_docs_page():
    p = monitoring_params("lab")
    rules = yaml.safe_load(rules_mod.render_rules(p))
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    assert [a["alert"] for a in alerts] == ALERTS
    for alert in alerts:
        assert alert["labels"]["severity"] in ("critical", "warning")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        slug = rules_mod.slug(alert["alert"])
        assert alert["annotations"]["runbook_url"] == f"http://127.0.0.1:8000/alerts/{slug}/"
        page = paths.PROJECT_ROOT / "docs" / "alerts" / f"{slug}.md"
        assert page.exists(), page
        text = page.read_text()
        for heading in ("## What it means", "## How to diagnose", "## How to fix"):
            assert heading in text, (page, heading)
    recorded = [r["record"] for r in rules["groups"][0]["rules"]]
    assert recorded == [r.name for r in rules_mod.RECORDING_RULES]


def test_the_scrape_config_has_every_target_with_the_builder_label_and_native_histograms():
    p = monitoring_params("lab")
    config = yaml.safe_load(prometheus.render_config(p, 16060))
    assert config["global"] == {"scrape_interval": "15s", "evaluation_interval": "15s"}
    targets = {j["job_name"]: j["static_configs"][0]["targets"][0] for j in config["scrape_configs"]}
    assert targets == {"buildkitd": "127.0.0.1:16060", "buildkit-ops-exporter": "127.0.0.1:16061",
                       "node": "127.0.0.1:19100", "prometheus": "127.0.0.1:19090", "alertmanager": "127.0.0.1:19093"}
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:19093"]
    layout = for_params({"profile": "lab", "state_dir": "/tmp/x"})
    prog = prometheus.program(layout, p)
    assert "--enable-feature=native-histograms" in prog.command and "--web.enable-lifecycle" in prog.command
    assert "--web.listen-address=127.0.0.1:19090" in prog.command
    am = alertmanager.program(layout, p | {"alertmanager_port": 19093})
    assert "--cluster.listen-address= " in am.command and "127.0.0.1:19093" in am.command


def alerting_params(*sets: str) -> dict:
    return params.validate(profiles.resolve("alerting", "lab", "check", sets)).model_dump()


def test_amtool_checks_the_alertmanager_config_and_routes_by_severity_and_team():
    p = alerting_params()
    text = alertmanager.render_config(p)
    assert "amtool check-config: SUCCESS" in alertmanager.validate(text)
    # oncall already holds the chat and email channels: a critical alert goes there once
    assert alertmanager.routing_tree(text, {"alertname": "BuildkitdDown", "severity": "critical", "team": "build"}) == \
        ["oncall"]
    assert alertmanager.routing_tree(text, {"alertname": "ExporterDown", "severity": "critical", "team": "platform"}) == \
        ["oncall"]
    assert alertmanager.routing_tree(text, {"alertname": "DiskFilling", "severity": "warning", "team": "platform"}) == \
        ["email"]
    assert alertmanager.routing_tree(text, {"alertname": rules_mod.ESCALATION_ALERT, "escalated": "true",
                                        "severity": "warning", "team": "build"}) == ["escalation"]
    doc = yaml.safe_load(text)
    critical = next(r for r in doc["route"]["routes"] if r["matchers"] == ['severity="critical"'])
    assert critical["repeat_interval"] == "30m" and doc["route"]["repeat_interval"] == "4h"
    assert doc["inhibit_rules"][0]["source_matchers"] == ['alertname="BuildkitdDown"']
    assert doc["inhibit_rules"][0]["equal"] == ["builder"]
    # a down buildkitd mutes the build team's alerts only: host alerts may be its cause
    assert doc["inhibit_rules"][0]["target_matchers"] == ['team="build"', 'alertname!="BuildkitdDown"']
    teams = {a["alert"]: a["team"] for a in rules_mod.alert_specs(monitoring_params("lab"))}
    assert {a for a, t in teams.items() if t == "platform"} == {"DiskFilling", "InvalidCliPluginsPresent", "ExporterDown",
                                                                "FrontDoorDown", "AccessDeniedBurst", "BuildQueueWaitHigh",
                                                                "BuilderMemoryNearLimit", "BuilderCpuThrottled",
                                                                "CertificateExpiresSoon", "MaintenanceJobFailed"}
    receivers = {r["name"]: r for r in doc["receivers"]}
    assert receivers["chat"]["slack_configs"][0]["api_url"] == "http://127.0.0.1:19095/chat"
    assert receivers["email"]["email_configs"][0]["smarthost"] == "127.0.0.1:19025"
    assert "&id" not in text  # no YAML anchors: every receiver reads on its own
    assert alertmanager.routes_as_designed(p).status == "ok"


def test_a_route_to_an_unknown_receiver_is_refused_before_anything_is_written(tmp_path):
    p = alerting_params() | {"team_receivers": {"build": "pager"}}
    layout = for_params({"profile": "ci", "state_dir": str(tmp_path)})
    with pytest.raises(AlertingError) as err:
        alertmanager.converge_config(layout, p, apply=True)
    assert "'build'" in err.value.problem and "'pager'" in err.value.problem
    assert "webhook, email, chat, oncall, escalation" in err.value.fix
    assert not alertmanager.config_path(layout).exists()


def test_the_grafana_dashboard_is_generated_and_the_committed_copy_is_current():
    text = dashboards.render_dashboard_json()
    assert dashboards.check_dashboard_json(text) == []
    doc = json.loads(text)
    rows = [p["title"] for p in doc["panels"] if p["type"] == "row"]
    assert rows == ["Builds", "Durations", "Cache", "Resources", "Plugins", "Front door", "Builder limits"]
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    assert "buildkit:build_duration_seconds:p95_5m" in exprs
    assert any(e.startswith("histogram_count(") for e in exprs)
    committed = dashboards.DEFAULT_DIR / dashboards.DASHBOARD_FILE
    assert committed.read_text() == text, "regenerate: invoke runbook dashboards --mode apply"


def test_the_dashboard_check_finds_a_panel_on_an_unknown_metric():
    doc = json.loads(dashboards.render_dashboard_json())
    panel = next(p for p in doc["panels"] if p["type"] != "row")
    panel["targets"][0]["expr"] = "rate(made_up_total[5m])"
    assert any("made_up_total" in p for p in dashboards.check_dashboard_json(json.dumps(doc)))


def test_legends_follow_grafanas_template():
    assert dashboards.legend("p95 {{builder}}", {"builder": "lab"}) == "p95 lab"
    assert dashboards.legend("{{ status }}", {}) == "value"
    assert re.fullmatch(r"[a-z0-9-]+", dashboards.PANELS[3].slug)


def test_the_dashboard_check_reads_metric_names_not_prefixes():
    assert dashboards.metric_names('sum by (le) (rate(x_total{a="b(c)"}[5m])) / on (builder) up') == {"x_total", "up"}
    doc = json.loads(dashboards.render_dashboard_json())
    panel = next(p for p in doc["panels"] if p["type"] != "row")
    for expr in ("max by (builder) (buildkit_made_up)", "sum(buildkit_cache_disk_usage_byte)", "sum(node_load1)"):
        panel["targets"][0]["expr"] = expr
        problems = dashboards.check_dashboard_json(json.dumps(doc))
        assert len(problems) == 1 and expr.split("(")[-1].rstrip(")") in problems[0], (expr, problems)
    assert "buildkit_cache_gc_max_used_space_bytes" in {f.name for f in exporter.families()}


@pytest.mark.parametrize("setting, named", [("escalate_after=0s", "escalate_after"), ("alert_for=0s", "alert_for"),
                                            ("scrape_interval=0s", "scrape_interval"),
                                            ("evaluation_interval=0s", "evaluation_interval"),
                                            ("scrape_interval=5m", "scrape_interval"),
                                            ("scrape_interval=76s", "scrape_interval")])
def test_durations_that_would_break_the_rules_are_refused_naming_the_parameter(setting, named):
    with pytest.raises(ParameterError) as err:
        params.validate(profiles.resolve("monitoring", "lab", "apply", [setting]))
    assert f"parameter {named!r}" in err.value.problem and named in err.value.fix


def test_durations_that_fit_are_accepted():
    p = monitoring_params("lab", "scrape_interval=75s", "escalate_after=1m")
    assert p["scrape_interval"] == "75s"
    assert params.validate(profiles.resolve("alerting", "lab", "apply", ["group_wait=0s"])).group_wait == "0s"


def test_the_smtp_port_is_checked_free_before_anything_is_written(tmp_path):
    import socket

    from runbook_checks import session
    from runbook_checks.daemon import service, systemd

    layout = for_params({"profile": "ci", "state_dir": str(tmp_path / "s")})
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        wanted = session.programs(layout, {"notify_sink_port": service.free_port(), "smtp_port": taken})
        assert wanted[0].extra_ports == (("smtp_port", taken),)
        with pytest.raises(ProgramError) as err:
            service.write_service_definition(layout, "supervisor", systemd.Limits("", "", 100, 4096), "", True, wanted)
    assert f"127.0.0.1:{taken} is taken by another process, so notify_sink cannot listen there" in err.value.problem
    assert "--set smtp_port=N" in err.value.fix
    assert not (tmp_path / "s").exists()


def test_check_mode_sends_no_test_alert(tmp_path):
    """Nothing listens on the Alertmanager port: a check run that tried to send would fail."""
    from runbook_checks.daemon import service

    layout = for_params({"profile": "ci", "state_dir": str(tmp_path)})
    p = alerting_params() | {"alertmanager_port": service.free_port()}
    outcome = alertmanager.test_alert_delivered(layout, p, apply=False)
    assert outcome.status == "skipped" and "check mode sends nothing" in outcome.message
    assert "oncall (webhook, email, slack)" in outcome.message


def test_notifications_count_as_delivered_only_when_a_request_succeeded():
    key = 'alertmanager_notification_requests{}_total{{integration="webhook"}}'
    before = {key.format(""): 3, key.format("_failed"): 1}
    assert alertmanager.delivered(before, {key.format(""): 5, key.format("_failed"): 3}, "webhook") == (0, 2)
    assert alertmanager.delivered(before, {key.format(""): 5, key.format("_failed"): 2}, "webhook") == (1, 1)
    assert alertmanager.delivered(before, before, "webhook") == (0, 0)
