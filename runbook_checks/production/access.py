"""The access runbook's steps: the CA, the front door's certificate and configuration, its
units, and a probe that proves the whole path with a real mutual-TLS call.

Production only: the front door runs as systemd units beside the builder's on a host
where systemd is PID 1 (a build server, or a rehearsal host: production.hosts)."""

from __future__ import annotations

import datetime as _dt
import json
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..core import files
from ..core.errors import AccessError, BuildctlError
from ..core.layout import Layout
from ..core.paths import PROJECT_ROOT
from ..core.params import TRUST_LEVEL
from ..core.results import Outcome
from ..daemon import sourcepolicy, systemd
from ..daemon.buildctl import Buildctl
from ..daemon.contexts import context_with_base
from . import auditlog, ca, frontdoor



def units(layout: Layout) -> tuple[str, str]:
    """The front door's units: the audit shipper's, then HAProxy's."""
    return layout.unit("audit"), layout.unit("frontdoor")
PROBE_TEAM = "kit-probe"  # the access runbook's own client certificate, for the probe


def names_or_default(names: list[str]) -> list[str]:
    """The names in the server certificate: the ones given, else this host's name and
    loopback (clients elsewhere need a name or address they reach it by)."""
    return list(names) or [socket.getfqdn(), "localhost", "127.0.0.1"]


def remote_address(names: list[str], port: int) -> str:
    host = names_or_default(names)[0]
    return f"tcp://{'[' + host + ']' if ':' in host else host}:{port}"


def audit_log(layout: Layout) -> Path:
    return layout.log_dir / "audit.log"


def require(manager_name: str, layout: Layout, port: int) -> Outcome:
    """The front door needs systemd, HAProxy, and a port."""
    if manager_name != "systemd":
        raise AccessError("the front door runs as systemd units, and this runbook's service manager is "
                          f"{manager_name}", "run it with --profile production on a build server, or on a rehearsal"
                          " host: invoke host.up NAME, then invoke runbook access --profile production --host NAME")
    if layout.pool_of:
        raise AccessError(f"{layout.name} is in the pool behind the front door of {layout.pool_of}, which serves it;"
                          " it has no front door of its own",
                          "apply the access runbook without trust_level: the host's builder's front door")
    if not port:
        raise AccessError("frontdoor_port is 0, so there is no front door to set up",
                          "set frontdoor_port (the production profile's is 1234)")
    haproxy = Path(frontdoor.HAPROXY)
    if str(layout.state_dir) == "/" and not haproxy.exists():
        raise AccessError("HAProxy is not installed, so there is no front door", "apt-get install haproxy")
    if str(layout.state_dir) == "/" and not frontdoor.group_exists(layout.group):
        raise AccessError(f"there is no group {layout.group}, whose members may use buildkitd's socket",
                          "apply the install or configure runbook first (their service definition step creates it)")
    version = subprocess.run([str(haproxy), "-v"], capture_output=True, text=True).stdout.split("\n")[0] \
        if haproxy.exists() else "HAProxy (not on this machine; the tree is rendered only)"
    return Outcome.ok(version.strip(), manager=manager_name)


def probe_paths(layout: Layout) -> dict[str, Path]:
    root = ca.access_dir(layout) / PROBE_TEAM
    return {"ca.pem": ca.paths(layout)["ca"], "cert.pem": root / "cert.pem", "key.pem": root / "key.pem"}


def ensure_probe(layout: Layout, apply: bool) -> Outcome:
    """The probe's client certificate (kept in the access directory, 0600, renewed like
    the server's)."""
    from cryptography import x509

    p = probe_paths(layout)
    if p["cert.pem"].exists():
        left = x509.load_pem_x509_certificate(p["cert.pem"].read_bytes()).not_valid_after_utc - ca._now()
        if left > _dt.timedelta(days=ca.RENEW_BEFORE_DAYS):
            return Outcome.ok(f"probe certificate ({PROBE_TEAM}) valid for {left.days} more days")
    if not apply:
        return Outcome.changed(f"would issue the probe's client certificate ({PROBE_TEAM})")
    if any(r.team == PROBE_TEAM and not r.revoked for r in ca.issued(layout)):
        ca.revoke(layout, PROBE_TEAM)  # the one it replaces: its expiry would set off CertificateExpiresSoon
    bundle = ca.issue(layout, PROBE_TEAM)
    p["cert.pem"].parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    files.atomic_write(p["key.pem"], bundle["key.pem"], mode=0o600)
    files.atomic_write(p["cert.pem"], bundle["cert.pem"], mode=0o600)
    return Outcome.changed(f"issued the probe's client certificate ({PROBE_TEAM})")


def write_crl(layout: Layout, apply: bool) -> Outcome:
    path = ca.paths(layout)["crl"]
    revoked = sum(1 for r in ca.issued(layout) if r.revoked)
    if path.exists():
        return Outcome.ok(f"CRL {path} ({revoked} revoked)")
    if not apply:
        return Outcome.changed(f"would write the CRL {path}")
    ca.write_crl(layout)
    return Outcome.changed(f"wrote the CRL {path}")


def remote_path(layout: Layout) -> Path:
    """{"remote_address", "servername"}: what a team's command line needs (certs.issue)."""
    return ca.access_dir(layout) / "remote.json"


def pool_members(layout: Layout, pool: list[str]) -> tuple[Layout, ...]:
    """The other builders behind this front door (the trust levels `pool` names), each
    configured on this host already."""
    from ..core import layout as layout_mod

    if pool and layout.trust_level:
        raise AccessError(f"pool is set for {layout.name}, and a pool belongs to the host's builder",
                          "set pool at the top of the site profile, and apply access without trust_level")
    members = tuple(layout_mod.production(layout.state_dir, level, pool) for level in dict.fromkeys(pool))
    for member in members:
        if not member.config_path.exists():
            raise AccessError(f"the pool names {member.trust_level}, and {member.name} is not configured on this host"
                              f" ({member.config_path} is missing)",
                              f"apply install and configure with the same profile and --set trust_level="
                              f"{member.trust_level} first")
    return members


def write_config(layout: Layout, names: list[str], port: int, metrics_port: int, debug_port: int, keep: int,
                 max_bytes: int, apply: bool, audit_metrics_port: int = 0,
                 queue: frontdoor.Queue = frontdoor.Queue(), pool: list[str] = ()) -> Outcome:
    """frontdoor.cfg (checked by `haproxy -c` first) with the build queue and the pool's
    builders, the two units (checked by systemd-analyze verify first), and remote.json."""
    members = pool_members(layout, list(pool))
    text = frontdoor.render_config(layout, port, metrics_port, debug_port, audit_metrics_port, queue=queue,
                                   pool=members)
    checked = frontdoor.check_config(frontdoor.render_config(layout, port, metrics_port, debug_port, audit_metrics_port,
                                                             paths_here=True, queue=queue, pool=members), layout.group) \
        if ca.paths(layout)["server"].exists() else "haproxy -c runs once the server certificate exists"
    units = {layout.unit_dir / n: t for n, t in frontdoor.render_units(layout, audit_log(layout), keep, max_bytes,
                                                                        audit_metrics_port).items()}
    systemd.verify_units_text(units, "fix the parameter named above; nothing was written")
    remote = {"remote_address": remote_address(names, port), "servername": names_or_default(names)[0]}
    wanted = {frontdoor.config_path(layout): text, **units, remote_path(layout): json.dumps(remote, indent=2) + "\n"}
    outcome = files.converge(wanted, apply, layout.backup_dir, remote_port=port)
    queued = (f"; at most {queue.slots} build(s) at once, the others queued up to {queue.timeout}"
              + (f" ({', '.join(f'{t}: {c}' for t, c in sorted(queue.priorities.items()))})" if queue.priorities else "")
              if queue.slots else "; no build queue (max_concurrent_builds is 0)")
    behind = (f"; a pool of {len(members) + 1} builders, a team's builds on the one it hashes to:"
              f" {', '.join([layout.name, *(m.name for m in members)])}" if members else "")
    outcome.message = f"{outcome.message}; {checked}{queued}{behind}"
    return outcome


def policy_path(layout: Layout) -> Path:
    """The source policy teams' bundles carry (certs.issue copies it in)."""
    return ca.access_dir(layout) / "source-policy.json"


def write_source_policy(layout: Layout, source_policy: str, apply: bool) -> Outcome:
    """The profile's source policy (checked first) where certs.issue puts it into every
    bundle; none: a policy left from before is moved to the backups. buildkitd applies a
    policy only when the client sends it, so this is what well-behaved clients use."""
    path = policy_path(layout)
    if not source_policy:
        if not path.exists():
            return Outcome.ok("no source policy: bundles carry none")
        if not apply:
            return Outcome.changed(f"would move {path} to the backups (source_policy is empty)")
        saved = files.backup(path, layout.backup_dir)
        path.unlink()
        return Outcome.changed(f"moved {path} to {saved} (source_policy is empty): new bundles carry none")
    rules = sourcepolicy.load(source_policy)
    outcome = files.converge({path: json.dumps({"rules": rules}, indent=2) + "\n"}, apply, layout.backup_dir)
    outcome.message = f"{outcome.message}: {sourcepolicy.summary(rules)}, sent by clients that use their bundle's" \
                      " command line (buildkitd does not enforce it on its own)"
    return outcome


def _inputs(layout: Layout) -> list[Path]:
    """What the running front door has read: its configuration and the files it loads."""
    p = ca.paths(layout)
    return [f for f in (frontdoor.config_path(layout), p["server"], p["ca"], p["crl"]) if f.exists()]


def loaded_stamp(layout: Layout) -> Path:
    """{"pid", "inputs"}: the front door's process and the files' digest it last loaded
    (a reload keeps the process, so its start time does not tell)."""
    return ca.access_dir(layout) / "frontdoor.loaded"


def _up_to_date(layout: Layout, info: dict) -> bool:
    digest = "\n".join(files.sha256(f) for f in _inputs(layout))
    try:
        stamp = json.loads(loaded_stamp(layout).read_text())
    except (OSError, ValueError):
        stamp = {}
    if stamp.get("pid") == info["pid"]:
        return stamp.get("inputs") == digest
    # a process systemd started on its own (a boot): it read what was there then
    return all(f.stat().st_mtime <= info["start"] for f in _inputs(layout))


def converge_units(layout: Layout, apply: bool) -> Outcome:
    """The audit shipper and the front door enabled and running on the current files:
    started if stopped, reloaded (never restarted: builds in flight go on) if a file it
    reads changed since."""
    if str(layout.state_dir) != "/":
        return Outcome.skipped(f"units rendered under {layout.state_dir}, which the host's systemd does not read")
    audit_unit, door_unit = units(layout)
    infos = {u: systemd.unit_info(u) for u in units(layout)}
    enabled = {u: systemd.systemctl("is-enabled", u).stdout.strip() == "enabled" for u in units(layout)}
    down = [u for u in units(layout) if infos[u]["state"] != "RUNNING" or not enabled[u]]
    door = infos[door_unit]
    stale = door["state"] == "RUNNING" and not _up_to_date(layout, door)
    if not down and not stale:
        return Outcome.ok(f"{audit_unit} and {door_unit} (pid {door['pid']}) run on the current files")
    if not apply:
        return Outcome.changed("; ".join([*(f"would start {u}" for u in down),
                                          *([f"would reload {door_unit} (its files changed)"] if stale else [])]))
    systemd.systemctl("daemon-reload")
    done = []
    for unit in down:
        proc = systemd.systemctl("enable", "--now", unit)
        if proc.returncode:
            raise AccessError(f"{unit} did not start: {proc.stderr.strip()}\n{journal(unit)}",
                              f"read journalctl -u {unit}")
        done.append(f"started {unit}")
    if stale and door_unit not in down:
        proc = systemd.systemctl("reload", door_unit)
        if proc.returncode:
            raise AccessError(f"the front door refused to reload: {proc.stderr.strip()}\n{journal(door_unit)}",
                              f"read journalctl -u {door_unit}; it keeps running on its previous files")
        done.append(f"reloaded {door_unit} (builds in flight go on)")
    mark_loaded(layout)
    return Outcome.changed("; ".join(done))


def mark_loaded(layout: Layout) -> None:
    info = systemd.unit_info(layout.unit("frontdoor"))
    digest = "\n".join(files.sha256(f) for f in _inputs(layout))
    files.atomic_write(loaded_stamp(layout), json.dumps({"pid": info["pid"], "inputs": digest}) + "\n")


def reload_frontdoor(layout: Layout) -> str:
    """After a revocation: the front door reloads its CRL; connections in flight keep
    their worker until they end (a revoked team's running build is not cut)."""
    door = layout.unit("frontdoor")
    if str(layout.state_dir) != "/" or systemd.unit_info(door)["state"] != "RUNNING":
        return "the front door is not running here: it reads the CRL when it starts"
    proc = systemd.systemctl("reload", door)
    if proc.returncode:
        raise AccessError(f"the front door refused to reload: {proc.stderr.strip()}", f"read journalctl -u {door}")
    mark_loaded(layout)
    return "the front door reloaded its CRL (other teams' builds go on)"


def journal(unit: str, lines: int = 20) -> str:
    return subprocess.run(["journalctl", "-u", unit, "-n", str(lines), "--no-pager", "-o", "cat"],
                          capture_output=True, text=True, timeout=30).stdout.strip()


def probe(layout: Layout, names: list[str], port: int, apply: bool, timeout: float = 30) -> Outcome:
    """A real call through the front door with the probe's certificate (buildctl debug
    workers over mutual TLS), and its line in the audit log."""
    address = f"tcp://127.0.0.1:{port}"
    facts = {"remote_address": remote_address(names, port), "ca_cert": str(layout.on_host(ca.paths(layout)["ca"])),
             "audit_log": str(layout.on_host(audit_log(layout)))}
    if str(layout.state_dir) != "/":
        return Outcome.skipped("rendered into a tree: there is no front door running here", **facts)
    p = probe_paths(layout)
    if not p["cert.pem"].exists():
        return Outcome.changed("would call the front door with the probe's certificate once it exists", **facts)
    started = time.time()
    argv = [str(layout.buildctl), "--addr", address, "--tlsservername", names_or_default(names)[0],
            "--tlscacert", str(p["ca.pem"]), "--tlscert", str(p["cert.pem"]), "--tlskey", str(p["key.pem"]),
            "debug", "workers"]
    deadline = time.time() + timeout
    while True:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if proc.returncode == 0 or time.time() > deadline:
            break
        time.sleep(0.5)
    if proc.returncode:
        raise AccessError(f"buildctl through the front door failed: {proc.stderr.strip()}",
                          f"read journalctl -u {layout.unit('frontdoor')} -u {layout.unit('audit')}")
    line = wait_for_line(audit_log(layout), PROBE_TEAM, started, timeout=10)
    if not line:
        raise AccessError(f"the probe's call got through, but no line for team {PROBE_TEAM} reached"
                          f" {audit_log(layout)}", f"read journalctl -u {layout.unit('audit')}")
    return Outcome.ok(f"buildctl over mutual TLS as {PROBE_TEAM}: {line['method']} {line['status']}, audited", **facts)


def wait_for_line(path: Path, team: str, since: float, method: str = "/ListWorkers",
                  timeout: float = 10) -> dict | None:
    """The audit entry of the team's call to a method ending so, made after `since`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for entry in reversed(auditlog.read(path, since - 1)):
            if entry.get("team") == team and entry.get("method", "").endswith(method):
                return entry
        time.sleep(0.2)
    return None


ENTITLEMENT_PROBE = "RUN --network=host true\n"


def entitlements_in_force(layout: Layout, granted: list[str]) -> Outcome:
    """A build asking for network.host is refused unless the profile grants it, and runs
    when it does: the daemon's own answer (insecure-entitlements in buildkitd.toml).
    security.insecure and device need the Dockerfile's labs syntax (an image from the
    internet), so they are read from the configuration only."""
    others = f"; security.insecure, device: {'granted' if set(granted) - {'network.host'} else 'not granted'}" \
             " by the configuration (not exercised: they need the Dockerfile labs syntax)"
    with tempfile.TemporaryDirectory(prefix="bk-entitlement-") as tmp:
        ctx = context_with_base(Path(tmp), ENTITLEMENT_PROBE)
        try:
            Buildctl.for_layout(layout).build(ctx, allow=["network.host"], timeout=300)
            refused = ""
        except BuildctlError as exc:
            refused = exc.problem
    wanted = "network.host" in granted
    if wanted and refused:
        raise AccessError(f"the profile grants network.host, but the daemon refused it: {refused}",
                          "apply the configure runbook with the same profile (it writes insecure-entitlements)")
    if not wanted and not refused:
        raise AccessError("a build got network.host although the profile does not grant it",
                          "apply the configure runbook: buildkitd.toml must not list it in insecure-entitlements")
    if not wanted and "not allowed" not in refused:
        raise AccessError(f"the network.host build failed for another reason: {refused}", "read the daemon's log")
    said = refused.split("failed:", 1)[-1].strip()
    return Outcome.ok(("network.host granted: a RUN --network=host build ran" if wanted else
                       f"network.host refused by the daemon ({said})") + others,
                      entitlements=sorted(granted))


# (busybox's wget crashes with -T; in its own network namespace 127.0.0.1 refuses at once)
LOOPBACK_PROBE = ("RUN if wget -q -O /dev/null http://127.0.0.1:{port}/metrics; then echo REACHED > /probe;"
                  " else echo ISOLATED > /probe; fi; cat /probe\n")


def build_policies(layout: Layout, network_mode: str, allowed_frontends: list[str], debug_port: int | None) -> Outcome:
    """What a build cannot do here, each asked of the daemon with a real build: reach the
    server's loopback from a RUN step (buildkitd's debug address on 127.0.0.1), and name a
    frontend image outside `allowed_frontends` in a `# syntax=` line."""
    client = Buildctl.for_layout(layout)
    said = []
    if debug_port:
        with tempfile.TemporaryDirectory(prefix="bk-network-") as tmp:
            ctx = context_with_base(Path(tmp), LOOPBACK_PROBE.format(port=debug_port))
            client.build(ctx, opts={"no-cache": ""}, timeout=300, output=f"type=local,dest={tmp}/out")
            reached = (Path(tmp) / "out" / "probe").read_text().strip() == "REACHED"
        if reached and network_mode in ("bridge", "cni"):
            raise AccessError(f"a RUN step reached 127.0.0.1:{debug_port} although network_mode is {network_mode}",
                              "apply the configure runbook with the same profile, and read the daemon's log")
        said.append(f"RUN steps {'reach' if reached else 'cannot reach'} the server's loopback"
                    f" (network_mode {network_mode}{': set bridge to isolate them' if reached else ''})")
    if allowed_frontends:
        with tempfile.TemporaryDirectory(prefix="bk-frontend-") as tmp:
            (Path(tmp) / "Dockerfile").write_text("# syntax=frontends.invalid/kit/not-allowed\nFROM scratch\n")
            try:
                client.build(Path(tmp), timeout=120)
                refused = ""
            except BuildctlError as exc:
                refused = exc.problem
        if "is not an allowed gateway source" not in refused:
            raise AccessError(f"a frontend outside allowed_frontends was not refused as such: {refused or 'it ran'}",
                              "apply the configure runbook: buildkitd.toml lists allowedRepositories")
        said.append(f"a # syntax= frontend outside {', '.join(allowed_frontends)} is refused by the daemon"
                    f" ({refused.split('failed to solve:')[-1].strip()})")
    else:
        said.append("any frontend image may be named (allowed_frontends is empty)")
    return Outcome.ok("; ".join(said), network_mode=network_mode)


def bundle_command(bundle_dir: Path, address: str, server_name: str) -> dict[str, str]:
    """The command lines a team uses with its bundle (with its source policy, if it has one)."""
    tls = (f"--tlsservername {server_name} --tlscacert {bundle_dir}/ca.pem --tlscert {bundle_dir}/cert.pem"
           f" --tlskey {bundle_dir}/key.pem")
    policy = bundle_dir / "source-policy.json"
    sent = f" --source-policy-file {policy}" if policy.exists() else ""
    env = f"EXPERIMENTAL_BUILDKIT_SOURCE_POLICY={policy} " if policy.exists() else ""
    return {"buildctl": f"buildctl --addr {address} {tls} build --frontend dockerfile.v0 --local context=. "
                        f"--local dockerfile=.{sent}",
            "buildx": f"docker buildx create --name remote --driver remote "
                      f"--driver-opt cacert={bundle_dir}/ca.pem,cert={bundle_dir}/cert.pem,key={bundle_dir}/key.pem,"
                      f"servername={server_name} {address} && {env}docker buildx build --builder remote ."}



# --------------------------------------------------------------------------------------
# an installation from the operator's side (certs.*, report.audit)
# --------------------------------------------------------------------------------------
def installation(host: str = "", state_dir: str = "", trust_level: str = "") -> tuple[Layout, object | None]:
    """(the production layout, the rehearsal host or None): a host's installation seen
    through its root filesystem, or one on this machine (state_dir, default /); with
    `trust_level`, that builder's among several."""
    from ..core import layout as layout_mod
    from . import hosts

    if trust_level and not re.fullmatch(TRUST_LEVEL, trust_level):
        raise AccessError(f"--trust-level {trust_level!r} is not a trust level",
                          "give up to 12 lowercase letters and digits, a letter first, as the profile names it")
    if host and state_dir:
        raise AccessError("--host and --state-dir both name an installation", "give one of them")
    if host:
        h = hosts.load(host)
        return layout_mod.production(h.rootfs, trust_level), h
    return layout_mod.production(state_dir or "/", trust_level), None


def client(remote: dict[str, str], bundle: Path | dict[str, Path], binary: Path | None = None) -> Buildctl:
    """buildctl through a front door (`remote`: remote.json's address and server name)
    with a team's bundle: a directory of ca.pem, cert.pem and key.pem, or those three
    paths; the kit's own buildctl unless `binary`."""
    from ..daemon import install

    paths = bundle if isinstance(bundle, dict) else {name: bundle / name for name in ca.BUNDLE}
    return Buildctl(binary or install.built_with_go(install.BUILDKIT_VERSION) / "buildctl", remote["remote_address"],
                    tls={**{k: str(v) for k, v in paths.items()}, "servername": remote["servername"]})


def remote(layout: Layout) -> dict[str, str]:
    try:
        return json.loads(remote_path(layout).read_text())
    except (OSError, ValueError):
        raise AccessError(f"there is no front door in {ca.access_dir(layout)}",
                          "apply the access runbook first (invoke runbook access --profile production"
                          " --mode apply)") from None


def build_records(layout: Layout, host) -> list[dict]:
    """BuildKit's build history (`buildctl debug histories`), read inside the rehearsal
    host or here; [] when the daemon does not answer (the audit log is read without refs)."""
    from . import hosts

    if host is None:
        try:
            return Buildctl.for_layout(layout).histories()
        except BuildctlError:
            return []
    proc = hosts.run_in(host, [str(layout.on_host(layout.buildctl)), "--addr", f"unix://{layout.on_host(layout.socket_path)}",
                               "debug", "histories", "--format", "{{json .}}"], check=False, timeout=60)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")] if not proc.returncode else []


def join_history(layout: Layout, host, entries: list[dict]) -> dict[str, dict]:
    """Mark each build call with its build in the history of the builder that served it
    (a pool's builders each keep their own); the history records joined, by ref."""
    from ..core import layout as layout_mod

    joined = {}
    for name in sorted({e.get("builder", layout.name) for e in entries if e.get("tier") == "call"}):
        member = layout if name == layout.name else layout_mod.production(layout.state_dir,
                                                                          name.removeprefix("buildkit-"))
        records = [r.get("record", r) for r in build_records(member, host)]
        auditlog.join_refs([e for e in entries if e.get("builder", layout.name) == name], records)
        by_ref = {r.get("Ref"): r for r in records}
        joined.update({e["ref"]: by_ref[e["ref"]] for e in entries if e.get("ref") in by_ref})
    return joined


def reload_after_revocation(layout: Layout, host) -> str:
    """The front door reloads the CRL: inside the rehearsal host, or here."""
    from . import hosts

    if host is None:
        return reload_frontdoor(layout)
    level = layout.trust_level
    proc = hosts.run_in(host, [sys.executable, "-m", "runbook_checks.production.access", "reload", *([level] if level else [])],
                        cwd=str(PROJECT_ROOT), check=False)
    if proc.returncode:
        raise AccessError(f"the front door in {host.name} did not reload: {proc.stderr.strip()}",
                          f"read journalctl -u {layout.unit('frontdoor')} inside: invoke host.shell {host.name}")
    return proc.stdout.strip()


def main(argv: list[str]) -> int:
    """`python -m runbook_checks.production.access reload [TRUST_LEVEL]`: on the host itself."""
    if not argv or argv[0] != "reload" or len(argv) > 2:
        print("usage: python -m runbook_checks.production.access reload [TRUST_LEVEL]", file=sys.stderr)
        return 2
    from ..core import layout as layout_mod

    print(reload_frontdoor(layout_mod.production("/", argv[1] if len(argv) > 1 else "")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
