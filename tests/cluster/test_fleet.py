"""The fleet runbook on a real single-node Kubernetes (runbook_checks.fleet.cluster, built
from the Go module proxy once per version): check mode writes nothing, apply twice changes
nothing the second time, the API server's own refusal stops a bad value before anything
is written, a team builds through the Service with its certificate (another CA's is
refused), and the fleet scales out for a burst and back in around builds in flight."""

from __future__ import annotations

import pytest

from runbook_checks.core import layout as layout_mod
from runbook_checks.core.errors import BuildctlError
from runbook_checks.daemon.buildctl import Buildctl
from runbook_checks.daemon.install import BUILDKIT_VERSION, built_with_go
from runbook_checks.fleet import autoscale, deploy
from runbook_checks.production import ca

from ..conftest import short_tmpdir

# small requests so that replicas_max builders fit the node's two cores; a short
# scale-down window so the cycle ends within a few minutes
SETS = ("replicas_max=3", "builder_cpu_request=250m", "builder_memory_request=128Mi", "scale_down_seconds=20",
        "target_cpu_percent=50", "drain_seconds=300")


def fleet_run(cluster_env, mode: str, *sets: str):
    state_dir, base = cluster_env
    from runbook_checks.core import runner

    return runner.run("fleet", "ci", mode, (f"state_dir={state_dir}", *SETS, *sets), base=base, progress=False)


def namespaces(cluster) -> set[str]:
    from lightkube.resources.core_v1 import Namespace

    return {n.metadata.name for n in cluster.client().list(Namespace)}


@pytest.fixture(scope="module")
def fleet(local_cluster, runs_base):
    """The fleet deployed by the runbook: check first (nothing written), then apply."""
    env = (short_tmpdir("bkfleet-"), runs_base)
    check = fleet_run(env, "check")
    assert check.report.status == "changed", check.report.to_json()
    assert "buildkit" not in namespaces(local_cluster)  # check mode wrote nothing
    applied = fleet_run(env, "apply")
    assert applied.report.status == "changed", applied.report.to_json()
    return env, applied.report


def test_check_mode_plans_every_object_with_the_real_api_server_and_writes_nothing(local_cluster, fleet):
    report = fleet[1]
    assert report.facts["kubeconfig"] == str(local_cluster.kubeconfig)
    assert report.facts["remote_address"].startswith("tcp://10.96.0.") and report.facts["remote_address"].endswith(":1234")
    steps = {s.name: s for s in report.steps}
    assert "HorizontalPodAutoscaler/buildkitd (new)" in steps["server-side plan and apply"].message
    assert steps["a build through the Service with a team's certificate"].status == "ok"


def test_a_second_apply_changes_nothing(fleet):
    again = fleet_run(fleet[0], "apply")
    assert again.report.summary["changed"] == 0, again.report.to_json()
    assert again.report.summary["failed"] == 0


def test_a_value_the_api_server_refuses_stops_the_run_before_anything_is_written(local_cluster, fleet):
    from lightkube.resources.apps_v1 import Deployment

    bad = fleet_run(fleet[0], "apply", "builder_memory_limit=lots")
    assert bad.report.status == "failed"
    step = bad.report.steps[-1]
    assert step.name == "server-side plan and apply"
    assert "the API server refused Deployment/buildkitd" in step.message and "quantities must match" in step.message
    dep = local_cluster.client().get(Deployment, "buildkitd", namespace="buildkit")
    assert dep.spec.template.spec.containers[0].resources.limits["memory"] == "4Gi"


def test_a_team_builds_through_the_service_with_its_certificate_and_another_cas_is_refused(fleet, tmp_path):
    state_dir, _ = fleet[0]
    layout = layout_mod.for_params({"profile": "ci", "state_dir": str(state_dir)})
    address, name = fleet[1].facts["remote_address"], fleet[1].facts["tls_server_name"]
    bundle = ca.write_bundle(ca.issue(layout, "web"), tmp_path / "web")
    buildctl = built_with_go(BUILDKIT_VERSION) / "buildctl"
    tls = {n: str(bundle / n) for n in ca.BUNDLE} | {"servername": name}
    result = Buildctl(buildctl, address, timeout=30, tls=tls).build(autoscale.context(tmp_path / "ctx"),
                                                                    build_args={"NONCE": "web"})
    run_step = [v for v in result.steps if " RUN " in v["name"]]
    assert len(run_step) == 1 and not run_step[0].get("cached")  # the build ran on the fleet, not from a cache
    other_cert, other_key = ca.new_ca("another CA")
    cert, key = ca.sign(other_cert, other_key, "intruder", 1)
    stranger = ca.write_bundle({"ca.pem": bundle.joinpath("ca.pem").read_bytes(), "cert.pem": ca.pem(cert),
                                "key.pem": ca.pem_key(key)}, tmp_path / "stranger")
    tls = {n: str(stranger / n) for n in ca.BUNDLE} | {"servername": name}
    with pytest.raises(BuildctlError):
        Buildctl(buildctl, address, timeout=15, tls=tls).workers()


def test_the_fleet_scales_out_for_a_burst_and_in_around_builds_in_flight(local_cluster, fleet, tmp_path):
    state_dir, _ = fleet[0]
    layout = layout_mod.for_params({"profile": "ci", "state_dir": str(state_dir)})
    kube = local_cluster.client()
    live = deploy.live_fleet(kube, "buildkit", "buildkitd")
    cycle = autoscale.run(kube, live, fleet[1].facts["remote_address"], deploy.probe_bundle(layout, ""), tmp_path,
                          burst=3, burst_seconds=40)
    assert cycle.scale_up_seconds is not None and cycle.peak > live.replicas_min
    assert cycle.drained and all(d["build"]["ok"] for d in cycle.drained)
    assert all(b["ok"] for b in cycle.builds)
    assert cycle.samples[-1].ready == live.replicas_min
    png = autoscale.plot(cycle, tmp_path / "cycle.png", "test")
    assert png.stat().st_size > 10_000


def test_nbval_runs_the_stored_fleet_notebook_against_the_local_cluster(fleet, tmp_path):
    """As stored (check mode, the local cluster since no kubeconfig is given)."""
    import re
    import subprocess
    import sys

    from runbook_checks.core import paths

    from ..integration.test_stack import lab_notebooks

    copies = lab_notebooks(tmp_path, [f'state_dir="{fleet[0][0]}"'], names=("20-fleet.ipynb",))
    nbval = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                            str(copies)], capture_output=True, text=True, cwd=paths.PROJECT_ROOT, timeout=600)
    assert nbval.returncode == 0, nbval.stdout[-4000:]
    assert re.search(r"\d+ passed", nbval.stdout)


def test_the_builders_certificate_is_kept_while_current_and_renewed_near_expiry_or_for_another_ca(local_cluster,
                                                                                                   fleet):
    import datetime as dt

    state_dir, _ = fleet[0]
    kube = local_cluster.client()
    live = deploy.live_fleet(kube, "buildkit", "buildkitd")
    layout = layout_mod.for_params({"profile": "ci", "state_dir": str(state_dir)})
    kept, why = deploy.certificate(layout, kube, live)
    assert why == "" and kept["tls.crt"].startswith(b"-----BEGIN CERTIFICATE")
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=ca.SERVER_DAYS - ca.RENEW_BEFORE_DAYS + 1)
    renewed, why = deploy.certificate(layout, kube, live, now=later)
    assert "expires in" in why and renewed["tls.crt"] != kept["tls.crt"]
    other = layout_mod.for_params({"profile": "ci", "state_dir": str(short_tmpdir("bkotherca-"))})
    ca.ensure_ca(other, "other", apply=True)
    assert deploy.certificate(other, kube, live)[1] == "the one it holds is from another CA"
