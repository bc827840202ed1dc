"""Shared fixtures. Daemons run for real on loopback in temporary state directories and
are stopped at the end of the session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from runbook_checks.cache import registry
from runbook_checks.core import layout as layout_mod, runner
from runbook_checks.daemon import service, stack


def short_tmpdir(prefix: str) -> Path:
    """/tmp/<short>: unix socket paths must stay under 108 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def stop_and_remove(state_dir: Path, profile: str = "ci") -> None:
    stack.down(purge=True, state_dir=str(state_dir), profile=profile)


@pytest.fixture(scope="session")
def runs_base(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("runs")
    os.environ["BUILDKIT_OPS_RUNS_DIR"] = str(base)
    return base


def apply(name: str, state_dir: Path, *sets: str, profile: str = "ci", base: Path | None = None):
    result = runner.run(name, profile, "apply", (f"state_dir={state_dir}", *sets), base=base, progress=False)
    return result


@pytest.fixture(scope="session")
def ci_daemon(runs_base):
    """A real buildkitd installed and configured by the runbooks (ci profile)."""
    state_dir = short_tmpdir("bkci-")
    try:
        for name in ("install", "configure"):
            result = apply(name, state_dir, base=runs_base)
            assert result.report.status != "failed", result.report.to_json()
        yield layout_mod.for_params({"profile": "ci", "state_dir": str(state_dir)})
    finally:
        stop_and_remove(state_dir)


def installed_builder(prefix: str, runs_base, *sets: str):
    """A new buildkitd with an empty root, installed and configured by the runbooks (the
    caller removes it with stop_and_remove; a failed start removes it here)."""
    state = short_tmpdir(prefix)
    try:
        for name in ("install", "configure"):
            result = apply(name, state, *sets, base=runs_base)
            assert result.report.status != "failed", result.report.to_json()
    except BaseException:
        stop_and_remove(state)
        raise
    return layout_mod.for_params({"profile": "ci", "state_dir": str(state)})


@pytest.fixture(scope="session")
def registry_builder(runs_base):
    """A fresh ci builder whose supervisord also runs the local registry and the S3
    server on free ports: registry_port and s3_port passed to install and configure, as
    `invoke up` passes them for the lab. Yields (layout, registry port); the S3 server's
    port comes from the `s3_port` fixture."""
    port, s3_port = service.free_port(), service.free_port()
    layout = installed_builder("bkreg-", runs_base, f"registry_port={port}", f"s3_port={s3_port}")
    try:
        registry.wait_ready(port, log=registry.log_path(layout))
        yield layout, port
    finally:
        stop_and_remove(layout.state_dir)


@pytest.fixture(scope="session")
def s3_port(registry_builder) -> int:
    """The S3 server's port beside registry_builder (from its supervisord.conf)."""
    from urllib.parse import urlparse

    from runbook_checks.daemon import programs

    layout, _ = registry_builder
    return urlparse(programs.served_urls(layout.supervisor_conf.read_text())["s3"]).port


def pytest_collection_modifyitems(session, config, items):
    """The cluster layer runs last. What the kit builds once per version (BuildKit, the S3
    server, syft, the hosts' root filesystem; Kubernetes, about 15 minutes cold on two cores,
    when the cluster layer is in the run) is made in the background at the lowest priority
    while the first layers run: a test that needs an item first waits for it."""
    items.sort(key=lambda item: "/tests/cluster/" in str(item.path))
    paths = {str(item.path) for item in items}
    if any("/tests/unit/" not in path and "/tests/docs/" not in path for path in paths):
        import subprocess
        import sys

        from .integration.test_upgrade import OTHER

        cluster = ["--cluster"] if any("/tests/cluster/" in path for path in paths) else []
        log = open(tempfile.gettempdir() + "/buildkit-ops-prefetch.log", "w")  # noqa: SIM115
        config._prefetch = subprocess.Popen([sys.executable, "-m", "runbook_checks.prefetch", "--background",
                                             "--buildkit", OTHER, *cluster], stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
