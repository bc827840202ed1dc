"""Prometheus configuration, rules and their promtool tests, Alertmanager routes, and the
Grafana dashboard, checked with the real promtool and amtool (Debian's packages)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from runbook_checks import alerting, dashboards, monitoring, params
from runbook_checks.errors import ParameterError
from runbook_checks.layout import for_params

ALERTS = ["BuildkitdDown", "BuildFailureRatioHigh", "BuildDurationP95High", "CacheHitRatioLow", "CacheNearLimit",
          "DiskFilling", "InvalidCliPluginsPresent", "ExporterDown", monitoring.ESCALATION_ALERT]


def monitoring_params(profile: str, *sets: str) -> dict:
    values = params.resolve("monitoring", profile, "check", sets)
    return params.validate(values).model_dump()


@pytest.mark.parametrize("profile", params.PROFILES)
def test_promtool_checks_the_config_and_every_alert_fires_and_stays_silent(profile):
    p = monitoring_params(profile)
    config, rules, tests = monitoring.render_config(p, 16060), monitoring.render_rules(p), monitoring.render_rule_tests(p)
    assert "promtool test rules: 18 cases SUCCESS" in monitoring.validate(config, rules, tests)
    names = [case["name"] for case in yaml.safe_load(tests)["tests"]]
    assert sorted(names) == sorted([f"{a} fires" for a in ALERTS] + [f"{a} stays silent" for a in ALERTS])
    fired = {c["alert_rule_test"][0]["alertname"] for c in yaml.safe_load(tests)["tests"] if c["alert_rule_test"][0]["exp_alerts"]}
    assert fired == set(ALERTS)


def test_other_thresholds_are_tested_too():
    p = monitoring_params("lab", "failure_ratio_max=0.05", "build_p95_max_seconds=30.5", "cache_hit_ratio_min=0.9",
                          "cache_usage_max_ratio=0.5", "disk_fill_hours=1", "alert_for=1m", "builder_down_for=30s",
                          "escalate_after=2h")
    rules = monitoring.render_rules(p)
    assert "buildkit:build_failures:ratio_rate5m > 0.05" in rules and "> 30.5" in rules
    monitoring.validate(monitoring.render_config(p, 1), rules, monitoring.render_rule_tests(p))


def test_the_promtool_tests_catch_a_rule_that_does_not_match_its_threshold():
    rules = monitoring.render_rules(monitoring_params("lab", "failure_ratio_max=0.2"))
    tests = monitoring.render_rule_tests(monitoring_params("lab", "failure_ratio_max=0.9"))
    with pytest.raises(monitoring.MonitoringError) as err:
        monitoring.validate(monitoring.render_config(monitoring_params("lab"), 1), rules, tests)
    assert "BuildFailureRatioHigh" in str(err.value) and "nothing was written" in err.value.fix


def test_promtool_refuses_a_broken_rule():
    p = monitoring_params("lab")
    broken = monitoring.render_rules(p).replace("buildkit:builds:rate5m", "buildkit builds rate", 1)
    with pytest.raises(monitoring.MonitoringError, match="promtool check config refused"):
        monitoring.validate(monitoring.render_config(p, 1), broken, monitoring.render_rule_tests(p))


def test_a_threshold_that_is_not_a_number_names_the_parameter():
    with pytest.raises(ParameterError, match="failure_ratio_max"):
        params.resolve("monitoring", "lab", "apply", ["failure_ratio_max=lots"])
    with pytest.raises(ParameterError, match="cache_hit_ratio_min"):
        params.resolve("monitoring", "lab", "apply", ["cache_hit_ratio_min=1.5"])
    with pytest.raises(ParameterError, match="scrape_interval"):
        params.resolve("monitoring", "lab", "apply", ["scrape_interval=15"])


def test_every_alert_carries_severity_summary_description_and_its_docs_page():
    p = monitoring_params("lab")
    rules = yaml.safe_load(monitoring.render_rules(p))
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    assert [a["alert"] for a in alerts] == ALERTS
    for alert in alerts:
        assert alert["labels"]["severity"] in ("critical", "warning")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        slug = monitoring.slug(alert["alert"])
        assert alert["annotations"]["runbook_url"] == f"http://127.0.0.1:8000/alerts/{slug}/"
        page = params.PROJECT_ROOT / "docs" / "alerts" / f"{slug}.md"
        assert page.exists(), page
        text = page.read_text()
        for heading in ("## What it means", "## How to diagnose", "## How to fix"):
            assert heading in text, (page, heading)
    recorded = [r["record"] for r in rules["groups"][0]["rules"]]
    assert recorded == [name for name, _ in monitoring.RECORDING_RULES]


def test_the_scrape_config_has_every_target_with_the_builder_label_and_native_histograms():
    p = monitoring_params("lab")
    config = yaml.safe_load(monitoring.render_config(p, 16060))
    assert config["global"] == {"scrape_interval": "15s", "evaluation_interval": "15s"}
    targets = {j["job_name"]: j["static_configs"][0]["targets"][0] for j in config["scrape_configs"]}
    assert targets == {"buildkitd": "127.0.0.1:16060", "buildkit-ops-exporter": "127.0.0.1:16061",
                       "node": "127.0.0.1:19100", "prometheus": "127.0.0.1:19090", "alertmanager": "127.0.0.1:19093"}
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:19093"]
    layout = for_params({"profile": "lab", "state_dir": "/tmp/x"})
    prog = monitoring.program(layout, p)
    assert "--enable-feature=native-histograms" in prog.command and "--web.enable-lifecycle" in prog.command
    assert "--web.listen-address=127.0.0.1:19090" in prog.command
    am = alerting.program(layout, p | {"alertmanager_port": 19093})
    assert "--cluster.listen-address= " in am.command and "127.0.0.1:19093" in am.command


def alerting_params(*sets: str) -> dict:
    return params.validate(params.resolve("alerting", "lab", "check", sets)).model_dump()


def test_amtool_checks_the_alertmanager_config_and_routes_by_severity_and_team():
    p = alerting_params()
    text = alerting.render_config(p)
    assert "amtool check-config: SUCCESS" in alerting.validate(text)
    assert alerting.routing_tree(text, {"alertname": "BuildkitdDown", "severity": "critical", "team": "build"}) == \
        ["oncall", "chat"]
    assert alerting.routing_tree(text, {"alertname": "DiskFilling", "severity": "warning", "team": "platform"}) == \
        ["email"]
    assert alerting.routing_tree(text, {"alertname": monitoring.ESCALATION_ALERT, "escalated": "true",
                                        "severity": "warning", "team": "build"}) == ["escalation"]
    doc = yaml.safe_load(text)
    critical = next(r for r in doc["route"]["routes"] if r["matchers"] == ['severity="critical"'])
    assert critical["repeat_interval"] == "30m" and doc["route"]["repeat_interval"] == "4h"
    assert doc["inhibit_rules"][0]["source_matchers"] == ['alertname="BuildkitdDown"']
    assert doc["inhibit_rules"][0]["equal"] == ["builder"]
    receivers = {r["name"]: r for r in doc["receivers"]}
    assert receivers["chat"]["slack_configs"][0]["api_url"] == "http://127.0.0.1:19095/chat"
    assert receivers["email"]["email_configs"][0]["smarthost"] == "127.0.0.1:19025"
    assert "&id" not in text  # no YAML anchors: every receiver reads on its own
    assert alerting.routes_as_designed(p).status == "ok"


def test_a_route_to_an_unknown_receiver_is_refused_before_anything_is_written(tmp_path):
    p = alerting_params() | {"team_receivers": {"build": "pager"}}
    layout = for_params({"profile": "ci", "state_dir": str(tmp_path)})
    with pytest.raises(alerting.AlertingError) as err:
        alerting.converge_config(layout, p, apply=True)
    assert "'build'" in err.value.problem and "'pager'" in err.value.problem
    assert "webhook, email, chat, oncall, escalation" in err.value.fix
    assert not alerting.config_path(layout).exists()


def test_the_grafana_dashboard_is_generated_and_the_committed_copy_is_current():
    text = dashboards.render_dashboard_json()
    assert dashboards.check_dashboard_json(text) == []
    doc = json.loads(text)
    rows = [p["title"] for p in doc["panels"] if p["type"] == "row"]
    assert rows == ["Builds", "Durations", "Cache", "Resources", "Plugins"]
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
