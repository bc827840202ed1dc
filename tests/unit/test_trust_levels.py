"""One builder per trust level on a host: a site profile's `trust_levels`, what each run
gets from it, what it refuses, and the layout and units each level's builder owns."""

from __future__ import annotations

from pathlib import Path

import pytest

from runbook_checks.core import layout as layout_mod, profiles
from runbook_checks.core.errors import ParameterError
from runbook_checks.core.paths import PROJECT_ROOT
from runbook_checks.core.errors import ConfigError
from runbook_checks.daemon import systemd
from runbook_checks.daemon.config import BuildkitdConfig
from runbook_checks.production import frontdoor

EXAMPLE = PROJECT_ROOT / "docs/examples/trust-levels.yaml"


def test_each_run_gets_its_levels_values_with_their_line():
    got = profiles.resolve_sources("configure", EXAMPLE, "check", ["trust_level=untrusted"])
    assert got.values["trust_level"] == "untrusted" and got.values["max_parallelism"] == 2
    assert got.values["memory_max"] == "4GiB" and got.values["debug_port"] == 6070
    assert got.sources["max_parallelism"] == f"{EXAMPLE}:23 (trust level untrusted)"
    release = profiles.resolve("configure", EXAMPLE, "check", ["trust_level=release"])
    assert release["max_parallelism"] == 8 and release["debug_port"] == 6060  # production's, and the level's port
    assert profiles.check_profile(EXAMPLE) == []


def test_a_run_must_name_one_of_the_declared_levels():
    with pytest.raises(ParameterError) as err:
        profiles.resolve("install", EXAMPLE, "check")
    assert "declares one builder per trust level (release, untrusted)" in err.value.problem
    assert "--set trust_level=LEVEL" in err.value.fix
    with pytest.raises(ParameterError) as err:
        profiles.resolve("install", EXAMPLE, "check", ["trust_level=staging"])
    assert "'staging' is not one of the levels" in err.value.problem


@pytest.mark.parametrize("body, said", [
    ("trust_levels:\n  a:\n    frontdoor_port: 1234\n  b:\n    frontdoor_port: 1234\n",
     "a and b both use frontdoor_port 1234"),
    ("trust_levels:\n  a:\n    max_paralelism: 2\n", "'max_paralelism' is not a setting a trust level may change"),
    ("trust_levels:\n  a:\n    max_parallelism: many\n", "parameter 'max_parallelism': 'many' is not a whole number"),
    ("trust_levels:\n  Bad_Name:\n    debug_port: 1\n", "'Bad_Name' is not a trust level name"),
    ("trust_levels: [a, b]\n", "trust_levels is not a mapping"),
    ("trust_levels:\n  a:\n    bridge_subnet: 10.11.0.0/16\n  b:\n    bridge_subnet: 10.11.0.0/16\n",
     "a and b both use bridge_subnet 10.11.0.0/16"),
    ("trust_levels:\n  waytoolongname:\n    debug_port: 1\n", "'waytoolongname' is not a trust level name"),
])
def test_bad_levels_are_refused_naming_the_file(tmp_path, body, said):
    path = tmp_path / "site.yaml"
    path.write_text("extends: production\n" + body)
    found = [str(e) for e in profiles.check_profile(path)]
    assert any(said in e and str(path) in e for e in found), found


def test_each_level_owns_its_paths_units_group_and_front_door(tmp_path):
    default, level = layout_mod.production(tmp_path), layout_mod.production(tmp_path, "untrusted")
    assert (default.name, default.trust_level, level.name, level.trust_level) == ("buildkit", "", "buildkit-untrusted",
                                                                                  "untrusted")
    assert level.config_path == tmp_path / "etc/buildkit-untrusted/buildkitd.toml"
    assert level.root_dir == tmp_path / "var/lib/buildkit-untrusted" and level.run_dir == tmp_path / "run/buildkit-untrusted"
    units = systemd.render_units(level, systemd.Limits(memory_max="4G"))
    assert set(units) == {"buildkit-untrusted.service", "buildkit-untrusted.socket", "buildkit_untrusted.slice"}
    assert "Slice=buildkit_untrusted.slice" in units["buildkit-untrusted.service"]  # not nested in buildkit.slice
    assert "MemoryMax=4G" in units["buildkit_untrusted.slice"]
    sock = units["buildkit-untrusted.socket"]
    assert "ListenStream=/run/buildkit-untrusted/buildkitd.sock" in sock and "SocketGroup=buildkit-untrusted" in sock
    assert "Requires=buildkit-untrusted.socket" in units["buildkit-untrusted.service"]
    assert "--config /etc/buildkit-untrusted/buildkitd.toml" in units["buildkit-untrusted.service"]
    door = frontdoor.render_units(level, level.log_dir / "audit.log", 10, 1000, 8416)
    assert set(door) == {"buildkit-untrusted-audit.service", "buildkit-untrusted-frontdoor.service"}
    assert "--trust-level untrusted" in door["buildkit-untrusted-audit.service"]
    assert "RuntimeDirectory=buildkit-untrusted-frontdoor" in door["buildkit-untrusted-frontdoor.service"]
    cfg = frontdoor.render_config(level, 1244, 8415, 6070)
    assert "group buildkit-untrusted" in cfg and "/etc/buildkit-untrusted/access/ca.pem" in cfg
    assert "unix@/run/buildkit-untrusted/buildkitd.sock" in cfg
    # the default builder keeps the names it always had
    assert set(systemd.render_units(default, systemd.Limits())) == {"buildkit.service", "buildkit.socket",
                                                                     "buildkit.slice"}
    assert frontdoor.run_dir(default) == "/run/buildkit-frontdoor"


def test_each_levels_run_steps_get_their_own_bridge(tmp_path):
    level = layout_mod.production(tmp_path, "untrusted")
    params = profiles.resolve("configure", EXAMPLE, "check", ["trust_level=untrusted"])
    oci = BuildkitdConfig.from_params(params, level, 6070).to_toml()
    assert 'bridgeName = "bk-untrusted"' in oci and 'bridgeSubnet = "10.12.0.0/16"' in oci
    assert 'root = "' + str(tmp_path / "var/lib/buildkit-untrusted") in oci
    assert 'defaultCgroupParent = "buildkit_untrusted.slice"' in oci  # its builds under its own limits
    # a level without a subnet of its own would share the default bridge with the others
    with pytest.raises(ConfigError) as err:
        BuildkitdConfig.from_params({**params, "bridge_subnet": ""}, level, 6070)
    assert "set bridge_subnet" in err.value.fix
    # the host's only builder keeps BuildKit's bridge
    plain = profiles.resolve("configure", "production", "check")
    assert "bridgeName" not in BuildkitdConfig.from_params(plain, layout_mod.production(tmp_path), 6060).to_toml()
