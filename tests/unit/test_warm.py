"""Cache warming's parameters without a daemon: targets (DIR, DIR#STAGE), each target's
own cache in the backend, mode=max only; and the Debian rootfs key."""

from __future__ import annotations

from pathlib import Path

import pytest

from runbook_checks.cache import backends, images, s3 as s3_mod, warm
from runbook_checks.core import layout as layout_mod, params, paths
from runbook_checks.core.errors import ParameterError


def semantics(**values):
    return params.validate({"profile": "ci", "registry_port": 15000, **values})


def test_targets_are_directories_with_a_dockerfile_and_an_existing_stage(tmp_path):
    small = warm.parse_target("workloads/small")
    assert small.context == paths.PROJECT_ROOT / "workloads/small" and small.stage == "" and small.name == "small"
    assert small.bases() == ["kit/busybox:latest"]
    build = warm.parse_target("workloads/go-app#build")
    assert build.stage == "build" and build.name == "go-app-build"
    with pytest.raises(ParameterError, match="has no stage 'nope'.*") as err:
        warm.parse_target("workloads/go-app#nope")
    assert "toolchain, modules, build, runtime" in err.value.fix
    with pytest.raises(ParameterError, match="is not a directory"):
        warm.parse_target("workloads/missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ParameterError, match="has no Dockerfile"):
        warm.parse_target(str(tmp_path / "empty"))
    with pytest.raises(ParameterError, match="nothing to warm"):
        warm.targets(semantics(warm_contexts=[]))
    with pytest.raises(ParameterError, match="warm_contexts"):
        semantics(warm_contexts=["a,b"])


def test_each_target_gets_a_cache_of_its_own():
    t = warm.parse_target("workloads/go-app#build")
    reg = backends.make("registry", "127.0.0.1:15000/kit/cache:registry").for_context(t.name)
    assert reg.export_option().startswith("type=registry,ref=127.0.0.1:15000/kit/cache:warm-go-app-build,mode=max")
    assert backends.make("registry", "127.0.0.1:15000/team/cache").for_context(t.name).target == \
        "127.0.0.1:15000/team/cache:warm-go-app-build"
    store = s3_mod.Store("http://127.0.0.1:1", Path("/nonexistent/credentials"))
    s3 = backends.make("s3", "buildkit-cache", prefix="team/", store=store).for_context(t.name)
    assert "prefix=team/warm/go-app-build/" in s3.export_option()
    local = backends.make("local", "/var/cache/bk").for_context(t.name)
    assert local.import_option() == "type=local,src=/var/cache/bk/go-app-build"


def test_warming_needs_mode_max_and_not_inline():
    lay = layout_mod.for_params({"profile": "ci", "state_dir": "/tmp/bk-none"})
    with pytest.raises(ParameterError, match="mode=max"):
        warm.warm_backend(semantics(cache_mode="min"), lay)
    with pytest.raises(ParameterError, match="inline"):
        warm.warm_backend(semantics(cache_backend="inline", cache_mode="min"), lay)
    assert warm.warm_backend(semantics(), lay).target == "127.0.0.1:15000/kit/cache:registry"


def test_the_rootfs_key_follows_packages_mirror_and_local_certificates(tmp_path):
    base = images.rootfs_key(certificates=[])
    assert base.startswith("debian-bookworm-minbase-") and base == images.rootfs_key(certificates=[])
    assert images.rootfs_key(include=("ca-certificates", "curl"), certificates=[]) != base
    assert images.rootfs_key(mirror="http://mirror.example/debian", certificates=[]) != base
    cert = tmp_path / "corp.crt"
    cert.write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    assert images.rootfs_key(certificates=[cert]) != base
    assert images.debian_ref(15000) == "127.0.0.1:15000/kit/debian:bookworm"


def test_a_cache_the_kit_cannot_read_is_unknown_and_an_absent_local_one_is_empty(tmp_path):
    remote = backends.make("registry", "registry.example.com/team/cache:warm-small")
    assert remote.fingerprint() is None  # no request is made
    local = backends.make("local", str(tmp_path / "c"))
    assert local.fingerprint() == ""
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "index.json").write_text("{}")
    assert len(local.fingerprint()) == 64
