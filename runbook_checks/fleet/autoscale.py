"""Autoscaling proven on a real cluster: a burst of CPU-bound builds through the fleet's
Service raises the replica count (the HPA on CPU, from metrics-server), then long quiet
builds held on every builder see the fleet scale back in around them: each pod the HPA
removes waits in its preStop drain until its build is done, and every build succeeds.
The replicas over time are the record (JSON and a plot); `invoke fleet.autoscale` runs it
on the local cluster, `--publish` puts the plot on the fleet's guide."""

from __future__ import annotations

import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core import figures
from ..core.errors import FleetError
from ..daemon.buildctl import Buildctl
from ..daemon.install import BUILDKIT_VERSION, built_with_go
from ..production import ca
from . import manifests
from .images import BUSYBOX

# a RUN step that keeps one core busy for SECONDS (shell arithmetic in chunks, the clock
# read between them), or sleeps through them; NONCE makes every build new to the cache
DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
ARG NONCE=0
ARG SECONDS=1
ARG WORK=busy
RUN ["/bin/busybox", "sh", "-c", "echo $NONCE > /stamp; end=$(( $(/bin/busybox date +%s) + SECONDS )); \\
if [ $WORK = sleep ]; then /bin/busybox sleep $SECONDS; else \\
while [ $(/bin/busybox date +%s) -lt $end ]; do i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; done; fi"]
"""


def context(folder: Path) -> Path:
    """The load build's context: a static busybox and the Dockerfile above (no base image:
    the builders need no registry)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, folder / "busybox")
    (folder / "Dockerfile").write_text(DOCKERFILE)
    return folder


@dataclass
class Sample:
    t: float
    desired: int
    ready: int
    cpu_percent: int | None  # the HPA's current average utilisation of the requests


@dataclass
class Cycle:
    samples: list[Sample] = field(default_factory=list)
    burst_started: float = 0.0
    burst_ended: float = 0.0
    scaled_up_at: float | None = None  # the first new builder ready after the burst started
    peak: int = 0
    scaled_in_at: float | None = None
    builds: list[dict] = field(default_factory=list)
    drained: list[dict] = field(default_factory=list)  # pods removed while a build ran on them

    @property
    def scale_up_seconds(self) -> float | None:
        return None if self.scaled_up_at is None else round(self.scaled_up_at - self.burst_started, 1)

    def to_dict(self) -> dict:
        return asdict(self) | {"scale_up_seconds": self.scale_up_seconds}


def team_client(address: str, bundle: Path, server_name: str) -> Buildctl:
    """buildctl for the fleet at `address` with a team's bundle (invoke certs.issue)."""
    tls = {name: str(bundle / name) for name in ca.BUNDLE} | {"servername": server_name}
    return Buildctl(built_with_go(BUILDKIT_VERSION) / "buildctl", address, timeout=30, tls=tls)


def _build(client: Buildctl, ctx: Path, seconds: int, work: str, nonce: str) -> dict:
    start = time.monotonic()
    try:
        client.build(ctx, build_args={"NONCE": nonce, "SECONDS": str(seconds), "WORK": work}, timeout=seconds + 600)
        return {"address": client.address, "work": work, "seconds": round(time.monotonic() - start, 1), "ok": True}
    except Exception as exc:  # noqa: BLE001 - every build's outcome is recorded
        return {"address": client.address, "work": work, "seconds": round(time.monotonic() - start, 1), "ok": False,
                "error": str(exc)[-300:]}


def _pods(kube, fleet: manifests.Fleet) -> list:
    from lightkube.resources.core_v1 import Pod

    return list(kube.list(Pod, namespace=fleet.namespace, labels={"app.kubernetes.io/instance": fleet.name}))


def run(kube, fleet: manifests.Fleet, address: str, bundle: Path, work_dir: Path, burst: int = 4,
        burst_seconds: int = 60, timeout: float = 600, progress=print) -> Cycle:
    """One cycle: the burst, the scale-up, the quiet builds, the scale-in to replicas_min."""
    from lightkube.resources.apps_v1 import Deployment
    from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler

    ctx = context(work_dir / "load-context")
    cycle, stop, t0 = Cycle(), threading.Event(), time.monotonic()

    def sample():
        while not stop.is_set():
            try:
                dep = kube.get(Deployment, fleet.name, namespace=fleet.namespace)
                hpa = kube.get(HorizontalPodAutoscaler, fleet.name, namespace=fleet.namespace)
                cpu = next((m.resource.current.averageUtilization for m in (hpa.status.currentMetrics or [])
                            if m.resource and m.resource.name == "cpu"), None)
                s = Sample(round(time.monotonic() - t0, 1), dep.spec.replicas or 0, dep.status.readyReplicas or 0, cpu)
                cycle.samples.append(s)
                cycle.peak = max(cycle.peak, s.ready)
            except Exception:  # noqa: BLE001 - a missed sample is a gap in the plot
                pass
            stop.wait(2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        start_ready = _wait_ready(kube, fleet, fleet.replicas_min, timeout)
        progress(f"burst: {burst} CPU-bound builds of {burst_seconds}s through {address} ({start_ready} builder(s))")
        cycle.burst_started = time.monotonic() - t0
        with ThreadPoolExecutor(burst) as pool:
            client = team_client(address, bundle, fleet.server_names[0])
            futures = [pool.submit(_build, client, ctx, burst_seconds, "busy", f"burst-{t0}-{i}") for i in range(burst)]
            while not all(f.done() for f in futures):
                if cycle.scaled_up_at is None and cycle.samples and cycle.samples[-1].ready > start_ready:
                    cycle.scaled_up_at = cycle.samples[-1].t
                    progress(f"scaled up: {cycle.samples[-1].ready} builders ready"
                             f" {cycle.scale_up_seconds:.0f}s after the burst started")
                time.sleep(1)
            cycle.builds += [f.result() for f in futures]
        cycle.burst_ended = time.monotonic() - t0
        if cycle.scaled_up_at is None:
            raise FleetError(f"the fleet did not scale up during a burst of {burst} builds ({cycle.peak} builders at"
                             " most)", "look at the HPA: kubectl describe hpa (are metrics-server's numbers there?)")
        cycle.drained = _quiet_scale_in(kube, fleet, bundle, ctx, cycle, t0, timeout, progress)
        _wait_ready(kube, fleet, fleet.replicas_min, timeout, exact=True)
        cycle.scaled_in_at = time.monotonic() - t0
        progress(f"scaled in to {fleet.replicas_min} builder(s) {cycle.scaled_in_at - cycle.burst_ended:.0f}s after"
                 " the burst")
    finally:
        stop.set()
        sampler.join(5)
    failed = [b for b in cycle.builds if not b["ok"]]
    if failed:
        raise FleetError(f"{len(failed)} of {len(cycle.builds)} builds failed during the cycle: {failed[0]['error']}",
                         "read the builder pods' logs (kubectl logs) and the drain: a removed pod must finish its build")
    return cycle


def _wait_ready(kube, fleet: manifests.Fleet, want: int, timeout: float, exact: bool = False) -> int:
    deadline = time.monotonic() + timeout
    while True:
        pods = [p for p in _pods(kube, fleet) if not p.metadata.deletionTimestamp]
        ready = sum(1 for p in pods if any(c.type == "Ready" and c.status == "True"
                                           for c in (p.status.conditions or [])))
        if (ready == want == len(pods)) if exact else ready >= want:
            return ready
        if time.monotonic() > deadline:
            raise FleetError(f"{ready} of {want} builders ready after {timeout:.0f}s",
                             f"kubectl -n {fleet.namespace} get pods,hpa")
        time.sleep(2)


def _quiet_scale_in(kube, fleet, bundle, ctx, cycle, t0, timeout, progress) -> list[dict]:
    """A sleeping build on every builder (by pod address), long enough that the HPA scales
    in while they run; the pods it removes must finish theirs."""
    pods = [p for p in _pods(kube, fleet) if p.status.podIP and not p.metadata.deletionTimestamp]
    hold = fleet.scale_down_seconds + 15 * len(pods) + 30
    progress(f"quiet builds of {hold}s on each of {len(pods)} builders while the fleet scales in")
    seen: dict[str, float] = {}
    with ThreadPoolExecutor(len(pods)) as pool:
        futures = {p.metadata.name: pool.submit(
            _build, team_client(f"tcp://{p.status.podIP}:{manifests.PORT}", bundle, fleet.server_names[0]), ctx, hold,
            "sleep", f"quiet-{t0}-{p.metadata.name}") for p in pods}
        while not all(f.done() for f in futures.values()):
            for pod in _pods(kube, fleet):
                name = pod.metadata.name
                if pod.metadata.deletionTimestamp and name in futures and not futures[name].done():
                    seen.setdefault(name, time.monotonic() - t0)
            time.sleep(1)
        results = {name: f.result() for name, f in futures.items()}
    cycle.builds += list(results.values())
    drained = [{"pod": name, "terminating_at": round(at, 1), "build": results[name]} for name, at in seen.items()]
    if not drained:
        raise FleetError(f"no builder was removed while its quiet build of {hold}s ran",
                         "the HPA did not scale in: check scale_down_seconds and the HPA's events")
    progress(f"{len(drained)} builder(s) removed while a build ran on them; their builds: "
             + ", ".join("ok" if d["build"]["ok"] else "FAILED" for d in drained))
    return drained


def plot(cycle: Cycle, png: Path, caption: str) -> Path:
    plt = figures.pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    t = [s.t for s in cycle.samples]
    ax.step(t, [s.desired for s in cycle.samples], where="post", label="replicas (HPA's choice)", color="#3f51b5")
    ax.step(t, [s.ready for s in cycle.samples], where="post", label="builders ready", color="#009688")
    ax.axvspan(cycle.burst_started, cycle.burst_ended, color="#ff9800", alpha=0.15, label="burst of builds")
    for i, d in enumerate(cycle.drained):
        ax.axvline(d["terminating_at"], color="#9c27b0", linestyle=":", linewidth=1,
                   label="builder removed, its build in flight" if i == 0 else None)
    ax.set_xlabel("seconds")
    ax.set_ylabel("builders")
    ax.set_ylim(0, max([s.desired for s in cycle.samples] + [1]) + 1)
    cpu = ax.twinx()
    cpu.plot(t, [s.cpu_percent if s.cpu_percent is not None else float("nan") for s in cycle.samples],
             color="#e91e63", linewidth=1, label="CPU % of requests")
    cpu.set_ylabel("CPU % of requests")
    lines = ax.get_legend_handles_labels()
    extra = cpu.get_legend_handles_labels()
    ax.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=7, loc="upper right")
    ax.set_title("The fleet scales out for a burst and back in around builds in flight", fontsize=10)
    return figures.save(fig, png, caption)


def save(cycle: Cycle, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(cycle.to_dict(), indent=2) + "\n")
    return out


def markdown(cycle: Cycle) -> str:
    """The cycle's numbers for the guide."""
    ok = sum(1 for b in cycle.builds if b["ok"])
    rows = [("builds", f"{ok} of {len(cycle.builds)} succeeded"),
            ("scale-up", f"{cycle.scale_up_seconds}s from the burst's start to a new builder ready"),
            ("peak", f"{cycle.peak} builders ready"),
            ("scale-in", f"back to the floor {cycle.scaled_in_at - cycle.burst_ended:.0f}s after the burst, held"
                         " by the quiet builds: a removed builder goes once its build is done"
                         if cycle.scaled_in_at else "not reached"),
            ("drained", f"{len(cycle.drained)} builder(s) removed while a build ran on them, each build finished"
                        f" ({', '.join(str(d['build']['seconds']) + 's' for d in cycle.drained)})")]
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
