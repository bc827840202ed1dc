"""An alert that never pages: the on-call webhook's URL has a typo. Fixed in the profile,
then proven by making BuildkitdDown fire for real."""

import datetime as _dt
import time

import yaml

from runbook_checks.core import files, profiles
from runbook_checks.core.clock import wait_until
from runbook_checks.daemon import service
from runbook_checks.labs import checks
from runbook_checks.labs.catalogue import expect
from runbook_checks.monitoring import alertmanager, sink

AREA = 5
START_SECONDS = 28  # lab.start, measured on the kit's machine kind (2 cores, warm)
ALERT = "BuildkitdDown"


def PROFILE(box):
    """The monitoring stack beside the lab's builder, on free ports, with short waits (a
    trainee should not wait minutes), and the on-call webhook's URL with a typo.
    escalate_after is short too: the rule tests promtool runs on every monitoring apply
    step every 5 s (builder_down_for) up to escalate_after plus ten minutes, so the
    default 30m costs lab.start about 15 s more. (Escalation goes to the escalation
    receiver, not to the on-call webhook this lab is about.)"""
    sink_port = service.free_port()
    return {"prometheus_port": service.free_port(), "alertmanager_port": service.free_port(),
            "notify_sink_port": sink_port, "builder_name": "lab-builder", "builder_down_for": "5s",
            "escalate_after": "2m",
            "scrape_interval": "2s", "evaluation_interval": "2s", "group_wait": "2s", "group_interval": "30s",
            "team_receivers": {"build": "chat"},
            "webhook_url": f"http://127.0.0.1:{sink_port}/hooks/webhook"}


def profile(box) -> dict:
    return yaml.safe_load(box.profile_path.read_text())


def setup(box):
    """Prometheus with the kit's rules; Alertmanager's routing from the profile, typo and
    all, written and loaded as the alerting runbook's config step does (the runbook's
    last step would then wait a minute for a test alert that cannot arrive)."""
    box.must_pass("monitoring")
    values = profiles.resolve_sources("alerting", box.profile_path, "apply").values
    alertmanager.converge_config(box.layout, values, apply=True)


def _since(stamp: str) -> _dt.datetime:
    return _dt.datetime.strptime(stamp, "%Y%m%dT%H%M%S.%fZ")


def paged(box) -> list[dict]:
    """BuildkitdDown notifications for this builder that reached the on-call webhook since the lab started."""
    started = _dt.datetime.strptime(box.started, "%Y-%m-%dT%H:%M:%SZ")
    found = []
    for message in sink.messages(profile(box)["notify_sink_port"]):
        if message["path"] != "/hook/webhook" or _since(message["received"]) < started:
            continue
        for alert in message["payload"].get("alerts", []):
            if alert["labels"].get("alertname") == ALERT and alert["status"] == "firing":
                found.append(message)
    return found


def check(box):
    p = profile(box)
    url = alertmanager.channels(p)["webhook"]
    rendered = alertmanager.config_path(box.layout).read_text()
    yield expect(url.endswith("/hook/webhook") and url in rendered,
                 f"Alertmanager sends on-call's alerts to {url}, where the webhook receiver listens",
                 f"Alertmanager sends on-call's alerts to {url if url in rendered else 'an URL not in the profile'},"
                 " where nothing receives them (the sink takes POST /hook/NAME)")
    yield checks.converged(box, "alerting", "alertmanager.yml is the profile's")
    hits = paged(box)
    yield expect(hits, f"{ALERT} fired and reached the on-call webhook ({len(hits)} notification(s) since the lab"
                 " started)", f"no {ALERT} has reached the on-call webhook since the lab started: the fix is not"
                 " proven until the alert really fires")
    yield expect(service.daemon_answers(box.layout), "buildkitd is serving again",
                 "buildkitd is still stopped: start it again once the alert fired")


def solve(box):
    p = profile(box)
    del p["webhook_url"]  # the sink's own /hook/webhook
    files.atomic_write(box.profile_path, yaml.safe_dump(p, sort_keys=False))
    box.must_pass("alerting")
    box.manager.stop_daemon()
    try:
        wait_until(lambda: paged(box), 120, f"{ALERT} reaching the on-call webhook", "read Alertmanager's log")
    finally:
        box.manager.start()
        service.wait_ready(box.layout, box.manager, 60)


def wrong_fix(box):
    """The URL fixed with --set on the command line: Alertmanager is right until the next
    apply from the profile, and nothing proved the page arrives."""
    p = profile(box)
    box.must_pass("alerting", "apply", f"webhook_url=http://127.0.0.1:{p['notify_sink_port']}/hook/webhook")
    time.sleep(1)
