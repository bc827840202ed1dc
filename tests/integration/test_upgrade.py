"""The upgrade runbook on a real ci builder, between two real BuildKit versions built from
the Go module proxy: down and up again (a second run changes nothing), a canary that
fails leaves the old version serving, and a target that cannot serve the live builder
is rolled back, at the switch and at verify."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from runbook_checks.core import runner
from runbook_checks.daemon import install, schedule, upgrade

from ..conftest import installed_builder, stop_and_remove

OTHER = "v0.34.1"  # the version beside the pinned one, built once into the kit's cache


@pytest.fixture(scope="module")
def builder(runs_base):
    install.built_with_go(OTHER)
    layout = installed_builder("bkup-", runs_base)
    try:
        yield layout
    finally:
        stop_and_remove(layout.state_dir)


def upgrade_to(layout, runs_base, version: str, mode: str = "apply", *sets: str):
    return runner.run("upgrade", "ci", mode, (f"state_dir={layout.state_dir}", f"buildkit_version={version}",
                                             "source=go", *sets), base=runs_base, progress=False).report


def steps(report) -> dict:
    return {s.name: s for s in report.steps}


def test_down_and_up_between_two_versions_then_nothing_to_do(builder, runs_base):
    check = upgrade_to(builder, runs_base, OTHER, "check")
    assert steps(check)["versions"].message == f"BuildKit {install.BUILDKIT_VERSION} -> {OTHER}"
    assert not upgrade.versions_dir(builder).exists() and upgrade.serving(builder) == install.BUILDKIT_VERSION
    for version in (OTHER, install.BUILDKIT_VERSION):
        report = upgrade_to(builder, runs_base, version)
        assert report.status != "failed", report.to_json()
        got = steps(report)
        assert "with this builder's configuration built canary" in got["canary on a throwaway daemon"].message
        assert got["verify"].status == "changed" and f"BuildKit {version} serves" in got["verify"].message
        assert upgrade.serving(builder) == version == install.binary_version(builder.buildkitd)
        assert install.binary_version(builder.buildctl) == version
    again = upgrade_to(builder, runs_base, install.BUILDKIT_VERSION)
    assert again.summary["changed"] == 0 and again.summary["failed"] == 0, again.to_json()
    for version in (OTHER, install.BUILDKIT_VERSION):  # both kept side by side
        assert install.binary_version(upgrade.versions_dir(builder) / version / "buildkitd") == version


def test_a_failing_canary_switches_nothing(builder, runs_base, tmp_path):
    ctx = tmp_path / "broken"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\nRUN false\n")
    before = builder.buildkitd.stat().st_mtime
    report = upgrade_to(builder, runs_base, OTHER, "apply", f"canary_contexts=[{ctx}]")
    got = steps(report)
    assert report.status == "failed" and got["canary on a throwaway daemon"].status == "failed"
    assert f"nothing was switched: BuildKit {install.BUILDKIT_VERSION} still serves" in \
        got["canary on a throwaway daemon"].message
    assert "switch" not in got
    assert upgrade.serving(builder) == install.BUILDKIT_VERSION and builder.buildkitd.stat().st_mtime == before
    assert not list(Path("/tmp").glob("bk-canary-*"))  # the throwaway daemon and its root are gone


@pytest.mark.parametrize("fault, failed_step", [("refuses", "switch"), ("mislabelled", "verify")])
def test_a_target_that_cannot_serve_the_builder_is_rolled_back(builder, runs_base, fault, failed_step):
    """Fault injection: the staged target's buildkitd is the real one for the canary, but
    for the live builder's configuration it exits (refuses) or runs the old version's
    daemon (a mirror that serves a mislabelled build)."""
    staged = upgrade.versions_dir(builder) / OTHER / "buildkitd"
    real = staged.with_name("buildkitd.real")
    os.replace(staged, real)
    live = f"{builder.config_path}"
    old = upgrade.versions_dir(builder) / install.BUILDKIT_VERSION / "buildkitd"
    then = "exit 1" if fault == "refuses" else f'exec {old} "$@"'
    staged.write_text(f'#!/bin/sh\ncase "$*" in *--version*) exec {real} --version ;; *{live}*) {then} ;; esac\n'
                      f'exec {real} "$@"\n')
    staged.chmod(staged.stat().st_mode | stat.S_IXUSR)
    try:
        report = upgrade_to(builder, runs_base, OTHER)
        got = steps(report)
        assert report.status == "failed" and got[failed_step].status == "failed", json.dumps(report.to_json())[:3000]
        assert f"rolled back: BuildKit {install.BUILDKIT_VERSION} serves again" in got[failed_step].message
        assert got["canary on a throwaway daemon"].status == "changed"
        assert upgrade.serving(builder) == install.BUILDKIT_VERSION
        assert install.binary_version(builder.buildkitd) == install.BUILDKIT_VERSION
    finally:
        os.replace(real, staged)


def test_the_version_job_compares_the_installed_buildkitd_with_the_module_proxys_newest(builder):
    newest = schedule.newest_version()  # the real Go module proxy
    assert newest.startswith("v") and "-" not in newest
    installed = install.binary_version(builder.buildkitd)
    assert schedule.version_check(builder, newest=installed).status == "ok"
    older = schedule.version_check(builder, newest="v99.0.0")
    assert older.status == "changed" and "invoke runbook upgrade --set buildkit_version=v99.0.0" in older.message
    assert older.facts == {"installed": installed, "newest": "v99.0.0"}
    assert schedule.version_check(builder).facts["newest"] == newest
