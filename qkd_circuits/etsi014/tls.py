"""Certificates and TLS contexts for the key-delivery sites (mutual TLS; the KME serves TLS 1.3 only).

:func:`init_tls_pki` writes a demo CA (ECDSA P-256), a server+client certificate per KME (SAN
127.0.0.1 and localhost; the KME ID as CN, which is how the peer KME is recognised) and a client
certificate per SAE (the SAE ID as CN).  ECDSA keeps the certificates usable by every TLS stack
here (the OpenSSL in this Python has no ML-DSA in TLS).  Every file goes through
:func:`~qkd_circuits.secretfile.write_secret_file`: mode 0600 (keys and certificates alike),
atomic, never written through a symlink, and existing files are kept unless ``overwrite=True``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..exceptions import ConfigurationError
from ..secretfile import write_secret_file

__all__ = ["init_tls_pki", "server_context", "client_context", "peer_identity"]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def init_tls_pki(directory: str | Path, *, kmes: tuple[str, ...] = ("kme-a", "kme-b"),
                 saes: tuple[str, ...] = ("sae-a", "sae-b"), days: int = 30, overwrite: bool = False) -> Path:
    """Write ``ca.pem`` and ``NAME.pem`` / ``NAME.key`` for every KME and SAE into ``directory``.

    Every file is mode 0600.  If any of them exists already, nothing is written and
    :class:`~qkd_circuits.ConfigurationError` is raised, unless ``overwrite`` (``--force``).
    """
    directory = Path(directory)
    for name in (*kmes, *saes):
        if not name or "/" in name or name == "ca":
            raise ConfigurationError(f"bad certificate name {name!r}")
    targets = [directory / "ca.pem"] + [directory / f"{n}.{ext}" for n in (*kmes, *saes) for ext in ("pem", "key")]
    if not overwrite and (clash := [str(p) for p in targets if p.exists() or p.is_symlink()]):
        raise ConfigurationError(f"refusing to overwrite {clash}; pick an empty directory or pass "
                                 f"overwrite=True (--force)")
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("qkd_circuits demo site CA")).issuer_name(
        _name("qkd_circuits demo site CA")).public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    write_secret_file(directory / "ca.pem", ca.public_bytes(serialization.Encoding.PEM), overwrite=overwrite)
    for name in (*kmes, *saes):
        key = ec.generate_private_key(ec.SECP256R1())
        usage = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if name in kmes else [])
        builder = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                  critical=False))
        sans = [x509.DNSName(name)]
        if name in kmes:
            sans += [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        cert = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False).sign(ca_key, hashes.SHA256())
        write_secret_file(directory / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM), overwrite=overwrite)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        write_secret_file(directory / f"{name}.key", pem, overwrite=overwrite)
    return directory


def server_context(cert: str | Path, key: str | Path, ca: str | Path) -> ssl.SSLContext:
    """TLS 1.3-only server context that requires a client certificate from ``ca``.

    TLS 1.3 only: no RSA key exchange, no renegotiation, forward secrecy and AEAD ciphers
    always; a client offering only TLS 1.2 fails at the handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(cert: str | Path, key: str | Path, ca: str | Path) -> ssl.SSLContext:
    """TLS 1.2+ client context presenting ``cert`` and trusting only ``ca`` (it negotiates
    TLS 1.3 with our KMEs, which accept nothing older; 1.2 is left for other vendors' KMEs)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(ca)
    return ctx


def peer_identity(peercert: dict | None) -> str | None:
    """The CN of a verified peer certificate (as ``ssl`` reports it), or ``None``."""
    if not peercert:
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None
