"""Hybrid key establishment: a key that stays secret if the QKD key *or* ML-KEM holds.

ETSI TS 103 744 (V1.2.1, 2025-03, "Quantum-safe hybrid key establishment") combines the secrets
of several key exchanges with its concatenate KDF, CatKDF: concatenate the secrets, then derive
with a KDF whose context binds the exchanged messages.  We do the same with the QKD key as one of
the secrets, as RFC 8784 and RFC 9867 mix a pre-shared (here: QKD) key into IKEv2.  ``lp(x)`` is
``u32 len(x) | x``, big-endian; the ``[...]`` parts are present only with X25519::

    secrets = lp(qkd_key) | lp(mlkem_secret) [| lp(x25519_secret)]
    context = lp(LABEL) | lp(key_ID, UTF-8) | lp(suite name) | u16 length
              | lp(mlkem_public_key) [| lp(initiator_x25519)] | lp(mlkem_ciphertext) [| lp(responder_x25519)]
    th      = SHA-256(context)                                 the transcript hash
    prk     = HKDF-Extract(salt = none, IKM = secrets)         RFC 5869 §2.2 (HMAC-SHA-256)
    key     = HKDF-Expand(prk, "key" | th, length)             RFC 5869 §2.3
    tag_R   = HKDF-Expand(prk, "responder confirm" | th, 32)   sent with the answer
    tag_I   = HKDF-Expand(prk, "initiator confirm" | th, 32)   sent with the confirmation

HKDF-SHA-256, not HKDF-SHA3-256: TS 103 744 lists HKDF over SHA-2 among its KDFs, RFC 5869 is
HKDF over HMAC, and HMAC-SHA-256 (PRF and extractor, Krawczyk, CRYPTO 2010) is what any peer and
our stdlib-only test vector reproduce; SHA-3 buys nothing under HMAC.  The tags have their own
labels, so the released key is never used for anything else.

The exchange, sans-I/O (you carry the bytes)::

    initiator                                              responder
    state, offer = initiate(...)        -- offer  -->      peer, answer = respond(offer, ...)
    key, confirm = state.finish(answer) <-- answer --      (key held back until confirmed)
                                        -- confirm -->     key = peer.finish(confirm)

Wire format, canonical (big-endian; ``bytes`` = u32 length | raw, ``str`` = u16 length | UTF-8)::

    frame   = "QKDH" | version u8 (= 1) | type u8 | body length u32 | body
    offer   = suite u8 (1: ML-KEM-768, 2: +X25519) | length u16 | key_ID str (1-255 bytes)
              | mlkem_public_key bytes (1184) | x25519_public_key bytes (32, or 0 for suite 1)
    answer  = mlkem_ciphertext bytes (1088) | x25519_public_key bytes (32 or 0) | tag_R bytes (32)
    confirm = tag_I bytes (32)                                 types: offer 1, answer 2, confirm 3

Key confirmation is built in: a tampered ML-KEM ciphertext decapsulates *without error* to an
unrelated secret (FIPS 203 §6.3, implicit rejection), so only the tags notice.  A bad tag raises
the opaque :class:`~qkd_circuits.AuthenticationError`; a malformed, truncated, oversized or
mismatched message raises :class:`~qkd_circuits.ProtocolError`.  States are one-shot: the first
``finish`` spends them, whatever the outcome.

"Either holds" means: against an eavesdropper who records everything (harvest now, decrypt later)
the key is secret if the QKD key is *or* ML-KEM-768 (FIPS 203) is secure (*or* X25519, if used).
Against an active attacker the KEM keys are ephemeral and unauthenticated: the tags, keyed through
the QKD key, catch a man in the middle only while the QKD key is secret.  If it may leak too,
authenticate the transcript independently (send the messages over the authenticated channel, or
sign :attr:`HybridKey.transcript_hash`).  Use each QKD key for one exchange only.

Examples:
    >>> qkd_key = bytes(range(32))
    >>> alice, offer = initiate(qkd_key=qkd_key, key_ID="550e8400-e29b-41d4-a716-446655440000")
    >>> offer_key_ID(offer)
    '550e8400-e29b-41d4-a716-446655440000'
    >>> bob, answer = respond(offer, qkd_key=qkd_key, key_ID=offer_key_ID(offer))
    >>> key_a, confirm = alice.finish(answer)
    >>> key_b = bob.finish(confirm)
    >>> key_a.key == key_b.key, len(key_a.key), key_a.suite
    (True, 32, 'QKD+ML-KEM-768+X25519/HKDF-SHA-256')
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import uuid
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from .exceptions import AuthenticationError, ConfigurationError, ProtocolError

__all__ = ["HybridKey", "HybridInitiator", "HybridResponder", "initiate", "respond", "offer_key_ID",
           "LABEL", "MAX_MESSAGE_BYTES"]

LABEL = b"qkd_circuits hybrid key v1"
MAGIC, VERSION = b"QKDH", 1
_OFFER, _ANSWER, _CONFIRM = 1, 2, 3
_SUITES = {1: "QKD+ML-KEM-768/HKDF-SHA-256", 2: "QKD+ML-KEM-768+X25519/HKDF-SHA-256"}
_PK, _CT, _X, _TAG = 1184, 1088, 32, 32  # ML-KEM-768 sizes (FIPS 203 Table 3), X25519, tags
MIN_QKD_KEY_BYTES, MAX_KEY_ID_BYTES = 16, 255
MIN_LENGTH, MAX_LENGTH = 16, 255 * 32  # HKDF-Expand yields at most 255 hash blocks (RFC 5869 §2.3)
#: Every valid message is far smaller; anything longer is refused before it is parsed.
MAX_MESSAGE_BYTES = 4096
_HEADER = struct.Struct(">4sBBI")  # magic, version, type, body length


@dataclass(frozen=True, eq=False)
class HybridKey:
    """The combined key (``length`` bytes) and the public facts it is bound to.  Its repr hides the
    key, and it has no ``==`` (compare ``key`` with :func:`hmac.compare_digest` if you must)."""

    key: bytes
    key_ID: str
    suite: str
    transcript_hash: bytes

    def __repr__(self) -> str:
        return (f"HybridKey(key_ID={self.key_ID!r}, suite={self.suite!r}, length={len(self.key)}, "
                f"transcript_hash={self.transcript_hash.hex()[:16]}…)")


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _combine(*, qkd_key: bytes, mlkem_secret: bytes, x25519_secret: bytes | None, key_ID: str,
             length: int, mlkem_public_key: bytes, initiator_x25519: bytes | None,
             mlkem_ciphertext: bytes, responder_x25519: bytes | None) -> tuple[bytes, bytes, bytes, bytes]:
    """(key, tag_I, tag_R, th) from explicit inputs (the module docstring's equations); the test
    seam pinned by tests/vectors/hybrid.json.  X25519 is used iff ``x25519_secret`` is given."""
    with_x = x25519_secret is not None
    secrets = _lp(qkd_key) + _lp(mlkem_secret) + (_lp(x25519_secret) if with_x else b"")
    context = (_lp(LABEL) + _lp(key_ID.encode()) + _lp(_SUITES[2 if with_x else 1].encode())
               + length.to_bytes(2, "big") + _lp(mlkem_public_key) + (_lp(initiator_x25519) if with_x else b"")
               + _lp(mlkem_ciphertext) + (_lp(responder_x25519) if with_x else b""))
    th = hashlib.sha256(context).digest()
    prk = HKDF.extract(SHA256(), None, secrets)
    key, tag_i, tag_r = (HKDFExpand(SHA256(), n, label + th).derive(prk) for label, n in
                         ((b"key", length), (b"initiator confirm", _TAG), (b"responder confirm", _TAG)))
    return key, tag_i, tag_r, th


def _check_args(qkd_key, key_ID, length, x25519) -> tuple[bytes, str]:
    if not isinstance(qkd_key, (bytes, bytearray, memoryview)):
        raise TypeError(f"qkd_key must be bytes, got {type(qkd_key).__name__} (use FinalKey.to_bytes())")
    if not isinstance(x25519, bool):
        raise TypeError(f"x25519 must be True or False, got {x25519!r}")
    if isinstance(key_ID, uuid.UUID):
        key_ID = str(key_ID)
    if not isinstance(key_ID, str):
        raise TypeError(f"key_ID must be a str or uuid.UUID, got {type(key_ID).__name__}")
    if len(qkd_key) < MIN_QKD_KEY_BYTES:
        raise ConfigurationError(f"qkd_key has {len(qkd_key)} bytes; need at least {MIN_QKD_KEY_BYTES} (128 bits)")
    if not 1 <= len(key_ID.encode()) <= MAX_KEY_ID_BYTES:
        raise ConfigurationError(f"key_ID {key_ID!r} must be 1 to {MAX_KEY_ID_BYTES} UTF-8 bytes")
    if isinstance(length, bool) or not isinstance(length, int) or not MIN_LENGTH <= length <= MAX_LENGTH:
        raise ConfigurationError(f"length={length!r} must be an int from {MIN_LENGTH} to {MAX_LENGTH} bytes")
    return bytes(qkd_key), key_ID


def _frame(kind: int, *fields: bytes) -> bytes:
    body = b"".join(fields)
    return _HEADER.pack(MAGIC, VERSION, kind, len(body)) + body


def _parse(message: bytes, kind: int, sizes: tuple) -> list:
    """The fields of a ``kind`` frame; ``sizes`` holds each field's allowed byte lengths (a set),
    or "str" for a UTF-8 key_ID, or an int for a fixed-width integer of that many bytes."""
    if not isinstance(message, (bytes, bytearray, memoryview)):
        raise TypeError(f"a message must be bytes, got {type(message).__name__}")
    message = bytes(message)
    if len(message) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"hybrid message of {len(message)} bytes exceeds {MAX_MESSAGE_BYTES}")
    if len(message) < _HEADER.size:
        raise ProtocolError(f"hybrid message truncated: {len(message)} bytes, header needs {_HEADER.size}")
    magic, version, got, body_len = _HEADER.unpack_from(message)
    if magic != MAGIC or version != VERSION:
        raise ProtocolError(f"not a hybrid v{VERSION} message (magic {magic!r}, version {version})")
    if got != kind:
        raise ProtocolError(f"expected hybrid message type {kind}, got {got} (out of order?)")
    if body_len != len(message) - _HEADER.size:
        raise ProtocolError(f"body length field says {body_len}, frame carries {len(message) - _HEADER.size}")
    pos, out = _HEADER.size, []
    for size in sizes:
        width = size if isinstance(size, int) else (2 if size == "str" else 4)
        if pos + width > len(message):
            raise ProtocolError("hybrid message truncated inside a field")
        value = int.from_bytes(message[pos:pos + width], "big")
        pos += width
        if isinstance(size, int):
            out.append(value)
            continue
        if pos + value > len(message):
            raise ProtocolError(f"field of {value} bytes runs past the end of the message")
        raw, pos = message[pos:pos + value], pos + value
        if size == "str":
            try:
                raw = raw.decode("utf-8", errors="strict")
            except UnicodeDecodeError:
                raise ProtocolError("key_ID is not valid UTF-8") from None
        elif value not in size:
            raise ProtocolError(f"field of {value} bytes where {sorted(size)} expected")
        out.append(raw)
    if pos != len(message):
        raise ProtocolError(f"{len(message) - pos} trailing bytes after the hybrid message")
    return out


def _parse_offer(offer: bytes) -> tuple[int, int, str, bytes, bytes]:
    suite, length, key_ID, pk, xpk = _parse(offer, _OFFER, (1, 2, "str", {_PK}, {0, _X}))
    if suite not in _SUITES or (len(xpk) == _X) != (suite == 2):
        raise ProtocolError(f"unknown suite {suite}, or an X25519 key of {len(xpk)} bytes that does not fit it")
    if not 1 <= len(key_ID.encode()) <= MAX_KEY_ID_BYTES or not MIN_LENGTH <= length <= MAX_LENGTH:
        raise ProtocolError(f"offer with a key_ID of {len(key_ID.encode())} bytes or a length of {length} out of range")
    return suite, length, key_ID, pk, xpk


def offer_key_ID(offer: bytes) -> str:
    """The key_ID an offer names, so the responder can fetch that QKD key before :func:`respond`."""
    return _parse_offer(offer)[2]


class _OneShot:
    """A protocol state: refuses a second ``finish``, pickling and copying (its keys are ephemeral)."""

    __slots__ = ("_spent",)

    def __init__(self) -> None:
        self._spent = False

    def _spend(self) -> None:
        if self._spent:
            raise ProtocolError(f"this {type(self).__name__} has already finished; start a new exchange")
        self._spent = True

    def __reduce_ex__(self, protocol):
        raise TypeError(f"a {type(self).__name__} holds ephemeral secrets and cannot be copied or pickled")


class HybridInitiator(_OneShot):
    """The initiator's state between :func:`initiate` and :meth:`finish`."""

    __slots__ = ("_qkd_key", "_key_ID", "_length", "_mlkem", "_x25519", "_offer_parts")

    def __init__(self, qkd_key: bytes, key_ID: str, length: int, mlkem_key: MLKEM768PrivateKey,
                 x25519_key: X25519PrivateKey | None) -> None:
        super().__init__()
        self._qkd_key, self._key_ID, self._length = qkd_key, key_ID, length
        self._mlkem, self._x25519 = mlkem_key, x25519_key
        self._offer_parts = (mlkem_key.public_key().public_bytes_raw(),
                             x25519_key.public_key().public_bytes_raw() if x25519_key else b"")

    def __repr__(self) -> str:
        return f"HybridInitiator(key_ID={self._key_ID!r}, length={self._length}, spent={self._spent})"

    def finish(self, answer: bytes) -> tuple[HybridKey, bytes]:
        """Check the responder's answer; return the combined key and the confirmation to send back.

        Raises ProtocolError on a malformed answer, AuthenticationError if the responder's tag does
        not match (tampered ciphertext or offer, or different QKD keys)."""
        self._spend()
        mlkem_key, x_key, qkd_key, (pk, xpk) = self._mlkem, self._x25519, self._qkd_key, self._offer_parts
        self._mlkem = self._x25519 = self._qkd_key = None  # drop the secrets, whatever happens next
        ct, rxpk, tag_r = _parse(answer, _ANSWER, ({_CT}, {_X} if x_key else {0}, {_TAG}))
        mlkem_secret = mlkem_key.decapsulate(ct)  # never raises on a well-sized ct (implicit rejection)
        x_secret = _exchange(x_key, rxpk) if x_key else None
        key, tag_i, want_r, th = _combine(
            qkd_key=qkd_key, mlkem_secret=mlkem_secret, x25519_secret=x_secret, key_ID=self._key_ID,
            length=self._length, mlkem_public_key=pk, initiator_x25519=xpk or None, mlkem_ciphertext=ct,
            responder_x25519=rxpk or None)
        if not hmac.compare_digest(tag_r, want_r):
            raise AuthenticationError()
        suite = _SUITES[2 if x_key else 1]
        return HybridKey(key, self._key_ID, suite, th), _frame(_CONFIRM, _lp(tag_i))


class HybridResponder(_OneShot):
    """The responder's state between :func:`respond` and :meth:`finish`: the key, held back until
    the initiator proves it derived the same one."""

    __slots__ = ("_key", "_tag_i", "_key_ID")

    def __init__(self, key: HybridKey, tag_i: bytes) -> None:
        super().__init__()
        self._key, self._tag_i, self._key_ID = key, tag_i, key.key_ID

    def __repr__(self) -> str:
        return f"HybridResponder(key_ID={self._key_ID!r}, spent={self._spent})"

    def finish(self, confirm: bytes) -> HybridKey:
        """Check the initiator's confirmation and release the key (AuthenticationError if it is wrong)."""
        self._spend()
        key, self._key = self._key, None
        (tag_i,) = _parse(confirm, _CONFIRM, ({_TAG},))
        if not hmac.compare_digest(tag_i, self._tag_i):
            raise AuthenticationError()
        return key


def _exchange(private: X25519PrivateKey, peer: bytes) -> bytes:
    try:  # cryptography refuses low-order points (an all-zero shared secret) with ValueError
        return private.exchange(X25519PublicKey.from_public_bytes(peer))
    except ValueError:
        raise ProtocolError("the peer's X25519 public key is invalid (low order)") from None


def initiate(*, qkd_key: bytes, key_ID: str | uuid.UUID, x25519: bool = True,
             length: int = 32) -> tuple[HybridInitiator, bytes]:
    """Start an exchange with fresh ML-KEM-768 (and X25519) key pairs from the library's CSPRNG;
    return the one-shot state and the offer to send.

    ``qkd_key`` (bytes, >= 16, identical at both ends) is the QKD key named ``key_ID`` (a
    ``uuid.UUID`` becomes its lower-case string).  ``x25519`` adds an X25519 exchange and
    ``length`` (16 to 8160) is the combined key's size in bytes; both ends must agree on both.
    """
    qkd_key, key_ID = _check_args(qkd_key, key_ID, length, x25519)
    return _initiate_from_parts(qkd_key, key_ID, length, MLKEM768PrivateKey.generate(),
                                X25519PrivateKey.generate() if x25519 else None)


def _initiate_from_parts(qkd_key: bytes, key_ID: str, length: int, mlkem_key: MLKEM768PrivateKey,
                         x25519_key: X25519PrivateKey | None) -> tuple[HybridInitiator, bytes]:
    """:func:`initiate` with its key pairs given: the seam that pins the offer's wire format."""
    state = HybridInitiator(qkd_key, key_ID, length, mlkem_key, x25519_key)
    pk, xpk = state._offer_parts
    raw_id = key_ID.encode()
    offer = _frame(_OFFER, bytes([2 if x25519_key else 1]), length.to_bytes(2, "big"),
                   len(raw_id).to_bytes(2, "big") + raw_id, _lp(pk), _lp(xpk))
    return state, offer


def respond(offer: bytes, *, qkd_key: bytes, key_ID: str | uuid.UUID, x25519: bool = True,
            length: int = 32) -> tuple[HybridResponder, bytes]:
    """Answer an offer: encapsulate to its ML-KEM key (and run X25519), derive, tag.

    The arguments are the responder's own policy; an offer naming another key_ID, suite or
    length is refused with ProtocolError.  Returns the one-shot state, whose ``finish`` releases
    the key once the initiator's confirmation checks, and the answer to send back.
    """
    qkd_key, key_ID = _check_args(qkd_key, key_ID, length, x25519)
    suite, got_length, got_id, pk, xpk = _parse_offer(offer)
    if got_id != key_ID:
        raise ProtocolError(f"the offer is for key_ID {got_id!r}, but this responder holds {key_ID!r}")
    if (suite == 2) != x25519 or got_length != length:
        raise ProtocolError(f"the offer asks for {_SUITES[suite]} with length {got_length}; this responder "
                            f"is configured for {_SUITES[2 if x25519 else 1]} with length {length}")
    try:
        mlkem_secret, ct = MLKEM768PublicKey.from_public_bytes(pk).encapsulate()
    except ValueError:  # FIPS 203 §7.2 input check on the encapsulation key
        raise ProtocolError("the offer's ML-KEM-768 public key is invalid") from None
    x_secret, rxpk = None, b""
    if x25519:
        mine = X25519PrivateKey.generate()
        x_secret, rxpk = _exchange(mine, xpk), mine.public_key().public_bytes_raw()
    key, tag_i, tag_r, th = _combine(
        qkd_key=qkd_key, mlkem_secret=mlkem_secret, x25519_secret=x_secret, key_ID=key_ID, length=length,
        mlkem_public_key=pk, initiator_x25519=xpk or None, mlkem_ciphertext=ct, responder_x25519=rxpk or None)
    state = HybridResponder(HybridKey(key, key_ID, _SUITES[suite], th), tag_i)
    return state, _frame(_ANSWER, _lp(ct), _lp(rxpk), _lp(tag_r))
