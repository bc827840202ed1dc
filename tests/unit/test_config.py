import json
import os
import tomllib
from pathlib import Path

import pytest

from runbook_checks.core import layout as layout_mod, params, profiles, units
from runbook_checks.core.errors import ConfigError, Refusal
from runbook_checks.daemon import config


def lay(tmp_path, profile="ci"):
    return layout_mod.for_params({"profile": profile, "state_dir": str(tmp_path)})


def render(tmp_path, profile="ci", port=16000, **overrides):
    values = {k: v for k, v in profiles.load_profile(profile).values.items() if k in params.Semantics.model_fields}
    values.update(profile=profile, state_dir=str(tmp_path), **overrides)
    cfg = config.BuildkitdConfig.from_params(params.validate(values).model_dump(), lay(tmp_path, profile), port)
    return cfg, tomllib.loads(cfg.to_toml())


@pytest.mark.parametrize("profile,max_par,level", [("lab", 4, "info"), ("ci", 2, "info"), ("production", 8, "info")])
def test_rendering_per_profile(tmp_path, profile, max_par, level):
    _, doc = render(tmp_path, profile)
    oci = doc["worker"]["oci"]
    assert oci["max-parallelism"] == max_par
    assert doc["log"] == {"format": "json", "level": level}
    assert doc["grpc"]["debugAddress"] == "127.0.0.1:16000"
    assert doc["grpc"]["address"][0].startswith("unix://") and doc["grpc"]["address"][0].endswith("buildkitd.sock")
    assert doc["worker"]["containerd"] == {"enabled": False}
    for rule in oci["gcpolicy"]:
        assert "keepBytes" not in rule
        assert set(rule) <= {"all", "filters", "keepDuration", "reservedSpace", "maxUsedSpace", "minFreeSpace"}


def test_rendering_table(tmp_path):
    cfg, doc = render(tmp_path, "ci", log_level="debug", log_format="text", snapshotter="native",
                      history_max_age="2h", history_max_entries=7, insecure_entitlements=["network.host"],
                      registry_mirrors={"docker.io": ["127.0.0.1:5000"]}, tcp_address="tcp://127.0.0.1:1234",
                      gc_policy=[{"filters": ["type==exec.cachemount"], "keep_duration": "1h", "max_used_space": "1GB"},
                                 {"all": True, "max_used_space": "50%", "min_free_space": "10GiB"}])
    assert doc["log"] == {"format": "text", "level": "debug"}
    assert doc["history"] == {"maxAge": 7200, "maxEntries": 7}
    assert doc["worker"]["oci"]["snapshotter"] == "native"
    assert doc["insecure-entitlements"] == ["network.host"]
    assert doc["registry"]["docker.io"]["mirrors"] == ["127.0.0.1:5000"]
    assert doc["grpc"]["address"][1] == "tcp://127.0.0.1:1234"
    assert doc["worker"]["oci"]["gcpolicy"] == [
        {"filters": ["type==exec.cachemount"], "keepDuration": 3600, "maxUsedSpace": 1000000000},
        {"all": True, "maxUsedSpace": "50%", "minFreeSpace": 10 * 2**30},
    ]
    assert doc["root"] == str(tmp_path / "lib/buildkit")


def test_production_isolates_build_networks_and_allows_one_frontend(tmp_path):
    _, doc = render(tmp_path, "production")
    assert doc["worker"]["oci"]["networkMode"] == "bridge"
    assert doc["worker"]["oci"]["cniBinaryPath"] == config.CNI_BINARY_PATH
    assert doc["frontend"]["gateway.v0"]["allowedRepositories"] == ["docker.io/docker/dockerfile"]
    _, lab = render(tmp_path, "lab")
    assert "networkMode" not in lab["worker"]["oci"] and "frontend" not in lab
    with pytest.raises(Exception, match="is not an image repository without a tag"):
        render(tmp_path, "lab", allowed_frontends=["docker/dockerfile:1"])
    with pytest.raises(Exception, match="network_mode"):
        render(tmp_path, "lab", network_mode="none")


def test_a_bandwidth_limit_runs_the_bridge_as_a_cni_network_list(tmp_path):
    """build_bandwidth: the same bridge and subnet as BuildKit's bridge mode, as a network
    list ending in Debian's bandwidth plugin; refused where RUN steps have no network of
    their own, and a rate that is not one is refused naming the form."""
    cfg, doc = render(tmp_path, "production", network_mode="bridge", build_bandwidth="100mbit")
    oci = doc["worker"]["oci"]
    assert oci["networkMode"] == "cni" and oci["cniConfigPath"] == str(config.cni_config_path(lay(tmp_path, "production")))
    assert "bridgeName" not in oci and "bridgeSubnet" not in oci
    network = json.loads(cfg.cni_conflist())
    plugins = network["plugins"]
    assert network["name"] == "buildkit0"  # its bridge's: a trust level's list is named bk-LEVEL
    assert [p["type"] for p in plugins] == ["bridge", "firewall", "bandwidth"]
    assert plugins[0]["ipam"]["ranges"] == [[{"subnet": "10.10.0.0/16"}]] and plugins[0]["bridge"] == "buildkit0"
    assert plugins[2]["ingressRate"] == plugins[2]["egressRate"] == 100_000_000
    with pytest.raises(ConfigError) as no_network:
        render(tmp_path, "ci", build_bandwidth="100mbit")
    assert "network_mode: bridge" in no_network.value.fix
    assert units.parse_rate("512kbit") == 512_000 and units.parse_rate("") == 0
    with pytest.raises(Refusal):
        units.parse_rate("fast")


def test_default_gc_policy_is_tiered(tmp_path):
    cfg, doc = render(tmp_path, "lab")
    rules = doc["worker"]["oci"]["gcpolicy"]
    assert len(rules) == 3
    assert "type==exec.cachemount" in rules[0]["filters"] and rules[0]["keepDuration"] == 48 * 3600
    assert rules[1] == {"all": True, "keepDuration": 30 * 86400}
    # the size bound has no keepDuration: it would exempt every recently used record
    assert rules[2]["all"] is True and rules[2]["maxUsedSpace"] == 20 * 10**9 and "keepDuration" not in rules[2]


def test_production_paths(tmp_path):
    layout = lay(tmp_path, "production")
    assert layout.config_path == tmp_path / "etc/buildkit/buildkitd.toml"
    assert layout.root_dir == tmp_path / "var/lib/buildkit"
    assert layout.bin_dir == tmp_path / "usr/local/bin"


def test_long_state_dir_is_refused(tmp_path):
    from runbook_checks.core.errors import ParameterError

    with pytest.raises(ParameterError, match="characters shorter"):
        layout_mod.for_params({"profile": "ci", "state_dir": str(tmp_path / ("x" * 100))})


def test_check_writes_nothing_and_apply_backs_up(tmp_path):
    layout = lay(tmp_path)
    cfg, _ = render(tmp_path)
    out = config.write_config(layout, cfg, apply=False)
    assert out.status == "changed" and "+max-parallelism = 2" in out.diff
    assert list(tmp_path.iterdir()) == []

    out = config.write_config(layout, cfg, apply=True)
    assert out.status == "changed" and layout.config_path.read_text() == cfg.to_toml()
    assert config.write_config(layout, cfg, apply=True).status == "ok"
    assert not layout.backup_dir.exists()  # nothing to keep the first time

    cfg2, _ = render(tmp_path, max_parallelism=3)
    out = config.write_config(layout, cfg2, apply=False)
    assert "-max-parallelism = 2" in out.diff and "+max-parallelism = 3" in out.diff
    out = config.write_config(layout, cfg2, apply=True)
    backup = config.latest_backup(layout)
    assert backup.read_text() == cfg.to_toml()
    assert str(backup) in out.message
    leftovers = [p for p in layout.config_path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_read_debug_port(tmp_path):
    layout = lay(tmp_path)
    assert config.read_debug_port(layout.config_path) is None
    cfg, _ = render(tmp_path, port=23456)
    config.write_config(layout, cfg, apply=True)
    assert config.read_debug_port(layout.config_path) == 23456
    layout.config_path.write_text("not = [toml")
    assert config.read_debug_port(layout.config_path) is None


def test_unwritable_config_dir_fails_with_fix(tmp_path):
    from runbook_checks.core.errors import KitError

    if os.getuid() == 0:
        # root ignores directory modes: make the parent a file instead
        blocker = tmp_path / "etc"
        blocker.write_text("a file where a directory should be")
        layout = lay(tmp_path)
        cfg, _ = render(tmp_path)
        with pytest.raises((KitError, NotADirectoryError, FileExistsError)):
            config.write_config(layout, cfg, apply=True)
        assert blocker.read_text() == "a file where a directory should be"
    else:
        tmp_path.chmod(0o500)
        try:
            with pytest.raises(KitError, match="not writable"):
                config.write_config(lay(tmp_path), render(tmp_path)[0], apply=True)
        finally:
            tmp_path.chmod(0o700)


def test_purge_refuses_what_it_must_never_remove(tmp_path):
    from runbook_checks.core import paths
    from runbook_checks.daemon import stack

    for path in (Path("/"), Path("/var"), Path("/tmp"), paths.PROJECT_ROOT, paths.PROJECT_ROOT.parent, Path.home()):
        assert not stack.purgeable(path), path
    assert stack.purgeable(tmp_path / "lab")
    from runbook_checks.core.errors import KitError

    with pytest.raises(KitError, match="refusing to purge|would remove it"):
        stack.down(purge=True, state_dir=str(paths.PROJECT_ROOT))


def test_up_refuses_an_unknown_set_before_anything_runs():
    from runbook_checks.core.errors import ParameterError
    from runbook_checks.daemon import stack

    with pytest.raises(ParameterError, match="debug_prot"):
        stack.up(("debug_prot=1",))
