"""The PKI bootstrap: demo PKI files, credentials, transcript signatures, chain wire format."""

from __future__ import annotations

import base64
import datetime as dt
import os
import stat
import struct

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID, ObjectIdentifier

from qkd_circuits.channel.pki import (
    MAX_CERT_BYTES,
    PartyCredentials,
    chain_from_bytes,
    chain_to_bytes,
    init_demo_pki,
    load_credentials,
    sign_transcript,
    verify_transcript,
)
from qkd_circuits.exceptions import AuthenticationError, ConfigurationError, ProtocolError

UTC = dt.timezone.utc
T0 = dt.datetime(2031, 3, 14, 12, 0, tzinfo=UTC)  # issue time of the shared fixtures
LATER = T0 + dt.timedelta(days=1)
TRANSCRIPT = b"sift:0101|qber:0.021|cascade:..."
CONTEXT = b"round 1: alice->bob"
OPAQUE = "^authentication failed$"
ALGORITHMS = ["ed25519", "ml-dsa-65"]


class PKI:
    def __init__(self, directory, **kwargs):
        self.paths = init_demo_pki(directory, now=kwargs.pop("now", T0), **kwargs)
        self.ca = x509.load_pem_x509_certificate(self.paths["ca"].read_bytes())
        self.alice = load_credentials(directory, "alice")
        self.bob = load_credentials(directory, "bob")


@pytest.fixture(scope="module", params=ALGORITHMS)
def pki(request, tmp_path_factory) -> PKI:
    return PKI(tmp_path_factory.mktemp(request.param), algorithm=request.param)


@pytest.fixture(scope="module")
def other(tmp_path_factory) -> PKI:
    """A second, independent demo PKI: its CA has the very same subject name as the first."""
    return PKI(tmp_path_factory.mktemp("other"))


def verify(pki: PKI, signature: bytes, **overrides) -> None:
    kwargs = dict(transcript=TRANSCRIPT, context=CONTEXT, chain=list(pki.alice.chain),
                  trust_anchor=pki.ca, expected_name="alice", now=LATER)
    kwargs.update(overrides)
    transcript = kwargs.pop("transcript")
    verify_transcript(signature, transcript, **kwargs)


def issue(subject: str, key, issuer_key, issuer: x509.Certificate | None = None, *, ca=False, path_length=None,
          start=T0, days=30, san=True, extra=None) -> x509.Certificate:
    """A test certificate built by hand (Ed25519), for the path checks the demo PKI never produces."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    usage = dict(content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False,
                 encipher_only=False, decipher_only=False)
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer.subject if issuer else name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=not ca, key_cert_sign=ca, crl_sign=ca, **usage), critical=True))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
    if extra is not None:
        b = b.add_extension(extra, critical=True)
    return b.sign(issuer_key, None)


# --- round trips -------------------------------------------------------------------------------

def test_round_trip(pki):
    verify(pki, sign_transcript(pki.alice, TRANSCRIPT, context=CONTEXT))
    verify(pki, sign_transcript(pki.bob, TRANSCRIPT, context=CONTEXT), chain=list(pki.bob.chain), expected_name="bob")


def test_round_trip_at_the_current_time(tmp_path):
    fresh = PKI(tmp_path, now=None)
    signature = sign_transcript(fresh.alice, TRANSCRIPT, context=CONTEXT)
    verify_transcript(signature, TRANSCRIPT, context=CONTEXT, chain=list(fresh.alice.chain),
                      trust_anchor=fresh.ca, expected_name="alice")


def test_chain_may_end_with_the_trust_anchor(pki):
    verify(pki, sign_transcript(pki.alice, TRANSCRIPT, context=CONTEXT), chain=[*pki.alice.chain, pki.ca])


def test_signed_message_format_is_pinned(tmp_path):
    """Ed25519 is deterministic and signs the message itself, so the public key checks the format."""
    creds = PKI(tmp_path).alice
    message = (b"qkd_circuits/pki/transcript-signature/v1\x00" + struct.pack(">Q", len(CONTEXT)) + CONTEXT
               + struct.pack(">Q", len(TRANSCRIPT)) + TRANSCRIPT)
    creds.chain[0].public_key().verify(sign_transcript(creds, TRANSCRIPT, context=CONTEXT), message)


def test_ml_dsa_chain_also_passes_cryptography_verifier(tmp_path):
    """Our ML-DSA-65 certificates are well-formed for the library's RFC 5280 / Web PKI verifier
    (which refuses Ed25519 keys: why pki.py validates paths itself)."""
    fresh = PKI(tmp_path, algorithm="ml-dsa-65")
    verifier = (verification.PolicyBuilder().store(verification.Store([fresh.ca])).time(LATER)
                .build_client_verifier())
    assert verifier.verify(fresh.alice.chain[0], []).subjects == [x509.DNSName("alice")]


# --- every failure is one opaque AuthenticationError ------------------------------------------

def test_failure_is_opaque(pki):
    with pytest.raises(AuthenticationError, match=OPAQUE) as info:
        verify(pki, b"\x00" * 64)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_wrong_trust_anchor(pki, other):
    signature = sign_transcript(pki.alice, TRANSCRIPT, context=CONTEXT)
    with pytest.raises(AuthenticationError, match=OPAQUE):
        verify(pki, signature, trust_anchor=other.ca)


def test_leaf_issued_by_another_ca(pki, other):
    """Other's CA has the same subject name, so only the signature on the leaf tells them apart."""
    signature = sign_transcript(other.alice, TRANSCRIPT, context=CONTEXT)
    for chain in ([*other.alice.chain], [*other.alice.chain, pki.ca]):
        with pytest.raises(AuthenticationError, match=OPAQUE):
            verify(pki, signature, chain=chain)


@pytest.mark.parametrize("when", [T0 - dt.timedelta(minutes=6), T0 + dt.timedelta(days=30, seconds=1)],
                         ids=["not-yet-valid", "expired"])
def test_outside_validity_window(pki, when):
    with pytest.raises(AuthenticationError, match=OPAQUE):
        verify(pki, sign_transcript(pki.alice, TRANSCRIPT, context=CONTEXT), now=when)


def test_issued_in_the_past_or_future_fails_now(tmp_path):
    for name, issued in [("expired", dt.datetime.now(UTC) - dt.timedelta(days=60)),
                         ("future", dt.datetime.now(UTC) + dt.timedelta(days=1))]:
        stale = PKI(tmp_path / name, now=issued, days=30)
        signature = sign_transcript(stale.alice, TRANSCRIPT, context=CONTEXT)
        with pytest.raises(AuthenticationError, match=OPAQUE):
            verify(stale, signature, now=None)


def test_wrong_expected_name(pki):
    signature = sign_transcript(pki.alice, TRANSCRIPT, context=CONTEXT)
    with pytest.raises(AuthenticationError, match=OPAQUE):
        verify(pki, signature, expected_name="bob")
    with pytest.raises(AuthenticationError, match=OPAQUE):  # bob's key, alice's certificate
        verify(pki, sign_transcript(pki.bob, TRANSCRIPT, context=CONTEXT))


@pytest.mark.parametrize("change", ["transcript bit", "context", "boundary", "signature bit", "truncated"])
def test_tampering(pki, change):
    signature = sign_transcript(pki.alice, TRANSCRIPT, context=CONTEXT)
    flipped = bytes([TRANSCRIPT[0] ^ 1]) + TRANSCRIPT[1:]
    kwargs = {"transcript bit": dict(transcript=flipped),
              "context": dict(context=b"round 1: bob->alice"),
              "boundary": dict(context=CONTEXT + TRANSCRIPT[:1], transcript=TRANSCRIPT[1:]),
              "signature bit": dict(signature=signature[:-1] + bytes([signature[-1] ^ 0x80])),
              "truncated": dict(signature=signature[:-1])}[change]
    with pytest.raises(AuthenticationError, match=OPAQUE):
        verify(pki, kwargs.pop("signature", signature), **kwargs)


# --- path rules, on hand-built Ed25519 chains ---------------------------------------------------

@pytest.fixture(scope="module")
def keys():
    return {n: ed25519.Ed25519PrivateKey.generate() for n in ("root", "mid", "leaf", "forged")}


@pytest.mark.parametrize("root_path_length, ok", [(1, True), (None, True), (0, False)])
def test_intermediate_and_path_length(keys, root_path_length, ok):
    root = issue("root", keys["root"], keys["root"], ca=True, path_length=root_path_length)
    mid = issue("mid", keys["mid"], keys["root"], root, ca=True, path_length=0)
    leaf = issue("alice", keys["leaf"], keys["mid"], mid)
    creds = PartyCredentials("alice", [leaf, mid], keys["leaf"])
    args = dict(context=CONTEXT, chain=list(creds.chain), trust_anchor=root, expected_name="alice", now=LATER)
    signature = sign_transcript(creds, TRANSCRIPT, context=CONTEXT)
    if ok:
        verify_transcript(signature, TRANSCRIPT, **args)
    else:
        with pytest.raises(AuthenticationError, match=OPAQUE):
            verify_transcript(signature, TRANSCRIPT, **args)


@pytest.mark.parametrize("case", ["baseline", "leaf as issuer", "no SAN", "unknown critical extension", "anchor is a leaf",
                                  "anchor expired", "anchor alone", "too long"])
def test_path_rules(keys, case):
    root = issue("root", keys["root"], keys["root"], ca=True)
    leaf = issue("alice", keys["leaf"], keys["root"], root)
    signer, chain, anchor = keys["leaf"], [leaf], root
    if case == "leaf as issuer":  # a leaf (CA:FALSE) cannot vouch for another key
        chain = [issue("alice", keys["forged"], keys["leaf"], leaf), leaf]
        signer = keys["forged"]
    elif case == "no SAN":
        chain = [issue("alice", keys["leaf"], keys["root"], root, san=False)]
    elif case == "unknown critical extension":
        extra = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
        chain = [issue("alice", keys["leaf"], keys["root"], root, extra=extra)]
    elif case == "anchor is a leaf":
        anchor = issue("root", keys["root"], keys["root"], ca=False)
        chain = [issue("alice", keys["leaf"], keys["root"], anchor)]
    elif case == "anchor expired":
        anchor = issue("root", keys["root"], keys["root"], ca=True, days=1, start=T0 - dt.timedelta(days=1))
    elif case == "anchor alone":  # the root signs for itself: it is no party's leaf
        chain, signer = [root], keys["root"]
    elif case == "too long":
        chain = [leaf] * 9
    signature = sign_transcript(PartyCredentials("alice", [chain[0]], signer), TRANSCRIPT, context=CONTEXT)
    args = dict(context=CONTEXT, chain=chain, trust_anchor=anchor, expected_name="alice", now=LATER)
    if case == "baseline":  # the positive control: each case below breaks exactly one rule
        verify_transcript(signature, TRANSCRIPT, **args)
        return
    with pytest.raises(AuthenticationError, match=OPAQUE):
        verify_transcript(signature, TRANSCRIPT, **args)


# --- files and credentials --------------------------------------------------------------------

def test_files_and_key_modes(pki):
    assert pki.paths["ca"].name == "ca.pem"
    assert {p.name for p in pki.paths["certificates"].values()} == {"alice.pem", "bob.pem"}
    for key_path in pki.paths["keys"].values():
        assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    leaf = pki.alice.chain[0]
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["alice"]
    assert pki.ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_repr_shows_no_key_material(pki):
    key = pki.alice.private_key
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pem_body = "".join(pki.paths["keys"]["alice"].read_text().splitlines()[1:-1])
    text = repr(pki.alice) + str(pki.alice)
    assert "alice" in text and "private_key" not in text and "PRIVATE" not in text
    for secret in (pem_body, pem_body[-24:], base64.b64encode(der[-32:]).decode(), der[-32:].hex(), str(der[-32:])):
        assert secret not in text


def test_load_credentials_misuse(pki, tmp_path):
    with pytest.raises(ConfigurationError, match="cannot read the credentials of 'carol'"):
        load_credentials(pki.paths["ca"].parent, "carol")
    with pytest.raises(ConfigurationError, match="must be a lowercase DNS label"):
        load_credentials(pki.paths["ca"].parent, "../alice")
    fresh = PKI(tmp_path)
    os.chmod(fresh.paths["keys"]["alice"], 0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        load_credentials(tmp_path, "alice")
    with pytest.raises(ConfigurationError, match="does not match its certificate"):
        PartyCredentials("alice", fresh.alice.chain, fresh.bob.private_key)
    with pytest.raises(ConfigurationError, match="non-empty sequence of x509.Certificate"):
        PartyCredentials("alice", [], fresh.alice.private_key)


@pytest.mark.parametrize("kwargs, match", [
    (dict(algorithm="rsa"), "algorithm 'rsa' is not supported"),
    (dict(parties=("Alice",)), "'Alice' must be a lowercase DNS label"),
    (dict(parties=("ca",)), "'ca' must be a lowercase DNS label"),
    (dict(parties=("alice", "alice")), "must be distinct"),
    (dict(parties="alice"), "non-empty sequence of names"),
    (dict(days=0), r"days must be an integer in \[1, 3650\], got 0"),
    (dict(now=dt.datetime(2031, 1, 1)), "timezone-aware"),
])
def test_init_misuse(tmp_path, kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        init_demo_pki(tmp_path, **kwargs)


def test_init_refuses_to_overwrite(tmp_path):
    init_demo_pki(tmp_path, parties=("alice",))
    with pytest.raises(ConfigurationError, match="refusing to overwrite"):
        init_demo_pki(tmp_path, parties=("alice",))
    init_demo_pki(tmp_path, parties=("alice",), overwrite=True)
    assert stat.S_IMODE(os.stat(tmp_path / "alice.key").st_mode) == 0o600


def test_verify_misuse(pki):
    signature = sign_transcript(pki.alice, TRANSCRIPT, context=CONTEXT)
    with pytest.raises(ConfigurationError, match="context must be non-empty"):
        verify(pki, signature, context=b"")
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        verify(pki, signature, now=dt.datetime(2031, 3, 15))
    with pytest.raises(ConfigurationError, match="expected_name 'Alice'"):
        verify(pki, signature, expected_name="Alice")
    with pytest.raises(TypeError, match="transcript must be bytes"):
        sign_transcript(pki.alice, "text", context=CONTEXT)


# --- chain wire format ------------------------------------------------------------------------

def test_chain_wire_round_trip_and_format(pki, other):
    chain = [pki.alice.chain[0], pki.ca]
    data = chain_to_bytes(chain)
    ders = [c.public_bytes(serialization.Encoding.DER) for c in chain]
    assert data == b"\x02" + b"".join(struct.pack(">I", len(d)) + d for d in ders)
    assert chain_from_bytes(data) == chain
    assert chain_from_bytes(bytearray(data)) == chain


def test_chain_wire_malformed(pki):
    good = chain_to_bytes([pki.alice.chain[0]])
    der = good[5:]
    cases = [
        (b"", "1 to 8 certificates"),
        (b"\x00", "1 to 8 certificates"),
        (b"\x09" + good[1:], "1 to 8 certificates"),
        (good[:3], "truncated in the length of certificate 0"),
        (good[:-1], "truncated in certificate 0"),
        (good + b"\x00", "1 trailing bytes"),
        (b"\x02" + good[1:], "truncated in the length of certificate 1"),
        (b"\x01" + struct.pack(">I", 0), r"length 0, outside \[1, 65536\]"),
        (b"\x01" + struct.pack(">I", MAX_CERT_BYTES + 1) + b"\x00" * 10, "length 65537"),
        (b"\x01" + struct.pack(">I", 5) + b"hello", "not a valid DER certificate"),
        (b"\x01" + struct.pack(">I", len(der) + 2) + der + b"\x00\x00", "not a valid DER certificate"),
        (b"\x08" + b"\x00" * (8 * (4 + MAX_CERT_BYTES) + 1), "too large"),
    ]
    for data, match in cases:
        with pytest.raises(ProtocolError, match=match):
            chain_from_bytes(data)


def test_chain_to_bytes_misuse(pki):
    with pytest.raises(ConfigurationError, match="1 to 8 certificates, got 0"):
        chain_to_bytes([])
    with pytest.raises(ConfigurationError, match="1 to 8 certificates, got 9"):
        chain_to_bytes([pki.ca] * 9)
    with pytest.raises(TypeError, match="x509.Certificate"):
        chain_to_bytes([b"not a cert"])
