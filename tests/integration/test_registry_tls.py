"""A registry that speaks TLS with a private CA: buildkitd trusts it only through the CA
file named in registry_tls (a path in buildkitd.toml, never the certificate itself)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import subprocess
import textwrap

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from runbook_checks.cache import backends, proof, registry
from runbook_checks.core import params
from runbook_checks.core.errors import CacheError
from runbook_checks.daemon import programs, service

from ..conftest import apply, installed_builder, stop_and_remove


def _cert(subject: str, issuer_key, issuer_name, key, ca: bool, san=None):
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory):
    """docker-registry on 127.0.0.1 with a server certificate from a CA made here."""
    d = tmp_path_factory.mktemp("tls")
    ca_key, srv_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("kit test CA", ca_key, None, ca_key, True)
    srv = _cert("127.0.0.1", ca_key, ca.subject, srv_key, False, [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    pem = serialization.Encoding.PEM
    (d / "ca.pem").write_bytes(ca.public_bytes(pem))
    (d / "server.pem").write_bytes(srv.public_bytes(pem))
    (d / "server.key").write_bytes(srv_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    port = service.free_port()
    (d / "config.yml").write_text(textwrap.dedent(f"""\
        version: 0.1
        storage:
          filesystem:
            rootdirectory: {d}/data
        http:
          addr: 127.0.0.1:{port}
          tls:
            certificate: {d}/server.pem
            key: {d}/server.key
        """))
    proc = subprocess.Popen([str(registry.binary()), "serve", str(d / "config.yml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        yield port, d / "ca.pem"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_the_ca_file_is_what_lets_buildkitd_use_a_tls_registry(ci_daemon, runs_base, tls_registry, tmp_path):
    port, ca = tls_registry
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
    (ctx / "a").write_text("tls\n")
    backend = backends.make("registry", f"127.0.0.1:{port}/kit/cache:tls")
    # the ci daemon has no entry for this host: BuildKit talks plain HTTP to a loopback
    # registry by default, and the TLS server refuses it
    with pytest.raises(CacheError, match="failed: error: failed to solve: .*400 Bad Request"):
        proof.export_cache(ci_daemon, backend, ctx, {})
    layout = installed_builder("bktls-", runs_base)
    try:
        tls = json.dumps({f"127.0.0.1:{port}": {"ca": str(ca)}})
        result = apply("configure", layout.state_dir, f"registry_tls={tls}", base=runs_base)
        assert result.report.status != "failed", result.report.to_json()
        assert f'ca = ["{ca}"]' in layout.config_path.read_text()
        assert proof.work_steps(proof.export_cache(layout, backend, ctx, {}))
        assert programs.answers(f"http://127.0.0.1:{port}/v2/") is False  # it speaks TLS only
        # the cache runbooks' check before any build speaks to it as buildkitd will: HTTPS with that CA
        ref = f"127.0.0.1:{port}/kit/cache:tls"
        with_ca = params.validate({"cache_ref": ref, "registry_tls": {f"127.0.0.1:{port}": {"ca": str(ca)}}})
        assert proof.ensure_backend(layout, with_ca, apply=False).status == "ok"
        with pytest.raises(CacheError, match=f"does not answer http://127.0.0.1:{port}/v2/"):
            proof.ensure_backend(layout, params.validate({"cache_ref": ref}), apply=False)
        missing = json.dumps({f"127.0.0.1:{port}": {"ca": str(tmp_path / "nowhere.pem")}})
        before = layout.config_path.read_text()
        refused = apply("configure", layout.state_dir, f"registry_tls={missing}", base=runs_base)
        assert refused.report.status == "failed" and "nowhere.pem does not exist" in refused.report.steps[-1].message
        assert layout.config_path.read_text() == before  # nothing written
    finally:
        stop_and_remove(layout.state_dir)
