"""plugins-configure through papermill against a real buildkitd: docker-buildx at the
pinned version, a remote-driver builder as the default, a docker buildx build through it
(no Docker engine here)."""

from __future__ import annotations

import shutil

import pytest

from runbook_checks.core import runner
from runbook_checks.plugins import buildx

pytestmark = pytest.mark.skipif(not shutil.which("docker"), reason="the docker CLI is not installed")


def run(mode, ci_daemon, docker_config, runs_base):
    return runner.run("plugins-configure", "ci", mode, (f"state_dir={ci_daemon.state_dir}",
                                                         f"docker_config={docker_config}"),
                      base=runs_base, progress=False)


def test_check_apply_again(ci_daemon, runs_base, tmp_path):
    docker_config = tmp_path / "docker"
    check = run("check", ci_daemon, docker_config, runs_base)
    assert [s.status for s in check.report.steps] == ["changed", "changed", "skipped", "skipped"], check.report.to_json()
    assert not docker_config.exists()

    first = run("apply", ci_daemon, docker_config, runs_base)
    assert first.report.summary["failed"] == 0, first.report.to_json()
    plugin = docker_config / "cli-plugins/docker-buildx"
    assert buildx.plugin_version(plugin) == buildx.BUILDX_VERSION
    env = buildx.docker_env(str(docker_config))
    assert buildx.builder_endpoint("buildkit-ops-ci", env) == ci_daemon.address
    assert buildx.current_builder(env) == "buildkit-ops-ci"

    policy = first.report.steps[-1]
    assert policy.name == "build policy (buildx, on the client)" and policy.status == "ok", policy
    assert "tests of build-policy pass" in policy.message and "not allowed by policy: action DENY" in policy.message

    second = run("apply", ci_daemon, docker_config, runs_base)
    assert second.report.summary["changed"] == 0, second.report.to_json()
    assert second.report.steps[-1].status == "ok"


def test_a_builder_pointing_elsewhere_is_recreated(ci_daemon, tmp_path):
    plugins = tmp_path / "docker/cli-plugins"
    assert buildx.ensure_plugin(plugins, buildx.BUILDX_VERSION, "go", apply=True).status == "changed"
    env = buildx.docker_env(str(tmp_path / "docker"))
    buildx._docker("buildx", "create", "--name", "moved", "--driver", "remote", "unix:///nonexistent.sock", env=env)
    out = buildx.ensure_builder("moved", ci_daemon.address, env, apply=False)
    assert out.status == "changed" and "recreate builder moved" in out.message
    out = buildx.ensure_builder("moved", ci_daemon.address, env, apply=True)
    assert buildx.builder_endpoint("moved", env) == ci_daemon.address
    assert buildx.ensure_builder("moved", ci_daemon.address, env, apply=True).status == "ok"


def test_debian_source_without_the_package_names_the_fix(tmp_path):
    if buildx.debian_candidate():
        pytest.skip("this host's apt sources carry docker-buildx")
    from runbook_checks.core.errors import InstallError

    with pytest.raises(InstallError, match="buildx_source=go"):
        buildx.ensure_plugin(tmp_path, buildx.BUILDX_VERSION, "debian", apply=True)
    assert not (tmp_path / "docker-buildx").exists()
