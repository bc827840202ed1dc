"""A pool of builders behind one front door, without a host: the site profile that
declares it and what it refuses, each member's layout and socket group, the front door's
configuration as HAProxy reads it, and the audit log's builder (the rehearsal host's test
builds, drains and readies for real: tests/production/test_host.py)."""

from __future__ import annotations

import pytest

from runbook_checks.core import layout as layout_mod, profiles
from runbook_checks.core.errors import AccessError, ParameterError
from runbook_checks.core.paths import PROJECT_ROOT
from runbook_checks.daemon import systemd
from runbook_checks.production import access, auditlog, ca, frontdoor, pool

EXAMPLE = PROJECT_ROOT / "docs/examples/pool.yaml"


def test_the_example_declares_a_pool_and_each_run_names_its_builder_or_none():
    assert profiles.check_profile(EXAMPLE) == []
    host = profiles.resolve("configure", EXAMPLE, "check")  # no trust_level: the host's builder
    assert not host.get("trust_level") and host["debug_port"] == 6060
    member = profiles.resolve("configure", EXAMPLE, "check", ["trust_level=b2"])
    assert member["debug_port"] == 6061 and member["bridge_subnet"] == "10.21.0.0/16"
    assert layout_mod.for_params(member).group == "buildkit"  # the front door's group reaches its socket
    assert layout_mod.for_params(host).group == "buildkit"
    # a trust level that is not in the pool keeps a group of its own
    assert layout_mod.production("/", "b2").group == "buildkit-b2"
    with pytest.raises(ParameterError) as err:
        profiles.resolve("configure", EXAMPLE, "check", ["trust_level=b3"])
    assert "'b3' is not one of the levels" in err.value.problem


@pytest.mark.parametrize("body, said", [
    ("pool: [b3]\ntrust_levels:\n  b2:\n    debug_port: 6061\n    bridge_subnet: 10.21.0.0/16\n",
     "the pool names 'b3', which trust_levels does not declare"),
    ("pool: [b2]\ntrust_levels:\n  b2:\n    debug_port: 6060\n    bridge_subnet: 10.21.0.0/16\n",
     "the host's builder and b2 both use debug_port 6060"),
    ("pool: [b2]\ntrust_levels:\n  b2:\n    debug_port: 6061\n    bridge_subnet: 10.10.0.0/16\n",
     "the host's builder and b2 both use bridge_subnet 10.10.0.0/16"),  # BuildKit's default, the host builder's
    ("trust_levels:\n  b2:\n    pool: [b3]\n", "'pool' is not a setting a trust level may change"),
    ("pool: [B2]\n", "'B2' is not a builder of this host named like a trust level"),
])
def test_a_pool_that_cannot_work_is_refused_naming_the_file(tmp_path, body, said):
    path = tmp_path / "site.yaml"
    path.write_text("extends: production\n" + body)
    found = [str(e) for e in profiles.check_profile(path)]
    assert any(said in e and str(path) in e for e in found), found


def test_two_members_may_share_the_front_door_ports_they_do_not_use(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text("extends: production\npool: [b2, b3]\ntrust_levels:\n"
                    "  b2: {debug_port: 6061, bridge_subnet: 10.21.0.0/16}\n"
                    "  b3: {debug_port: 6062, bridge_subnet: 10.22.0.0/16}\n")
    assert profiles.check_profile(path) == []


@pytest.fixture
def tree(tmp_path):
    """The host's builder with its CA and server certificate, and b2, configured, under a
    scratch directory."""
    lay = layout_mod.production(tmp_path / "srv")
    ca.ensure_ca(lay, "unit", apply=True)
    ca.ensure_server_cert(lay, ["bk.example.org"], apply=True)
    member = layout_mod.production(tmp_path / "srv", "b2", ["b2"])
    member.config_path.parent.mkdir(parents=True)
    member.config_path.write_text("# configured\n")
    return lay


def test_the_front_door_hashes_teams_over_its_builders_as_haproxy_reads_it(tree):
    members = access.pool_members(tree, ["b2"])
    assert [m.name for m in members] == ["buildkit-b2"]
    cfg = frontdoor.render_config(tree, 1234, 8405, 6060, paths_here=True, queue=frontdoor.Queue(2), pool=members)
    assert "balance hash ssl_c_s_dn(cn)" in cfg and "hash-type consistent" in cfg
    assert "server-state-file /run/buildkit-frontdoor/servers.state" in cfg
    for name in ("buildkit", "buildkit-b2"):
        assert f"server {name} unix@/run/buildkit-frontdoor/calls-{name}.sock" in cfg and "maxconn 2" in cfg
        assert f"frontend calls-{name}\n" in cfg and f"backend {name}\n" in cfg
    assert f"unix@{members[0].socket_path} proto h2" in cfg
    assert frontdoor.check_config(cfg, "buildkit") == "haproxy -c: valid"
    alone = frontdoor.render_config(tree, 1234, 8405, 6060, paths_here=True)
    assert "balance" not in alone and "server-state-file" not in alone and alone.count("frontend calls-") == 1
    assert frontdoor.check_config(alone, "buildkit") == "haproxy -c: valid"
    outcome = access.write_config(tree, ["bk.example.org"], 1234, 8405, 6060, 10, 1000, apply=False, pool=["b2"])
    assert "a pool of 2 builders" in outcome.message and "buildkit, buildkit-b2" in outcome.message


def test_the_pool_refuses_what_cannot_be_served(tree):
    with pytest.raises(AccessError) as err:
        access.pool_members(tree, ["b3"])
    assert "buildkit-b3 is not configured" in err.value.problem and "--set trust_level=b3" in err.value.fix
    level = layout_mod.production(tree.state_dir, "untrusted")
    with pytest.raises(AccessError) as err:
        access.pool_members(level, ["b2"])
    assert "a pool belongs to the host's builder" in err.value.problem
    member = layout_mod.production(tree.state_dir, "b2", ["b2"])
    with pytest.raises(AccessError) as err:
        access.require("systemd", member, 1234)
    assert "buildkit-b2 is in the pool behind the front door of buildkit" in err.value.problem
    units = systemd.render_units(member, systemd.Limits())
    assert "SocketGroup=buildkit\n" in units["buildkit-b2.socket"] and "Slice=buildkit_b2.slice" in units["buildkit-b2.service"]


def test_the_audit_log_names_the_builder_that_served_a_line():
    call = auditlog.normalize('{"tier":"call","epoch":1764480000.5,"peer":"1.2.3.4:5","team":"web",'
                              '"builder":"buildkit-b2","method":"/moby.buildkit.v1.Control/Solve","http_status":200,'
                              '"bytes_in":1,"bytes_out":2,"duration_ms":3,"termination":"--"}')
    assert call["builder"] == "buildkit-b2" and call["status"] == "ok"
    refused = auditlog.normalize('{"tier":"connection","epoch":1764480000.5,"peer":"1.2.3.4:5","team":"x",'
                                 '"builder":"<NOSRV>","ssl_verify":10,"bytes_in":0,"bytes_out":0,"duration_ms":1,'
                                 '"queue_ms":-1,"termination":"CD"}')
    assert "builder" not in refused and refused["status"] == "refused: certificate expired"


@pytest.mark.parametrize("status, state", [("no check", "UP"), ("UP", "UP"), ("DRAIN", "DRAIN"),
                                           ("MAINT (via calls/buildkit)", "MAINT"), ("DOWN 1/2", "DOWN")])
def test_haproxys_server_status_in_the_pools_words(status, state):
    assert pool._state(status) == state
