"""ML-KEM-768 + X25519 wrapping of delivered keys (qkd_circuits.etsi014.wrap)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets

import pytest
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from qkd_circuits.etsi014 import wrap as w
from qkd_circuits.exceptions import AuthenticationError, ConfigurationError, ProtocolError, RecordError

KEY_ID = "550e8400-e29b-41d4-a716-446655440000"


@pytest.fixture(scope="module")
def pair():
    return w.generate_wrapping_keypair()


def test_round_trip_for_every_supported_size(pair):
    private, public = pair
    for size in (1, 16, 32, 64, 1024):
        key = secrets.token_bytes(size)
        blob = w.wrap_key(key, key_ID=KEY_ID, recipient_public=public)
        assert len(blob) == 6 + 1088 + 32 + size + 16
        assert w.unwrap_key(blob, key_ID=KEY_ID, private=private) == key
    again = [w.wrap_key(bytes(32), key_ID=KEY_ID, recipient_public=public) for _ in range(2)]
    assert again[0] != again[1]  # a fresh encapsulation and ephemeral key every time


def test_key_formats(pair):
    private, public = pair
    assert len(private) == w.PRIVATE_BYTES == 102 and private[:6] == b"QKWK\x01\x01"
    assert len(public) == w.PUBLIC_BYTES == 1222 and public[:6] == b"QKWK\x01\x02"
    assert w.public_key_of(private) == public
    # The private form is the FIPS 203 seed and the X25519 scalar: cryptography re-derives the same public parts.
    mlkem = MLKEM768PrivateKey.from_seed_bytes(private[6:70])
    x = X25519PrivateKey.from_private_bytes(private[70:])
    assert public[6:1190] == mlkem.public_key().public_bytes_raw()
    assert public[1190:] == x.public_key().public_bytes_raw()


def _hkdf_sha256(ikm: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 with the standard library only (salt absent: HashLen zero bytes)."""
    prk = hmac.new(bytes(32), ikm, hashlib.sha256).digest()
    out, block = b"", b""
    for i in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
    return out[:length]


def test_the_frame_and_derivation_match_an_independent_computation(pair):
    # Known-answer-ish: the blob _seal makes from a fixed ephemeral X25519 key and a real ML-KEM
    # encapsulation equals one built here from the module docstring's equations.
    private, public = pair
    lp = lambda b: len(b).to_bytes(4, "big") + b  # noqa: E731
    ek, x_pub = public[6:1190], public[1190:]
    x_obj = X25519PublicKey.from_public_bytes(x_pub)
    ss_kem, ct = MLKEM768PrivateKey.from_seed_bytes(private[6:70]).public_key().encapsulate()
    ephemeral = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    epk = ephemeral.public_key().public_bytes_raw()
    key = bytes(range(32))
    blob = w._seal(key, KEY_ID.encode(), ek, x_pub, x_obj, ss_kem, ct, ephemeral)

    ss_x = ephemeral.exchange(x_obj)
    context = (lp(b"qkd_circuits wrapped key delivery v1") + lp(KEY_ID.encode())
               + lp(b"mlkem768-x25519-hkdf-aesgcm/v1") + lp(ek) + lp(x_pub) + lp(ct) + lp(epk))
    okm = _hkdf_sha256(lp(ss_kem) + lp(ss_x), hashlib.sha256(context).digest(), 44)
    header = b"QKWR\x01\x01"
    expected = header + ct + epk + AESGCM(okm[:32]).encrypt(okm[32:], key, header + KEY_ID.encode())
    assert blob == expected
    assert w.unwrap_key(blob, key_ID=KEY_ID, private=private) == key


def test_a_change_to_any_byte_fails(pair):
    private, public = pair
    blob = w.wrap_key(secrets.token_bytes(32), key_ID=KEY_ID, recipient_public=public)
    for i in range(len(blob)):  # header, ML-KEM ciphertext, ephemeral X25519, ciphertext, tag
        bad = bytearray(blob)
        bad[i] ^= 0x01
        expected = ProtocolError if i < 6 else AuthenticationError  # a bad header is not our format
        with pytest.raises(expected):
            w.unwrap_key(bytes(bad), key_ID=KEY_ID, private=private)


def test_tampering_says_nothing_more_than_authentication_failed(pair):
    private, public = pair
    blob = bytearray(w.wrap_key(bytes(32), key_ID=KEY_ID, recipient_public=public))
    blob[6 + 1088:6 + 1088 + 32] = bytes(32)  # a low-order ephemeral point: X25519 refuses it
    for tampered in (bytes(blob), w.wrap_key(bytes(32), key_ID=KEY_ID, recipient_public=public)[:-1]):
        with pytest.raises(AuthenticationError) as err:  # the second: a shorter key, still well formed
            w.unwrap_key(tampered, key_ID=KEY_ID, private=private)
        assert str(err.value) == "authentication failed" and err.value.__cause__ is None


def test_wrong_key_ID_and_wrong_recipient_fail(pair):
    private, public = pair
    blob = w.wrap_key(secrets.token_bytes(32), key_ID=KEY_ID, recipient_public=public)
    with pytest.raises(AuthenticationError):
        w.unwrap_key(blob, key_ID=KEY_ID.replace("0000", "0001"), private=private)
    other, _ = w.generate_wrapping_keypair()
    with pytest.raises(AuthenticationError):
        w.unwrap_key(blob, key_ID=KEY_ID, private=other)


def test_truncated_oversized_and_foreign_blobs_are_malformed(pair):
    private, public = pair
    blob = w.wrap_key(b"k", key_ID=KEY_ID, recipient_public=public)  # the shortest valid blob
    assert len(blob) == w.MIN_BLOB_BYTES
    for short in (b"", blob[:5], blob[:-1]):
        with pytest.raises(ProtocolError, match="truncated"):
            w.unwrap_key(short, key_ID=KEY_ID, private=private)
    with pytest.raises(ProtocolError, match="exceeds"):
        w.unwrap_key(blob + bytes(w.MAX_KEY_BYTES), key_ID=KEY_ID, private=private)
    with pytest.raises(ProtocolError, match="bad magic"):
        w.unwrap_key(b"QKDH" + blob[4:], key_ID=KEY_ID, private=private)
    with pytest.raises(ProtocolError, match="version 2, suite 1"):
        w.unwrap_key(blob[:4] + b"\x02" + blob[5:], key_ID=KEY_ID, private=private)
    with pytest.raises(TypeError):
        w.unwrap_key("not bytes", key_ID=KEY_ID, private=private)


def test_bad_inputs_to_wrap_are_refused(pair):
    private, public = pair
    with pytest.raises(ConfigurationError, match="1 to 1024 bytes, got 0"):
        w.wrap_key(b"", key_ID=KEY_ID, recipient_public=public)
    with pytest.raises(ConfigurationError, match="1 to 1024 bytes, got 1025"):
        w.wrap_key(bytes(1025), key_ID=KEY_ID, recipient_public=public)
    with pytest.raises(ConfigurationError, match="key_ID must be 1 to 255"):
        w.wrap_key(bytes(32), key_ID="", recipient_public=public)
    with pytest.raises(TypeError):
        w.wrap_key(bytes(32), key_ID=5, recipient_public=public)
    with pytest.raises(ConfigurationError, match="not a qkd_circuits v1 wrapping public key"):
        w.wrap_key(bytes(32), key_ID=KEY_ID, recipient_public=private)  # a private key where a public one goes
    with pytest.raises(ConfigurationError, match="ML-KEM-768 or X25519"):
        w.wrap_key(bytes(32), key_ID=KEY_ID, recipient_public=public[:6] + b"\xff" * 1184 + public[-32:])
    with pytest.raises(ConfigurationError, match="low order"):
        w.wrap_key(bytes(32), key_ID=KEY_ID, recipient_public=public[:-32] + bytes(32))
    with pytest.raises(ConfigurationError, match="wrapping private key"):
        w.unwrap_key(w.wrap_key(bytes(32), key_ID=KEY_ID, recipient_public=public), key_ID=KEY_ID, private=public)


def test_save_and_load_the_key_files(pair, tmp_path):
    private, public = pair
    path = w.save_wrapping_key(tmp_path / "sae-a.wrap", private)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert w.load_wrapping_key(path) == private
    with pytest.raises(ConfigurationError, match="refusing to overwrite"):
        w.save_wrapping_key(path, private)
    pub = w.save_wrapping_public(tmp_path / "sae-a.wrap.pub", public)
    assert w.load_wrapping_public(pub) == public
    with pytest.raises(ConfigurationError, match="wrapping private key"):
        w.load_wrapping_key(pub)
    with pytest.raises(ConfigurationError):
        w.save_wrapping_key(tmp_path / "x", public)  # never saves what would not load
    assert not (tmp_path / "x").exists()
    os.symlink(path, tmp_path / "link")
    with pytest.raises(RecordError, match="symbolic link"):
        w.load_wrapping_key(tmp_path / "link")
    with pytest.raises(RecordError, match="no file"):
        w.load_wrapping_key(tmp_path / "missing")


def test_wrap_for_sae_makes_etsi_key_objects_the_client_unwraps(pair):
    private, public = pair
    keys = [(f"{KEY_ID[:-1]}{i}", secrets.token_bytes(32)) for i in range(3)]
    objects = w.wrap_for_sae(keys, public)
    answer = json.loads(json.dumps({"keys": objects}))  # what goes over the wire, as JSON
    for (key_ID, key), obj in zip(keys, answer["keys"]):
        assert set(obj) == {"key_ID", "key", "key_extension"} and obj["key_ID"] == key_ID
        assert obj["key_extension"] == {"qkd_circuits_wrap": "mlkem768-x25519-hkdf-aesgcm/v1"}
        assert key.hex() not in json.dumps(obj) and base64.b64encode(key).decode() not in json.dumps(obj)
        assert w.unwrap_delivered(obj, private) == key
    swapped = dict(answer["keys"][0], key=answer["keys"][1]["key"])  # a blob moved to another key_ID
    with pytest.raises(AuthenticationError):
        w.unwrap_delivered(swapped, private)
    assert w.wrap_for_sae([], public) == []


@pytest.mark.parametrize("change, message", [
    (lambda o: {k: v for k, v in o.items() if k != "key_extension"}, "not wrapped"),
    (lambda o: dict(o, key_extension={"qkd_circuits_wrap": "other/v9"}), "wrapped with 'other/v9'"),
    (lambda o: dict(o, key="not base64!"), "not valid base64"),
    (lambda o: dict(o, key="A" * 10_000), "exceeds"),
    (lambda o: dict(o, key_ID=7), "string key_ID"),
    (lambda o: dict(o, key_ID=""), "key_ID is not 1 to 255"),
    (lambda o: dict(o, key=base64.b64encode(b"short").decode()), "truncated"),
    (lambda o: [o], "is a JSON object"),
])
def test_unwrap_delivered_rejects_malformed_key_objects(pair, change, message):
    private, public = pair
    [obj] = w.wrap_for_sae([(KEY_ID, bytes(32))], public)
    with pytest.raises(ProtocolError, match=message):
        w.unwrap_delivered(change(obj), private)


def test_no_key_bytes_in_any_error(pair):
    private, public = pair
    key = secrets.token_bytes(32)
    blob = w.wrap_key(key, key_ID=KEY_ID, recipient_public=public)
    messages = []
    # Flip the last byte (replacing it by 0x00 left it unchanged once in 256 runs: a flake).
    for call in (lambda: w.unwrap_key(blob[:-1] + bytes([blob[-1] ^ 1]), key_ID=KEY_ID, private=private),
                 lambda: w.unwrap_key(blob, key_ID="other", private=private),
                 lambda: w.unwrap_key(blob, key_ID=KEY_ID, private=private[:-1]),
                 lambda: w.wrap_key(key, key_ID=KEY_ID, recipient_public=public[:-1])):
        with pytest.raises((AuthenticationError, ConfigurationError)) as err:
            call()
        messages.append(str(err.value) + repr(err.value))
    text = "\n".join(messages)
    for secret in (key, private, private[6:70], private[70:]):
        assert secret.hex() not in text and repr(secret)[2:-1] not in text
