"""The production profile for real: a rehearsal host (systemd as PID 1 in systemd-nspawn)
where install, configure, verify and access are applied, then a team builds over the
front door with its bundle, and every refusal the front door makes is tested and audited."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from runbook_checks.core import layout as layout_mod
from runbook_checks.core.errors import BuildctlError
from runbook_checks.core.paths import PROJECT_ROOT
from runbook_checks.daemon import install, schedule
from runbook_checks.daemon.buildctl import Buildctl
from runbook_checks.daemon.contexts import context_with_base
from runbook_checks.production import access, auditlog, ca, hosts, rehearsal

NAME = "kitci"
SEQUENCE = ("install", "configure", "verify", "access")
DOCKERFILE = "RUN echo built remotely > /r && cat /r\nRUN test \"$(cat /r)\" = 'built remotely'\n"


def invoke(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], capture_output=True, text=True, timeout=900)


def run(runbook: str, mode: str = "apply", *sets: str, profile: str = "production") -> dict:
    code, records = rehearsal.run_runbook(NAME, runbook, profile, mode, sets)
    report = json.loads(records[-1].read_text())
    assert report["host"] == NAME
    assert code == 0 and report["status"] != "failed", json.dumps(report["steps"], indent=1)
    return report


def changed(report: dict) -> list[str]:
    return [f"{s['name']}: {s['message']}" for s in report["steps"] if s["status"] == "changed"]


@pytest.fixture(scope="session")
def host(runs_base):
    """The rehearsal host with the production sequence applied once."""
    hosts.down(NAME, purge=True)
    h, _ = hosts.up(NAME, progress=lambda m: None)
    try:
        reports = {name: run(name) for name in SEQUENCE}
        yield h, reports
    finally:
        hosts.down(NAME, purge=True)


@pytest.fixture(scope="session")
def layout(host):
    return layout_mod.production(host[0].rootfs)


@pytest.fixture(scope="session")
def remote(host, layout):
    return access.remote(layout)


def client(bundle: Path, remote: dict) -> Buildctl:
    return access.client(remote, bundle)


def build(bundle: Path, remote: dict):
    with tempfile.TemporaryDirectory(prefix="bk-remote-") as tmp:
        return client(bundle, remote).build(context_with_base(Path(tmp), DOCKERFILE), timeout=300)


def issue(team: str, tmp_path: Path, *extra: str) -> Path:
    out = tmp_path / team
    proc = invoke("certs.issue", team, "--host", NAME, "--out", str(out), *extra)
    assert proc.returncode == 0, proc.stderr
    assert "buildctl --addr tcp://" in proc.stdout and "--driver remote" in proc.stdout
    assert (out / "key.pem").stat().st_mode & 0o777 == 0o600
    return out


def audit(since: float) -> list[dict]:
    proc = invoke("report.audit", "--host", NAME, "--json")
    assert proc.returncode == 0, proc.stderr
    assert "per team" in proc.stderr
    return [e for e in json.loads(proc.stdout) if e.get("time")
            and _dt.datetime.fromisoformat(e["time"]).timestamp() >= since - 1]


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for sub in ("etc/buildkit", "etc/systemd/system", "usr/local/bin"):
        for path in sorted((root / sub).rglob("*")):
            if path.is_file() and path.name != "frontdoor.loaded":
                digest.update(str(path).encode() + path.read_bytes())
    return digest.hexdigest()


def test_a_second_host_is_refused_while_one_runs(host):
    """This machine is cgroup v1: two running hosts would share its cgroup hierarchies, and
    their builders' units would be one cgroup. Refused before anything is made."""
    proc = invoke("host.up", "kitci2")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"the rehearsal host {NAME} is running" in proc.stderr and f"invoke host.down {NAME}" in proc.stderr
    assert not (hosts.hosts_dir() / "kitci2").exists()


def test_first_apply_reports_the_facts_other_tools_use(host, layout):
    h, reports = host
    assert reports["verify"]["facts"]["manager"] == reports["access"]["facts"]["manager"] == "systemd"
    facts = reports["access"]["facts"]
    assert facts["remote_address"] == f"tcp://{h.address}:1234"
    assert facts["ca_cert"] == "/etc/buildkit/access/ca.pem"
    assert facts["audit_log"] == "/var/log/buildkit/audit.log"
    assert (layout.state_dir / facts["ca_cert"].lstrip("/")).exists()
    for name in ("ca.key", "server.pem", "issued.json"):
        assert (ca.access_dir(layout) / name).stat().st_mode & 0o777 == 0o600, name


def test_limits_in_force_equal_the_configured_ones_or_say_why(host):
    limits = host[1]["verify"]["facts"]["limits_in_force"]
    assert set(limits) == {"memory_max", "cpu_quota", "tasks_max", "io_weight"}
    for name, row in limits.items():
        assert row["configured"] not in (None, ""), name
        assert row["in_force"] == row["configured"] or row["reason"], (name, row)
    # memory, CPU quota and tasks are enforced on this machine kind (the host recipe)
    for name in ("memory_max", "cpu_quota", "tasks_max"):
        assert limits[name]["in_force"] == limits[name]["configured"], (name, limits[name])


def test_second_apply_changes_nothing_and_check_mode_writes_nothing(host):
    h, _ = host
    for name in SEQUENCE:
        assert changed(run(name)) == [], name
    before = tree_digest(h.rootfs)
    for name in SEQUENCE:
        assert changed(run(name, "check")) == [], name
    assert tree_digest(h.rootfs) == before


def test_the_maintenance_timers_run_their_jobs_under_systemd_and_record_each_result(host, layout):
    h, reports = host
    step = next(s for s in reports["configure"]["steps"] if s["name"] == "maintenance timers")
    assert step["status"] == "changed" and "enabled 6 timer(s)" in step["message"], step
    timers = hosts.run_in(h, ["systemctl", "list-timers", "--all", "--no-legend", "buildkit-*"]).stdout
    for job in schedule.JOBS:
        assert f"buildkit-{job}.timer" in timers, timers
    # each job as its timer starts it; the version job fails here: a rehearsal host has no internet
    for job in ("drift", "backup", "certs", "version"):
        proc = hosts.run_in(h, ["systemctl", "start", f"buildkit-{job}.service"], check=False, timeout=900)
        assert (proc.returncode == 0) == (job != "version"), (job, proc.stderr, hosts.run_in(
            h, ["journalctl", "-u", f"buildkit-{job}.service", "-n", "30", "--no-pager"], check=False).stdout)
    shown = invoke("maint.schedule", "--host", NAME, "--json")
    assert shown.returncode == 0, shown.stderr
    rows = {r["job"]: r for r in json.loads(shown.stdout)}
    assert list(rows) == list(schedule.JOBS)
    assert all(r["timer"] == "enabled active" and r["next"] for r in rows.values()), rows
    assert rows["drift"]["ok"] is True and "no drift" in rows["drift"]["message"], rows["drift"]
    assert rows["certs"]["ok"] is True and "nothing to renew" in rows["certs"]["message"], rows["certs"]
    assert rows["backup"]["ok"] is True and rows["prune"]["ok"] is None
    assert rows["version"]["ok"] is False and "GOPROXY" in rows["version"]["message"], rows["version"]
    backups = sorted((layout.backup_dir / "state").glob("buildkit-*.tar.gz"))
    with tarfile.open(backups[-1]) as tar:
        assert {"etc/buildkit/access/ca.key", "etc/systemd/system/buildkit-drift.timer"} <= set(tar.getnames())
    textfile = (schedule.textfile_dir(layout) / "buildkit_ops_maintenance_buildkit_version.prom").read_text()
    assert 'buildkit_ops_maintenance_last_success{maintenance="version",unit="buildkit-version.service"} 0.0' \
        in textfile


def test_a_team_builds_over_the_front_door_and_is_audited(host, remote, tmp_path):
    started = _dt.datetime.now(_dt.timezone.utc).timestamp()
    bundle = issue("team-a", tmp_path)
    result = build(bundle, remote)
    runs = [v for v in result.steps if " RUN " in v["name"]]
    assert len(runs) == 2 and all(v.get("completed") for v in runs)
    entries = audit(started)
    solves = [e for e in entries if e["team"] == "team-a" and e["method"].endswith(".Control/Solve")]
    assert solves and solves[-1]["status"] == "ok" and solves[-1]["verified"]
    assert solves[-1]["ref"] and solves[-1]["build"] == "ok"
    for field in ("time", "team", "method", "status", "duration_ms", "peer", "bytes_in", "bytes_out"):
        assert field in solves[-1]


def test_a_bandwidth_limit_holds_for_run_steps_and_goes_with_the_profile(host, remote, tmp_path):
    """build_bandwidth=16mbit: BuildKit runs its bridge as a CNI network list with Debian's
    bandwidth plugin, and a RUN step fetching 8 MB from a server behind the bridge's
    gateway takes about 4 s (64 Mbit at 16 Mbit/s); with the profile's configuration
    again (BuildKit's own bridge), well under one."""
    h, _ = host
    bundle = issue("team-bw", tmp_path)
    hosts.run_in(h, ["sh", "-c", "mkdir -p /srv/bw && head -c 8000000 /dev/urandom > /srv/bw/blob"
                                 " && busybox httpd -p 8099 -h /srv/bw"])

    def fetch_seconds(n: int) -> float:
        out = tmp_path / f"out-{n}"
        with tempfile.TemporaryDirectory(prefix="bk-bw-") as tmp:
            ctx = context_with_base(Path(tmp), f"RUN echo {tmp_path.name}-{n} && b=$(cut -d' ' -f1 /proc/uptime)"
                                               " && wget -q -O /dev/null http://10.10.0.1:8099/blob"
                                               " && echo $b $(cut -d' ' -f1 /proc/uptime) > /took\n")
            client(bundle, remote).build(ctx, output=f"type=local,dest={out}", timeout=300)
        began, ended = map(float, (out / "took").read_text().split())
        return ended - began

    try:
        run("configure", "apply", "build_bandwidth=16mbit")
        toml = (h.rootfs / "etc/buildkit/buildkitd.toml").read_text()
        assert 'networkMode = "cni"' in toml and 'cniConfigPath = "/etc/buildkit/cni.conflist"' in toml
        plugins = json.loads((h.rootfs / "etc/buildkit/cni.conflist").read_text())["plugins"]
        assert plugins[-1]["type"] == "bandwidth" and plugins[-1]["ingressRate"] == 16_000_000
        slow = fetch_seconds(1)
        assert 3.0 <= slow <= 20, slow
        run("configure", "apply")  # the profile's again
        assert 'networkMode = "bridge"' in (h.rootfs / "etc/buildkit/buildkitd.toml").read_text()
        fast = fetch_seconds(2)
        assert fast < 1.5, fast
        print(f"8 MB fetched in {slow:.2f} s at 16 Mbit/s, {fast:.2f} s without a limit")
    finally:
        run("configure", "apply")
        hosts.run_in(h, ["sh", "-c", "pkill -f 'busybox httpd'; rm -rf /srv/bw"], check=False)


def expired_bundle(layout, out: Path) -> Path:
    """A certificate from the installation's CA that expired yesterday."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_cert, ca_key = ca.load_ca(layout)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "team-old")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(days=10)).not_valid_after(now - _dt.timedelta(days=1))
            .sign(ca_key, hashes.SHA256()))
    return ca.write_bundle({"ca.pem": ca.paths(layout)["ca"].read_bytes(), "cert.pem": ca.pem(cert),
                            "key.pem": ca.pem_key(key)}, out)


def foreign_bundle(layout, out: Path) -> Path:
    """team-a's name on a certificate from another installation's CA (the client trusts
    the right server: only its own certificate is foreign)."""
    other = layout_mod.production(out.parent / "other")
    ca.ensure_ca(other, "elsewhere", apply=True)
    return ca.write_bundle({**ca.issue(other, "team-a"), "ca.pem": ca.paths(layout)["ca"].read_bytes()}, out)


def refused(bundle: Path, remote: dict) -> str:
    with pytest.raises(BuildctlError) as err:
        client(bundle, remote).workers()
    return err.value.problem


def test_every_refusal_is_refused_and_audited(host, layout, remote, tmp_path):
    started = _dt.datetime.now(_dt.timezone.utc).timestamp()
    revoked = issue("team-gone", tmp_path)
    assert client(revoked, remote).workers()  # in force: it works
    revoked_at = _dt.datetime.now(_dt.timezone.utc).timestamp()
    proc = invoke("certs.revoke", "team-gone", "--host", NAME)
    assert proc.returncode == 0 and "reloaded" in proc.stdout, proc.stdout + proc.stderr
    listed = json.loads(invoke("certs.list", "--host", NAME, "--json").stdout)
    assert [r["revoked"] != "" for r in listed if r["team"] == "team-gone"] == [True]

    no_cert = tmp_path / "none"
    no_cert.mkdir()
    (no_cert / "ca.pem").write_bytes(ca.paths(layout)["ca"].read_bytes())
    with pytest.raises(BuildctlError):
        Buildctl(client(revoked, remote).binary, remote["remote_address"]).run(
            "--tlsservername", remote["servername"], "--tlscacert", str(no_cert / "ca.pem"), "debug", "workers")
    refused(foreign_bundle(layout, tmp_path / "foreign"), remote)
    refused(expired_bundle(layout, tmp_path / "expired"), remote)
    refused(revoked, remote)

    entries = audit(started)
    statuses = {(e["team"], e["status"]) for e in entries if e["status"].startswith("refused")}
    assert ("-", auditlog.NO_CERTIFICATE) in statuses
    assert ("team-a", "refused: certificate not from this installation's CA") in statuses
    assert ("team-old", "refused: certificate expired") in statuses
    assert ("team-gone", "refused: certificate revoked") in statuses
    # and none of them reached buildkitd
    calls = [e for e in entries if e["tier"] == "call" and _dt.datetime.fromisoformat(e["time"]).timestamp() > revoked_at]
    assert not [e for e in calls if e["team"] in ("team-old", "team-gone", "-")]
    assert not [e for e in calls if e["team"] == "team-a" and not e["verified"]]


def test_network_host_is_refused_here_and_allowed_where_the_profile_grants_it(host):
    """The production builder: network.host refused, RUN steps in their own network
    namespace, frontends outside the allow-list refused. A builder whose profile grants
    network.host and uses the host's network: the same probes say the opposite."""
    step = next(s for s in host[1]["access"]["steps"] if s["name"] == "insecure entitlements")
    assert "network.host refused by the daemon" in step["message"] and "not allowed" in step["message"]
    policies = next(s for s in host[1]["access"]["steps"] if s["name"] == "build network and frontends")
    assert policies["status"] == "ok", policies
    assert "RUN steps cannot reach the server's loopback (network_mode bridge)" in policies["message"]
    assert "is not an allowed gateway source" in policies["message"]
    grant = ("insecure_entitlements=[network.host]", "network_mode=host", "allowed_frontends=[]")
    try:
        run("configure", "apply", *grant)
        report = run("access", "check", *grant)
        steps = {s["name"]: s for s in report["steps"]}
        assert "network.host granted" in steps["insecure entitlements"]["message"]
        assert "RUN steps reach the server's loopback" in steps["build network and frontends"]["message"]
        assert "any frontend image may be named" in steps["build network and frontends"]["message"]
    finally:
        run("configure", "apply")
    step = next(s for s in run("access", "check")["steps"] if s["name"] == "insecure entitlements")
    assert "refused by the daemon" in step["message"]


def test_a_source_policy_travels_in_bundles_and_binds_the_clients_that_send_it(host, layout, remote, tmp_path):
    """The profile's source policy goes into every new bundle and its command line; a
    build that sends it is refused by BuildKit's policy engine; the same build without it
    is not refused by the policy (buildkitd enforces only what a client sends)."""
    h, _ = host
    policy = {"rules": [{"action": "DENY", "selector": {"identifier": "docker-image://127.0.0.1:9/*"}}]}
    (h.exchange / "policy.json").write_text(json.dumps(policy))
    try:
        report = run("access", "apply", f"source_policy={hosts.EXCHANGE / 'policy.json'}")
        step = next(s for s in report["steps"] if s["name"] == "source policy for teams' bundles")
        assert step["status"] == "changed" and "1 deny" in step["message"], step
        proc = invoke("certs.issue", "team-p", "--host", NAME, "--out", str(tmp_path / "p"))
        assert proc.returncode == 0, proc.stderr
        bundle = tmp_path / "p"
        assert json.loads((bundle / "source-policy.json").read_text()) == policy
        assert f"--source-policy-file {bundle}/source-policy.json" in proc.stdout
        assert f"EXPERIMENTAL_BUILDKIT_SOURCE_POLICY={bundle}/source-policy.json" in proc.stdout
        ctx = tmp_path / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text("FROM 127.0.0.1:9/kit/denied:1\nRUN true\n")
        with pytest.raises(BuildctlError) as sent:
            client(bundle, remote).build(ctx, source_policy=bundle / "source-policy.json", timeout=120)
        assert "denied by policy" in sent.value.problem
        with pytest.raises(BuildctlError) as unsent:  # nothing to pull there: refused by the network, not the policy
            client(bundle, remote).build(ctx, timeout=120)
        assert "denied by policy" not in unsent.value.problem and "127.0.0.1:9" in unsent.value.problem
    finally:
        report = run("access", "apply")
    step = next(s for s in report["steps"] if s["name"] == "source policy for teams' bundles")
    assert step["status"] == "changed" and "moved" in step["message"] and not access.policy_path(layout).exists()


def test_a_builder_per_trust_level_has_its_own_daemon_limits_front_door_and_ca(host, layout, remote, tmp_path):
    """The example profile's `untrusted` level beside the host's builder: its own units,
    root, limits in force, bridge, front door and CA; each level refuses the other's
    certificates; its second apply changes nothing."""
    h, _ = host
    profile = str(PROJECT_ROOT / "docs/examples/trust-levels.yaml")
    level = ("trust_level=untrusted",)
    reports = {name: run(name, "apply", *level, profile=profile) for name in SEQUENCE}
    untrusted = layout_mod.production(h.rootfs, "untrusted")
    assert untrusted.config_path.exists() and 'bridgeName = "bk-untrusted"' in untrusted.config_path.read_text()
    limits = reports["verify"]["facts"]["limits_in_force"]
    for name in ("memory_max", "cpu_quota", "tasks_max"):  # the level's, not the host builder's
        assert limits[name]["configured"] == limits[name]["in_force"], (name, limits[name])
    assert str(limits["tasks_max"]["in_force"]) == "1024" and str(limits["cpu_quota"]["in_force"]) == "100%"
    facts = reports["access"]["facts"]
    assert facts["remote_address"] == f"tcp://{h.address}:1244"
    assert facts["ca_cert"] == "/etc/buildkit-untrusted/access/ca.pem"
    assert ca.paths(untrusted)["ca"].read_bytes() != ca.paths(layout)["ca"].read_bytes()
    for name in SEQUENCE:
        assert changed(run(name, "apply", *level, profile=profile)) == [], name

    proc = invoke("certs.issue", "team-u", "--host", NAME, "--trust-level", "untrusted", "--out", str(tmp_path / "u"))
    assert proc.returncode == 0, proc.stderr
    level_remote = access.remote(untrusted)
    assert level_remote["remote_address"].endswith(":1244")
    result = build(tmp_path / "u", level_remote)
    assert len([v for v in result.steps if " RUN " in v["name"]]) == 2
    ours = issue("team-b", tmp_path)  # the host's builder
    refused(ours, level_remote)  # another level's CA
    refused(tmp_path / "u", remote)
    # two daemons, two roots
    workers = {client(ours, remote).workers()[0]["id"], client(tmp_path / "u", level_remote).workers()[0]["id"]}
    assert len(workers) == 2
    listed = json.loads(invoke("certs.list", "--host", NAME, "--trust-level", "untrusted", "--json").stdout)
    assert {r["team"] for r in listed} >= {"team-u", access.PROBE_TEAM} and "team-b" not in {r["team"] for r in listed}


TIGHT = """extends: production
trust_levels:
  tight:
    memory_max: 256MiB
    cpu_quota: 50%
    tasks_max: 256
    frontdoor_port: 1254
    frontdoor_metrics_port: 8425
    audit_metrics_port: 8426
    debug_port: 6080
    bridge_subnet: 10.13.0.0/16
"""


def test_each_limit_is_hit_by_a_build_inside_the_builders_slice(host, tmp_path):
    """A builder with small limits: its build containers run inside its slice, and the
    limits runbook hits each one with a real build, measured from the slice's counters."""
    profile = tmp_path / "tight.yaml"
    profile.write_text(TIGHT)
    for name in ("install", "configure"):
        run(name, "apply", "trust_level=tight", profile=str(profile))
    report = run("limits", "apply", "trust_level=tight", profile=str(profile))
    steps = {s["name"]: s for s in report["steps"]}
    assert "inside buildkit_tight.slice with the daemon" in steps["build containers within the limits"]["message"]
    memory = steps["memory: a step past memory_max"]
    assert memory["status"] == "ok" and "was OOM-killed in buildkit_tight.slice" in memory["message"], memory
    assert "the daemon answers" in memory["message"]
    assert report["facts"]["memory_limit_hits"] >= 1
    cpu = steps["CPU: busy steps against cpu_quota"]
    assert cpu["status"] == "ok" and report["facts"]["cpu_throttled_periods"] > 0, cpu
    assert "throttled in" in cpu["message"] and "held back" in cpu["message"]
    tasks = steps["tasks: a step past tasks_max"]
    assert tasks["status"] == "ok" and "exit code 42" in tasks["message"], tasks
    # the host's builder: its builds in its own slice too (verify's step)
    step = next(s for s in host[1]["verify"]["steps"] if s["name"] == "build containers within the limits")
    assert "inside buildkit.slice with the daemon" in step["message"], step


def test_the_tuning_advisor_asks_for_the_limit_the_builder_hit(host, tmp_path):
    """After the limits runbook hit the tight builder's limits (the test above): the
    advisor reads its slice's counters and proposes a larger memory_max with the
    evidence, and that --set, passed to install in check mode, changes the slice."""
    profile = tmp_path / "tight.yaml"
    profile.write_text(TIGHT)
    proc = invoke("report.tuning", "--host", NAME, "--profile", str(profile), "--trust-level", "tight", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["evidence"]["slice"] == "buildkit_tight.slice" and out["evidence"]["memory_limit_hits"] >= 1
    assert out["evidence"]["history"]["builds"] >= 3 and out["evidence"]["usage"]["cpu_throttled_periods"] > 0
    memory = next(p for p in out["proposals"] if p["parameter"] == "memory_max")
    assert (memory["current"], memory["proposed"], memory["runbook"]) == ("256MiB", "384MiB", "install"), memory
    assert "hit its memory limit" in memory["evidence"]
    report = run("install", "check", "trust_level=tight", memory["set"], profile=str(profile))
    step = next(s for s in report["steps"] if s["name"] == "service definition")
    assert step["status"] == "changed" and f"+MemoryMax={384 * 2**20}" in step["diff"], step  # systemd's bytes


def test_a_high_priority_build_leaves_the_queue_before_earlier_low_ones(host, remote, tmp_path):
    """One slot at the front door: dev's first build holds it, dev's second then release's
    queue behind it; release (high) starts before dev (low) although it came later, every
    build succeeds, and the audit log shows each connection's wait."""
    import threading
    import time as _time

    queue = ("max_concurrent_builds=1", "team_priority={release: high, dev: low}", "queue_timeout=2m")
    try:
        report = run("access", "apply", *queue)
        step = next(s for s in report["steps"] if s["name"] == "front door configuration and units")
        assert "at most 1 build(s) at once" in step["message"] and "release: high" in step["message"], step
        bundles = {"dev": issue("dev", tmp_path), "release": issue("release", tmp_path)}
        started = _dt.datetime.now(_dt.timezone.utc).timestamp()
        finished, errors = {}, []

        def one(name: str, team: str, seconds: int) -> None:
            with tempfile.TemporaryDirectory(prefix="bk-queue-") as tmp:
                ctx = context_with_base(Path(tmp), f"RUN echo {name} {_time.time()} > /n && sleep {seconds}\n")
                try:
                    client(bundles[team], remote).build(ctx, timeout=300)
                    finished[name] = _time.monotonic()
                except BuildctlError as exc:
                    errors.append(f"{name}: {exc.problem}")

        threads = []
        for name, team, seconds in (("dev1", "dev", 8), ("dev2", "dev", 2), ("release", "release", 2)):
            threads.append(threading.Thread(target=one, args=(name, team, seconds)))
            threads[-1].start()
            _time.sleep(2)
        for t in threads:
            t.join(300)
        assert not errors, errors
        assert finished["dev1"] < finished["release"] < finished["dev2"], finished
        waits = {}
        for e in audit(started):
            if e["tier"] == "connection" and e["team"] in ("dev", "release") and e.get("queue_ms", 0) > 0:
                waits.setdefault(e["team"], []).append(e["queue_ms"])
        assert waits.get("release") and waits.get("dev"), waits
        assert max(waits["release"]) < max(waits["dev"])  # dev2 waited for dev1 and release
    finally:
        run("access", "apply")  # the profile's queue again


POOL = str(PROJECT_ROOT / "docs/examples/pool.yaml")
POOL_TEAMS = ("web", "mobile", "data", "release", "ml", "infra")


def test_a_pool_keeps_each_team_on_one_builder_and_drains_one_for_maintenance(host, layout, remote, tmp_path):
    """docs/examples/pool.yaml: the host's builder and b2 behind one front door. Six teams
    build twice each: each team's builds land on one builder (the audit log names it, and
    that builder's history holds them), both builders serve, and the second build is
    cached. A builder drained while a build runs on it finishes that build, its team's next
    build goes to the other (uncached there), the drain survives a reload, and once it is
    ready the team is back on its builder, cached."""
    import threading
    import time as _time

    h, _ = host
    for name in ("install", "configure"):
        run(name, "apply", "trust_level=b2", profile=POOL)
    started = _dt.datetime.now(_dt.timezone.utc).timestamp()
    try:
        report = run("access", "apply", profile=POOL)
        step = next(s for s in report["steps"] if s["name"] == "front door configuration and units")
        assert "a pool of 2 builders" in step["message"] and "buildkit, buildkit-b2" in step["message"], step
        assert (h.rootfs / "etc/buildkit-b2/buildkitd.toml").exists()
        assert "SocketGroup=buildkit\n" in (h.rootfs / "etc/systemd/system/buildkit-b2.socket").read_text()
        bundles = {team: ca.write_bundle(ca.issue(layout, team), tmp_path / team) for team in POOL_TEAMS}

        def solve(team: str, text: str) -> bool:
            """A build of `team`; whether its RUN step was cached."""
            with tempfile.TemporaryDirectory(prefix="bk-pool-") as tmp:
                result = client(bundles[team], remote).build(context_with_base(Path(tmp), f"RUN echo {text}\n"),
                                                             timeout=300)
            return all(v.get("cached") for v in result.steps if " RUN " in v["name"])

        for team in POOL_TEAMS:
            assert not solve(team, f"{team} {started}")
            assert solve(team, f"{team} {started}"), team  # the builder that holds its cache
        served: dict[str, set[str]] = {}
        for e in audit(started):
            if e["tier"] == "call" and e["method"].endswith(".Control/Solve") and e["team"] in POOL_TEAMS:
                served.setdefault(e["team"], set()).add(e["builder"])
                assert e.get("ref") and e["build"] == "ok", e  # joined to its builder's history
        assert set(served) == set(POOL_TEAMS) and all(len(b) == 1 for b in served.values()), served
        owner = {team: b.pop() for team, b in served.items()}
        assert set(owner.values()) == {"buildkit", "buildkit-b2"}, owner

        team = next(t for t in POOL_TEAMS if owner[t] == "buildkit-b2")
        finished = {}

        def long_build() -> None:
            finished["long"] = solve(team, f"long {started} && sleep 6")

        thread = threading.Thread(target=long_build)
        thread.start()
        _time.sleep(2)
        proc = invoke("pool.drain", "b2", "--host", NAME)
        thread.join(300)
        assert proc.returncode == 0 and "buildkit-b2 is drained: 1 build(s) finished" in proc.stdout, proc.stdout
        assert "long" in finished  # it ran to its end on the drained builder
        assert not solve(team, f"{team} {started}")  # the other builder: no cache of this team's there
        issue("gone", tmp_path)
        assert invoke("certs.revoke", "gone", "--host", NAME).returncode == 0  # the front door reloads
        states = {r["builder"]: r["state"] for r in json.loads(invoke("pool.status", "--host", NAME, "--json").stdout)}
        assert states == {"buildkit": "UP", "buildkit-b2": "DRAIN"}, states
        refused = invoke("pool.drain", "buildkit", "--host", NAME)
        assert refused.returncode == 2 and "would leave no builder" in refused.stderr, refused.stderr
        assert invoke("pool.ready", "b2", "--host", NAME).returncode == 0
        assert solve(team, f"{team} {started}")  # back on b2, its cache there
        moved = [e for e in audit(started) if e["tier"] == "connection" and e["team"] == team and e["status"] == "ok"]
        assert [e["builder"] for e in moved][-3:] == ["buildkit-b2", "buildkit", "buildkit-b2"], moved
    finally:
        run("access", "apply")  # the host's builder alone again


def test_the_adoption_report_counts_what_the_audit_log_and_the_history_hold(host, layout, remote, tmp_path):
    """Three teams build, one of bob's builds fails: per team, the report's builds equal
    the audit log's Control/Solve calls and the builds found in the builder's history; its
    failures, cache hits, new teams and failing Dockerfile follow."""
    started = _dt.datetime.now(_dt.timezone.utc).timestamp()
    plan = {"ada": [True, True, True], "bob": [True, False], "cyd": [True]}
    for team, outcomes in plan.items():
        bundle = issue(team, tmp_path)
        for ok in outcomes:
            with tempfile.TemporaryDirectory(prefix="bk-adopt-") as tmp:
                ctx = context_with_base(Path(tmp), f"RUN echo {team} {started}\n" + ("" if ok else "RUN false\n"))
                if ok:
                    client(bundle, remote).build(ctx, timeout=300)
                else:
                    with pytest.raises(BuildctlError):
                        client(bundle, remote).build(ctx, timeout=300)
    proc = invoke("report.adoption", "--host", NAME, "--since", "15m", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    solves = [e for e in audit(started) if e["tier"] == "call" and e["method"].endswith(".Control/Solve")]
    history = {r["record"]["Ref"]: r["record"] for r in access.build_records(layout, host[0])}
    for team, outcomes in plan.items():
        row = result["teams"][team]
        calls = [e for e in solves if e["team"] == team]
        records = [history[e["ref"]] for e in calls if e.get("ref") in history]
        assert row["builds"] == len(outcomes) == len(calls) == len(records), (team, row)
        assert row["failed"] == outcomes.count(False) == sum(bool(r.get("error")) for r in records), (team, row)
        cached, total = (sum(int(r.get(k, 0)) for r in records) for k in ("numCachedSteps", "numTotalSteps"))
        assert row["cache_hit_ratio"] == round(cached / total, 3) and row["new"], (team, row)
    # ada's second and third builds came from the cache, cyd's one build did not
    assert result["teams"]["ada"]["cache_hit_ratio"] > result["teams"]["cyd"]["cache_hit_ratio"]
    assert result["teams"]["bob"]["success_rate"] == 0.5
    assert set(plan) <= set(result["new_teams"])
    assert [d for d in result["failing"] if d["dockerfile"].startswith("bob")], result["failing"]
    png = next(Path(p) for p in proc.stderr.split() if p.endswith(".png"))
    assert png.stat().st_size > 10_000


def test_the_front_door_benchmark_runs_and_keeps_no_certificate_in_force(host, layout):
    proc = invoke("bench.frontdoor", "--host", NAME, "--rounds", "2")
    assert proc.returncode in (0, 1), proc.stderr  # 1: below the speed goal, which is the benchmark's to say
    record = json.loads(sorted((Path(p) for p in proc.stdout.split() if p.endswith(".json")), key=str)[-1]
                        .read_text())
    assert record["cost"]["rounds"] == 2 and len(record["cost"]["seconds"]["frontdoor"]) == 2
    assert record["median_frontdoor_s"] > 0 and record["issue_to_first_build_s"] > 0
    assert not [r for r in ca.issued(layout) if r.team == "kit-bench" and not r.revoked]

def test_the_scaling_benchmark_measures_and_leaves_the_front_door_as_the_profile_makes_it(host, layout):
    """`invoke bench.scaling`, small: its record has each burst, each pool size (the
    builds each builder took add up), the queue's four blocks and what they say; the
    front door is the host builder's alone again and the benchmark's builder stopped."""
    h, _ = host
    proc = invoke("bench.scaling", "--host", NAME, "--concurrency", "1,2", "--builders", "1,2", "--per-team", "1",
                  "--rounds", "2")
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]  # 1: the benchmark's verdict
    path = next(Path(p) for p in proc.stdout.split() if p.endswith(".json"))
    record = json.loads(path.read_text())
    assert [r["teams"] for r in record["concurrency"]] == [1, 2]
    for r in record["concurrency"]:
        assert r["builds"] == r["teams"] and r["builds_per_min"] > 0 and r["peak_memory_bytes"] > r["idle_memory_bytes"] > 0
        assert r["cpu_s"] > 0
    assert [r["builders"] for r in record["pool"]] == [1, 2]
    for r in record["pool"]:
        assert r["builds"] == 8 and sum(r["per_builder"].values()) == 8, r
    assert set(record["pool"][0]["per_builder"]) == {"buildkit"}
    assert set(record["pool"][1]["per_builder"]) == {"buildkit", "buildkit-p2"}  # eight teams over two
    assert len(record["queue"]["seconds"]["queued"]) == len(record["queue"]["seconds"]["straight"]) == 4
    assert record["sizing"]["cores"] >= 1 and record["sizing"]["builds_per_core_per_min"] > 0
    assert path.with_suffix(".png").stat().st_size > 10_000
    assert "Builds per core" in proc.stdout
    assert "balance hash" not in (h.rootfs / "etc/buildkit/access/frontdoor.cfg").read_text()
    state = hosts.run_in(h, ["systemctl", "is-active", "buildkit-p2.service"], check=False).stdout.strip()
    assert state == "inactive", state
    assert not [r for r in ca.issued(layout) if r.team.startswith("scale") and not r.revoked]


def test_the_upgrade_runbook_moves_the_production_builder_down_and_back_under_systemd(host, remote, tmp_path):
    """v0.34.1 and back on the host's builder: systemd restarts it on each version's
    binaries (from the archive the operator's side makes for a host), it reports that
    version, and a team builds through the front door; a second run changes nothing."""
    h, _ = host
    bundle = issue("team-up", tmp_path)
    for version in ("v0.34.1", install.BUILDKIT_VERSION):
        report = run("upgrade", "apply", f"buildkit_version={version}")
        steps = {s["name"]: s for s in report["steps"]}
        assert f"BuildKit {version} serves" in steps["verify"]["message"], steps["verify"]
        info = hosts.run_in(h, ["/usr/local/bin/buildctl", "--addr", "unix:///run/buildkit/buildkitd.sock", "debug",
                                "info", "--format", "{{json .}}"])
        assert json.loads(info.stdout)["buildkitVersion"]["version"] == version
        assert hosts.run_in(h, ["systemctl", "is-active", "buildkit.service"]).stdout.strip() == "active"
        assert len([v for v in build(bundle, remote).steps if " RUN " in v["name"]]) == 2
    assert changed(run("upgrade", "apply")) == []


def test_nbval_runs_the_stored_access_notebook_on_the_host(host):
    """The production-only notebooks, as stored (check mode), executed by nbval inside the
    host with the production parameters; the lab's nbval test runs the others."""
    from ..integration.test_stack import PRODUCTION_ONLY, lab_notebooks

    h, _ = host
    dest = h.exchange / "nbval"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    lab_notebooks(dest, ['profile="production"', "frontdoor_port=1234", "frontdoor_metrics_port=8405",
                         "audit_metrics_port=8406", 'network_mode="bridge"',
                         'allowed_frontends=["docker.io/docker/dockerfile"]',
                         f'frontdoor_names=["{h.address}", "{h.name}", "localhost", "127.0.0.1"]'], PRODUCTION_ONLY)
    inside = [str(hosts.EXCHANGE / "nbval" / name) for name in PRODUCTION_ONLY]
    proc = hosts.run_in(h, [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", *inside],
                        cwd=str(PROJECT_ROOT), env={"BUILDKIT_OPS_RUNS_DIR": str(hosts.EXCHANGE / "nbval-runs")},
                        check=False, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert re.search(r"\d+ passed", proc.stdout)


def test_prometheus_scrapes_the_production_builder_through_its_front_door(host, runs_base):
    """The lab's Prometheus (a ci builder's, on this side) scrapes the host's front door:
    HAProxy, buildkitd and the audit shipper's counts, with production labels."""
    import time as _time

    from runbook_checks.core import runner
    from runbook_checks.daemon import service
    from runbook_checks.monitoring import prometheus

    from ..conftest import installed_builder, stop_and_remove

    h, _ = host
    port = service.free_port()
    layout = installed_builder("bkprod-", runs_base, f"prometheus_port={port}")
    try:
        target = f"{h.address}:8405"
        result = runner.run("monitoring", "ci", "apply", (f"state_dir={layout.state_dir}", f"prometheus_port={port}",
                                                          "scrape_interval=1s", "evaluation_interval=1s",
                                                          f"frontdoor_targets=[{target}]"),
                            base=runs_base, progress=False)
        assert result.report.summary["failed"] == 0, result.report.to_json()
        assert {"buildkit-frontdoor", "buildkit-audit", "buildkitd"} <= set(result.report.facts["scrape_targets"])
        deadline = _time.monotonic() + 30
        while True:
            up = {(r["metric"]["job"], r["value"][1]) for r in prometheus.query(port, 'up{environment="production"}')}
            if up == {("buildkit-frontdoor", "1"), ("buildkitd", "1"), ("buildkit-audit", "1")}:
                break
            assert _time.monotonic() < deadline, up
            _time.sleep(1)
        expiry = prometheus.query(port, 'buildkit_ops_certificate_expiry_timestamp_seconds{certificate="server"}')
        assert expiry and expiry[0]["metric"]["builder"] == h.address
        assert prometheus.query(port, 'haproxy_process_nbthread{job="buildkit-frontdoor"}')
        # the builder's slice, read by the audit shipper: its limit as configured, its usage counting
        limit = prometheus.query(port, 'buildkit_ops_builder_memory_limit_bytes{slice="buildkit.slice"}')
        assert limit and float(limit[0]["value"][1]) == 16 * 2**30, limit
        used = prometheus.query(port, 'buildkit_ops_builder_memory_bytes{slice="buildkit.slice"}')
        assert used and 0 < float(used[0]["value"][1]) < 16 * 2**30
        assert prometheus.query(port, 'buildkit_ops_builder_cpu_periods_total{slice="buildkit.slice"}')
    finally:
        stop_and_remove(layout.state_dir)


def test_the_production_drills_recover_by_systemd_and_lose_nothing(host, tmp_path):
    """The front door's master and the whole buildkit.service killed while a team builds
    through the front door: systemd restarts each, the team builds again (CACHED where it
    built before), the configs are unchanged and the audit log has the team's calls."""
    from runbook_checks.drills import run as drills

    trials = drills.run(drills.chosen(["all"], NAME), 3, tmp_path, say=lambda m: None, host=NAME)
    assert [t.drill for t in trials] == ["frontdoor-down"] * 3 + ["unit-killed"] * 3
    for trial in trials:
        assert trial.passed, drills.line(trial)
        assert trial.recovered_by.startswith("systemd (Restart=on-failure)") and "NRestarts" in trial.detected_by
        # a container caught being made is left in runc init: the recover runbook kills it
        assert ("recover runbook" in trial.recovered_by) == ("stray_build_containers" in trial.notes)
    assert len(list(tmp_path.glob("*.json"))) == 6
