import os
import stat
from pathlib import Path

import pytest

from runbook_checks.core import layout as layout_mod
from runbook_checks.core.errors import InstallError
from runbook_checks.daemon import install


def fake_buildkitd(directory: Path, version: str) -> Path:
    """A real executable that answers --version like buildkitd does."""
    directory.mkdir(parents=True, exist_ok=True)
    exe = directory / "buildkitd"
    exe.write_text(f"#!/bin/sh\necho 'buildkitd github.com/moby/buildkit {version} abc'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


def test_release_url():
    assert install.release_url("v0.34.2").endswith("/v0.34.2/buildkit-v0.34.2.linux-amd64.tar.gz")
    assert install.release_url("v0.34.2", "http://127.0.0.1:8/m/").startswith("http://127.0.0.1:8/m/v0.34.2/")


@pytest.mark.parametrize("upstream,debian,fixed", [
    ("1.1.5+ds1", "1.1.5+ds1-1+deb12u1", True),
    ("1.1.5+ds1", "1.1.5+ds1-1", False),
    ("1.0.0~rc93+ds1", "1.0.0~rc93+ds1-5+deb11u3", True),
    ("1.1.12", None, True), ("1.2.0", None, True), ("1.1.11", None, False), ("1.0.0-rc93", None, False),
])
def test_runc_cve_2024_21626(upstream, debian, fixed):
    assert install.runc_fixed(upstream, debian) is fixed


def test_binary_version(tmp_path):
    assert install.binary_version(fake_buildkitd(tmp_path, "v0.1.2")) == "v0.1.2"
    assert install.binary_version(tmp_path / "absent") is None


def test_source_archive_must_exist(tmp_path):
    with pytest.raises(InstallError, match="archive_path"):
        install.resolve_source("archive", "v0.34.2", archive_path=str(tmp_path / "nope.tgz"))


def test_auto_without_release_or_go_lists_every_option(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no go on PATH
    with pytest.raises(InstallError) as err:
        install.resolve_source("auto", "v0.34.2", mirror="http://127.0.0.1:9", timeout=1)
    for word in ("source=release", "release_mirror", "source=go", "source=archive", "archive_path"):
        assert word in str(err.value)


def test_go_source_without_go(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InstallError, match="no Go toolchain"):
        install.build_with_go("v0.34.2", tmp_path)


def test_a_different_buildkitd_earlier_on_path_is_refused(tmp_path):
    layout = layout_mod.for_params({"profile": "ci", "state_dir": str(tmp_path / "s")})
    fake_buildkitd(layout.bin_dir, "v0.34.2")
    other = fake_buildkitd(tmp_path / "old", "v0.12.5")
    path = f"{other.parent}{os.pathsep}{layout.bin_dir}"
    with pytest.raises(InstallError) as err:
        install.check_path(layout, "v0.34.2", path)
    assert "v0.12.5" in str(err.value) and "first on PATH" in str(err.value)
    assert install.check_path(layout, "v0.34.2", f"{layout.bin_dir}{os.pathsep}{other.parent}").status == "ok"
    out = install.check_path(layout, "v0.34.2", str(other.parent))
    assert out.status == "ok" and "not used" in out.message
    same = fake_buildkitd(tmp_path / "same", "v0.34.2")
    out = install.check_path(layout, "v0.34.2", f"{same.parent}{os.pathsep}{layout.bin_dir}")
    assert out.status == "ok" and "same v0.34.2" in out.message and str(same) in out.message


def test_check_mode_installs_nothing(tmp_path):
    layout = layout_mod.for_params({"profile": "ci", "state_dir": str(tmp_path / "s")})
    out = install.ensure_binaries(layout, "v0.34.2", "go", apply=False)
    assert out.status == "changed" and "+buildkitd v0.34.2" in out.diff
    assert not (tmp_path / "s").exists()


def test_unwritable_prefix(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    layout = layout_mod.for_params({"profile": "ci", "state_dir": str(blocker / "s")})
    with pytest.raises((InstallError, Exception)) as err:
        install.check_prefix(layout)
    assert "not writable" in str(err.value) or "not a directory" in str(err.value)


def test_no_source_is_probed_when_the_binaries_are_in_place(tmp_path, monkeypatch):
    """An installed host (or an air-gapped one) is not sent looking for a release host."""
    import time

    layout = layout_mod.for_params({"profile": "ci", "state_dir": str(tmp_path / "s")})
    import shutil

    shutil.copy2(fake_buildkitd(layout.bin_dir, "v0.34.2"), layout.bin_dir / "buildctl")
    monkeypatch.setenv("PATH", str(tmp_path))  # no go either
    start = time.monotonic()
    out = install.resolve_source("auto", "v0.34.2", mirror="http://127.0.0.1:9", timeout=5, layout=layout)
    assert out.status == "ok" and out.facts["source_used"] == "installed" and "none needed" in out.message
    assert time.monotonic() - start < 2
    with pytest.raises(InstallError, match="no source"):
        install.resolve_source("auto", "v0.35.0", mirror="http://127.0.0.1:9", timeout=1, layout=layout)


def test_check_mode_looks_at_the_source_of_a_version_not_installed(tmp_path):
    """A version the Go module proxy does not serve is refused before apply would try it;
    an archive_path that is not a file is refused even when the binaries are in place."""
    assert install.go_has_version(install.MODULE, install.BUILDKIT_VERSION)
    with pytest.raises(InstallError, match="the Go module proxy has no github.com/moby/buildkit@v99.99.99"):
        install.resolve_source("go", "v99.99.99")
    with pytest.raises(InstallError, match="is not at .*v99.99.99"):
        install.resolve_source("release", "v99.99.99", mirror="http://127.0.0.1:9", timeout=1)
    layout = layout_mod.for_params({"profile": "ci", "state_dir": str(tmp_path / "s")})
    fake = fake_buildkitd(layout.bin_dir, "v0.34.2")
    (layout.bin_dir / "buildctl").write_bytes(fake.read_bytes())
    (layout.bin_dir / "buildctl").chmod(0o755)
    with pytest.raises(InstallError, match="is not a file"):
        install.resolve_source("auto", "v0.34.2", archive_path=str(tmp_path / "gone.tgz"), layout=layout)
