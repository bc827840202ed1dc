"""The certificate authority of one installation (Python `cryptography`): its CA, the
front door's server certificate (rotated before it expires), one client certificate per
team, revocation and the CRL the front door checks.

Everything lives in the installation's access directory, beside buildkitd.toml: the CA
key and the server key are 0600 and never leave it; a team's key is made for its bundle
and not kept. `issued.json` records every certificate: serial, team, expiry, revoked."""

from __future__ import annotations

import datetime as _dt
import ipaddress
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ..core import files
from ..core.errors import AccessError
from ..core.layout import Layout
from ..core.results import Outcome

TEAM = re.compile(r"[a-z][a-z0-9-]{0,62}")
CA_DAYS = 3650
SERVER_DAYS = 90
CLIENT_DAYS = 90
RENEW_BEFORE_DAYS = 30  # the server certificate is rotated when it expires sooner than this
ALERT_BEFORE_DAYS = 14  # the CertificateExpiresSoon alert fires this long before any expiry


def access_dir(layout: Layout) -> Path:
    return layout.config_path.parent / "access"


def paths(layout: Layout) -> dict[str, Path]:
    root = access_dir(layout)
    return {"ca": root / "ca.pem", "ca_key": root / "ca.key", "crl": root / "crl.pem", "issued": root / "issued.json",
            "server": root / "server.pem"}


@dataclass
class Issued:
    serial: str
    team: str
    kind: str  # client | server
    not_after: str
    revoked: str = ""  # when, or ""
    fingerprint: str = ""


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def pem(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def check_team(team: str) -> str:
    if not TEAM.fullmatch(team or ""):
        raise AccessError(f"team {team!r} is not a name of lowercase letters, digits and - (starting with a letter)",
                          "name the team like build-platform or web")
    return team


# --------------------------------------------------------------------------------------
# reading what is there
# --------------------------------------------------------------------------------------
def load_ca(layout: Layout):
    """(CA certificate, CA key), or an error saying the access runbook makes them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    p = paths(layout)
    if not p["ca"].exists() or not p["ca_key"].exists():
        raise AccessError(f"there is no certificate authority in {access_dir(layout)}",
                          "apply the access runbook first (it creates the installation's CA)")
    return (x509.load_pem_x509_certificate(p["ca"].read_bytes()),
            serialization.load_pem_private_key(p["ca_key"].read_bytes(), None))


def issued(layout: Layout) -> list[Issued]:
    path = paths(layout)["issued"]
    return [Issued(**row) for row in json.loads(path.read_text())] if path.exists() else []


def _save_issued(layout: Layout, rows: list[Issued]) -> None:
    files.atomic_write(paths(layout)["issued"], json.dumps([asdict(r) for r in rows], indent=2) + "\n", mode=0o600)


def renewal_due(layout: Layout, now: float | None = None) -> tuple[bool, str]:
    """(whether the access runbook must run to renew the front door's certificate, why):
    due when there is none, or it expires within RENEW_BEFORE_DAYS."""
    import time

    now = time.time() if now is None else now
    server = expiries(layout).get("server")
    if server is None:
        return True, f"no front door certificate at {paths(layout)['server']}"
    left = (server - now) / 86400
    when = _dt.datetime.fromtimestamp(server, _dt.timezone.utc).date().isoformat()
    if left > RENEW_BEFORE_DAYS:
        return False, f"the front door's certificate expires on {when}, in {left:.0f} days: nothing to renew" \
                      f" (renewed within {RENEW_BEFORE_DAYS} days of its expiry)"
    return True, f"the front door's certificate expires on {when}, in {left:.1f} days"


def expiries(layout: Layout) -> dict[str, float]:
    """{"ca": epoch, "server": epoch, "client:TEAM": epoch} of every certificate still in
    use (not revoked), for the alert 14 days before any expiry."""
    from cryptography import x509

    out: dict[str, float] = {}
    p = paths(layout)
    for name in ("ca", "server"):
        if p[name].exists():
            out[name] = x509.load_pem_x509_certificate(p[name].read_bytes()).not_valid_after_utc.timestamp()
    for row in issued(layout):
        if row.kind == "client" and not row.revoked:
            when = _dt.datetime.fromisoformat(row.not_after).timestamp()
            out[f"client:{row.team}"] = min(out.get(f"client:{row.team}", when), when)
    return out


# --------------------------------------------------------------------------------------
# the CA, the server certificate, the CRL
# --------------------------------------------------------------------------------------
def new_ca(common_name: str, days: int = CA_DAYS):
    """(certificate, key) of a new self-signed certificate authority."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "buildkit-ops"),
                         x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(minutes=5))
            .not_valid_after(now + _dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def ensure_ca(layout: Layout, name: str, apply: bool) -> Outcome:
    """The installation's CA: made once (key 0600), never replaced by the kit."""
    p = paths(layout)
    if p["ca"].exists() and p["ca_key"].exists():
        cert, _ = load_ca(layout)
        return Outcome.ok(f"CA {cert.subject.rfc4514_string()} until {cert.not_valid_after_utc:%Y-%m-%d}",
                          ca_cert=str(p["ca"]))
    if not apply:
        files.writable_dir(access_dir(layout))
        return Outcome.changed(f"would create the certificate authority of {name} in {access_dir(layout)}",
                               ca_cert=str(p["ca"]))
    cert, key = new_ca(f"buildkit-ops CA {name}")
    access_dir(layout).mkdir(parents=True, exist_ok=True, mode=0o700)
    files.atomic_write(p["ca_key"], pem_key(key), mode=0o600)
    files.atomic_write(p["ca"], pem(cert), mode=0o644)
    write_crl(layout)
    return Outcome.changed(f"created the certificate authority {cert.subject.rfc4514_string()} (key 0600)",
                           ca_cert=str(p["ca"]))


def _sign(layout: Layout, common_name: str, days: int, server_names: list[str] | None = None):
    """(certificate, key) signed by the installation's CA: a client certificate, or a
    server one for these DNS names and IP addresses."""
    return sign(*load_ca(layout), common_name, days, server_names)


def sign(ca_cert, ca_key, common_name: str, days: int, server_names: list[str] | None = None,
         organization: str = ""):
    """(certificate, key) signed by this CA: a client certificate (of `organization`, a
    Kubernetes group, if given), or a server one for these DNS names and IP addresses."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = _key()
    now = _now()
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)] if organization else []
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([*subject, x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if server_names is not None:
        alt: list = []
        for name in server_names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        builder = (builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _record(layout: Layout, cert, team: str, kind: str) -> Issued:
    from cryptography.hazmat.primitives import hashes

    row = Issued(format(cert.serial_number, "x"), team, kind, cert.not_valid_after_utc.isoformat(),
                 fingerprint=cert.fingerprint(hashes.SHA256()).hex())
    _save_issued(layout, [*issued(layout), row])
    return row


def ensure_server_cert(layout: Layout, names: list[str], apply: bool, now: _dt.datetime | None = None) -> Outcome:
    """The front door's certificate (and its key, one 0600 file as HAProxy takes them) for
    these names and addresses; made again when it expires within RENEW_BEFORE_DAYS, or
    when the names change."""
    from cryptography import x509

    path = paths(layout)["server"]
    now = now or _now()
    why = "it does not exist"
    if path.exists():
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have = {str(v) for v in alt.get_values_for_type(x509.DNSName)} | \
               {str(v) for v in alt.get_values_for_type(x509.IPAddress)}
        left = cert.not_valid_after_utc - now
        if have == set(names) and left > _dt.timedelta(days=RENEW_BEFORE_DAYS):
            return Outcome.ok(f"server certificate for {', '.join(sorted(have))} until"
                              f" {cert.not_valid_after_utc:%Y-%m-%d} ({left.days} days)")
        why = (f"it expires in {left.days} days" if have == set(names) else
               f"it names {', '.join(sorted(have))}, not {', '.join(sorted(names))}")
    if not apply:
        return Outcome.changed(f"would issue the front door's certificate for {', '.join(names)} ({why})")
    cert, key = _sign(layout, names[0], SERVER_DAYS, names)
    files.atomic_write(path, pem(cert) + pem_key(key), mode=0o600)
    _record(layout, cert, names[0], "server")
    return Outcome.changed(f"issued the front door's certificate for {', '.join(names)} until"
                           f" {cert.not_valid_after_utc:%Y-%m-%d} ({why})")


def write_crl(layout: Layout) -> Path:
    """The CRL of every revoked certificate, signed by the CA (HAProxy checks it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    ca_cert, ca_key = load_ca(layout)
    now = _now()
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject).last_update(now)
               .next_update(now + _dt.timedelta(days=CA_DAYS)))
    for row in issued(layout):
        if row.revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(int(row.serial, 16))
                .revocation_date(_dt.datetime.fromisoformat(row.revoked)).build())
    path = paths(layout)["crl"]
    from cryptography.hazmat.primitives import serialization

    files.atomic_write(path, builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return path


# --------------------------------------------------------------------------------------
# teams
# --------------------------------------------------------------------------------------
def issue(layout: Layout, team: str, days: int = CLIENT_DAYS) -> dict[str, bytes]:
    """A client bundle for a team: {"ca.pem", "cert.pem", "key.pem"} (the key is not kept)."""
    check_team(team)
    if not 1 <= days <= 825:
        raise AccessError(f"--days {days} is out of range", "give 1 to 825 days")
    cert, key = _sign(layout, team, days)
    _record(layout, cert, team, "client")
    return {"ca.pem": paths(layout)["ca"].read_bytes(), "cert.pem": pem(cert), "key.pem": pem_key(key)}


def revoke(layout: Layout, team: str) -> list[Issued]:
    """Revoke every certificate of the team that is not revoked yet, and rewrite the CRL."""
    check_team(team)
    rows = issued(layout)
    hit = [r for r in rows if r.team == team and r.kind == "client" and not r.revoked]
    if not hit:
        raise AccessError(f"no certificate of team {team!r} is in force",
                          "see the issued certificates: invoke certs.list")
    stamp = _now().isoformat()
    for row in hit:
        row.revoked = stamp
    _save_issued(layout, rows)
    write_crl(layout)
    return hit


BUNDLE = ("ca.pem", "cert.pem", "key.pem")


def check_bundle_dir(out: Path) -> Path:
    """`out` must not hold a bundle already (checked before a certificate is issued)."""
    if any((out / name).exists() for name in BUNDLE):
        raise AccessError(f"{out} already holds a bundle", "choose an empty directory for --out")
    return out


def write_bundle(bundle: dict[str, bytes], out: Path) -> Path:
    """The bundle's files in `out` (the key 0600); `out` must not hold a bundle already."""
    check_bundle_dir(out)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, data in bundle.items():
        files.atomic_write(out / name, data, mode=0o600 if name == "key.pem" else 0o644)
    return out
