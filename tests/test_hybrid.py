"""Hybrid QKD + ML-KEM-768 (+ X25519) key establishment: agreement, binding, confirmation, misuse.

The reference combiner below is written from the module docstring and RFC 5869 with ``hashlib``
and ``hmac`` only; tests/vectors/hybrid.json was produced by it, not by qkd_circuits.hybrid.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import pickle
import struct
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qkd_circuits import hybrid as hy
from qkd_circuits.exceptions import AuthenticationError, ConfigurationError, ProtocolError

VECTORS = json.loads((Path(__file__).parent / "vectors" / "hybrid.json").read_text())
QKD_KEY = bytes.fromhex("8f1c" * 16)
KEY_ID = "0f4e6a3c-9a55-4b1f-8c0e-3d2b7a9e5c41"
MLKEM_SEED = bytes(range(64))  # FIPS 203 (d || z) seed for deterministic key generation
X25519_PRIVATE = bytes(range(100, 132))
HEADER = struct.Struct(">4sBBI")


# --- an independent reference (RFC 5869 with hmac + hashlib) ------------------------------------

def hkdf_extract(salt: bytes | None, ikm: bytes) -> bytes:
    return hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()  # RFC 5869 §2.2: no salt = zeros


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, counter = b"", b"", 1  # RFC 5869 §2.3: T(i) = HMAC(PRK, T(i-1) | info | i)
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out, counter = out + block, counter + 1
    return out[:length]


def lp(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def reference_combine(inputs: dict) -> dict:
    h = {k[:-4]: (bytes.fromhex(v) if v is not None else None) for k, v in inputs.items() if k.endswith("_hex")}
    with_x = h["x25519_secret"] is not None
    secrets = lp(h["qkd_key"]) + lp(h["mlkem_secret"]) + (lp(h["x25519_secret"]) if with_x else b"")
    context = (lp(inputs["label"].encode()) + lp(inputs["key_ID"].encode()) + lp(inputs["suite"].encode())
               + struct.pack(">H", inputs["length"]) + lp(h["mlkem_public_key"])
               + (lp(h["initiator_x25519"]) if with_x else b"") + lp(h["mlkem_ciphertext"])
               + (lp(h["responder_x25519"]) if with_x else b""))
    th = hashlib.sha256(context).digest()
    prk = hkdf_extract(None, secrets)
    return {"transcript_hash_hex": th.hex(), "key_hex": hkdf_expand(prk, b"key" + th, inputs["length"]).hex(),
            "tag_I_hex": hkdf_expand(prk, b"initiator confirm" + th, 32).hex(),
            "tag_R_hex": hkdf_expand(prk, b"responder confirm" + th, 32).hex()}


def reference_offer(mlkem_pk: bytes, x25519_pk: bytes, key_ID: str | bytes, length: int, suite: int = 0) -> bytes:
    raw = key_ID.encode() if isinstance(key_ID, str) else key_ID
    body = (bytes([suite or (2 if x25519_pk else 1)]) + struct.pack(">H", length) + struct.pack(">H", len(raw)) + raw
            + lp(mlkem_pk) + lp(x25519_pk))
    return HEADER.pack(b"QKDH", 1, 1, len(body)) + body


def split_answer(answer: bytes) -> tuple[bytes, bytes, bytes]:
    magic, version, kind, n = HEADER.unpack_from(answer)
    assert (magic, version, kind, n) == (b"QKDH", 1, 2, len(answer) - HEADER.size)
    fields, pos = [], HEADER.size
    for _ in range(3):
        (size,) = struct.unpack_from(">I", answer, pos)
        fields.append(answer[pos + 4:pos + 4 + size])
        pos += 4 + size
    assert pos == len(answer)
    return tuple(fields)


def module_combine(inputs: dict) -> dict:
    h = {k[:-4]: (bytes.fromhex(v) if v is not None else None) for k, v in inputs.items() if k.endswith("_hex")}
    key, tag_i, tag_r, th = hy._combine(key_ID=inputs["key_ID"], length=inputs["length"], **h)
    return {"transcript_hash_hex": th.hex(), "key_hex": key.hex(), "tag_I_hex": tag_i.hex(), "tag_R_hex": tag_r.hex()}


def seeded(x25519: bool = True, *, qkd_key: bytes = QKD_KEY, key_ID: str = KEY_ID, length: int = 32):
    return hy._initiate_from_parts(qkd_key, key_ID, length, MLKEM768PrivateKey.from_seed_bytes(MLKEM_SEED),
                                   X25519PrivateKey.from_private_bytes(X25519_PRIVATE) if x25519 else None)


def run(x25519: bool = True, length: int = 32):
    alice, offer = hy.initiate(qkd_key=QKD_KEY, key_ID=KEY_ID, x25519=x25519, length=length)
    bob, answer = hy.respond(offer, qkd_key=QKD_KEY, key_ID=KEY_ID, x25519=x25519, length=length)
    key_a, confirm = alice.finish(answer)
    return key_a, bob.finish(confirm)


def flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[index] ^= mask
    return bytes(out)


# --- agreement and known answers ------------------------------------------------------------------

@pytest.mark.parametrize("x25519", [True, False])
@pytest.mark.parametrize("length", [16, 32, 100])
def test_both_ends_derive_the_same_key(x25519, length):
    a, b = run(x25519, length)
    assert a.key == b.key and len(a.key) == length
    assert a.transcript_hash == b.transcript_hash and a.key_ID == b.key_ID == KEY_ID
    assert a.suite == b.suite == ("QKD+ML-KEM-768+X25519/HKDF-SHA-256" if x25519 else "QKD+ML-KEM-768/HKDF-SHA-256")
    assert run(x25519, length)[0].key != a.key  # fresh KEM secrets every exchange, same QKD key


@pytest.mark.parametrize("case", VECTORS["combiner"], ids=lambda c: c["name"])
def test_combiner_known_answers(case):
    assert reference_combine(case["inputs"]) == case["expected"]  # the vector is what the spec says
    assert module_combine(case["inputs"]) == case["expected"]  # and the module computes it


@pytest.mark.parametrize("case", VECTORS["offer"], ids=lambda c: c["name"])
def test_offer_wire_vector(case):
    mlkem_key = MLKEM768PrivateKey.from_seed_bytes(bytes.fromhex(case["mlkem_seed_hex"]))
    x_key = X25519PrivateKey.from_private_bytes(bytes.fromhex(case["x25519_private_hex"])) \
        if case["x25519_private_hex"] else None
    _, offer = hy._initiate_from_parts(bytes.fromhex(case["qkd_key_hex"]), case["key_ID"], case["length"],
                                       mlkem_key, x_key)
    assert offer.hex() == case["offer_hex"]
    assert offer == reference_offer(mlkem_key.public_key().public_bytes_raw(),
                                    x_key.public_key().public_bytes_raw() if x_key else b"",
                                    case["key_ID"], case["length"])
    assert hy.offer_key_ID(offer) == case["key_ID"]


@pytest.mark.parametrize("x25519", [True, False])
def test_live_exchange_follows_the_reference_combiner(x25519):
    alice, offer = seeded(x25519)
    bob, answer = hy.respond(offer, qkd_key=QKD_KEY, key_ID=KEY_ID, x25519=x25519)
    ct, rxpk, tag_r = split_answer(answer)
    mlkem_key = MLKEM768PrivateKey.from_seed_bytes(MLKEM_SEED)
    x_key = X25519PrivateKey.from_private_bytes(X25519_PRIVATE)
    suite = "QKD+ML-KEM-768+X25519/HKDF-SHA-256" if x25519 else "QKD+ML-KEM-768/HKDF-SHA-256"
    want = reference_combine({
        "label": "qkd_circuits hybrid key v1", "suite": suite, "key_ID": KEY_ID, "length": 32,
        "qkd_key_hex": QKD_KEY.hex(), "mlkem_secret_hex": mlkem_key.decapsulate(ct).hex(),
        "x25519_secret_hex": x_key.exchange(X25519PublicKey.from_public_bytes(rxpk)).hex() if x25519 else None,
        "mlkem_public_key_hex": mlkem_key.public_key().public_bytes_raw().hex(),
        "initiator_x25519_hex": x_key.public_key().public_bytes_raw().hex() if x25519 else None,
        "mlkem_ciphertext_hex": ct.hex(), "responder_x25519_hex": rxpk.hex() if x25519 else None})
    assert tag_r.hex() == want["tag_R_hex"]
    key_a, confirm = alice.finish(answer)
    assert confirm == HEADER.pack(b"QKDH", 1, 3, 36) + lp(bytes.fromhex(want["tag_I_hex"]))
    assert key_a.key.hex() == bob.finish(confirm).key.hex() == want["key_hex"]
    assert key_a.transcript_hash.hex() == want["transcript_hash_hex"]


# --- binding: every input matters; "secure if either holds", structurally --------------------------

BASE = next(c for c in VECTORS["combiner"] if c["inputs"]["x25519_secret_hex"])["inputs"]


@pytest.mark.parametrize("field", [k for k in BASE if k.endswith("_hex")] + ["key_ID", "length", "label", "suite"])
def test_changing_any_combiner_input_changes_key_and_tags(field):
    base = reference_combine(BASE)
    changed = dict(BASE)
    if field.endswith("_hex"):
        changed[field] = flip(bytes.fromhex(BASE[field]), -1).hex()
    elif field == "length":
        changed[field] = 64  # not a prefix extension: the length is in the context
    else:
        changed[field] = BASE[field] + "x"
    got = reference_combine(changed)
    assert got["key_hex"][:64] != base["key_hex"][:64]
    assert got["tag_I_hex"] != base["tag_I_hex"] and got["tag_R_hex"] != base["tag_R_hex"]
    if field not in ("label", "suite"):  # the module agrees (label and suite are fixed by it)
        assert module_combine(changed) == got


@pytest.mark.parametrize("secret", ["qkd_key_hex", "mlkem_secret_hex", "x25519_secret_hex"])
def test_each_secret_alone_changes_the_key(secret):
    # Whoever knows every input but one secret still faces a different key for each value of it:
    # the key depends on the QKD key and on each KEM secret, not on any one of them alone.
    keys = {reference_combine({**BASE, secret: bytes([v]).hex() * 32})["key_hex"] for v in range(8)}
    assert len(keys) == 8
    assert {module_combine({**BASE, secret: bytes([v]).hex() * 32})["key_hex"] for v in range(8)} == keys


def test_secrets_are_length_prefixed_not_just_concatenated():
    # Moving a byte across the QKD/ML-KEM boundary keeps the plain concatenation but changes the key.
    q, m = bytes.fromhex(BASE["qkd_key_hex"]), bytes.fromhex(BASE["mlkem_secret_hex"])
    moved = {**BASE, "qkd_key_hex": (q + m[:1]).hex(), "mlkem_secret_hex": m[1:].hex()}
    assert module_combine(moved)["key_hex"] != module_combine(BASE)["key_hex"]


def test_tampered_ciphertext_decapsulates_silently_and_confirmation_catches_it():
    alice, offer = seeded()
    bob, answer = hy.respond(offer, qkd_key=QKD_KEY, key_ID=KEY_ID)
    ct, _, _ = split_answer(answer)
    pos = HEADER.size + 4 + 100  # a byte inside the ML-KEM ciphertext
    bad = flip(answer, pos)
    mlkem_key = MLKEM768PrivateKey.from_seed_bytes(MLKEM_SEED)
    assert mlkem_key.decapsulate(split_answer(bad)[0]) != mlkem_key.decapsulate(ct)  # no error, other secret
    with pytest.raises(AuthenticationError, match="^authentication failed$"):
        alice.finish(bad)


def offer_field_offset(offer: bytes, which: str) -> int:
    """Index of a byte inside the offer's ML-KEM ρ (last 32 bytes of the key: stays valid) or X25519 key."""
    (id_len,) = struct.unpack_from(">H", offer, HEADER.size + 3)
    pk_start = HEADER.size + 5 + id_len + 4
    return pk_start + 1184 - 1 if which == "mlkem" else pk_start + 1184 + 4 + 5


@pytest.mark.parametrize("where", ["offer mlkem key", "offer x25519 key", "answer ciphertext", "answer x25519 key",
                                   "answer tag", "confirm tag", "responder qkd key", "offer key_ID"])
def test_tampering_anywhere_fails_confirmation(where):
    alice, offer = hy.initiate(qkd_key=QKD_KEY, key_ID=KEY_ID)
    bob_key, bob_id = QKD_KEY, KEY_ID
    if where.startswith("offer") and where != "offer key_ID":
        offer = flip(offer, offer_field_offset(offer, where.split()[1]))
    elif where == "offer key_ID":  # rewritten in transit to a key the responder also holds
        bob_id = KEY_ID[:-1] + "2"
        offer = offer.replace(KEY_ID.encode(), bob_id.encode())
    elif where == "responder qkd key":
        bob_key = flip(QKD_KEY, 0)
    bob, answer = hy.respond(offer, qkd_key=bob_key, key_ID=bob_id)
    if where.startswith("answer"):
        index = {"ciphertext": HEADER.size + 4 + 7, "x25519": HEADER.size + 4 + 1088 + 4 + 3, "tag": -1}
        answer = flip(answer, index[where.split()[1]])
    if where == "confirm tag":
        _, confirm = alice.finish(answer)
        with pytest.raises(AuthenticationError, match="^authentication failed$"):
            bob.finish(flip(confirm, -1))
        return
    with pytest.raises(AuthenticationError, match="^authentication failed$"):
        alice.finish(answer)


# --- malformed messages and policy ---------------------------------------------------------------------

def _body_len_fixed(frame: bytes) -> bytes:
    return frame[:6] + struct.pack(">I", len(frame) - HEADER.size) + frame[HEADER.size:]


OFFER = seeded()[1]
PK = MLKEM768PrivateKey.from_seed_bytes(MLKEM_SEED).public_key().public_bytes_raw()
XPK = X25519PrivateKey.from_private_bytes(X25519_PRIVATE).public_key().public_bytes_raw()
assert OFFER == reference_offer(PK, XPK, KEY_ID, 32)
BAD_COEFFICIENT = b"\xff\x0f" + PK[2:]  # first coefficient 0xfff >= q = 3329 (FIPS 203 §7.2 modulus check)
MALFORMED_OFFERS = {
    "empty": (b"", "truncated"),
    "short header": (OFFER[:9], "truncated"),
    "cut by one byte": (OFFER[:-1], "body length"),
    "trailing byte": (_body_len_fixed(OFFER + b"\0"), "trailing"),
    "oversized": (OFFER + bytes(hy.MAX_MESSAGE_BYTES), "exceeds"),
    "wrong magic": (b"QKDP" + OFFER[4:], "not a hybrid"),
    "wrong version": (OFFER[:4] + b"\x02" + OFFER[5:], "not a hybrid"),
    "answer type": (OFFER[:5] + b"\x02" + OFFER[6:], "expected hybrid message type 1"),
    "body length lies": (OFFER[:6] + struct.pack(">I", len(OFFER)) + OFFER[10:], "body length"),
    "unknown suite": (OFFER[:10] + b"\x07" + OFFER[11:], "unknown suite"),
    "suite without x25519 key": (OFFER[:10] + b"\x01" + OFFER[11:], "does not fit"),
    "length out of range": (OFFER[:11] + b"\x00\x08" + OFFER[13:], "out of range"),
    "empty key_ID": (reference_offer(PK, XPK, "", 32), "out of range"),
    "key_ID not UTF-8": (reference_offer(PK, XPK, b"\xff\xfe", 32), "UTF-8"),
    "short ML-KEM key": (reference_offer(PK[:-1], XPK, KEY_ID, 32), r"1183 bytes where \[1184\]"),
    "long X25519 key": (reference_offer(PK, XPK + b"\0", KEY_ID, 32), r"33 bytes where \[0, 32\]"),
    "field runs past end": (OFFER[:-36] + struct.pack(">I", 33) + OFFER[-32:], "past the end"),
    "low-order X25519 key": (reference_offer(PK, bytes(32), KEY_ID, 32), "X25519"),
    "ML-KEM coefficient >= q": (reference_offer(BAD_COEFFICIENT, XPK, KEY_ID, 32), "ML-KEM-768 public key"),
}


@pytest.mark.parametrize("name", MALFORMED_OFFERS)
def test_malformed_offers_raise_protocol_error(name):
    message, match = MALFORMED_OFFERS[name]
    with pytest.raises(ProtocolError, match=match):
        hy.respond(message, qkd_key=QKD_KEY, key_ID=KEY_ID)


@pytest.mark.parametrize("cut", [lambda a: a[:-1], lambda a: a[:20], lambda a: _body_len_fixed(a + b"\0"),
                                 lambda a: a[:5] + b"\x03" + a[6:], lambda a: OFFER, lambda a: a * 2])
def test_malformed_answers_and_confirms_raise_protocol_error(cut):
    alice, offer = hy.initiate(qkd_key=QKD_KEY, key_ID=KEY_ID)
    bob, answer = hy.respond(offer, qkd_key=QKD_KEY, key_ID=KEY_ID)
    with pytest.raises(ProtocolError):
        alice.finish(cut(answer))
    with pytest.raises(ProtocolError):
        bob.finish(cut(answer))  # an answer (or worse) where a confirmation belongs


def test_answer_without_x25519_key_is_refused_when_the_suite_has_one():
    alice, offer = hy.initiate(qkd_key=QKD_KEY, key_ID=KEY_ID, x25519=False)
    _, answer = hy.respond(offer, qkd_key=QKD_KEY, key_ID=KEY_ID, x25519=False)
    with pytest.raises(ProtocolError, match=r"\[32\] expected"):
        seeded()[0].finish(answer)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(0, len(OFFER) - 1), mask=st.integers(1, 255))
def test_a_corrupted_offer_only_ever_raises_protocol_error_or_fails_confirmation(index, mask):
    alice, offer = seeded()
    try:
        bob, answer = hy.respond(flip(offer, index, mask), qkd_key=QKD_KEY, key_ID=KEY_ID)
    except ProtocolError:
        return
    with pytest.raises(AuthenticationError):
        alice.finish(answer)


@pytest.mark.parametrize("kwargs, match", [
    ({"key_ID": "another-key"}, "offer is for key_ID"),
    ({"x25519": False}, "configured for QKD\\+ML-KEM-768/"),
    ({"length": 64}, "with length 64"),
])
def test_responder_policy_mismatch_is_refused(kwargs, match):
    with pytest.raises(ProtocolError, match=match):
        hy.respond(OFFER, **{"qkd_key": QKD_KEY, "key_ID": KEY_ID, **kwargs})


def test_offer_key_ID_and_uuid_key_IDs():
    key_id = uuid.UUID(KEY_ID)
    alice, offer = hy.initiate(qkd_key=QKD_KEY, key_ID=key_id)
    assert hy.offer_key_ID(offer) == KEY_ID
    bob, answer = hy.respond(offer, qkd_key=QKD_KEY, key_ID=hy.offer_key_ID(offer))
    key, confirm = alice.finish(answer)
    assert bob.finish(confirm).key == key.key and key.key_ID == KEY_ID


@pytest.mark.parametrize("kwargs, error, match", [
    ({"qkd_key": bytes(15)}, ConfigurationError, "at least 16"),
    ({"qkd_key": "not bytes" * 4}, TypeError, "qkd_key must be bytes"),
    ({"key_ID": ""}, ConfigurationError, "1 to 255"),
    ({"key_ID": "k" * 256}, ConfigurationError, "1 to 255"),
    ({"key_ID": 7}, TypeError, "str or uuid"),
    ({"length": 8}, ConfigurationError, "length=8"),
    ({"length": 8161}, ConfigurationError, "16 to 8160"),
    ({"length": 32.0}, ConfigurationError, "must be an int"),
    ({"x25519": "yes"}, TypeError, "True or False"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        hy.initiate(**{"qkd_key": QKD_KEY, "key_ID": KEY_ID, **kwargs})
    with pytest.raises(error, match=match):
        hy.respond(OFFER, **{"qkd_key": QKD_KEY, "key_ID": KEY_ID, **kwargs})


# --- one-shot states and secrecy of repr ----------------------------------------------------------------

def test_states_refuse_reuse_even_after_a_failure():
    alice, offer = hy.initiate(qkd_key=QKD_KEY, key_ID=KEY_ID)
    bob, answer = hy.respond(offer, qkd_key=QKD_KEY, key_ID=KEY_ID)
    with pytest.raises(AuthenticationError):
        alice.finish(flip(answer, -1))
    with pytest.raises(ProtocolError, match="already finished"):
        alice.finish(answer)  # the genuine answer is too late: no second try against the same keys
    alice2, offer2 = hy.initiate(qkd_key=QKD_KEY, key_ID=KEY_ID)
    bob2, answer2 = hy.respond(offer2, qkd_key=QKD_KEY, key_ID=KEY_ID)
    _, confirm = alice2.finish(answer2)
    with pytest.raises(ProtocolError, match="HybridInitiator has already finished"):
        alice2.finish(answer2)
    bob2.finish(confirm)
    with pytest.raises(ProtocolError, match="HybridResponder has already finished"):
        bob2.finish(confirm)
    for state in (alice, bob):
        with pytest.raises(TypeError, match="cannot be copied or pickled"):
            copy.copy(state)
        with pytest.raises(TypeError, match="cannot be copied or pickled"):
            pickle.dumps(state)


def test_repr_and_errors_hide_secrets():
    alice, offer = seeded()
    bob, answer = hy.respond(offer, qkd_key=QKD_KEY, key_ID=KEY_ID)
    texts = [repr(alice), str(alice), repr(bob), str(bob)]
    key, confirm = alice.finish(answer)
    bob_key = bob.finish(confirm)
    texts += [repr(key), str(key), repr(alice), repr(bob), repr(bob_key)]
    assert "spent=True" in repr(alice) and "spent=True" in repr(bob)
    with pytest.raises(ProtocolError) as info:
        hy.respond(offer, qkd_key=QKD_KEY, key_ID="other")
    texts.append(str(info.value))
    secrets = [QKD_KEY, key.key, MLKEM_SEED, X25519_PRIVATE, MLKEM768PrivateKey.from_seed_bytes(MLKEM_SEED)
               .private_bytes_raw()]
    for text in texts:
        for secret in secrets:
            assert secret.hex() not in text and secret.hex()[:16] not in text and repr(secret) not in text
    assert "length=32" in repr(key) and KEY_ID in repr(key)
    assert key != bob_key  # no value equality on keys: compare .key explicitly


def test_no_qiskit():
    source = Path(hy.__file__).read_text()
    assert "qiskit" not in source
