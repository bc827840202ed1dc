"""The upgrade runbook's canary configuration without a daemon: the live buildkitd.toml
rewritten for a throwaway daemon, nothing of the live daemon's places left in it (the ci
builder's test runs the whole upgrade: tests/integration/test_upgrade.py)."""

from __future__ import annotations

import json
import tomllib

from runbook_checks.core import layout as layout_mod, profiles
from runbook_checks.daemon import throwaway
from runbook_checks.daemon.config import BuildkitdConfig


def live(tmp_path, **sets) -> tuple[layout_mod.Layout, dict, dict]:
    """A production builder's buildkitd.toml (and CNI network list) under tmp_path, and
    what the canary makes of it: (layout, the live TOML, the canary's TOML)."""
    lay = layout_mod.production(tmp_path / "srv")
    cfg = BuildkitdConfig.from_params({**profiles.resolve("configure", "production", "check"), **sets}, lay, 6060)
    lay.config_path.parent.mkdir(parents=True)
    lay.config_path.write_text(cfg.to_toml())
    if cfg.cni_config:
        (tmp_path / "srv/etc/buildkit/cni.conflist").write_text(cfg.cni_conflist())
    scratch = tmp_path / "canary"
    scratch.mkdir()
    out = throwaway.scratch_config(lay.config_path, scratch, 7777)
    return lay, tomllib.loads(lay.config_path.read_text()), tomllib.loads(out.read_text())


def test_the_canary_gets_the_live_configuration_in_places_of_its_own(tmp_path):
    lay, before, out = live(tmp_path, tcp_address="tcp://127.0.0.1:1235")
    scratch = tmp_path / "canary"
    assert "tcp://127.0.0.1:1235" in before["grpc"]["address"]
    assert out["root"] == str(scratch / "root") and out["grpc"]["address"] == [f"unix://{scratch}/buildkitd.sock"]
    assert out["grpc"]["debugAddress"] == "127.0.0.1:7777"
    oci = out["worker"]["oci"]
    assert oci["bridgeName"] == "bk-canary" and oci["bridgeSubnet"] == throwaway.SCRATCH_SUBNET
    assert "defaultCgroupParent" not in oci and before["worker"]["oci"]["defaultCgroupParent"] == "buildkit.slice"
    # the rest as the live daemon has it
    assert oci["gcpolicy"] == before["worker"]["oci"]["gcpolicy"] and out["history"] == before["history"]
    assert oci["max-parallelism"] == before["worker"]["oci"]["max-parallelism"]


def test_a_bandwidth_limits_network_list_is_copied_with_the_canarys_bridge(tmp_path):
    _, _, out = live(tmp_path, build_bandwidth="100mbit")
    scratch = tmp_path / "canary"
    assert out["worker"]["oci"]["cniConfigPath"] == str(scratch / "cni.conflist")
    network = json.loads((scratch / "cni.conflist").read_text())
    bridge = network["plugins"][0]
    assert bridge["bridge"] == "bk-canary" and bridge["ipam"]["ranges"] == [[{"subnet": throwaway.SCRATCH_SUBNET}]]
    assert network["plugins"][-1]["ingressRate"] == 100_000_000  # the limit goes with it
    live_list = json.loads((tmp_path / "srv/etc/buildkit/cni.conflist").read_text())
    assert live_list["plugins"][0]["bridge"] == "buildkit0"  # the live one untouched
