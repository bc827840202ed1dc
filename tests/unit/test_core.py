"""core's small helpers: waiting and sizes of trees."""

import pytest


def test_wait_until_counts_seconds_and_names_what_did_not_happen():
    from runbook_checks.core.clock import wait_until
    from runbook_checks.core.errors import KitError, ServiceError

    calls = []
    assert wait_until(lambda: calls.append(1) or len(calls) >= 3, 5, "three calls", "none", interval=0.01) < 1
    assert len(calls) == 3
    with pytest.raises(ServiceError) as refused:
        wait_until(lambda: False, 0.05, "the moon rising", "wait for night", ServiceError, 0.01)
    assert "the moon rising did not happen within 0s" in refused.value.problem
    assert refused.value.fix == "wait for night" and isinstance(refused.value, KitError)


def test_tree_bytes_counts_regular_files_only(tmp_path):
    from runbook_checks.core.files import tree_bytes

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one").write_bytes(b"x" * 100)
    (tmp_path / "two").write_bytes(b"y" * 20)
    (tmp_path / "link").symlink_to(tmp_path / "a" / "one")
    (tmp_path / "dirlink").symlink_to(tmp_path / "a")
    assert tree_bytes(tmp_path) == 120
    assert tree_bytes(tmp_path / "two") == 20
    assert tree_bytes(tmp_path / "dirlink") == 0
    assert tree_bytes(tmp_path / "absent") == 0


def test_a_free_port_is_below_the_ephemeral_range_free_and_never_handed_twice():
    """Outgoing connections take their source ports from the ephemeral range: a port
    handed out from there could be taken before its server binds it."""
    import socket
    from pathlib import Path

    from runbook_checks.daemon import service

    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [service.free_port() for _ in range(30)]
    assert len(set(ports)) == 30 and all(20000 <= p < low for p in ports)
    for port in ports[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free when handed out


def test_p95_is_the_nearest_rank_and_nothing_for_no_values():
    from runbook_checks.core.units import p95

    assert p95(range(1, 101)) == 96 and p95([3.0]) == 3.0 and p95([]) == 0.0
