"""The authenticated classical channel: delayed Wegman–Carter authentication of a whole round.

Every post-processing frame travels in an *envelope* that carries the round number, the pad
position the sender's pool was at when the round began, and a per-direction sequence number::

    envelope = "QKDA" | version u8 (= 1) | kind u8 | round u64 | pool position u64 | seq u32 | payload
    kind     = 1 DATA (a post-processing frame) | 2 TAG (16 bytes) | 3 CONFIRM (empty)

Both parties append every envelope they send or receive to a transcript, framed unambiguously
(direction byte | length u32 | envelope).  When the protocol is done the round is closed by one
tag per direction, Bob first (Cederlöf & Larsson, IEEE Trans. IT 54, 1735 (2008): a party sends
its tag only after the peer has committed to the transcript)::

    Bob → Alice   TAG   t_B = GHASH_k(transcript ‖ "bob") ⊕ pad_B
    Alice → Bob   TAG   t_A = GHASH_k(transcript ‖ t_B-envelope ‖ "alice") ⊕ pad_A
    Bob → Alice   CONFIRM

GHASH is the polynomial hash over GF(2^128) (ε-almost-XOR-universal: a forgery succeeds with
probability at most L/2^128 for L blocks); k is the pool's reused hash key and the pads are
fresh pool bytes, spent whatever the outcome (Portmann 2014).  Tags are compared with
:func:`hmac.compare_digest`.  Bob releases his key after Alice's tag verified (and he has sent
CONFIRM); Alice releases hers on CONFIRM.  Any failure raises an opaque
:class:`~qkd_circuits.AuthenticationError`; an envelope that is out of sequence, from another
round, or behind the receiver's pool position is refused at once.

The pool's hash key is known when the round starts, so a pool round hashes its transcript as it
grows (a GHASH stream, :meth:`PolyHash128.stream`) and keeps none of its bytes: each party hashes
every byte once, and a snapshot of the stream taken before each envelope is the transcript
"without the last envelope" that the peer's tag covers.  A PKI round keeps the bytes instead:
they are signed whole.
"""

from __future__ import annotations

import hmac
import math
import struct
from dataclasses import dataclass
from typing import Callable

from ..exceptions import AuthenticationError, ProtocolError
from ..postprocessing.universal_hash import PolyHash128
from .pool import AuthKeyPool

__all__ = ["AuthenticatedBob", "AuthenticatedAlice", "AuthSummary", "PkiIdentity", "TAG_BYTES", "PAD_BYTES_PER_ROUND"]

_ENVELOPE = struct.Struct(">4sBBQQI")
_MAGIC = b"QKDA"
_VERSION = 1
DATA, TAG, CONFIRM = 1, 2, 3
TAG_BYTES = 16
PAD_BYTES_PER_ROUND = 2 * TAG_BYTES
_BOB_TO_ALICE, _ALICE_TO_BOB = b"\x00", b"\x01"


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
    return b"qkd_circuits/pki-round/v1|" + role + b"|" + round_number.to_bytes(8, "big")


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


@dataclass
class AuthSummary:
    """What authentication cost and established in one round."""

    bootstrap: str
    round: int
    verified: bool = False
    released: bool = False
    pool_bits_used: int = 0
    pool_bits_added: int = 0
    tag_bits: int = 8 * TAG_BYTES
    forgery_bound: float | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _envelope(kind: int, round_number: int, position: int, seq: int, payload: bytes) -> bytes:
    return _ENVELOPE.pack(_MAGIC, _VERSION, kind, round_number, position, seq) + payload


def _open(envelope: bytes) -> tuple[int, int, int, int, bytes]:
    if len(envelope) < _ENVELOPE.size:
        raise ProtocolError(f"envelope is truncated: {len(envelope)} bytes")
    magic, version, kind, round_number, position, seq = _ENVELOPE.unpack_from(envelope)
    if magic != _MAGIC or version != _VERSION or kind not in (DATA, TAG, CONFIRM):
        raise ProtocolError("not a version-1 authenticated envelope")
    return kind, round_number, position, seq, envelope[_ENVELOPE.size:]


class _Transcript:
    """A round's transcript, parts framed as direction byte | length u32 | envelope.

    Pool rounds (``hash_key`` given) hash it incrementally with a GHASH stream and keep no
    transcript bytes; PKI rounds (``keep_bytes``) keep the parts for signing.  Either way the
    state just before the last part is kept too (:meth:`without_last`).
    """

    __slots__ = ("_stream", "_before_last", "_parts", "size", "_size_before_last")

    def __init__(self, hash_key: bytes | None = None, *, keep_bytes: bool = False) -> None:
        if hash_key is None and not keep_bytes:
            raise ValueError("a transcript must be hashed (hash_key), kept (keep_bytes), or both")
        self._stream = PolyHash128(hash_key).stream() if hash_key is not None else None
        self._before_last = None  # the stream as it stood before the last part
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
        if self._size_before_last is None:
            raise ValueError("the transcript has no part to leave out")
        view = _Transcript.__new__(_Transcript)
        view._stream, view._before_last = self._before_last, None
        view._parts = self._parts[:-1] if self._parts is not None else None
        view.size, view._size_before_last = self._size_before_last, None
        return view

    def joined(self) -> bytes:
        if self._parts is None:
            raise ValueError("this transcript keeps no bytes (a pool round hashes them as they come)")
        return b"".join(self._parts)

    def tag(self, label: bytes, pad: bytes) -> bytes:
        """GHASH_k(transcript ‖ label) ⊕ pad; the transcript itself is left as it is."""
        if self._stream is None:
            raise ValueError("this transcript has no hash key (a PKI round signs the bytes instead)")
        stream = self._stream.copy()
        stream.update(label)
        return bytes(a ^ b for a, b in zip(stream.digest(), pad))

    def blocks(self) -> int:
        return math.ceil((self.size + 8) / 16) + 1


class AuthenticatedBob:
    """Bob's end: wraps every request in an envelope and closes the round with the tags.

    Args:
        pool: Bob's :class:`AuthKeyPool`.
        carry: sends an envelope to Alice and returns her reply envelope.
        round_number: this round's number (the same at both ends; authenticated).
    """

    def __init__(self, pool: AuthKeyPool | None, carry: Callable[[bytes], bytes], *, round_number: int,
                 pki: PkiIdentity | None = None) -> None:
        if (pool is None) == (pki is None):
            raise ValueError("authenticate with a key pool or with a PKI identity (exactly one)")
        self._pool, self._carry, self._round, self._pki = pool, carry, round_number, pki
        self._position = pool.position if pool is not None else 0
        self._transcript = _new_transcript(pool)
        self._seq_out = self._seq_in = 0
        self.summary = AuthSummary(pool.bootstrap if pool is not None else "pki", round_number)

    def __repr__(self) -> str:
        return f"AuthenticatedBob(round={self._round}, verified={self.summary.verified})"

    def _send(self, kind: int, payload: bytes) -> bytes:
        env = _envelope(kind, self._round, self._position, self._seq_out, payload)
        self._seq_out += 1
        self._transcript.add(_BOB_TO_ALICE, env)
        reply = self._carry(env)
        return reply

    def _receive(self, reply: bytes, kind: int) -> bytes:
        got, round_number, position, seq, payload = _open(reply)
        if (got, round_number, position, seq) != (kind, self._round, self._position, self._seq_in):
            raise AuthenticationError()
        self._seq_in += 1
        self._transcript.add(_ALICE_TO_BOB, reply)
        return payload

    def request(self, frame: bytes) -> bytes:
        """Carry one post-processing frame to Alice; return her reply frame."""
        return self._receive(self._send(DATA, frame), DATA)

    def close(self) -> AuthSummary:
        """Exchange the tags; raises :class:`AuthenticationError` unless Alice's verifies."""
        if self._pki is not None:
            return self._close_pki()
        pads = self._pool.take(PAD_BYTES_PER_ROUND)
        self.summary.pool_bits_used = 8 * PAD_BYTES_PER_ROUND
        mine = self._transcript.tag(b"bob", pads[:TAG_BYTES])
        self.summary.forgery_bound = self._transcript.blocks() / 2.0**128
        reply = self._send(TAG, mine)
        theirs = self._receive(reply, TAG)
        # Alice tagged the transcript as it stood after Bob's TAG envelope (without her reply).
        expected = self._transcript.without_last().tag(b"alice", pads[TAG_BYTES:])
        if len(theirs) != TAG_BYTES or not hmac.compare_digest(theirs, expected):
            raise AuthenticationError()
        self.summary.verified = True
        self._send(CONFIRM, b"")
        self.summary.released = True
        return self.summary


    def _close_pki(self) -> AuthSummary:
        mine = _pki_sign(self._pki, self._transcript.joined(), b"bob", self._round)
        theirs = self._receive(self._send(TAG, mine), TAG)
        _pki_verify(self._pki, theirs, self._transcript.without_last().joined(), b"alice", self._round)
        self.summary.verified = True
        self.summary.tag_bits = 0
        self._send(CONFIRM, b"")
        self.summary.released = True
        return self.summary


class AuthenticatedAlice:
    """Alice's end: opens envelopes, passes DATA to ``handler`` and answers the tag exchange."""

    def __init__(self, pool: AuthKeyPool | None, handler: Callable[[bytes], bytes], *, round_number: int,
                 pki: PkiIdentity | None = None) -> None:
        if (pool is None) == (pki is None):
            raise ValueError("authenticate with a key pool or with a PKI identity (exactly one)")
        self._pool, self._handler, self._round, self._pki = pool, handler, round_number, pki
        self._position: int | None = None
        self._transcript = _new_transcript(pool)
        self._seq_in = self._seq_out = 0
        self._state = "data"
        self.summary = AuthSummary(pool.bootstrap if pool is not None else "pki", round_number)

    def __repr__(self) -> str:
        return f"AuthenticatedAlice(round={self._round}, state={self._state!r})"

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
            raise

    def _handle(self, envelope: bytes) -> bytes:
        kind, round_number, position, seq, payload = _open(envelope)
        if self._position is None:
            # The first envelope fixes the round's pool position.  Forward only: catching up
            # after a round whose tags Bob spent but Alice never saw burns bits, never reuses.
            if self._pki is not None:
                if round_number != self._round or position != 0:
                    raise AuthenticationError()
            else:
                if round_number != self._round or position < self._pool.position:
                    raise AuthenticationError()
                self._pool.skip_to(position)
            self._position = position
        if (round_number, position, seq) != (self._round, self._position, self._seq_in):
            raise AuthenticationError()
        self._seq_in += 1
        self._transcript.add(_BOB_TO_ALICE, envelope)
        if kind == DATA and self._state == "data":
            return self._reply(DATA, self._handler(payload))
        if kind == TAG and self._state == "data" and self._pki is not None:
            self._state = "tagged"
            _pki_verify(self._pki, payload, self._transcript.without_last().joined(), b"bob", self._round)
            self.summary.verified = True
            self.summary.tag_bits = 0
            return self._reply(TAG, _pki_sign(self._pki, self._transcript.joined(), b"alice", self._round))
        if kind == TAG and self._state == "data":
            self._state = "tagged"
            pads = self._pool.take(PAD_BYTES_PER_ROUND)
            self.summary.pool_bits_used = 8 * PAD_BYTES_PER_ROUND
            before = self._transcript  # ends with Bob's TAG envelope; her reply is not in yet
            expected = before.without_last().tag(b"bob", pads[:TAG_BYTES])
            if len(payload) != TAG_BYTES or not hmac.compare_digest(payload, expected):
                raise AuthenticationError()
            self.summary.verified = True
            self.summary.forgery_bound = before.blocks() / 2.0**128
            return self._reply(TAG, before.tag(b"alice", pads[TAG_BYTES:]))
        if kind == CONFIRM and self._state == "tagged":
            self._state = "done"
            self.summary.released = True
            return b""
        raise AuthenticationError()

    def _reply(self, kind: int, payload: bytes) -> bytes:
        env = _envelope(kind, self._round, self._position, self._seq_out, payload)
        self._seq_out += 1
        self._transcript.add(_ALICE_TO_BOB, env)
        return env


def _new_transcript(pool: AuthKeyPool | None) -> _Transcript:
    """A pool round hashes as it goes under the pool's (reused) hash key, fixed for the round;
    a PKI round has no hash key and keeps the bytes it will sign."""
    if pool is not None:
        return _Transcript(pool.hash_key)
    return _Transcript(keep_bytes=True)
