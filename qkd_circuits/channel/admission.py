"""What a pool lets into a round: known keys never feed a real pool, and no input is used twice.

Two ways a round's key can be known to an attacker even though every tag verified:

* a **seeded simulation**: anyone with the seed (printed in every report) recomputes the raw
  bits, the public choices and so the final key.  Its first bits would refill the pool and be
  spent as hash keys and pads: the attacker would then know them and could forge tags.  A real
  pool refuses seeded rounds; a *simulation* pool (``qkd psk init --simulation``) takes them and
  is labelled as such everywhere (it must never feed a key store).
* a **record processed before**: the same measurement data give the same sifted key, and two
  runs leak different parities of it (an attacker can steer the second run's questions), so a
  record is post-processed at most once per pool.  The pool keeps digests of what it processed.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..exceptions import ConfigurationError, RecordError
from .pool import AuthKeyPool

__all__ = ["view_digest", "admit", "admit_view", "refuse_known_keys", "MAX_DIGESTS"]

#: Digests a pool remembers (the oldest are dropped first; 16 bytes each in the state file).
MAX_DIGESTS = 1 << 16


def view_digest(*arrays: np.ndarray) -> str:
    """A 128-bit fingerprint of one party's view of a record (its arrays, in order).

    Raises:
        TypeError: an argument is not a numeric array (an object array's bytes are addresses,
            different in every process, so it could never be recognised again).
    """
    h = hashlib.sha256(b"qkd_circuits/view/v1")
    for a in arrays:
        a = np.ascontiguousarray(a)
        if a.dtype.kind not in "biu":
            raise TypeError(f"view_digest takes bool or integer arrays, got {a.dtype}")
        if a.dtype == np.uint8 and a.max(initial=0) <= 1:  # 0/1 bits hash as the bool arrays they once were:
            a = a.astype(np.bool_)                          # digests remembered by earlier versions still match
        h.update(str(a.dtype).encode() + a.size.to_bytes(8, "big"))
        h.update(a.tobytes())
    return h.hexdigest()[:32]


def refuse_known_keys(pool: AuthKeyPool | None, *, seeded: bool) -> None:
    """Raise :class:`ConfigurationError` if a seeded (publicly reproducible) round would refill a real pool."""
    if seeded and pool is not None and not pool.simulation:
        raise ConfigurationError(
            "a seeded simulation's key can be recomputed by anyone who knows the seed, so it must not refill "
            "a real authentication pool: omit --seed, or use a simulation pool (qkd psk init --simulation)")


def admit(pool: AuthKeyPool | None, digest: str, *, seeded: bool, what: str = "this record") -> None:
    """Refuse a round whose key would be known, or whose input was processed before; else note it.

    Raises:
        ConfigurationError: a seeded simulation with a real (non-simulation) pool.
        RecordError: ``digest`` was processed with this pool before.
    """
    if pool is None:
        return
    refuse_known_keys(pool, seeded=seeded)
    if digest in pool.link.processed:
        raise RecordError(f"{what} was post-processed with this pool before; a record is used at most once "
                          "(a second run would leak other parities of the same key)")
    pool.link.processed.append(digest)
    del pool.link.processed[:-MAX_DIGESTS]


def admit_view(pool: AuthKeyPool | None, view, *, seeded: bool) -> None:
    """:func:`admit` one party's view of a record (an ``AliceView`` or ``BobView``: its arrays in field order).

    Optional arrays a view does not hold (``AliceView.intensity`` of a single-photon run) are left
    out, so such a view digests as it always did.
    """
    import dataclasses

    arrays = (getattr(view, f.name) for f in dataclasses.fields(view))
    admit(pool, view_digest(*(a for a in arrays if a is not None)), seeded=seeded)
