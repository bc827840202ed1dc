"""A real buildkitd under supervisord: start, stop, crash and restart; config rollback;
a port in use; the release and archive install sources."""

from __future__ import annotations

import hashlib
import http.server
import os
import signal
import socket
import tarfile
import threading
import time
from functools import partial

import pytest

from runbook_checks.core import runner
from runbook_checks.daemon import install, service, supervisor
from runbook_checks.daemon.buildctl import Buildctl
from runbook_checks.daemon.install import BUILDKIT_VERSION

from ..conftest import apply, short_tmpdir, stop_and_remove


def wait_for(predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


def test_crash_is_restarted_by_the_supervisor(ci_daemon):
    manager = supervisor.Supervisor(ci_daemon)
    before = manager.info()["pid"]
    os.kill(before, signal.SIGKILL)
    assert wait_for(lambda: manager.info()["pid"] not in (0, before) and service.daemon_answers(ci_daemon))
    assert manager.info()["state"] in ("RUNNING", "STARTING")


def test_stop_then_converge_starts_it_again(ci_daemon):
    manager = supervisor.Supervisor(ci_daemon)
    manager.stop()
    assert not manager.supervisord_up() and not service.daemon_answers(ci_daemon)
    assert manager.info()["state"] == "STOPPED"
    out = service.converge_daemon(ci_daemon, manager, apply=False)
    assert out.status == "changed" and "would start" in out.message
    out = service.converge_daemon(ci_daemon, manager, apply=True)
    assert out.status == "changed" and service.daemon_answers(ci_daemon)
    assert service.converge_daemon(ci_daemon, manager, apply=True).status == "ok"


def test_bad_config_is_rolled_back_and_the_daemon_keeps_serving(ci_daemon, runs_base):
    good = ci_daemon.config_path.read_bytes()
    result = apply("configure", ci_daemon.state_dir, "snapshotter=bogus", base=runs_base)
    assert result.report.status == "failed"
    failed = result.report.steps[-1]
    assert failed.name == "daemon on this config"
    assert 'unknown snapshotter name: "bogus"' in failed.message  # the daemon's own words
    assert "Restored the previous file" in failed.message
    assert ci_daemon.config_path.read_bytes() == good
    assert b'"bogus"' in ci_daemon.config_path.with_name("buildkitd.toml.rejected").read_bytes()
    assert service.daemon_answers(ci_daemon)
    info = Buildctl.for_layout(ci_daemon).workers()[0]
    assert info["labels"]["org.mobyproject.buildkit.worker.snapshotter"] == "overlayfs"
    # and the record says so too
    assert runner.report_from_notebook(result.notebook).status == "failed"
    again = apply("configure", ci_daemon.state_dir, base=runs_base)
    assert again.report.summary["changed"] == 0, again.report.to_json()


def test_port_in_use_fails_before_anything_is_written(ci_daemon, runs_base):
    before = ci_daemon.config_path.read_bytes()
    pid = supervisor.Supervisor(ci_daemon).info()["pid"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = apply("configure", ci_daemon.state_dir, f"debug_port={port}", base=runs_base)
    assert result.report.status == "failed"
    assert result.report.steps[-1].name == "debug port free"
    assert f"port {port} on 127.0.0.1 is already in use" in result.report.steps[-1].message
    assert ci_daemon.config_path.read_bytes() == before
    assert supervisor.Supervisor(ci_daemon).info()["pid"] == pid


@pytest.fixture(scope="module")
def release_mirror(ci_daemon, tmp_path_factory):
    """The upstream release layout (VERSION/buildkit-VERSION.linux-ARCH.tar.gz + .sha256)
    served over HTTP from 127.0.0.1, made from the binaries the go source built."""
    root = tmp_path_factory.mktemp("mirror")
    folder = root / BUILDKIT_VERSION
    folder.mkdir()
    archive = folder / install.release_url(BUILDKIT_VERSION).rsplit("/", 1)[1]
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("buildkitd", "buildctl"):
            tar.add(ci_daemon.bin_dir / name, arcname=f"bin/{name}")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    (folder / (archive.name + ".sha256")).write_text(f"{digest}  {archive.name}\n")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", archive, digest
    server.shutdown()


def test_release_source_from_a_local_mirror(release_mirror, runs_base):
    url, _, _ = release_mirror
    state = short_tmpdir("bkrel-")
    try:
        result = apply("install", state, "source=auto", f"release_mirror={url}", base=runs_base)
        assert result.report.status == "changed", result.report.to_json()
        assert result.report.facts["source"] == "release"
        assert install.binary_version(state / "bin/buildkitd") == BUILDKIT_VERSION
    finally:
        stop_and_remove(state)


def test_release_with_a_wrong_checksum_installs_nothing(release_mirror, runs_base):
    url, _, digest = release_mirror
    state = short_tmpdir("bkbad-")
    try:
        result = apply("install", state, "source=release", f"release_mirror={url}", "release_sha256=" + "0" * 64,
                       base=runs_base)
        assert result.report.status == "failed"
        assert "sha256 mismatch" in result.report.steps[-1].message and digest in result.report.steps[-1].message
        assert not (state / "bin/buildkitd").exists()
        assert [p.name for p in (state / "bin").iterdir()] == []  # staging cleaned up
    finally:
        stop_and_remove(state)


def test_archive_source_for_air_gapped_hosts(release_mirror, runs_base):
    _, archive, _ = release_mirror
    state = short_tmpdir("bkarc-")
    try:
        result = apply("install", state, "source=archive", f"archive_path={archive}", base=runs_base)
        assert result.report.facts["source"] == "archive"
        assert install.binary_version(state / "bin/buildctl") == BUILDKIT_VERSION
        bad = state / "not-a-release.tar.gz"
        with tarfile.open(bad, "w:gz") as tar:
            tar.add(__file__, arcname="README")
        (state / "bin/buildkitd").unlink()
        result = apply("install", state, "source=archive", f"archive_path={bad}", base=runs_base)
        assert result.report.status == "failed" and "has no bin/buildkitd" in result.report.steps[-1].message
        assert install.binary_version(state / "bin/buildctl") == BUILDKIT_VERSION  # the old install stays
    finally:
        stop_and_remove(state)
