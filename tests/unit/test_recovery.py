"""Recovery's pieces without a daemon: bbolt check on real bolt files (made by bbolt
itself), the reserve file, cache manifests' blobs, the drills' choices and recap."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from runbook_checks.cache.backends import make, referenced_blobs
from runbook_checks.core import layout as layout_mod
from runbook_checks.core.errors import ParameterError
from runbook_checks.daemon import recovery
from runbook_checks.drills import run as drills
from runbook_checks.drills.faults import FAULTS, Trial


@pytest.fixture(scope="module")
def bolt_file(tmp_path_factory) -> Path:
    """A real bolt database, written by `bbolt bench` (bbolt's own code)."""
    path = tmp_path_factory.mktemp("bolt") / "bench.db"
    subprocess.run([str(recovery.bbolt()), "bench", "-count", "10", "-path", str(path), "-work"], check=True,
                   capture_output=True, timeout=120)
    return path


def test_a_sound_database_passes_and_a_garbled_or_short_one_is_named(bolt_file, tmp_path):
    assert recovery.check_database(bolt_file) == ""
    garbled = tmp_path / "garbled.db"
    garbled.write_bytes(os.urandom(8192) + bolt_file.read_bytes()[8192:])
    assert recovery.check_database(garbled) == "invalid database"
    short = tmp_path / "short.db"
    short.write_bytes(bolt_file.read_bytes()[:5000])
    assert "too small" in recovery.check_database(short)


def test_databases_are_found_where_buildkit_keeps_them_and_not_in_snapshots(tmp_path):
    layout = layout_mod.for_params({"profile": "ci", "state_dir": str(tmp_path / "s")})
    root = layout.root_dir
    for rel in ("cache.db", "history.db", "runc-overlayfs/metadata_v2.db", "runc-overlayfs/containerdmeta.db",
                "runc-overlayfs/snapshots/metadata.db", "runc-overlayfs/snapshots/snapshots/3/fs/app.db"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    found = [str(p.relative_to(root)) for p in recovery.databases(layout)]
    assert found == ["cache.db", "history.db", "runc-overlayfs/containerdmeta.db", "runc-overlayfs/metadata_v2.db",
                     "runc-overlayfs/snapshots/metadata.db"]
    # a worker's database takes its directory with it; one at the root goes alone
    assert recovery.what_to_move(layout, root / "runc-overlayfs/snapshots/metadata.db") == root / "runc-overlayfs"
    assert recovery.what_to_move(layout, root / "cache.db") == root / "cache.db"


def test_the_reserve_is_made_allocated_kept_and_removed(tmp_path):
    layout = layout_mod.for_params({"profile": "ci", "state_dir": str(tmp_path / "s")})
    layout.root_dir.mkdir(parents=True)
    path = recovery.reserve_path(layout)
    out = recovery.ensure_reserve(layout, 4_000_000, apply=False)
    assert out.status == "changed" and "would make" in out.message and not path.exists()
    assert recovery.ensure_reserve(layout, 4_000_000, apply=True).status == "changed"
    assert path.stat().st_size == 4_000_000 and path.stat().st_blocks * 512 >= 4_000_000  # not sparse
    assert recovery.ensure_reserve(layout, 4_000_000, apply=True).status == "ok"
    assert recovery.ensure_reserve(layout, 0, apply=True).status == "changed" and not path.exists()
    assert recovery.ensure_reserve(layout, 0, apply=True).status == "ok"


def test_a_reserve_larger_than_the_free_space_is_refused_before_writing(tmp_path):
    layout = layout_mod.for_params({"profile": "ci", "state_dir": str(tmp_path / "s")})
    layout.root_dir.mkdir(parents=True)
    with pytest.raises(Exception, match="disk reserve needs"):
        recovery.ensure_reserve(layout, 1 << 62, apply=True)
    assert not recovery.reserve_path(layout).exists()


def test_referenced_blobs_of_an_index_a_manifest_and_buildkits_s3_cache_config():
    index = {"manifests": [{"digest": "sha256:a"}, {"digest": "sha256:b"}]}
    manifest = {"config": {"digest": "sha256:c"}, "layers": [{"digest": "sha256:d"}]}
    s3 = {"layers": [{"blob": "sha256:e"}, {"blob": "sha256:e"}], "records": [{"digest": "sha256:not-a-blob"}]}
    assert referenced_blobs(index) == ["sha256:a", "sha256:b"]
    assert referenced_blobs(manifest) == ["sha256:d", "sha256:c"]
    assert referenced_blobs(s3) == ["sha256:e"]


def test_a_local_cache_missing_a_blob_is_found_and_an_absent_one_is_clean(tmp_path):
    cache = make("local", str(tmp_path / "c"))
    assert cache.missing_blobs() is None
    (tmp_path / "c/blobs/sha256").mkdir(parents=True)
    (tmp_path / "c/blobs/sha256/aa").write_text("x")
    (tmp_path / "c/index.json").write_text('{"manifests": [{"digest": "sha256:aa"}, {"digest": "sha256:bb"}]}')
    assert cache.missing_blobs() == ["sha256:bb"]
    cache.drop_manifest()
    assert cache.missing_blobs() is None and (tmp_path / "c/blobs/sha256/aa").exists()


def test_drills_are_chosen_by_name_and_an_unknown_one_is_refused():
    assert [f.name for f in drills.chosen(["all"])] == list(FAULTS)
    assert [f.name for f in drills.chosen(["disk-full"])] == ["disk-full"]
    with pytest.raises(ParameterError, match="no drill named nope"):
        drills.chosen(["disk-full", "nope"])
    with pytest.raises(ParameterError, match="at least once"):
        drills.run(drills.chosen(["kill-run"]), 0, Path("/nonexistent"))


def test_the_recap_counts_passes_and_takes_medians():
    trials = [Trial("kill-run", 1, True, "client", 0.1, "supervisord", 1.0),
              Trial("kill-run", 2, False, "client", 0.3, "supervisord", 3.0, checks={"daemon answers": "no"}),
              Trial("kill-run", 3, True, "client", 0.2, "supervisord", 2.0, lost=["the local build cache of w (1 MiB)"])]
    [row] = drills.summary(trials)
    assert (row["passed"], row["trials"], row["detect_s"], row["recover_s"]) == (2, 3, 0.2, 2.0)
    assert row["lost"] == ["the local build cache of w"]
    assert "FAILED: daemon answers: no" in drills.line(trials[1])


def test_every_drill_has_an_incident_section_on_the_site():
    page = (Path(__file__).parents[2] / "docs/operations/drills.md").read_text()
    for host in ("", "H"):
        for name in drills.catalogue(host):
            assert f"### `{name}`\n" in page, f"docs/operations/drills.md has no incident section for {name}"
            assert f"[`{name}`](#{name})" in page, f"the drills table does not link {name} to its section"


def test_a_runc_init_whose_maker_is_gone_in_a_buildkit_cgroup_is_a_stray(tmp_path):
    def proc(pid, name, ppid, cgroup=""):
        d = tmp_path / str(pid)
        d.mkdir()
        (d / "status").write_text(f"Name:\t{name}\nUmask:\t0022\nPPid:\t{ppid}\n")
        (d / "cgroup").write_text(cgroup)

    proc(1, "systemd", 0, "1:name=systemd:/init.scope\n")
    proc(100, "runc:[2:INIT]", 1, "9:name=systemd:/buildkit.slice/buildkit/abc\n8:pids:/buildkit.slice/buildkit/abc\n")
    proc(201, "runc", 1, "1:name=systemd:/buildkit.slice/buildkit.service\n")
    proc(200, "runc:[2:INIT]", 201, "9:name=systemd:/buildkit/def\n")  # being made right now
    proc(300, "runc:[2:INIT]", 1, "9:name=systemd:/kubepods/pod1/ctr\n")  # not BuildKit's
    proc(400, "sleep", 1, "9:name=systemd:/buildkit/ghi\n")  # a started step: runc takes it down
    (tmp_path / "self").mkdir()
    assert recovery.stray_containers(tmp_path) == {100: "abc"}
    out = recovery.stray_containers_gone(False, tmp_path)
    assert out.status == "changed" and "abc (pid 100)" in out.message and "would kill" in out.message
    (tmp_path / "100/status").write_text("Name:\tsleep\nPPid:\t1\n")
    assert recovery.stray_containers_gone(True, tmp_path).status == "ok"
