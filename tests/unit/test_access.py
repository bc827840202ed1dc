"""The access domain without a host: the CA's files and rotation, the front door's
configuration as HAProxy itself reads it, the audit log's lines, and the refusals."""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from runbook_checks.core import layout as layout_mod
from runbook_checks.core.errors import AccessError
from runbook_checks.core.paths import PROJECT_ROOT
from runbook_checks.core.params import validate
from runbook_checks.core.profiles import resolve
from runbook_checks.production import access, auditlog, ca, frontdoor


@pytest.fixture
def tree(tmp_path):
    """A production installation rendered under a scratch directory, with its CA."""
    lay = layout_mod.production(tmp_path / "srv")
    assert ca.ensure_ca(lay, "unit", apply=True).status == "changed"
    return lay


def test_the_ca_is_made_once_with_private_keys_0600(tree):
    again = ca.ensure_ca(tree, "unit", apply=True)
    assert again.status == "ok" and again.facts["ca_cert"].endswith("access/ca.pem")
    assert (ca.paths(tree)["ca_key"].stat().st_mode & 0o777) == 0o600
    assert ca.paths(tree)["crl"].exists()


def test_check_mode_writes_nothing(tmp_path):
    lay = layout_mod.production(tmp_path / "srv")
    assert ca.ensure_ca(lay, "unit", apply=False).status == "changed"
    assert ca.ensure_server_cert(lay, ["bk.example.org"], apply=False).status == "changed"
    assert access.write_crl(lay, apply=False).status == "changed"
    assert access.ensure_probe(lay, apply=False).status == "changed"
    assert not (tmp_path / "srv").exists()


def test_the_server_certificate_rotates_before_it_expires_and_when_names_change(tree):
    names = ["bk.example.org", "10.0.0.5"]
    assert ca.ensure_server_cert(tree, names, apply=True).status == "changed"
    assert ca.ensure_server_cert(tree, names, apply=True).status == "ok"
    later = ca._now() + _dt.timedelta(days=ca.SERVER_DAYS - ca.RENEW_BEFORE_DAYS + 1)
    rotated = ca.ensure_server_cert(tree, names, apply=False, now=later)
    assert rotated.status == "changed" and "expires in" in rotated.message
    renamed = ca.ensure_server_cert(tree, ["other.example.org"], apply=True)
    assert renamed.status == "changed" and "names 10.0.0.5, bk.example.org" in renamed.message
    assert [r.kind for r in ca.issued(tree)] == ["server", "server"]


def test_the_certs_job_renews_only_within_the_renewal_window(tree):
    ca.ensure_server_cert(tree, ["bk.example.org"], apply=True)
    due, why = ca.renewal_due(tree)
    assert due is False and "nothing to renew" in why
    server = ca.expiries(tree)["server"]
    due, why = ca.renewal_due(tree, now=server - (ca.RENEW_BEFORE_DAYS - 1) * 86400)
    assert due is True and "in 29.0 days" in why


def test_a_renewed_probe_certificate_revokes_the_one_it_replaces(tree):
    assert access.ensure_probe(tree, apply=True).status == "changed"
    assert access.ensure_probe(tree, apply=True).status == "ok"
    access.probe_paths(tree)["cert.pem"].unlink()  # as if it were near its end
    assert access.ensure_probe(tree, apply=True).status == "changed"
    probes = [r for r in ca.issued(tree) if r.team == access.PROBE_TEAM]
    assert [bool(r.revoked) for r in probes] == [True, False]


def test_issue_revoke_and_the_crl(tree, tmp_path):
    from cryptography import x509

    bundle = ca.issue(tree, "web")
    out = ca.write_bundle(bundle, tmp_path / "web")
    assert (out / "key.pem").stat().st_mode & 0o777 == 0o600
    with pytest.raises(AccessError, match="already holds a bundle"):
        ca.write_bundle(bundle, out)
    serial = x509.load_pem_x509_certificate(bundle["cert.pem"]).serial_number
    assert b"PRIVATE KEY" not in ca.paths(tree)["issued"].read_bytes()
    assert "client:web" in ca.expiries(tree)
    rows = ca.revoke(tree, "web")
    assert [r.team for r in rows] == ["web"] and rows[0].revoked
    crl = x509.load_pem_x509_crl(ca.paths(tree)["crl"].read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    assert "client:web" not in ca.expiries(tree)
    with pytest.raises(AccessError, match="no certificate of team 'web' is in force"):
        ca.revoke(tree, "web")


@pytest.mark.parametrize("team, days, words", [
    ("Web Team", 90, "is not a name"), ("-x", 90, "is not a name"), ("web", 0, "out of range"),
    ("web", 9999, "out of range")])
def test_bad_teams_and_days_are_refused(tree, team, days, words):
    with pytest.raises(AccessError, match=words):
        ca.issue(tree, team, days)


def test_without_a_ca_the_fix_is_the_access_runbook(tmp_path):
    lay = layout_mod.production(tmp_path / "none")
    with pytest.raises(AccessError, match="apply the access runbook"):
        ca.issue(lay, "web")
    with pytest.raises(AccessError, match="no front door"):
        access.remote(lay)


def test_haproxy_accepts_the_front_door_configuration(tree):
    ca.ensure_server_cert(tree, ["localhost"], apply=True)
    text = frontdoor.render_config(tree, 18443, 18405, 6060, paths_here=True)
    assert frontdoor.check_config(text, tree.group) == "haproxy -c: valid" and "/audit/metrics" not in text
    with_audit = frontdoor.render_config(tree, 18443, 18405, 6060, 18406, paths_here=True)
    assert frontdoor.check_config(with_audit, tree.group) == "haproxy -c: valid" and "server audit 127.0.0.1:18406" in with_audit
    assert "verify required" in text and "use_backend refused unless { ssl_c_verify 0 }" in text
    # the host's configuration names its own paths; this machine's check reads the tree's
    assert "crt /etc/buildkit/access/server.pem" in frontdoor.render_config(tree, 18443, 18405, 6060)
    assert f"crt {tree.state_dir}/etc/buildkit/access/server.pem" in text
    with pytest.raises(AccessError, match="haproxy -c refused"):
        frontdoor.check_config(text.replace("mode tcp", "mode nonsense", 1), tree.group)
    # the build queue: one slot, priority classes by the certificate's team, a queue timeout
    queue = frontdoor.Queue(1, {"release": "high", "dev": "low", "ops": "low", "web": "normal"}, "90s")
    queued = frontdoor.render_config(tree, 18443, 18405, 6060, paths_here=True, queue=queue)
    assert frontdoor.check_config(queued, tree.group) == "haproxy -c: valid"
    assert "tcp-request content set-priority-class int(-10) if { ssl_c_s_dn(cn) -m str release }" in queued
    assert "tcp-request content set-priority-class int(10) if { ssl_c_s_dn(cn) -m str dev ops }" in queued
    assert "unique-id maxconn 1\n" in queued and "timeout queue 90s" in queued and "int(0)" not in queued
    assert " maxconn " not in text and "set-priority-class" not in text  # no queue: every connection goes through


def test_the_front_door_units_verify_and_name_the_shipper(tree):
    outcome = access.write_config(tree, ["bk.example.org"], 1234, 0, 6060, 3, 1_000_000, apply=True)
    assert outcome.status == "changed" and "haproxy -c: valid" not in outcome.message  # no server cert yet
    unit = (tree.unit_dir / "buildkit-audit.service").read_text()
    assert "--max-bytes 1000000 --keep 3" not in unit and "--keep 3 --max-bytes 1000000" in unit
    assert json.loads(access.remote_path(tree).read_text()) == {"remote_address": "tcp://bk.example.org:1234",
                                                               "servername": "bk.example.org"}
    assert access.write_config(tree, ["bk.example.org"], 1234, 0, 6060, 3, 1_000_000, apply=True).status == "ok"


def test_the_front_door_needs_systemd_and_a_port(tree):
    with pytest.raises(AccessError, match="service manager is supervisor"):
        access.require("supervisor", tree, 1234)
    with pytest.raises(AccessError, match="frontdoor_port is 0"):
        access.require("systemd", tree, 0)
    assert access.require("systemd", tree, 1234).status == "ok"


def test_remote_address_and_default_names():
    assert access.remote_address(["10.1.2.3", "bk"], 1234) == "tcp://10.1.2.3:1234"
    assert access.remote_address(["::1"], 1234) == "tcp://[::1]:1234"
    assert access.names_or_default([])[1:] == ["localhost", "127.0.0.1"]


# --------------------------------------------------------------------------------------
# the audit log: lines as HAProxy 2.6 writes them with the kit's log-format
# --------------------------------------------------------------------------------------
CALL = ('{"tier":"call","epoch":1796013802.891,"peer":"10.213.1.1:50306","team":"team-a",'
        '"method":"\\/moby.buildkit.v1.Control\\/Solve","http_status":200,"bytes_in":309,"bytes_out":90,'
        '"duration_ms":611,"termination":"--"}')
REVOKED = ('{"tier":"connection","epoch":1796013820.447,"peer":"127.0.0.1:56994","team":"team-b","ssl_verify":23,'
           '"bytes_in":0,"bytes_out":0,"duration_ms":0,"termination":"SC"}')
NO_CERT = "127.0.0.1:43682 [30/Nov/2026:04:36:55.249] door/1: SSL handshake failure"
EVENT = "Proxy door stopped (cumulated conns: FE: 58, BE: 0)."


def test_lines_become_entries():
    call = auditlog.normalize(CALL)
    assert call["method"] == "/moby.buildkit.v1.Control/Solve" and call["status"] == "ok" and call["verified"]
    assert call["time"] == "2026-11-30T04:43:22.891+00:00"
    revoked = auditlog.normalize(REVOKED)
    assert (revoked["team"], revoked["status"], revoked["verified"]) == ("team-b", "refused: certificate revoked", False)
    none = auditlog.normalize(NO_CERT)
    assert (none["team"], none["status"], none["peer"]) == ("-", auditlog.NO_CERTIFICATE, "127.0.0.1:43682")
    assert none["time"] == "2026-11-30T04:36:55.249+00:00"
    assert auditlog.normalize(EVENT)["tier"] == "event"
    failed = auditlog.normalize(CALL.replace('"http_status":200', '"http_status":503'))
    assert failed["status"].startswith("failed: HTTP 503")
    odd = auditlog.normalize(REVOKED.replace('"ssl_verify":23', '"ssl_verify":7'))
    assert odd["status"] == "refused: certificate not accepted (X509 error 7)"
    # a verified connection that waited in the build queue, then one that expired there
    queued = REVOKED.replace('"ssl_verify":23', '"ssl_verify":0').replace('"termination"', '"queue_ms":9120,"termination"')
    assert (auditlog.normalize(queued)["status"], auditlog.normalize(queued)["queue_ms"]) == ("ok", 9120)
    expired = auditlog.normalize(queued.replace('"SC"', '"sQ"'))
    assert expired["status"] == auditlog.QUEUE_TIMEOUT and auditlog.REASONS[expired["status"]] == "queue-timeout"
    assert auditlog.normalize(queued.replace('"queue_ms":9120', '"queue_ms":-1'))["queue_ms"] == 0


def test_summary_and_refs():
    entries = [auditlog.normalize(x) for x in (CALL, REVOKED, NO_CERT, EVENT)]
    records = [{"type": 1, "record": {"Ref": "abc", "CreatedAt": {"seconds": 1796013802, "nanos": 892000000}}},
               {"type": 1, "record": {"Ref": "far", "CreatedAt": {"seconds": 1796010000, "nanos": 0},
                                      "error": {"message": "exit code 1"}}}]
    assert auditlog.join_refs(entries, records) == 1
    assert (entries[0]["ref"], entries[0]["build"]) == ("abc", "ok")
    teams = auditlog.summary(entries)
    assert teams["team-a"]["builds"] == 1 and teams["team-a"]["calls"] == 1
    assert teams["team-b"]["refused"] == 1 and teams["-"]["refused"] == 1
    assert sum(t["refused"] for t in teams.values()) == 2  # the event is nobody's refusal


def test_the_shipper_writes_rotates_counts_and_reads_back(tree, tmp_path):
    from runbook_checks.daemon.service import free_port

    ca.issue(tree, "team-a")
    sock_path, log, port = tmp_path / "audit.sock", tmp_path / "audit.log", free_port()
    # the command buildkit-audit.service runs
    shipper = subprocess.Popen([sys.executable, "-m", "runbook_checks.production.auditlog", "serve", "--socket",
                                str(sock_path), "--file", str(log), "--keep", "2", "--max-bytes", "600",
                                "--metrics-port", str(port), "--state-dir", str(tree.state_dir)],
                               cwd=PROJECT_ROOT)
    try:
        deadline = time.time() + 20
        while not sock_path.exists() and time.time() < deadline:
            time.sleep(0.05)
        assert oct(sock_path.stat().st_mode & 0o777) == "0o660"
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        for line in (CALL, REVOKED, NO_CERT, CALL, CALL):
            sender.sendto(line.encode() + b"\n", str(sock_path))
        while len(auditlog.read(log)) < 5 and time.time() < deadline:
            time.sleep(0.05)
        import urllib.request

        scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        shipper.terminate()
        assert shipper.wait(timeout=10) == 0
    entries = auditlog.read(log)
    assert [e["team"] for e in entries] == ["team-a", "team-b", "-", "team-a", "team-a"]
    parts = auditlog.log_files(log)
    assert len(parts) >= 2 and parts[-1] == log  # rotated at 600 bytes, oldest first
    assert auditlog.read(log, since=time.time() + 3600) == []
    calls = 'buildkit_frontdoor_calls_total{method="/moby.buildkit.v1.Control/Solve",status="ok",team="team-a"} 3.0'
    assert calls in scraped
    assert 'buildkit_frontdoor_refused_total{reason="revoked",team="team-b"} 1.0' in scraped
    assert 'buildkit_frontdoor_refused_total{reason="no-certificate",team="-"} 1.0' in scraped
    expiry = [ln for ln in scraped.splitlines() if ln.startswith(auditlog.ExpiryCollector.NAME + '{certificate="client:team-a"}')]
    assert expiry and abs(float(expiry[0].split()[-1]) - (time.time() + ca.CLIENT_DAYS * 86400)) < 3600


def test_the_metrics_reference_lists_what_the_shipper_serves():
    from runbook_checks.monitoring import metrics

    documented = {s.name: s for s in metrics.AUDIT}
    for name, _, labels in auditlog.Metrics.COUNTERS:
        assert all(f"`{label}`" in documented[f"{name}_total"].labels for label in labels), name
    for reason in {*auditlog.REASONS.values(), "other"}:
        assert f"`{reason}`" in documented["buildkit_frontdoor_refused_total"].labels
    assert auditlog.ExpiryCollector.NAME in documented
    from runbook_checks.daemon.cgroups import USAGE_SERIES

    assert {name for name, _, _ in USAGE_SERIES.values()} <= set(documented)


def test_the_scrape_jobs_of_production_front_doors():
    from runbook_checks.monitoring import prometheus

    jobs = {j["job_name"]: j for j in prometheus.scrape_jobs({"builder_name": "lab", "frontdoor_targets":
                                                              ["10.213.1.2:8405"]}, 16060)}
    paths = {job: [c["labels"].get("__metrics_path__", "/metrics") for c in j["static_configs"]]
             for job, j in jobs.items()}
    assert paths == {"buildkitd": ["/metrics", "/buildkitd/metrics"], "buildkit-frontdoor": ["/metrics"],
                     "buildkit-audit": ["/audit/metrics"]}
    assert jobs["buildkit-audit"]["static_configs"][0]["labels"]["environment"] == "production"


def test_params_of_the_front_door():
    values = validate({"profile": "production", "state_dir": "/srv/bk", "frontdoor_names": ["bk.example.org",
                                                                                          "10.0.0.5"],
                       "audit_max_bytes": "10MB"})
    assert values.audit_max_bytes == 10_000_000
    with pytest.raises(Exception, match="is not a DNS name or an IP address"):
        validate({"frontdoor_names": ["bad name"]})
    with pytest.raises(Exception, match="a size in bytes"):
        validate({"audit_max_bytes": "10%"})


def test_the_production_profile_opens_the_front_door():
    values = resolve("access", "production", "check", ())
    assert values["frontdoor_port"] == 1234 and values["insecure_entitlements"] == []


def test_the_lab_refuses_access_with_the_way_to_a_host(tmp_path):
    from runbook_checks.core import runner

    os.environ.setdefault("BUILDKIT_OPS_RUNS_DIR", str(tmp_path / "runs"))
    result = runner.run("access", "lab", "check", (f"state_dir={tmp_path / 'lab'}", "frontdoor_port=1234"),
                        base=tmp_path / "runs", progress=False)
    step = result.report.steps[0]
    assert step.status == "failed" and "invoke host.up NAME" in step.message
