"""`invoke cluster.*`: the local single-node Kubernetes (runbook_checks.fleet.cluster) the
fleet runbook targets when no kubeconfig is given; `invoke fleet.image`: the builder image
for another cluster; `invoke bench.fleet`: the autoscaling cycle and its scale-up goal."""

from __future__ import annotations

import json
from pathlib import Path

from invoke import Exit, task

from runbook_checks.core.paths import PROJECT_ROOT, runs_dir

from ._kit import console, refusals

DIR = {"dir": "the cluster's directory (default: $BUILDKIT_OPS_CLUSTER_DIR or .cluster in the checkout)"}


def _cluster(folder: str):
    from runbook_checks.fleet import cluster

    return cluster.Cluster(Path(folder).absolute() if folder else cluster.default_dir())


def _show(status: dict) -> None:
    from rich.table import Table

    table = Table(title=f"local cluster: {status['server']}", title_justify="left")
    table.add_column("program")
    table.add_column("state")
    for name, state in status["programs"].items() or {"(all)": "STOPPED"}.items():
        table.add_row(name, state)
    console().print(table)
    if status["programs"]:
        console().print(f"node Ready: {status['node_ready']}; pods: "
                        + (", ".join(f"{p['namespace']}/{p['name']} {p['phase']}" for p in status["pods"]) or "none"))
        console().print(f"kubeconfig: {status['kubeconfig']}", soft_wrap=True)
    if status.get("error"):
        console().print(f"[red]{status['error']}[/red]")


@task(help=DIR)
@refusals
def up(c, dir=""):
    """Start the local cluster (build its programs once per version, about 20 minutes cold),
    wait until its node is Ready and the metrics API serves."""
    _show(_cluster(dir).up())


@task(help={**DIR, "purge": "also remove the cluster's directory: etcd's data, images, certificates"})
@refusals
def down(c, dir="", purge=False):
    """Stop the local cluster's pods and programs, remove its bridges and kube-proxy's rules."""
    _cluster(dir).down(purge=purge)


@task(help={**DIR, "json": "print JSON"})
@refusals
def status(c, dir="", json_=False):
    """The local cluster's programs, its node and its pods."""
    s = _cluster(dir).status()
    print(json.dumps(s, indent=2)) if json_ else _show(s)


@task(help={"push": "a registry reference REGISTRY/PATH:TAG to push the image to (what builder_image then names)"})
@refusals
def image(c, push=""):
    """Build the kit's builder image (buildkitd, buildctl, runc from this machine) as an OCI
    archive; with --push, push it to a registry a managed cluster pulls from."""
    from runbook_checks.fleet import images

    if push:
        images.push(push, images.builder_context)
        console().print(f"pushed {push}: run the fleet runbook with --set builder_image={push}")
    else:
        console().print(f"{images.builder_ref()}: {images.archive(images.builder_ref(), images.builder_context)}")


SCALE_UP_GOAL = 60  # seconds from a burst's start to a new builder serving, on the local cluster


@task(help={"burst": "builds at once in the burst (default 4)", "seconds": "how long each burst build keeps a core"
            " busy (default 60)", "publish": "also put the plot on docs/guides/fleet.md",
            "namespace": "the fleet's namespace (default buildkit)", "name": "the fleet's name (default buildkitd)",
            "state_dir": "the installation whose CA the fleet uses (default .lab)"})
@refusals
def autoscale(c, burst="4", seconds="60", publish=False, namespace="buildkit", name="buildkitd", state_dir=""):
    """One autoscaling cycle on the fleet the runbook deployed to the local cluster: a burst
    of builds, the scale-up, builds in flight through the scale-in; replicas over time as
    JSON and a plot under runs/fleet/. Exit 1 when a build fails, or when the first new
    builder serves later than 60 s after the burst started (the goal)."""
    from runbook_checks.core import figures, layout as layout_mod
    from runbook_checks.core.files import stamp
    from runbook_checks.fleet import autoscale as cycle_mod, deploy

    t = deploy.target("")
    kube = t.client()
    fleet = deploy.live_fleet(kube, namespace, name)
    layout = layout_mod.for_params({"profile": "lab", "state_dir": state_dir})
    address = deploy.rollout(kube, fleet).facts["remote_address"]
    out = runs_dir() / "fleet" / f"autoscale-{stamp()}"
    out.mkdir(parents=True, exist_ok=True)
    cycle = cycle_mod.run(kube, fleet, address, deploy.probe_bundle(layout, ""), out, int(burst), int(seconds))
    caption = (f"{out.name}: {burst} builds of {seconds}s, target {fleet.target_cpu_percent}% CPU, scale-in after"
               f" {fleet.scale_down_seconds}s")
    png = cycle_mod.plot(cycle, out / "autoscale.png", caption)
    cycle_mod.save(cycle, out / "autoscale.json")
    console().print(f"scale-up {cycle.scale_up_seconds}s after the burst; peak {cycle.peak} builders; "
                    f"{len(cycle.drained)} removed with a build in flight, all builds ok\nrecord: {out}")
    if publish:
        figures.publish(PROJECT_ROOT / "docs/guides/fleet.md", "fleet:autoscale", png, "fleet-autoscale.png",
                        caption, cycle_mod.markdown(cycle))
    if cycle.scale_up_seconds > SCALE_UP_GOAL:
        raise Exit(f"goal missed: the first new builder served {cycle.scale_up_seconds}s after the burst started"
                   f" (goal: under {SCALE_UP_GOAL}s)", code=1)
