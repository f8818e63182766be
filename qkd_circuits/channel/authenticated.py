"""The authenticated classical channel: delayed Wegman–Carter authentication and a settled release.

Every frame travels in an *envelope*::

    envelope = "QKDA" | version u8 (= 2) | kind u8 | epoch 8 bytes | round u64 | pool position u64
               | seq u32 | payload                                              (34-byte header)
    kind     = 1 DATA | 2 TAG | 3 CONFIRM | 4 SETTLE | 5 ACK

A pool-authenticated round ``r`` is bound to one slice of the pool at ``position``
(:data:`~qkd_circuits.channel.pool.ROUND_SLICE_BYTES`: a fresh hash key k and three pads)::

    Bob → Alice   SETTLE   the quantum block's id, his decisions on rounds Alice may still hold pending
    Alice → Bob   ACK      the rounds she still holds pending
    ...           DATA     the post-processing frames, one request/reply pair each
    Bob → Alice   TAG      t_B = GHASH_k(transcript ‖ "bob") ⊕ pad_B
    Alice → Bob   TAG      t_A = GHASH_k(transcript ‖ TAG_B ‖ "alice") ⊕ pad_A
    Bob → Alice   CONFIRM  decision | t_C,  t_C = GHASH_k(M_C) ⊕ pad_C
    Alice → Bob   ACK

with M_C = "qkd_circuits/confirm/v2" | epoch | round | decision (1 commit, 0 abort) | t_A (commit only).

**Who decides.**  Alice sends t_A only after t_B verified, so when t_A verifies at Bob both ends
hold the same key: Bob *commits* the round then (and aborts it on any other outcome: a bad or
missing t_A, a timeout, a crash before he recorded the commit).  Alice holds her key *pending*
from t_B on, and settles it only on Bob's authenticated decision: the CONFIRM at the end of the
round or, if that is lost, the same CONFIRM resent in the SETTLE of the next connection (Bob
resends every decision until an authenticated round shows Alice no longer holds the round).  So
no attacker action and no lost, duplicated, delayed or reordered frame can make the two ends
decide differently; what it can do is delay Alice's release until the link works again.

**Sync.**  Round numbers and positions come from Bob's envelopes and are authenticated by t_B.
Alice checks the claim (same epoch; not behind her, at most
:data:`~qkd_circuits.channel.pool.MAX_CATCH_UP_ROUNDS` slices ahead) and verifies t_B on a
*scratch* read of the claimed slice; only a verified t_B moves her pool (burning any slices Bob
spent that she never saw).  Unauthenticated input moves nothing.  Each party spends its slice
before it discloses anything computed from it (Bob before t_B, Alice before t_A) and, with a
``persist`` callback, saves its state first, so no slice is ever used for two rounds.  A round
that stops before the tags spends nothing: no bit of its slice was disclosed.

**Halt.**  Every tag that fails to verify counts one failure; a verified one resets the count;
``halt_after`` in a row halt the link (:class:`~qkd_circuits.exceptions.LinkHalted`).

GHASH is the polynomial hash over GF(2^128), ε-almost-XOR-universal with ε = L/2^128 for L
blocks, so each tag's forgery bound is L/2^128 (Wegman & Carter 1981); every tag has its own
pad, and k is fresh each round (see :mod:`~qkd_circuits.channel.pool` for the policy).  Tags are
compared with :func:`hmac.compare_digest`; failures raise the opaque
:class:`~qkd_circuits.AuthenticationError`.

A PKI round (the bootstrap) closes with signatures instead of tags, and Bob signs his CONFIRM;
its key then seeds the pool (:mod:`qkd_circuits.channel.pki`).
"""

from __future__ import annotations

import hmac
import math
import struct
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..exceptions import AuthenticationError, LinkHalted, ProtocolError
from ..hazmat.universal_hash import PolyHash128
from ..secretfile import wipe
from .pool import (EPOCH_BYTES, HASH_KEY_BYTES, MAX_CATCH_UP_ROUNDS, ROUND_SLICE_BYTES, TAG_BYTES,
                   AuthKeyPool)

__all__ = ["AuthenticatedBob", "AuthenticatedAlice", "AuthSummary", "PkiIdentity", "Settlement", "TAG_BYTES",
           "PAD_BYTES_PER_ROUND", "ENVELOPE_HEADER_BYTES", "DEFAULT_REPLENISH_BITS", "open_envelope"]

_ENVELOPE = struct.Struct(">4sBB8sQQI")
ENVELOPE_HEADER_BYTES = _ENVELOPE.size
_MAGIC = b"QKDA"
_VERSION = 2
DATA, TAG, CONFIRM, SETTLE, ACK = 1, 2, 3, 4, 5
_KINDS = (DATA, TAG, CONFIRM, SETTLE, ACK)
#: Pool bits one round spends (hash key and three pads), whatever its outcome once tags are sent.
PAD_BYTES_PER_ROUND = ROUND_SLICE_BYTES
#: Bits of each new key that refill the pool by default (twice what a round spends).
DEFAULT_REPLENISH_BITS = 1024
_BOB_TO_ALICE, _ALICE_TO_BOB = b"\x00", b"\x01"
_CONFIRM_LABEL = b"qkd_circuits/confirm/v2"
_COMMIT, _ABORT = 1, 0
_SETTLE_ENTRY = struct.Struct(">QB16s")
_MAX_SETTLE_ENTRIES = 4096
_NO_EPOCH = bytes(EPOCH_BYTES)


@dataclass(frozen=True)
class PkiIdentity:
    """A party's PKI bootstrap: its credentials, the trust anchor, and the name the peer must have.

    A PKI round closes with signatures instead of Wegman–Carter tags: each party signs the
    transcript (ML-DSA-65 or Ed25519, see :mod:`qkd_circuits.channel.pki`) and sends its
    certificate chain; the other validates path, validity and name.  The round's new key then
    seeds the pool, and tags take over from the next round on.
    """

    credentials: object  # pki.PartyCredentials
    trust_anchor: object  # x509.Certificate
    peer_name: str
    now: object = None  # datetime, for tests


def _pki_context(role: bytes, round_number: int) -> bytes:
    return b"qkd_circuits/pki-round/v2|" + role + b"|" + round_number.to_bytes(8, "big")


def _pki_sign(identity: PkiIdentity, transcript: bytes, role: bytes, round_number: int) -> bytes:
    from . import pki

    chain = pki.chain_to_bytes(identity.credentials.chain)
    signature = pki.sign_transcript(identity.credentials, transcript, context=_pki_context(role, round_number))
    return struct.pack(">I", len(chain)) + chain + signature


def _pki_verify(identity: PkiIdentity, payload: bytes, transcript: bytes, role: bytes, round_number: int) -> None:
    from . import pki

    if len(payload) < 4:
        raise AuthenticationError()
    size = struct.unpack_from(">I", payload)[0]
    try:
        chain = pki.chain_from_bytes(payload[4:4 + size])
    except ProtocolError:
        raise AuthenticationError() from None
    pki.verify_transcript(payload[4 + size:], transcript, context=_pki_context(role, round_number), chain=chain,
                          trust_anchor=identity.trust_anchor, expected_name=identity.peer_name, now=identity.now)


@dataclass(frozen=True)
class Settlement:
    """The fate of a round decided by Bob: ``"commit"`` (both hold the key) or ``"abort"``."""

    round: int
    decision: str
    key: object = None  # FinalKey delivered to consumers (None for an abort or a key all spent on the pool)

    def to_dict(self) -> dict:
        return {"round": self.round, "decision": self.decision,
                "key_bits": 0 if self.key is None else len(self.key),
                "key_sha256": None if self.key is None else self.key.sha256()}


@dataclass
class AuthSummary:
    """What authentication cost and established in one round (``report.auth``)."""

    bootstrap: str
    round: int
    verified: bool = False
    released: bool = False
    pending: bool = False
    pool_bits_used: int = 0
    pool_bits_added: int = 0
    tag_bits: int = 8 * TAG_BYTES
    forgery_bound: float | None = None
    pad_position: int | None = None
    epsilon: dict = field(default_factory=dict)
    epsilon_lifetime: dict = field(default_factory=dict)
    settled: list = field(default_factory=list)
    failures: int = 0
    halted: bool = False

    def to_dict(self) -> dict:
        out = dict(self.__dict__)
        out["settled"] = [s.to_dict() for s in self.settled]
        return out


def _envelope(kind: int, epoch: bytes, round_number: int, position: int, seq: int, payload: bytes) -> bytes:
    return _ENVELOPE.pack(_MAGIC, _VERSION, kind, epoch, round_number, position, seq) + payload


def open_envelope(envelope: bytes) -> tuple[int, bytes, int, int, int, bytes]:
    """``(kind, epoch, round, position, seq, payload)``; anything else raises :class:`ProtocolError`."""
    if not isinstance(envelope, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"an envelope is bytes, got {type(envelope).__name__}")
    envelope = bytes(envelope)
    if len(envelope) < _ENVELOPE.size:
        raise ProtocolError(f"envelope is truncated: {len(envelope)} bytes")
    magic, version, kind, epoch, round_number, position, seq = _ENVELOPE.unpack_from(envelope)
    if magic != _MAGIC or version != _VERSION or kind not in _KINDS:
        raise ProtocolError("not a version-2 authenticated envelope")
    return kind, epoch, round_number, position, seq, envelope[_ENVELOPE.size:]


class _Transcript:
    """A round's transcript, parts framed as direction byte | length u32 | envelope.

    Pool rounds (``hash_key`` given) hash it incrementally with a GHASH stream and keep no
    transcript bytes; PKI rounds (``keep_bytes``) keep the parts for signing.  Either way the
    state just before the last part is kept too (:meth:`without_last`).
    """

    __slots__ = ("_stream", "_before_last", "_parts", "size", "_size_before_last")

    def __init__(self, hash_key: bytes | None = None, *, keep_bytes: bool = False) -> None:
        self._stream = PolyHash128(bytes(hash_key)).stream() if hash_key is not None else None
        self._before_last = None
        self._parts: list[bytes] | None = [] if keep_bytes else None
        self.size = 0
        self._size_before_last: int | None = None

    def add(self, direction: bytes, envelope: bytes) -> None:
        header = direction + struct.pack(">I", len(envelope))
        if self._stream is not None:
            self._before_last = self._stream.copy()
            self._stream.update(header)
            self._stream.update(envelope)
        if self._parts is not None:
            self._parts.append(header + envelope)
        self._size_before_last = self.size
        self.size += len(header) + len(envelope)

    def without_last(self) -> _Transcript:
        """The transcript without its last part (a frozen view: cheap, from the snapshot)."""
        view = _Transcript.__new__(_Transcript)
        view._stream, view._before_last = self._before_last, None
        view._parts = self._parts[:-1] if self._parts is not None else None
        view.size, view._size_before_last = self._size_before_last, None
        return view

    def joined(self) -> bytes:
        return b"".join(self._parts)

    def tag(self, label: bytes, pad: bytes) -> bytes:
        """GHASH_k(transcript ‖ label) ⊕ pad; the transcript itself is left as it is."""
        stream = self._stream.copy()
        stream.update(label)
        return bytes(a ^ b for a, b in zip(stream.digest(), pad))

    def bound(self) -> float:
        """The forgery bound L/2^128 of a tag on this transcript (L blocks with the length block)."""
        return (math.ceil((self.size + 8) / 16) + 1) / 2.0**128


def _confirm_message(epoch: bytes, round_number: int, decision: int, tag_a: bytes) -> bytes:
    return (_CONFIRM_LABEL + epoch + round_number.to_bytes(8, "big") + bytes([decision])
            + (tag_a if decision == _COMMIT else b""))


def _confirm_tag(hash_key, pad, epoch: bytes, round_number: int, decision: int, tag_a: bytes) -> bytes:
    digest = PolyHash128(bytes(hash_key)).digest(_confirm_message(epoch, round_number, decision, tag_a))
    return bytes(a ^ b for a, b in zip(digest, pad))


_CONFIRM_BOUND = (math.ceil((len(_CONFIRM_LABEL) + EPOCH_BYTES + 9 + TAG_BYTES) / 16) + 1) / 2.0**128


def _encode_settle(block: bytes, entries: list[tuple[int, int, bytes]]) -> bytes:
    return (struct.pack(">H", len(block)) + block + struct.pack(">H", len(entries))
            + b"".join(_SETTLE_ENTRY.pack(r, d, t) for r, d, t in entries))


def _decode_settle(payload: bytes) -> tuple[bytes, list[tuple[int, int, bytes]]]:
    """SETTLE = block length u16 | block | count u16 | count × (round u64 | decision u8 | tag 16)."""
    if len(payload) < 2:
        raise ProtocolError("SETTLE payload is truncated")
    (size,) = struct.unpack_from(">H", payload)
    block, rest = payload[2:2 + size], payload[2 + size:]
    if len(block) != size or len(rest) < 2:
        raise ProtocolError("SETTLE payload is truncated")
    (count,) = struct.unpack_from(">H", rest)
    if count > _MAX_SETTLE_ENTRIES or len(rest) != 2 + count * _SETTLE_ENTRY.size:
        raise ProtocolError(f"SETTLE payload of {len(payload)} bytes does not hold {count} entries")
    entries = [_SETTLE_ENTRY.unpack_from(rest, 2 + i * _SETTLE_ENTRY.size) for i in range(count)]
    if any(d not in (_COMMIT, _ABORT) for _, d, _ in entries):
        raise ProtocolError("SETTLE entry with an unknown decision")
    return block, entries


def _encode_rounds(rounds) -> bytes:
    rounds = sorted(rounds)
    return struct.pack(">H", len(rounds)) + b"".join(struct.pack(">Q", r) for r in rounds)


def _decode_rounds(payload: bytes) -> list[int]:
    if len(payload) < 2:
        raise ProtocolError("ACK payload is truncated")
    (count,) = struct.unpack_from(">H", payload)
    if count > _MAX_SETTLE_ENTRIES or len(payload) != 2 + 8 * count:
        raise ProtocolError("ACK payload does not match its count")
    return [struct.unpack_from(">Q", payload, 2 + 8 * i)[0] for i in range(count)]


def split_key(key, replenish_bits: int):
    """(refill bytes for the pool, delivered key): the refill is the key's first ``replenish_bits``
    bits and is never delivered.  A key no longer than that goes to the pool whole (its whole
    bytes), and nothing is delivered."""
    from ..postprocessing.protocol import FinalKey

    bits = key.bits
    if len(bits) <= replenish_bits:
        usable = len(bits) - len(bits) % 8
        return bytearray(np.packbits(bits[:usable]).tobytes()), None
    return bytearray(np.packbits(bits[:replenish_bits]).tobytes()), FinalKey(np.array(bits[replenish_bits:]))


class _End:
    """What both ends share: the pool slice, the halt check, the release step and the ledger."""

    def __init__(self, pool: AuthKeyPool | None, pki: PkiIdentity | None, outcome, replenish_bits: int,
                 persist: Callable[[], None] | None, key_epsilon: tuple[float, float]) -> None:
        if (pool is None) == (pki is None):
            raise ValueError("authenticate with a key pool or with a PKI identity (exactly one)")
        if replenish_bits < 0 or replenish_bits % 8:
            raise ValueError(f"replenish_bits must be a non-negative multiple of 8, got {replenish_bits}")
        if pool is not None and pool.link.halted:
            raise LinkHalted(f"the link halted after {pool.link.failures} consecutive authentication failures; "
                             "inspect both sites, then resume it with 'qkd psk resume FILE'")
        self._pool, self._pki, self._outcome = pool, pki, outcome
        self._key_epsilon = (float(key_epsilon[0]), float(key_epsilon[1]))
        self._replenish_bits, self._persist = replenish_bits, persist or (lambda: None)
        self._epoch = pool.epoch if pool is not None else _NO_EPOCH
        self.released_key = None  # this round's delivered key, once released
        self.settled: list[Settlement] = []
        self.summary = AuthSummary(pool.bootstrap if pool is not None else "pki", 0)
        self._eps = {"tag_bob": 0.0, "tag_alice": 0.0, "confirm": 0.0, "pad_sources": 0.0}


    @property
    def replenish_bits(self) -> int:
        """The bits at the head of every released key that refill the pool (the rest is delivered)."""
        return self._replenish_bits

    def _charge(self, name: str, bound: float) -> None:
        """Count one tag's forgery bound, for this round and in the link's lifetime ledger."""
        self._eps[name] = bound
        if self._pool is not None:
            self._pool.ledger.auth_forgery += bound

    def _failed(self) -> None:
        if self._pool is not None:
            self._pool.link.failures += 1
            self._save()
        raise AuthenticationError()

    def _save(self) -> None:
        if self._pool is not None:
            self._persist()

    def _spend_slice(self, position: int) -> bytearray:
        """Burn up to ``position`` and take this round's slice (the ledger charges any new source)."""
        pool = self._pool
        before = pool.ledger.pad_sources
        pool.skip_to(position)
        piece = pool.take(ROUND_SLICE_BYTES)
        pool.link.next_round = max(pool.link.next_round, self.summary.round + 1)
        pool.ledger.rounds += 1
        self._eps["pad_sources"] = pool.ledger.pad_sources - before
        self.summary.pool_bits_used = 8 * ROUND_SLICE_BYTES
        return piece

    def _release(self, refill: bytearray | None, key, eps: tuple[float, float], round_number: int) -> None:
        """The one release step: refill the pool, deliver the rest, count its ε.

        With an outbox (a link node), the delivered key also enters ``pool.link.outbox`` here, so
        it is saved together with the decision that releases it.
        """
        if self._pool is not None and key is not None and self._pool.link.outbox is not None:
            self._pool.link.outbox[round_number] = {"key": bytearray(np.packbits(key.bits).tobytes()),
                                                   "key_bits": len(key)}
        if self._pool is not None and refill:
            self._pool.replenish(refill, eps=eps[0])
            self.summary.pool_bits_added += 8 * len(refill)
        if refill is not None:
            wipe(refill)
        if key is not None and self._pool is not None:
            self._pool.ledger.keys += eps[0] + eps[1]

    def _finish_summary(self) -> None:
        s = self.summary
        s.epsilon = {**self._eps, "round_total": sum(self._eps.values())}
        if s.verified:
            s.forgery_bound = self._eps["tag_bob"] + self._eps["tag_alice"] + self._eps["confirm"] or None
        if self._pool is not None:
            s.epsilon_lifetime = self._pool.ledger.to_dict()
            s.failures = self._pool.link.failures
            s.halted = self._pool.link.halted
        s.settled = list(self.settled)


class AuthenticatedBob(_End):
    """Bob's end: opens the round, wraps every request, closes it with the tags and decides it.

    Args:
        pool: Bob's :class:`AuthKeyPool` (or ``pki`` for a signed bootstrap round).
        carry: sends an envelope to Alice and returns her reply envelope.
        outcome: returns Bob's post-processing outcome (its ``key`` is what the round releases).
        key_epsilon: (ε_sec, ε_cor) of the round's key as a whole (the configuration's, not a
            per-grid share), for the ε ledger and the ε of pads later cut from its refill.
        replenish_bits: bits of the new key that refill the pool.
        persist: called to save Bob's state before he discloses anything that depends on it.
        block: which quantum block this round post-processes (public, in the SETTLE, authenticated
            with the round): lets two processes agree on the detections without a side channel.
    """

    def __init__(self, pool: AuthKeyPool | None, carry: Callable[[bytes], bytes], *, outcome: Callable,
                 key_epsilon: tuple[float, float], replenish_bits: int = DEFAULT_REPLENISH_BITS,
                 persist: Callable[[], None] | None = None, pki: PkiIdentity | None = None,
                 block: bytes = b"") -> None:
        super().__init__(pool, pki, outcome, replenish_bits, persist, key_epsilon)
        if len(block) > 1024:
            raise ValueError("a block identifier is at most 1024 bytes")
        self._carry, self._block = carry, bytes(block)
        self._seq_out = self._seq_in = 0
        if pool is not None:
            for entry in pool.link.unconfirmed.values():  # a round interrupted before its decision
                if entry.get("decision") is None:
                    self._decide(entry, _ABORT, b"")
            self.summary.round = pool.link.next_round
            self._position = pool.position
            piece = pool.peek(0, ROUND_SLICE_BYTES)
            self._transcript = _Transcript(piece[:HASH_KEY_BYTES])
            wipe(piece)
        else:
            self._position = 0
            self._transcript = _Transcript(keep_bytes=True)
        self._opened = False
        self.alice_pending: list[int] = []

    def __repr__(self) -> str:
        return f"AuthenticatedBob(round={self.summary.round}, verified={self.summary.verified})"

    def _send(self, kind: int, payload: bytes) -> bytes:
        env = _envelope(kind, self._epoch, self.summary.round, self._position, self._seq_out, payload)
        self._seq_out += 1
        self._transcript.add(_BOB_TO_ALICE, env)
        return self._carry(env)

    def _receive(self, reply: bytes, kind: int) -> bytes:
        try:
            got, epoch, round_number, position, seq, payload = open_envelope(reply)
        except ProtocolError:
            raise AuthenticationError() from None
        if (got, epoch, round_number, position, seq) != (kind, self._epoch, self.summary.round, self._position,
                                                          self._seq_in):
            raise AuthenticationError()
        self._seq_in += 1
        self._transcript.add(_ALICE_TO_BOB, reply)
        return payload

    def _open(self) -> None:
        self._opened = True
        if self._pool is None:
            return
        entries = sorted((r, e["decision"], bytes(e["tag"])) for r, e in self._pool.link.unconfirmed.items())
        self.alice_pending = _decode_rounds(self._receive(self._send(SETTLE, _encode_settle(self._block, entries)), ACK))

    def settle_only(self) -> list[int]:
        """Only hand Alice Bob's decisions (his SETTLE and her ACK), then stop: a connection that
        ends before the tags spends no pool material.  A node does this before it stops, so a
        round whose CONFIRM was lost is settled at Alice's end too.  Returns the rounds her
        (not yet authenticated) ACK says she still holds pending."""
        if self._pool is None:
            raise ValueError("only a pool-authenticated link settles rounds")
        if not self._opened:
            self._open()
        return list(self.alice_pending)

    def request(self, frame: bytes) -> bytes:
        """Carry one post-processing frame to Alice; return her reply frame."""
        if not self._opened:
            self._open()
        return self._receive(self._send(DATA, frame), DATA)

    def _decide(self, entry: dict, decision: int, tag_a: bytes) -> None:
        entry["tag"] = bytearray(_confirm_tag(entry["hash_key"], entry["pad"], self._epoch, entry["round"],
                                              decision, tag_a))
        entry["decision"] = decision
        wipe(entry["hash_key"])
        wipe(entry["pad"])
        entry["hash_key"] = entry["pad"] = bytearray()

    def close(self) -> AuthSummary:
        """Exchange the tags and decide the round; raises :class:`AuthenticationError` unless Alice's tag verifies."""
        try:
            if not self._opened:
                self._open()
            if self._pki is not None:
                return self._close_pki()
            return self._close_pool()
        finally:
            self._finish_summary()

    def _close_pool(self) -> AuthSummary:
        pool, r, s = self._pool, self.summary.round, self.summary
        piece = self._spend_slice(self._position)
        k, pad_b, pad_a = piece[:16], piece[16:32], piece[32:48]
        entry = {"round": r, "decision": None, "hash_key": bytearray(k), "pad": bytearray(piece[48:64]),
                 "tag": bytearray()}
        pool.link.unconfirmed[r] = entry
        s.pad_position = self._position
        self._save()  # the slice is spent before t_B discloses anything about it
        mine = self._transcript.tag(b"bob", pad_b)
        self._charge("tag_bob", self._transcript.bound())
        tag_a = None
        try:
            theirs = self._receive(self._send(TAG, mine), TAG)
            expected = self._transcript.without_last().tag(b"alice", pad_a)
            self._charge("tag_alice", self._transcript.without_last().bound())
            if len(theirs) == TAG_BYTES and hmac.compare_digest(theirs, expected):
                tag_a = theirs
        finally:
            wipe(piece)
            if tag_a is None:  # lost, late, forged or refused: this round is aborted, for both ends
                self._decide(entry, _ABORT, b"")
                self._save()
        if tag_a is None:
            self._failed()
        s.verified = True
        pool.link.failures = 0
        self._decide(entry, _COMMIT, tag_a)
        self._charge("confirm", _CONFIRM_BOUND)
        # Alice's ACK at the opening (authenticated by t_A) says which earlier decisions she still needs.
        for old in [x for x in pool.link.unconfirmed if x < r and x not in self.alice_pending]:
            del pool.link.unconfirmed[old]
        outcome = self._outcome()
        refill, key = split_key(outcome.key, self._replenish_bits)
        self._release(refill, key, self._key_epsilon, r)
        self.released_key, s.released = key, True
        self.settled.append(Settlement(r, "commit", key))
        self._save()  # decided and released before CONFIRM leaves
        try:
            self._send(CONFIRM, bytes([_COMMIT]) + bytes(entry["tag"]))
        except (TimeoutError, ConnectionError, AuthenticationError, ProtocolError):
            pass  # Alice learns the decision from the next SETTLE
        return s

    def _close_pki(self) -> AuthSummary:
        r, s = self.summary.round, self.summary
        mine = _pki_sign(self._pki, self._transcript.joined(), b"bob", r)
        theirs = self._receive(self._send(TAG, mine), TAG)
        _pki_verify(self._pki, theirs, self._transcript.without_last().joined(), b"alice", r)
        s.verified, s.tag_bits = True, 0
        outcome = self._outcome()
        refill, key = split_key(outcome.key, self._replenish_bits)
        self.pki_seed = bytes(refill)
        wipe(refill)
        self.pki_epoch = _pki_epoch(self._transcript.joined())
        self.released_key, s.released = key, True
        self.settled.append(Settlement(r, "commit", key))
        signature = _pki_sign(self._pki, _confirm_message(_NO_EPOCH, r, _COMMIT, _digest16(theirs)), b"bob-confirm", r)
        try:
            self._send(CONFIRM, bytes([_COMMIT]) + signature)
        except (TimeoutError, ConnectionError, AuthenticationError, ProtocolError):
            pass
        return s


def _digest16(data: bytes) -> bytes:
    import hashlib

    return hashlib.sha256(data).digest()[:16]


def _pki_epoch(transcript: bytes) -> bytes:
    import hashlib

    return hashlib.sha256(b"qkd_circuits/pki-epoch/v2" + transcript).digest()[:EPOCH_BYTES]


class AuthenticatedAlice(_End):
    """Alice's end: checks Bob's claims, passes DATA to ``handler``, answers the tags, settles rounds.

    Args:
        pool: Alice's :class:`AuthKeyPool` (or ``pki``).
        handler: her post-processing (frame in, reply frame out).
        outcome: returns her post-processing outcome.
        replenish_bits, persist: as for :class:`AuthenticatedBob`.
    """

    def __init__(self, pool: AuthKeyPool | None, handler: Callable[[bytes], bytes], *, outcome: Callable,
                 key_epsilon: tuple[float, float], replenish_bits: int = DEFAULT_REPLENISH_BITS,
                 persist: Callable[[], None] | None = None, pki: PkiIdentity | None = None) -> None:
        super().__init__(pool, pki, outcome, replenish_bits, persist, key_epsilon)
        self._handler = handler
        self._position: int | None = None
        self._transcript: _Transcript | None = None if pool is not None else _Transcript(keep_bytes=True)
        self._scratch: bytearray | None = None
        self._seq_in = self._seq_out = 0
        self._state = "open"
        self._pki_pending = None  # her outcome between the signed tags and the CONFIRM
        self.block: bytes | None = None  # Bob's identifier of the quantum block (from his SETTLE)

    def __repr__(self) -> str:
        return f"AuthenticatedAlice(round={self.summary.round}, state={self._state!r})"

    @property
    def released(self) -> bool:
        return self.summary.released

    def handle(self, envelope: bytes) -> bytes:
        if self._state in ("failed", "done"):
            raise AuthenticationError()
        try:
            return self._handle(envelope)
        except (AuthenticationError, ProtocolError):
            self._state = "failed"
            self._discard_scratch()
            raise
        finally:
            self._finish_summary()

    def _discard_scratch(self) -> None:
        if self._scratch is not None:
            wipe(self._scratch)
            self._scratch = None

    def _accept_claim(self, epoch: bytes, round_number: int, position: int) -> None:
        """Check the first envelope's claim; read the claimed slice on a scratch copy (nothing moves)."""
        pool = self._pool
        if self._pki is not None:
            if round_number != 0 or position != 0 or epoch != _NO_EPOCH:
                raise AuthenticationError()
        else:
            ahead = round_number - pool.link.next_round
            if (epoch != pool.epoch or not 0 <= ahead <= MAX_CATCH_UP_ROUNDS
                    or position != pool.position + ahead * ROUND_SLICE_BYTES):
                raise AuthenticationError()
            self._scratch = pool.peek(position - pool.position, ROUND_SLICE_BYTES)
            self._transcript = _Transcript(self._scratch[:HASH_KEY_BYTES])
        self._position, self.summary.round = position, round_number

    def _handle(self, envelope: bytes) -> bytes:
        kind, epoch, round_number, position, seq, payload = open_envelope(envelope)
        if self._position is None:
            self._accept_claim(epoch, round_number, position)
        if (epoch, round_number, position, seq) != (self._epoch, self.summary.round, self._position, self._seq_in):
            raise AuthenticationError()
        self._seq_in += 1
        self._transcript.add(_BOB_TO_ALICE, envelope)
        state = self._state
        if kind == SETTLE and state == "open" and self._pool is not None:
            self._state = "data"
            self.block, entries = _decode_settle(payload)
            self._settle(entries)
            return self._reply(ACK, _encode_rounds(self._pool.link.pending))
        if state == "open" and self._pki is not None:
            state = self._state = "data"
        if kind == DATA and state == "data":
            return self._reply(DATA, self._handler(payload))
        if kind == TAG and state == "data":
            self._state = "tagged"
            return self._on_tag(payload)
        if kind == CONFIRM and state == "tagged":
            self._state = "done"
            self._on_confirm(payload)
            return self._reply(ACK, b"")
        raise AuthenticationError()

    def _settle(self, entries) -> None:
        """Apply Bob's decisions on rounds Alice holds pending, oldest first; a bad tag fails the round."""
        pending = self._pool.link.pending
        for r, decision, tag in sorted(entries):
            if r not in pending:
                continue  # settled already, or never held here
            entry = pending[r]
            expected = _confirm_tag(entry["hash_key"], entry["pad"], self._epoch, r, decision, bytes(entry["tag"]))
            self._pool.ledger.auth_forgery += _CONFIRM_BOUND
            if not hmac.compare_digest(expected, tag):
                self._failed()
            self._apply(r, decision == _COMMIT)
        self._save()

    def _apply(self, r: int, commit: bool) -> None:
        entry = self._pool.link.pending.pop(r)
        key = None
        if commit:
            from ..postprocessing.protocol import FinalKey

            if entry["key_bits"]:
                bits = np.unpackbits(np.frombuffer(bytes(entry["key"]), dtype=np.uint8))[:entry["key_bits"]]
                key = FinalKey(bits.astype(np.uint8))
            self._release(entry["refill"], key, (entry["eps_sec"], entry["eps_cor"]), r)
        for name in ("key", "refill", "hash_key", "pad", "tag"):
            if isinstance(entry.get(name), bytearray):
                wipe(entry[name])
        self.settled.append(Settlement(r, "commit" if commit else "abort", key))
        if r == self.summary.round:
            self.summary.pending = False
            self.summary.released = commit
            self.released_key = key

    def _on_tag(self, payload: bytes) -> bytes:
        outcome = self._outcome() if self._outcome is not None else None
        if self._pki is not None:
            _pki_verify(self._pki, payload, self._transcript.without_last().joined(), b"bob", self.summary.round)
            self.summary.verified, self.summary.tag_bits = True, 0
            if outcome is None or outcome.key is None:
                raise ProtocolError("Bob closed a round that Alice's post-processing did not finish")
            self._pki_pending = outcome
            return self._reply(TAG, _pki_sign(self._pki, self._transcript.joined(), b"alice", self.summary.round))
        before = self._transcript  # ends with Bob's TAG envelope; her reply is not in yet
        expected = before.without_last().tag(b"bob", self._scratch[16:32])
        self._charge("tag_bob", before.without_last().bound())  # every check is a chance to forge
        if len(payload) != TAG_BYTES or not hmac.compare_digest(payload, expected):
            self._failed()
        if outcome is None or outcome.key is None:
            raise ProtocolError("Bob closed a round that Alice's post-processing did not finish")
        self._charge("tag_alice", before.bound())
        pool, r = self._pool, self.summary.round
        self.summary.verified = True
        pool.link.failures = 0
        self.summary.pad_position = self._position
        piece = self._spend_slice(self._position)  # burns any slices Bob spent that she never saw
        self._discard_scratch()
        tag_a = before.tag(b"alice", piece[32:48])
        refill, key = split_key(outcome.key, self._replenish_bits)
        eps_sec, eps_cor = self._key_epsilon
        pool.link.pending[r] = {
            "key": bytearray(np.packbits(key.bits).tobytes()) if key is not None else bytearray(),
            "key_bits": 0 if key is None else len(key), "refill": refill, "hash_key": bytearray(piece[:16]),
            "pad": bytearray(piece[48:64]), "tag": bytearray(tag_a), "eps_sec": eps_sec, "eps_cor": eps_cor}
        wipe(piece)
        self.summary.pending = True
        self._save()  # the slice is spent and the key held before t_A leaves
        return self._reply(TAG, tag_a)

    def _on_confirm(self, payload: bytes) -> None:
        if len(payload) < 1 or payload[0] not in (_COMMIT, _ABORT):
            raise AuthenticationError()
        r = self.summary.round
        if self._pki is not None:
            outcome = self._pki_pending
            _pki_verify(self._pki, payload[1:], _confirm_message(_NO_EPOCH, r, payload[0], _digest16(self._last_tag)),
                        b"bob-confirm", r)
            if payload[0] != _COMMIT:
                raise AuthenticationError()
            refill, key = split_key(outcome.key, self._replenish_bits)
            self.pki_seed = bytes(refill)
            wipe(refill)
            self.pki_epoch = _pki_epoch(self._transcript_before_confirm)
            self.released_key, self.summary.released = key, True
            self.settled.append(Settlement(r, "commit", key))
            return
        if len(payload) != 1 + TAG_BYTES:
            raise AuthenticationError()
        self._settle([(r, payload[0], payload[1:])])
        self._eps["confirm"] = _CONFIRM_BOUND
        if self.summary.forgery_bound is None:
            self.summary.forgery_bound = self._eps["tag_bob"] + self._eps["tag_alice"] + _CONFIRM_BOUND

    def _reply(self, kind: int, payload: bytes) -> bytes:
        env = _envelope(kind, self._epoch, self.summary.round, self._position, self._seq_out, payload)
        self._seq_out += 1
        if kind == TAG:
            self._last_tag = payload
        self._transcript.add(_ALICE_TO_BOB, env)
        if kind == TAG and self._pki is not None:
            self._transcript_before_confirm = self._transcript.joined()
        return env
