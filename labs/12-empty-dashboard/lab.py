"""A dashboard with no builder on it: Prometheus scrapes a port where nothing listens
since a hand edit. Found from Prometheus's own targets, put back by the monitoring
runbook, the edit kept."""

import time
from urllib.parse import urlsplit

import yaml

from runbook_checks.core import files
from runbook_checks.core.clock import wait_until
from runbook_checks.daemon import service
from runbook_checks.daemon.config import read_debug_port
from runbook_checks.labs import checks
from runbook_checks.labs.catalogue import expect
from runbook_checks.monitoring import prometheus

AREA = 5
START_SECONDS = 20  # lab.start, measured on the kit's machine kind (2 cores, warm)
HAND_EDIT = "# hand edit: scrape the builder on its new port (ticket OPS-1042)\n"


def PROFILE(box):
    """Prometheus beside the lab's builder on a free port, scraping every 2 s."""
    return {"prometheus_port": service.free_port(), "scrape_interval": "2s", "evaluation_interval": "2s",
            "builder_name": "lab-builder"}


def port(box) -> int:
    return yaml.safe_load(box.profile_path.read_text())["prometheus_port"]


def builder_target(box) -> dict | None:
    """Prometheus's active target of the buildkitd job, as its targets page shows it."""
    active = prometheus.api(port(box), "/api/v1/targets", {"state": "active"})["activeTargets"]
    return next((t for t in active if t["labels"].get("job") == "buildkitd"), None)


def setup(box):
    """The monitoring runbook applied; then the hand edit, a port where nothing listens,
    loaded, and scraped down."""
    box.must_pass("monitoring")
    path = prometheus.config_path(box.layout)
    debug = f"127.0.0.1:{read_debug_port(box.layout.config_path)}"
    files.atomic_write(path, path.read_text().replace("scrape_configs:\n", f"{HAND_EDIT}scrape_configs:\n", 1)
                       .replace(f"- {debug}\n", f"- 127.0.0.1:{service.free_port()}\n", 1))
    prometheus.reload(port(box))
    wait_until(lambda: (builder_target(box) or {}).get("health") == "down", 30, "the builder's target down",
               f"read {path}")


def check(box):
    debug = f"127.0.0.1:{read_debug_port(box.layout.config_path)}"
    target = builder_target(box)
    if target and target["health"] == "unknown":  # just reloaded: one scrape (2 s) tells
        time.sleep(3)
        target = builder_target(box)
    scrapes = target["scrapeUrl"] if target else "nothing"
    up = target is not None and debug in scrapes and target["health"] == "up"
    yield expect(up, f"Prometheus scrapes the builder at {scrapes}: up",
                 f"Prometheus's buildkitd job scrapes {scrapes}"
                 + (f" ({target['health']}: {target['lastError']})" if target else "")
                 + f"; the builder's metrics are at http://{debug}/metrics")
    if not up:  # the monitoring runbook in check mode would wait a minute for the target
        yield kept(box)
        return
    samples = 0
    for _ in range(10):  # a target just reloaded has its first scrape within an interval or two (2 s)
        series = prometheus.query(port(box), 'scrape_samples_scraped{job="buildkitd"}')
        samples = max((int(float(s["value"][1])) for s in series), default=0)
        if samples:
            break
        time.sleep(1)
    yield expect(samples > 0, f"the dashboards have data: {samples} samples from the builder in the last scrape",
                 "no samples from the builder in Prometheus: its panels stay empty")
    yield checks.converged(box, "monitoring", "prometheus.yml is the profile's")
    yield kept(box)


def kept(box):
    found = [p for p in box.layout.backup_dir.glob("prometheus.yml.*") if HAND_EDIT in p.read_text()]
    return expect(found, f"the hand-edited file is kept: {found[0] if found else ''}",
                  f"the hand-edited prometheus.yml is not in {box.layout.backup_dir}: its change is lost for the"
                  " post-mortem")


def solve(box):
    box.must_pass("monitoring")


def wrong_fix(box):
    """The port put right by hand in prometheus.yml, Prometheus not reloaded, nothing kept:
    the file is the kit's again, and Prometheus still scrapes the wrong port."""
    path = prometheus.config_path(box.layout)
    wrong = urlsplit(builder_target(box)["scrapeUrl"]).netloc
    debug = f"127.0.0.1:{read_debug_port(box.layout.config_path)}"
    files.atomic_write(path, path.read_text().replace(HAND_EDIT, "").replace(f"- {wrong}\n", f"- {debug}\n"))
