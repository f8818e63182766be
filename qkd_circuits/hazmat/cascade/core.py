"""Cascade, vectorised and sans-I/O.

Alice holds the reference key and only *answers*: the parities of the top-level blocks of a
pass, and the parities of ranges Bob asks for.  Bob drives: :meth:`CascadeBob.run` is a
generator that yields requests and receives Alice's replies, so any transport (a direct call,
an in-memory pipe, TCP) can carry them.  Every parity Alice sends is a disclosed bit, counted
by her (``leaked_bits``) and by Bob.

All binary searches that are open at one time advance together, one level per round trip
(one request holding every question).  Positions are in a pass's shuffled order: pass ``p``
reads the key through :func:`~qkd_circuits.hazmat.shuffle.derive_permutation`
``(seed, p, n)`` and splits it into blocks of the preset's size; a search on a range
``[s, e)`` asks for the parity of the left half ``[s, (s+e)//2)``.  When a bit is corrected, the
block holding it in every earlier pass changes parity; odd blocks are searched again (the
"cascade").  Bit arrays are uint8 0/1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import repeat
from typing import Generator

import numpy as np

from ...exceptions import ProtocolError
from ..messages import RangeParitiesReply, RangeParitiesRequest, TopParitiesReply, TopParitiesRequest
from ..shuffle import derive_permutation, inverse_permutation
from .presets import PRESETS, CascadePreset, block_size

__all__ = ["CascadeAlice", "CascadeBob", "CascadeStats", "parities_asked", "reconcile", "MAX_BITS"]

#: Largest key (exclusive) one Cascade run takes: range keys stay exact in int64 below it.
MAX_BITS = 1 << 29


@dataclass
class CascadeStats:
    """What a reconciliation cost: disclosed parity bits, round trips, passes, corrections."""

    preset: str
    n: int
    qber_estimate: float
    leaked_bits: int = 0
    channel_uses: int = 0
    passes_run: int = 0
    corrected_bits: int = 0
    block_sizes: list = field(default_factory=list)


def _check_key(key: np.ndarray, name: str) -> np.ndarray:
    key = np.asarray(key)
    if key.ndim != 1 or key.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D bit array, got shape {key.shape}")
    if key.dtype != np.uint8:
        key = key.astype(np.uint8)
    if key.size and key.max() > 1:
        raise ValueError(f"{name} must hold only 0 and 1")
    return key


def _preset(preset: CascadePreset | str) -> CascadePreset:
    if isinstance(preset, CascadePreset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown Cascade preset {preset!r}; known: {', '.join(PRESETS)}") from None


def parities_asked(request, *, preset: CascadePreset | str, qber: float, n: int) -> int:
    """How many parity bits answering ``request`` would disclose, computed before answering.

    Exactly what :meth:`CascadeAlice.handle` adds to ``leaked_bits`` (and Bob to his stats) for
    it: a :class:`TopParitiesRequest` of pass ``p`` reveals one parity per top-level block,
    ``ceil(n / k_p)``; a :class:`RangeParitiesRequest` one per range it lists (repeats
    included).  Raises :class:`ProtocolError` for what :meth:`CascadeAlice.handle` would refuse
    anyway (a pass outside the preset, ranges out of bounds, arrays of different shapes), so
    a budget check can run on any frame that decoded.
    """
    preset = _preset(preset)
    if isinstance(request, TopParitiesRequest):
        p = request.pass_number
        if not 1 <= p <= preset.passes:
            raise ProtocolError(f"Cascade pass {p} is outside 1..{preset.passes}")
        return -(-n // block_size(preset, qber, n, p))
    if isinstance(request, RangeParitiesRequest):
        passes, starts, ends = request.passes, request.starts, request.ends
        if not passes.shape == starts.shape == ends.shape or passes.ndim != 1:
            raise ProtocolError("range request arrays differ in shape")
        if starts.size and ((starts < 0).any() or (ends > n).any() or (starts >= ends).any()):
            raise ProtocolError("range request holds an empty or out-of-bounds range")
        if passes.size and ((passes < 1).any() or (passes > preset.passes).any()):
            raise ProtocolError(f"range request names a Cascade pass outside 1..{preset.passes}")
        return int(starts.size)
    raise ProtocolError(f"Cascade cannot answer a {type(request).__name__}")


class CascadeAlice:
    """Alice's side: answers parity questions about her key, counting what she discloses."""

    def __init__(self, key: np.ndarray, *, seed: bytes, preset: CascadePreset | str, qber: float) -> None:
        self._key = _check_key(key, "key")
        self._seed = seed
        self.preset = _preset(preset)
        self.qber = float(qber)
        self.n = self._key.size
        self._prefix: dict[int, np.ndarray] = {}  # pass -> prefix XOR of the shuffled key
        self.leaked_bits = 0

    def __repr__(self) -> str:
        return f"CascadeAlice(n={self.n}, preset={self.preset.name!r}, leaked_bits={self.leaked_bits})"

    def _pass_prefix(self, p: int) -> np.ndarray:
        if p not in self._prefix:
            if not 1 <= p <= self.preset.passes:
                raise ProtocolError(f"Cascade pass {p} is outside 1..{self.preset.passes}")
            shuffled = self._key[derive_permutation(self._seed, p, self.n)]
            prefix = np.zeros(self.n + 1, dtype=np.uint8)
            np.bitwise_xor.accumulate(shuffled, out=prefix[1:])
            self._prefix[p] = prefix
        return self._prefix[p]

    def parities_asked(self, request) -> int:
        """The parity bits answering ``request`` would disclose (see :func:`parities_asked`)."""
        return parities_asked(request, preset=self.preset, qber=self.qber, n=self.n)

    def handle(self, request):
        """Answer one request; raises :class:`ProtocolError` on a malformed or out-of-range one."""
        if isinstance(request, TopParitiesRequest):
            p = request.pass_number
            prefix = self._pass_prefix(p)
            k = block_size(self.preset, self.qber, self.n, p)
            starts = np.arange(0, self.n, k)
            parities = prefix[np.minimum(starts + k, self.n)] ^ prefix[starts]
            self.leaked_bits += parities.size
            return TopParitiesReply(parities)
        if isinstance(request, RangeParitiesRequest):
            passes, starts, ends = request.passes, request.starts, request.ends
            if not passes.shape == starts.shape == ends.shape or passes.ndim != 1:
                raise ProtocolError("range request arrays differ in shape")
            if starts.size and ((starts < 0).any() or (ends > self.n).any() or (starts >= ends).any()):
                raise ProtocolError("range request holds an empty or out-of-bounds range")
            parities = np.empty(starts.size, dtype=np.uint8)
            for p in np.unique(passes):
                sel = passes == p
                prefix = self._pass_prefix(int(p))
                parities[sel] = prefix[ends[sel]] ^ prefix[starts[sel]]
            self.leaked_bits += parities.size
            return RangeParitiesReply(parities)
        raise ProtocolError(f"Cascade cannot answer a {type(request).__name__}")


class CascadeBob:
    """Bob's side: corrects his key towards Alice's; :meth:`run` is the protocol generator."""

    def __init__(self, key: np.ndarray, *, seed: bytes, preset: CascadePreset | str, qber: float) -> None:
        self.key = _check_key(key, "key").copy()
        self._seed = seed
        self.preset = _preset(preset)
        self.n = self.key.size
        if self.n >= MAX_BITS:
            raise ValueError(f"Cascade handles keys of up to {MAX_BITS - 1} bits, got {self.n}: split the key")
        self.stats = CascadeStats(self.preset.name, self.n, float(qber))
        self.qber = float(qber)
        # A generous bound on round trips: every error costs at most one search per pass, and a
        # search at most log2(n) + 1 levels.  Only inconsistent (tampered) parities exceed it.
        self._max_rounds = 4 * self.preset.passes * (self.n.bit_length() + 2) + 2 * self.n

    def __repr__(self) -> str:
        return f"CascadeBob(n={self.n}, preset={self.preset.name!r})"

    # -- helpers -----------------------------------------------------------------------------
    def _range_parities(self, passes: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Parities of Bob's current key over shuffled ranges, all at once."""
        out = np.empty(starts.size, dtype=np.uint8)
        for p in np.unique(passes):
            sel = np.flatnonzero(passes == p)
            s, e = starts[sel].astype(np.int64), ends[sel].astype(np.int64)
            lengths = e - s
            offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
            positions = np.repeat(s - offsets, lengths) + np.arange(lengths.sum())
            bits = self.key[derive_permutation(self._seed, int(p), self.n)[positions]]
            out[sel] = np.add.reduceat(bits, offsets) & 1 if bits.size else 0
        return out

    def run(self) -> Generator[object, object, np.ndarray]:
        """Yield requests for Alice, receive her replies; return the corrected key."""
        n, stats, reuse = self.n, self.stats, self.preset.sub_block_reuse
        sizes, odd, searching, alice_top = [], [], [], []
        known: dict[int, int] = {}  # _range_keys(pass, start, end) -> Alice's parity
        # Open searches: pass, start, end, Alice's parity of [start, end) (always odd mismatch).
        S_p = S_s = S_e = S_a = np.empty(0, dtype=np.int64)

        for p in range(1, self.preset.passes + 1):
            k = block_size(self.preset, self.qber, n, p)
            sizes.append(k)
            reply = yield TopParitiesRequest(p)
            stats.channel_uses += 1
            nblocks = -(-n // k)
            if not isinstance(reply, TopParitiesReply) or reply.parities.shape != (nblocks,):
                raise ProtocolError(f"expected {nblocks} top-level parities for pass {p}")
            mine = _block_parities(self.key[derive_permutation(self._seed, p, n)], k)
            alice_top.append(reply.parities.astype(np.uint8))
            stats.leaked_bits += nblocks
            odd.append((mine ^ reply.parities).astype(bool))
            searching.append(np.zeros(nblocks, dtype=bool))
            stats.passes_run = p

            dirty = {p}  # passes whose odd/searching flags changed since they were scanned
            while True:
                # Start a search in every odd block that has none.
                new_p, new_s, new_e, new_a = [], [], [], []
                for q in sorted(dirty):
                    blocks = np.flatnonzero(odd[q - 1] & ~searching[q - 1])
                    if blocks.size:
                        searching[q - 1][blocks] = True
                        kq = sizes[q - 1]
                        new_p.append(np.full(blocks.size, q))
                        new_s.append(blocks * kq)
                        new_e.append(np.minimum(blocks * kq + kq, n))
                        new_a.append(alice_top[q - 1][blocks].astype(np.int64))
                dirty.clear()
                if new_p:
                    S_p, S_s, S_e, S_a = (np.concatenate([a, *b]) for a, b in
                                          ((S_p, new_p), (S_s, new_s), (S_e, new_e), (S_a, new_a)))
                if S_p.size == 0:
                    break

                if stats.corrected_bits > n or stats.channel_uses > self._max_rounds:
                    # Honest answers fix each error once; only wrong parities get here.
                    raise ProtocolError(
                        f"Cascade did not converge ({stats.corrected_bits} corrections, "
                        f"{stats.channel_uses} round trips): the parities received are inconsistent")

                # Searches narrowed to one bit have found an error.
                done = (S_e - S_s) == 1
                if done.any():
                    found = set()
                    for q in np.unique(S_p[done]):
                        sel = done & (S_p == q)
                        perm = derive_permutation(self._seed, int(q), n)
                        found.update(perm[S_s[sel]].tolist())
                        searching[q - 1][S_s[sel] // sizes[q - 1]] = False
                    S_p, S_s, S_e, S_a = S_p[~done], S_s[~done], S_e[~done], S_a[~done]
                    fixed = np.fromiter(found, dtype=np.int64, count=len(found))
                    self.key[fixed] ^= 1
                    stats.corrected_bits += fixed.size
                    keep = np.ones(S_p.size, dtype=bool)
                    dirty.update(range(1, p + 1))
                    for q in range(1, p + 1):
                        pos = np.sort(inverse_permutation(self._seed, q, n)[fixed])
                        np.bitwise_xor.at(odd[q - 1], pos // sizes[q - 1], True)
                        # A search whose range holds a corrected bit lost its invariant: drop
                        # it; its block is searched again from the top if it is still odd.
                        sel = np.flatnonzero(S_p == q)
                        hit = np.searchsorted(pos, S_e[sel]) > np.searchsorted(pos, S_s[sel])
                        keep[sel[hit]] = False
                        searching[q - 1][S_s[sel[hit]] // sizes[q - 1]] = False
                    S_p, S_s, S_e, S_a = S_p[keep], S_s[keep], S_e[keep], S_a[keep]
                    continue  # new odd blocks may need searches; re-check before asking

                # One level of every open search: Alice's parity of the left half.
                mid = (S_s + S_e) // 2
                if reuse:
                    keys = _range_keys(S_p, S_s, mid, n)
                    left_alice = np.fromiter(map(known.get, keys.tolist(), repeat(-1)), dtype=np.int64, count=keys.size)
                else:
                    left_alice = np.full(S_p.size, -1, dtype=np.int64)
                ask = np.flatnonzero(left_alice < 0)
                if ask.size:
                    reply = yield RangeParitiesRequest(S_p[ask], S_s[ask], mid[ask])
                    stats.channel_uses += 1
                    if not isinstance(reply, RangeParitiesReply) or reply.parities.shape != (ask.size,):
                        raise ProtocolError(f"expected {ask.size} range parities")
                    left_alice[ask] = reply.parities
                    stats.leaked_bits += ask.size
                    if reuse:  # remember the asked half and the one it implies
                        right = S_a[ask] ^ reply.parities
                        known.update(zip(keys[ask].tolist(), reply.parities.tolist()))
                        known.update(zip(_range_keys(S_p[ask], mid[ask], S_e[ask], n).tolist(), right.tolist()))
                left_bob = self._range_parities(S_p, S_s, mid)
                go_left = (left_alice ^ left_bob).astype(bool)
                S_a = np.where(go_left, left_alice, S_a ^ left_alice)
                S_e = np.where(go_left, mid, S_e)
                S_s = np.where(go_left, S_s, mid)

        stats.block_sizes = sizes
        return self.key


def _range_keys(passes: np.ndarray, starts: np.ndarray, ends: np.ndarray, n: int) -> np.ndarray:
    """One integer per (pass, start, end): exact in int64 while 16·(n+1)² < 2^63 (n < 7e8)."""
    return (passes.astype(np.int64) * (n + 1) + starts) * (n + 1) + ends


def _block_parities(shuffled: np.ndarray, k: int) -> np.ndarray:
    """Parities of consecutive blocks of ``k`` bits (the last one may be shorter)."""
    prefix = np.zeros(shuffled.size + 1, dtype=np.uint8)
    np.bitwise_xor.accumulate(shuffled, out=prefix[1:])
    starts = np.arange(0, shuffled.size, k)
    return prefix[np.minimum(starts + k, shuffled.size)] ^ prefix[starts]


def reconcile(alice_key: np.ndarray, bob_key: np.ndarray, *, seed: bytes, preset: CascadePreset | str = "yanetal",
              qber: float) -> tuple[np.ndarray, CascadeStats]:
    """Run both sides in this process (requests handed over directly); returns Bob's corrected
    key and the statistics.  For studies and benchmarks; sessions use the message driver."""
    alice = CascadeAlice(alice_key, seed=seed, preset=preset, qber=qber)
    bob = CascadeBob(bob_key, seed=seed, preset=preset, qber=qber)
    gen = bob.run()
    try:
        request = next(gen)
        while True:
            request = gen.send(alice.handle(request))
    except StopIteration as stop:
        corrected = stop.value
    if alice.leaked_bits != bob.stats.leaked_bits:  # both must count the same disclosure
        raise ProtocolError(f"leak accounting differs: Alice {alice.leaked_bits}, Bob {bob.stats.leaked_bits}")
    return corrected, bob.stats
