import json
import urllib.request

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from runbook_checks.daemon import service
from runbook_checks.monitoring import exporter


def write_report(runs, inventory, finished="2026-01-01T00:00:10Z"):
    folder = runs / "plugins-audit"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "20260101T000000.000000Z.json").write_text(json.dumps(
        {"runbook": "plugins-audit", "finished": finished, "facts": {"inventory": inventory}}))


def samples(text):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_no_audit_yet(tmp_path):
    got = samples(generate_latest(exporter.registry(tmp_path)).decode())
    assert got == {("buildkit_ops_cli_plugins_audit_present", ()): 0.0}


def test_counts_from_the_latest_audit(tmp_path):
    write_report(tmp_path, [
        {"name": "buildx", "path": "/p/docker-buildx", "valid": True, "error": "", "insecure": []},
        {"name": "bad", "path": "/p/docker-bad", "valid": False, "error": "exit status 3", "insecure": []},
        {"name": "open", "path": "/p/docker-open", "valid": True, "error": "", "insecure": ["world-writable"]},
    ])
    got = samples(generate_latest(exporter.registry(tmp_path)).decode())
    assert got[("buildkit_ops_cli_plugins", (("validity", "valid"),))] == 2
    assert got[("buildkit_ops_cli_plugins", (("validity", "invalid"),))] == 1
    assert got[("buildkit_ops_cli_plugins_insecure", ())] == 1
    assert got[("buildkit_ops_cli_plugins_audit_timestamp_seconds", ())] == 1767225610


def test_serves_on_loopback_only(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="loopback"):
        exporter.serve("0.0.0.0", 0, tmp_path)
    port = service.free_port()
    server, _ = exporter.serve("127.0.0.1", port, tmp_path)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "buildkit_ops_cli_plugins_audit_present 0.0" in text
        write_report(tmp_path, [{"name": "x", "path": "/x", "valid": False, "error": "e"}])
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'buildkit_ops_cli_plugins{validity="invalid"} 1.0' in text
    finally:
        server.shutdown()


def test_builders_are_named_or_named_after_their_address():
    assert exporter.parse_builders(["ci=unix:///a.sock", "unix:///b.sock"]) == {
        "ci": "unix:///a.sock", "unix:///b.sock": "unix:///b.sock"}


def test_history_steps_count_absent_counters_as_zero():
    history = [{"numTotalSteps": 4, "numCompletedSteps": 4}, {"numTotalSteps": 4, "numCachedSteps": 3}]
    assert exporter.history_steps(history) == {"total": 8, "cached": 3, "completed": 4}
    assert exporter.max_used_space([{"gcPolicy": None}]) == 0
