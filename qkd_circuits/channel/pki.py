"""PKI bootstrap of the authenticated classical channel: X.509 chains and transcript signatures.

The first round has no pool of shared key bits yet, so its transcript is authenticated by a
signature under a small X.509 PKI; later rounds use Wegman–Carter tags with pad bits from the pool
(see :mod:`qkd_circuits.channel.authenticated`).  Algorithms: Ed25519 (RFC 8410) and ML-DSA-65 (FIPS 204; X.509
identifiers per RFC 9881, OID 2.16.840.1.101.3.4.3.18).  `cryptography` ≥ 48 builds, signs and
parses ML-DSA-65 certificates natively, so both algorithms use the same plain X.509 path — no
side binding of a post-quantum key to a classical certificate is needed.

Names: a party is named by a lowercase DNS label (``alice``, ``bob-2``).  Its certificate carries
the name as the subject CN *and* as a SAN dNSName; the SAN is the identity that
:func:`verify_transcript` matches (as RFC 6125 does), and a CN, when present, must agree.

Path validation is explicit code below, not ``cryptography.x509.verification``: that verifier
implements the CA/B Forum Web PKI profile and rejects Ed25519 keys ("Forbidden public key
algorithm"), with no API to allow them (pyca/cryptography#13391).  It does accept ML-DSA-65, and
a test checks that our ML-DSA demo chains pass its ``ClientVerifier`` too; one explicit path for
both algorithms keeps their semantics identical.  The checks: each certificate is signed by the
next and the last by the trust anchor; every issuer is a CA (basicConstraints cA, keyUsage
keyCertSign, pathLenConstraint honoured); the leaf is not a CA and has keyUsage digitalSignature;
no unknown critical extension; every certificate, the anchor included, is valid at ``now``; the
name matches.  No revocation (a demo PKI has no CRL/OCSP): keep certificates short-lived.

Signed message (one format for both algorithms, unambiguous by construction)::

    b"qkd_circuits/pki/transcript-signature/v1\\x00" || u64(len(context)) || context
                                                   || u64(len(transcript)) || transcript

with big-endian u64 lengths.  ``context`` should name the session (fresh nonces from both
parties), the round and the direction, so that a signature can be replayed neither into another
session or round nor back to its sender.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from ..exceptions import AuthenticationError, ConfigurationError, ProtocolError
from ..secretfile import write_secret_file

__all__ = ["PartyCredentials", "init_demo_pki", "load_credentials", "sign_transcript", "verify_transcript",
           "chain_to_bytes", "chain_from_bytes", "ALGORITHMS", "MAX_CHAIN_CERTS", "MAX_CERT_BYTES"]

log = logging.getLogger(__name__)

PrivateKey = Union[ed25519.Ed25519PrivateKey, mldsa.MLDSA65PrivateKey]
ALGORITHMS = {"ed25519": ed25519.Ed25519PrivateKey, "ml-dsa-65": mldsa.MLDSA65PrivateKey}
MAX_CHAIN_CERTS = 8
MAX_CERT_BYTES = 64 * 1024
_LABEL = b"qkd_circuits/pki/transcript-signature/v1\x00"
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")  # one DNS label (RFC 1123), lowercase
_RESERVED = {"ca"}  # would collide with ca.pem
_BACKDATE = dt.timedelta(minutes=5)  # tolerate clock skew between the two parties' hosts
_KNOWN_CRITICAL = {ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE, ExtensionOID.EXTENDED_KEY_USAGE,
                   ExtensionOID.SUBJECT_ALTERNATIVE_NAME}


def _check_name(name: object, what: str = "party name") -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name in _RESERVED:
        raise ConfigurationError(f"{what} {name!r} must be a lowercase DNS label (a-z, 0-9, '-', at most "
                                 f"63 characters, not starting or ending with '-') and not 'ca'")
    return name


def _check_time(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.timezone.utc)
    if not isinstance(now, dt.datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise ConfigurationError(f"now must be a timezone-aware datetime, got {now!r}; "
                                 f"use datetime.now(timezone.utc)")
    return now.astimezone(dt.timezone.utc)


def _key_usage(*, signer: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=signer, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=not signer,
                         crl_sign=not signer, encipher_only=False, decipher_only=False)


def init_demo_pki(directory: str | os.PathLike, *, parties: Sequence[str] = ("alice", "bob"),
                  algorithm: str = "ed25519", days: int = 30, now: dt.datetime | None = None,
                  overwrite: bool = False) -> dict:
    """Write a demo root CA and one certificate and private key per party into ``directory``.

    Files: ``ca.pem`` (the trust anchor), ``<party>.pem`` (its certificate) and ``<party>.key``
    (PKCS#8 PEM, unencrypted), all mode 0600, each written atomically and never through a
    symlink (:func:`~qkd_circuits.secretfile.write_secret_file`); if any exists, nothing is
    written unless ``overwrite``.  The CA's private key is discarded once the parties are
    issued: to add a party, make a new PKI.  All keys use ``algorithm`` (one of
    :data:`ALGORITHMS`).  Certificates are valid from ``now`` − 5 min (clock skew) for ``days``.
    A demo PKI is for study: in production the CA key lives offline and keys are made where used.

    Returns ``{"ca": Path, "certificates": {party: Path}, "keys": {party: Path}}``.
    """
    if algorithm not in ALGORITHMS:
        raise ConfigurationError(f"algorithm {algorithm!r} is not supported; choose one of {sorted(ALGORITHMS)}")
    if isinstance(parties, str) or not parties:
        raise ConfigurationError(f"parties must be a non-empty sequence of names, got {parties!r}")
    names = [_check_name(p) for p in parties]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"party names must be distinct, got {list(parties)!r}")
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3650:
        raise ConfigurationError(f"days must be an integer in [1, 3650], got {days!r}")
    start = _check_time(now).replace(microsecond=0) - _BACKDATE
    end = start + _BACKDATE + dt.timedelta(days=days)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"ca": out / "ca.pem", "certificates": {n: out / f"{n}.pem" for n in names},
             "keys": {n: out / f"{n}.key" for n in names}}
    targets = [paths["ca"], *paths["certificates"].values(), *paths["keys"].values()]
    if not overwrite and (clash := [str(p) for p in targets if p.exists() or p.is_symlink()]):
        raise ConfigurationError(f"refusing to overwrite {clash}; pick an empty directory or pass overwrite=True")

    generate = ALGORITHMS[algorithm].generate
    ca_key = generate()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"qkd_circuits demo CA ({algorithm})")])

    def builder(subject: x509.Name, public_key) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name).public_key(public_key)
                .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))

    ca = (builder(ca_name, ca_key.public_key())
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(_key_usage(signer=False), critical=True)
          .sign(ca_key, None))
    write_secret_file(paths["ca"], ca.public_bytes(serialization.Encoding.PEM), overwrite=overwrite)
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    for name in names:
        key = generate()
        cert = (builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key.public_key())
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(_key_usage(signer=True), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                                      ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                .add_extension(aki, critical=False)
                .sign(ca_key, None))
        write_secret_file(paths["certificates"][name], cert.public_bytes(serialization.Encoding.PEM),
                          overwrite=overwrite)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        write_secret_file(paths["keys"][name], pem, overwrite=overwrite)
    return paths


@dataclass(frozen=True)
class PartyCredentials:
    """A party's name, certificate chain (leaf first, trust anchor excluded) and private key.

    The key never appears in ``repr``/``str`` and takes no part in ``==``.  The chain is stored as
    a tuple (a list is accepted); the constructor checks that the key matches the leaf.
    """

    name: str
    chain: tuple[x509.Certificate, ...]
    private_key: PrivateKey = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        chain = tuple(self.chain)
        if not chain or not all(isinstance(c, x509.Certificate) for c in chain):
            raise ConfigurationError("chain must be a non-empty sequence of x509.Certificate, leaf first")
        object.__setattr__(self, "chain", chain)
        if not isinstance(self.private_key, tuple(ALGORITHMS.values())):
            raise ConfigurationError(f"private key type {type(self.private_key).__name__} is not supported; "
                                     f"use one of {sorted(ALGORITHMS)}")
        raw = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if self.private_key.public_key().public_bytes(*raw) != chain[0].public_key().public_bytes(*raw):
            raise ConfigurationError(f"the private key of {self.name!r} does not match its certificate")


def load_credentials(directory: str | os.PathLike, name: str) -> PartyCredentials:
    """Load ``<name>.pem`` (leaf first, then any intermediates) and ``<name>.key`` from ``directory``.

    Refuses (on POSIX) a key file readable by group or others, as ssh does: ``chmod 600`` it.
    """
    _check_name(name)
    cert_path, key_path = Path(directory) / f"{name}.pem", Path(directory) / f"{name}.key"
    try:
        cert_pem, key_pem = cert_path.read_bytes(), key_path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the credentials of {name!r} ({exc}); "
                                 f"create them with `qkd pki init`") from None
    if os.name == "posix" and key_path.stat().st_mode & 0o077:
        raise ConfigurationError(f"{key_path} is readable by group or others; run: chmod 600 {key_path}")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise ConfigurationError(f"{cert_path} holds no valid PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):  # no detail: the message must not echo key material
        raise ConfigurationError(f"{key_path} is not an unencrypted PKCS#8 PEM private key") from None
    return PartyCredentials(name, chain, key)


def _message(transcript: bytes, context: bytes) -> bytes:
    for arg, value in (("transcript", transcript), ("context", context)):
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"{arg} must be bytes, got {type(value).__name__}")
    if not len(context):
        raise ConfigurationError("context must be non-empty, e.g. b'round 7: alice->bob'")
    ctx, data = bytes(context), bytes(transcript)
    return b"".join((_LABEL, struct.pack(">Q", len(ctx)), ctx, struct.pack(">Q", len(data)), data))


def sign_transcript(credentials: PartyCredentials, transcript: bytes, *, context: bytes) -> bytes:
    """Sign ``transcript`` under ``context`` (see the module docstring for the signed message).

    Ed25519 signatures are 64 bytes and deterministic; ML-DSA-65 ones are 3309 bytes (hedged).
    """
    if not isinstance(credentials, PartyCredentials):
        raise TypeError(f"credentials must be PartyCredentials, got {type(credentials).__name__}")
    return credentials.private_key.sign(_message(transcript, context))


class _Reject(Exception):
    """Internal: one failed check, named for the debug log; never leaves this module."""


def _extension(cert: x509.Certificate, kind: type):
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _validate_path(chain: Sequence[x509.Certificate], anchor: x509.Certificate, name: str,
                   now: dt.datetime) -> x509.Certificate:
    path = list(chain)
    if path and path[-1] == anchor:  # a sender may include the root; it adds nothing
        path.pop()
    if not 1 <= len(path) <= MAX_CHAIN_CERTS or not all(isinstance(c, x509.Certificate) for c in path):
        raise _Reject("chain length or type")
    path.append(anchor)
    for cert in path:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise _Reject("validity window")
        if any(e.critical and e.oid not in _KNOWN_CRITICAL for e in cert.extensions):
            raise _Reject("unknown critical extension")
    for depth, (cert, issuer) in enumerate(zip(path, path[1:])):
        cert.verify_directly_issued_by(issuer)  # issuer name and signature; raises on mismatch
        constraints, usage = _extension(issuer, x509.BasicConstraints), _extension(issuer, x509.KeyUsage)
        if constraints is None or not constraints.ca or usage is None or not usage.key_cert_sign:
            raise _Reject("issuer is not a CA")
        if constraints.path_length is not None and depth > constraints.path_length:
            raise _Reject("path length")  # depth = number of intermediates below this issuer
    leaf = path[0]
    constraints, usage = _extension(leaf, x509.BasicConstraints), _extension(leaf, x509.KeyUsage)
    if (constraints is not None and constraints.ca) or usage is None or not usage.digital_signature:
        raise _Reject("leaf usage")
    alt_names = _extension(leaf, x509.SubjectAlternativeName)
    dns = [d.lower() for d in alt_names.get_values_for_type(x509.DNSName)] if alt_names is not None else []
    common = [str(a.value).lower() for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if name not in dns or any(c != name for c in common):  # SAN names the party; a CN must agree
        raise _Reject("name")
    return leaf


def verify_transcript(signature: bytes, transcript: bytes, *, context: bytes, chain: Sequence[x509.Certificate],
                      trust_anchor: x509.Certificate, expected_name: str, now: dt.datetime | None = None) -> None:
    """Check that ``expected_name``'s certificate chain leads to ``trust_anchor`` and signed this.

    ``chain`` is the peer's (leaf first, from :func:`chain_from_bytes`); ``now`` defaults to the
    current UTC time.  Returns ``None``; every failure — foreign CA, expired or not-yet-valid
    certificate, wrong name, bad signature, tampered transcript or context — raises the same
    :class:`AuthenticationError` with no detail.  Bad local arguments (``expected_name``, an empty
    ``context``, a naive ``now``) raise :class:`ConfigurationError`; wrong types ``TypeError``.
    """
    _check_name(expected_name, "expected_name")
    when = _check_time(now)
    message = _message(transcript, context)
    if not isinstance(trust_anchor, x509.Certificate):
        raise TypeError(f"trust_anchor must be an x509.Certificate, got {type(trust_anchor).__name__}")
    if not isinstance(signature, (bytes, bytearray, memoryview)):
        raise TypeError(f"signature must be bytes, got {type(signature).__name__}")
    try:
        public_key = _validate_path(chain, trust_anchor, expected_name, when).public_key()
        if not isinstance(public_key, (ed25519.Ed25519PublicKey, mldsa.MLDSA65PublicKey)):
            raise _Reject("leaf key algorithm")
        public_key.verify(bytes(signature), message)
    except Exception as exc:  # noqa: BLE001 - any failure at all is one opaque answer
        log.debug("transcript verification failed at: %s", exc if isinstance(exc, _Reject) else type(exc).__name__)
        raise AuthenticationError() from None


def chain_to_bytes(chain: Sequence[x509.Certificate]) -> bytes:
    """Canonical wire form: ``u8 count || (u32 length || DER)*``, big-endian, leaf first.

    At most :data:`MAX_CHAIN_CERTS` certificates of at most :data:`MAX_CERT_BYTES` bytes each.
    """
    certs = list(chain)
    if not all(isinstance(c, x509.Certificate) for c in certs):
        raise TypeError("chain must hold x509.Certificate objects")
    if not 1 <= len(certs) <= MAX_CHAIN_CERTS:
        raise ConfigurationError(f"a chain holds 1 to {MAX_CHAIN_CERTS} certificates, got {len(certs)}")
    parts = [bytes([len(certs)])]
    for cert in certs:
        der = cert.public_bytes(serialization.Encoding.DER)
        if len(der) > MAX_CERT_BYTES:
            raise ConfigurationError(f"a certificate of {len(der)} bytes exceeds {MAX_CERT_BYTES}")
        parts += [struct.pack(">I", len(der)), der]
    return b"".join(parts)


def chain_from_bytes(data: bytes) -> list[x509.Certificate]:
    """Parse :func:`chain_to_bytes` output; malformed, truncated, non-canonical or oversized input
    raises :class:`ProtocolError` (and nothing else, whatever the bytes; a non-bytes argument is a
    ``TypeError``).  Parsing proves nothing: verify with :func:`verify_transcript`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > 1 + MAX_CHAIN_CERTS * (4 + MAX_CERT_BYTES):
        raise ProtocolError(f"certificate chain of {len(data)} bytes is too large")
    if not data or not 1 <= data[0] <= MAX_CHAIN_CERTS:
        raise ProtocolError(f"certificate chain must hold 1 to {MAX_CHAIN_CERTS} certificates")
    chain, pos = [], 1
    for index in range(data[0]):
        if pos + 4 > len(data):
            raise ProtocolError(f"certificate chain truncated in the length of certificate {index}")
        (size,) = struct.unpack_from(">I", data, pos)
        if not 1 <= size <= MAX_CERT_BYTES:
            raise ProtocolError(f"certificate {index} has length {size}, outside [1, {MAX_CERT_BYTES}]")
        der = data[pos + 4:pos + 4 + size]
        if len(der) != size:
            raise ProtocolError(f"certificate chain truncated in certificate {index}")
        try:
            cert = x509.load_der_x509_certificate(der)
            canonical = cert.public_bytes(serialization.Encoding.DER) == der
        except (ValueError, x509.InvalidVersion):  # InvalidVersion: an X.509 version other than 1 or 3
            canonical = False
        if not canonical:
            raise ProtocolError(f"certificate {index} is not a valid DER certificate")
        chain.append(cert)
        pos += 4 + size
    if pos != len(data):
        raise ProtocolError(f"{len(data) - pos} trailing bytes after the certificate chain")
    return chain
