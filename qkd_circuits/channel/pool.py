"""The authentication key pool: one party's secret link material, each pad bit used exactly once.

Wegman–Carter authentication (Wegman & Carter 1981) tags a message with h_k(M) ⊕ r.  The pool
is a *stream* of secret bytes consumed strictly forward, and every round takes one fixed slice
of it (:data:`ROUND_SLICE_BYTES` = 64 bytes = 512 bits)::

    slice = hash key k (16) | pad of Bob's tag (16) | pad of Alice's tag (16) | pad of Bob's CONFIRM (16)

**Hash-key policy: a fresh hash key every round.**  Portmann (IEEE Trans. IT 60, 4383 (2014),
"Key recycling in authentication") shows k may be reused while every tag gets fresh pad bits,
but then the security of *all* later rounds rests on every pad ever used staying secret.  The
first turn of this project showed what that costs: one round whose pads an attacker knew (a
seeded simulation) revealed the reused k through two public tags, and every later tag could be
forged.  Abidin & Larsson ("Security of authentication with a fixed key in quantum key
distribution", 2011) analyse that degradation for partially known keys.  Taking k fresh from
the pool each round caps the damage of an exposed slice at that one round, for 128 bits more
per round; the replenishment from each new key (default 1024 bits) pays for it many times.

* :meth:`take` hands out the next bytes and erases them from the pool at once (a failed round
  burns its slice too); :meth:`peek` reads ahead without consuming (to verify a tag at a
  position the peer claims, on a scratch view, before anything moves);
* :meth:`replenish` appends bytes from a new, settled QKD key, with the ε-secrecy of that key:
  when its bytes are first spent the pool's :class:`EpsilonLedger` charges that ε once;
* running dry raises :class:`~qkd_circuits.KeyPoolExhausted`: bootstrap again.

The pool also carries the party's view of the link (:class:`LinkState`): the bootstrap epoch,
the next round number, keys pending a decision, Bob's confirmations not yet acknowledged, the
count of consecutive authentication failures (the halt policy), digests of processed records,
and the ε ledger.  A state file holds all of it, secret (mode 0600)::

    "QKDPSK2\\n" | header length u32 BE | header (JSON, UTF-8) | pad stream (the rest)

``qkd psk init`` writes a fresh one; copy it to the other site over a trusted path.  A
*simulation* pool (``simulation=True``) may be refilled from seeded rounds, whose keys anyone
with the seed can recompute; a real pool refuses those rounds, and a simulation pool never
feeds a key store.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ..exceptions import ConfigurationError, KeyPoolExhausted, RecordError
from ..secretfile import read_secret_file, wipe, write_secret_file

__all__ = ["AuthKeyPool", "EpsilonLedger", "LinkState", "HASH_KEY_BYTES", "ROUND_SLICE_BYTES",
           "DEFAULT_HALT_AFTER", "create_psk_file"]

HASH_KEY_BYTES = 16
TAG_BYTES = 16
#: Pool bytes one pool-authenticated round spends: hash key + three pads (Bob's tag, Alice's tag, CONFIRM).
ROUND_SLICE_BYTES = HASH_KEY_BYTES + 3 * TAG_BYTES
#: Consecutive authentication failures after which the link halts and asks for an operator.
DEFAULT_HALT_AFTER = 5
#: How far ahead of this party's pool a peer's claimed position may be (rounds); further is refused.
MAX_CATCH_UP_ROUNDS = 16
EPOCH_BYTES = 8
_MAGIC = b"QKDPSK2\n"
_LEN = struct.Struct(">I")
_MAX_HEADER = 16 << 20


@dataclass
class EpsilonLedger:
    """The link's ε account over its lifetime (every term a failure probability, added up).

    * ``auth_forgery``: the forgery bounds L/2^128 of every tag this party checked or sent;
    * ``pad_sources``: the ε-secrecy of each earlier key whose bytes were spent as pads or hash
      keys, charged once per key when its first byte is spent (a key that is ε-close to
      uniform makes any use of it at most ε worse than a uniform key; the PSK counts 0);
    * ``keys``: ε_sec + ε_cor of every key released to a consumer.

    ``total`` is their sum: by composability (Portmann & Renner 2014; Müller-Quade & Renner
    2009), the whole life of the link is ``total``-close to an ideal one.
    """

    rounds: int = 0
    auth_forgery: float = 0.0
    pad_sources: float = 0.0
    keys: float = 0.0

    @property
    def total(self) -> float:
        return self.auth_forgery + self.pad_sources + self.keys

    def to_dict(self) -> dict:
        return {"rounds": self.rounds, "auth_forgery": self.auth_forgery, "pad_sources": self.pad_sources,
                "keys": self.keys, "total": self.total}


@dataclass
class LinkState:
    """One party's view of the link besides the pad stream (saved in the same secret file).

    ``pending`` (Alice): round → what she needs to settle it later: the key's bits and refill,
    the round's hash key, the CONFIRM pad and her tag (all secret; wiped when settled).
    ``unconfirmed`` (Bob): round → his decision and the material to (re)send its CONFIRM until
    Alice acknowledges it in an authenticated round.
    ``outbox`` (a link node's key store, off unless set to a dict): round → a released key not yet
    in the site's key store.  A key enters it in the same save as the decision that releases it,
    and leaves only once the store holds it, so a crash between the two loses nothing and a
    replay stores nothing twice (the store records which rounds it holds).
    """

    epoch: bytes
    next_round: int = 0
    simulation: bool = False
    halt_after: int = DEFAULT_HALT_AFTER
    failures: int = 0
    pending: dict = field(default_factory=dict)
    unconfirmed: dict = field(default_factory=dict)
    processed: list = field(default_factory=list)
    ledger: EpsilonLedger = field(default_factory=EpsilonLedger)
    outbox: dict | None = None

    @property
    def halted(self) -> bool:
        return self.failures >= self.halt_after


def _b64(data) -> str:
    return base64.b64encode(bytes(data)).decode("ascii")


def _unb64(text) -> bytearray:
    if not isinstance(text, str):
        raise ValueError("expected base64 text")
    return bytearray(base64.b64decode(text.encode("ascii"), validate=True))


class AuthKeyPool:
    """Authentication key material and link state for one party.

    Args:
        pad: the secret byte stream (hash keys and pads are cut from it, round by round).
        position: bytes consumed before this stream starts (0 for a fresh bootstrap).
        bootstrap: a label for reports (``"psk"``, ``"demo-psk"``, ``"pki"``).
        epoch: the bootstrap's public identifier (the same at both ends; random per PSK).
        simulation: a pool for simulations, which seeded rounds may refill (see the module).
    """

    def __init__(self, pad: bytes | bytearray, *, position: int = 0, bootstrap: str = "psk",
                 epoch: bytes | None = None, simulation: bool = False, link: LinkState | None = None) -> None:
        self._pad = bytearray(pad)
        if isinstance(pad, bytearray):
            wipe(pad)
        self.position = int(position)
        self.bootstrap = bootstrap
        if link is None:
            link = LinkState(epoch=bytes(epoch) if epoch is not None else secrets.token_bytes(EPOCH_BYTES),
                             simulation=simulation)
        if len(link.epoch) != EPOCH_BYTES:
            raise ConfigurationError(f"the link epoch must be {EPOCH_BYTES} bytes, got {len(link.epoch)}")
        self.link = link
        self.bytes_used = 0  # since this object was made
        self.bytes_added = 0
        # (end position, ε) of replenished material not yet charged to the ledger, in stream order.
        self._segments: list[list] = []

    def __repr__(self) -> str:
        sim = ", simulation" if self.link.simulation else ""
        return (f"AuthKeyPool(bootstrap={self.bootstrap!r}, position={self.position}, "
                f"round={self.link.next_round}, available_bits={self.available_bits}{sim})")

    @property
    def available_bits(self) -> int:
        return 8 * len(self._pad)

    @property
    def epoch(self) -> bytes:
        return self.link.epoch

    @property
    def simulation(self) -> bool:
        return self.link.simulation

    @property
    def ledger(self) -> EpsilonLedger:
        return self.link.ledger

    def peek(self, offset: int, nbytes: int) -> bytearray:
        """A copy of ``nbytes`` starting ``offset`` bytes ahead; nothing is consumed (wipe it after use)."""
        if offset < 0 or nbytes < 0:
            raise ValueError(f"offset and nbytes must be >= 0, got {offset}, {nbytes}")
        if offset + nbytes > len(self._pad):
            raise KeyPoolExhausted(
                f"the authentication key pool holds {8 * len(self._pad)} bits, a round needs "
                f"{8 * (offset + nbytes)}: bootstrap again (qkd psk init, or PKI)")
        return self._pad[offset:offset + nbytes]

    def take(self, nbytes: int) -> bytearray:
        """The next ``nbytes`` bytes; they leave the pool (and are overwritten there) now."""
        out = self.peek(0, nbytes)
        self._pad[:nbytes] = bytes(nbytes)  # zeroise before dropping the reference
        del self._pad[:nbytes]
        self.position += nbytes
        self.bytes_used += nbytes
        self._charge_sources()
        return out

    def skip_to(self, position: int) -> None:
        """Burn bytes up to ``position`` (forward only: nothing is ever handed out twice)."""
        if position < self.position:
            raise ValueError(f"cannot move the pool back from {self.position} to {position}")
        wipe(self.take(position - self.position))

    def _charge_sources(self) -> None:
        # A replenished key's ε is charged when its first byte is spent, once.
        for segment in self._segments:
            end, eps, charged, length = segment
            if not charged and self.position > end - length:
                self.link.ledger.pad_sources += eps
                segment[2] = True
        self._segments = [s for s in self._segments if s[0] > self.position]

    def replenish(self, material: bytes | bytearray, *, eps: float = 0.0) -> None:
        """Append bytes taken from a new, settled final key (the same bytes at both ends).

        ``eps`` is that key's ε-secrecy; the ledger charges it when the bytes are first spent.
        """
        if not 0.0 <= eps < 1.0 or not math.isfinite(eps):
            raise ConfigurationError(f"eps must be in [0, 1), got {eps}")
        end = self.position + len(self._pad) + len(material)
        self._pad.extend(material)
        self.bytes_added += len(material)
        if eps > 0 and len(material):
            self._segments.append([end, float(eps), False, len(material)])

    def erase(self) -> None:
        """Overwrite and drop all material, the pending keys' too (e.g. after a desynchronisation)."""
        wipe(self._pad)
        self._pad.clear()
        outbox = self.link.outbox or {}
        for record in [*self.link.pending.values(), *self.link.unconfirmed.values(), *outbox.values()]:
            for value in record.values():
                if isinstance(value, bytearray):
                    wipe(value)
        self.link.pending.clear()
        self.link.unconfirmed.clear()
        outbox.clear()

    # -- files ---------------------------------------------------------------------------------
    def to_bytes(self) -> bytearray:
        """The state file's bytes (secret: wipe after use)."""
        link = self.link

        def encode_record(record: dict) -> dict:
            return {k: (_b64(v) if isinstance(v, (bytes, bytearray)) else v) for k, v in record.items()}

        header = {
            "version": 2, "position": self.position, "bootstrap": self.bootstrap, "epoch": link.epoch.hex(),
            "next_round": link.next_round, "simulation": link.simulation, "halt_after": link.halt_after,
            "failures": link.failures, "processed": list(link.processed),
            "ledger": {k: getattr(link.ledger, k) for k in ("rounds", "auth_forgery", "pad_sources", "keys")},
            "segments": [list(s) for s in self._segments],
            "pending": {str(r): encode_record(v) for r, v in link.pending.items()},
            "unconfirmed": {str(r): encode_record(v) for r, v in link.unconfirmed.items()},
            "outbox": None if link.outbox is None else {str(r): encode_record(v) for r, v in link.outbox.items()},
        }
        text = json.dumps(header, sort_keys=True).encode("utf-8")
        out = bytearray(_MAGIC + _LEN.pack(len(text)) + text)
        out += self._pad
        return out

    def save(self, path: str | Path) -> Path:
        """Write the pool and link state to ``path`` (mode 0600, atomic, no symlink followed)."""
        data = self.to_bytes()
        try:
            return write_secret_file(path, data, overwrite=True)
        finally:
            wipe(data)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray, *, source: str = "the pool file") -> AuthKeyPool:
        """Decode a state file; anything malformed raises :class:`~qkd_circuits.RecordError`."""
        if len(data) < len(_MAGIC) + _LEN.size or bytes(data[:len(_MAGIC)]) != _MAGIC:
            raise RecordError(f"{source} is not a qkd_circuits PSK file (version 2); create one with 'qkd psk init'")
        (size,) = _LEN.unpack_from(data, len(_MAGIC))
        start = len(_MAGIC) + _LEN.size
        if size > _MAX_HEADER or start + size > len(data):
            raise RecordError(f"{source} is truncated or corrupt (header of {size} bytes)")
        try:
            h = json.loads(bytes(data[start:start + size]).decode("utf-8"))
            if not isinstance(h, dict) or h.get("version") != 2:
                raise ValueError("not a version-2 header")

            def integer(value, minimum=0):
                if type(value) is not int or value < minimum:
                    raise ValueError(f"bad integer {value!r}")
                return value

            def number(value):
                if type(value) not in (int, float) or not math.isfinite(value) or not 0 <= value < 1e6:
                    raise ValueError(f"bad number {value!r}")
                return float(value)

            def decode_record(record, secret_keys):
                if not isinstance(record, dict):
                    raise ValueError("a pending or unconfirmed entry must be an object")
                return {k: (_unb64(v) if k in secret_keys else v) for k, v in record.items()}

            epoch = bytes.fromhex(h["epoch"]) if isinstance(h.get("epoch"), str) else b""
            ledger = EpsilonLedger(integer(h["ledger"]["rounds"]), number(h["ledger"]["auth_forgery"]),
                                   number(h["ledger"]["pad_sources"]), number(h["ledger"]["keys"]))
            pending = {integer(int(r)): decode_record(v, ("key", "refill", "hash_key", "pad", "tag"))
                       for r, v in dict(h["pending"]).items()}
            unconfirmed = {integer(int(r)): decode_record(v, ("hash_key", "pad", "tag"))
                           for r, v in dict(h["unconfirmed"]).items()}
            processed = [str(x) for x in h["processed"]]
            outbox = h.get("outbox")
            if outbox is not None:
                outbox = {integer(int(r)): decode_record(v, ("key",)) for r, v in dict(outbox).items()}
                for entry in outbox.values():
                    integer(entry["key_bits"])
            link = LinkState(epoch=epoch, next_round=integer(h["next_round"]), simulation=bool(h["simulation"]),
                             halt_after=integer(h["halt_after"], 1), failures=integer(h["failures"]),
                             pending=pending, unconfirmed=unconfirmed, processed=processed, ledger=ledger,
                             outbox=outbox)
            segments = [[integer(s[0]), number(s[1]), bool(s[2]), integer(s[3])] for s in h["segments"]]
            pool = cls(bytearray(data[start + size:]), position=integer(h["position"]),
                       bootstrap=str(h["bootstrap"]), link=link)
            pool._segments = segments
        except ConfigurationError as exc:
            raise RecordError(f"{source} is corrupt: {exc}") from None
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, UnicodeDecodeError,
                RecursionError) as exc:
            raise RecordError(f"{source} is corrupt: {type(exc).__name__}") from None
        return pool

    @classmethod
    def load(cls, path: str | Path, *, bootstrap: str | None = None) -> AuthKeyPool:
        path = Path(path)
        try:
            data = read_secret_file(path)
        except RecordError as exc:
            if not path.exists():
                raise RecordError(f"no PSK file at {path}: create one with 'qkd psk init {path}'") from None
            raise exc
        try:
            pool = cls.from_bytes(data, source=str(path))
        finally:
            wipe(data)
        if bootstrap is not None:
            pool.bootstrap = bootstrap
        return pool

    @classmethod
    def fresh(cls, pad_bytes: int = 4096, *, bootstrap: str = "demo-psk", simulation: bool = False,
              epoch: bytes | None = None) -> AuthKeyPool:
        """A new random pool (from :mod:`secrets`); give a :meth:`copy` to each party."""
        return cls(secrets.token_bytes(pad_bytes), bootstrap=bootstrap, simulation=simulation, epoch=epoch)

    def copy(self) -> AuthKeyPool:
        """An independent copy (the same PSK for the other party of a simulation, or a scratch view)."""
        data = self.to_bytes()
        try:
            return AuthKeyPool.from_bytes(data)
        finally:
            wipe(data)

    def state_digest(self) -> str:
        """SHA-256 of the shared part of the state (epoch, position, round, pad stream): equal at both
        ends exactly when the two pools are in step.  Reveals nothing usable about the pads."""
        import hashlib

        h = hashlib.sha256(b"qkd_circuits/pool-state/v2")
        h.update(self.link.epoch + struct.pack(">QQ", self.position, self.link.next_round))
        h.update(self._pad)
        return h.hexdigest()


def create_psk_file(path: str | Path, *, pad_bits: int = 1 << 16, overwrite: bool = False,
                    simulation: bool = False) -> Path:
    """Write a fresh PSK file for both ends (copy it to the other site over a trusted path)."""
    path = Path(path)
    if pad_bits < 8 * ROUND_SLICE_BYTES or pad_bits % 8:
        raise ConfigurationError(
            f"pad_bits must be a multiple of 8 and at least {8 * ROUND_SLICE_BYTES} (one round), got {pad_bits}")
    pool = AuthKeyPool.fresh(pad_bits // 8, bootstrap="psk", simulation=simulation)
    data = pool.to_bytes()
    try:
        if path.exists() and not overwrite:
            raise ConfigurationError(f"{path} exists; refusing to overwrite a PSK (pass overwrite=True, or --force)")
        return write_secret_file(path, data, overwrite=overwrite)
    finally:
        wipe(data)
