"""Pseudo-random permutations both parties derive from a public seed.

Cascade shuffles the key before each pass; both parties must use the same permutation, and
an implementation in another language must be able to reproduce it.  So the permutation is a
*specified function* of (seed, label, n), pinned by test vectors (tests/vectors/shuffle.json),
and never a library's random stream:

    w    = 16 if n <= 2^20 else 32                      (key width in bits)
    keys = SHAKE-256("qkd_circuits/shuffle/v1" || len(seed) as u16 BE || seed
                     || label as u32 BE || n as u64 BE), read as n little-endian w-bit words
    permutation = the stable sort of positions 0..n−1 by key (ties keep index order)

16-bit keys let numpy radix-sort in one pass; up to 2^20 positions that leaves runs of at most
~16 tied positions, each from all over the key, which is as good a shuffle for Cascade.

``permutation[i]`` is the index of the key bit that lands at position ``i`` (a gather map:
``shuffled = key[permutation]``).  The seed is public (it travels over the authenticated
channel): the permutation's job is to spread errors, not to hide anything.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np

__all__ = ["derive_permutation", "inverse_permutation"]

DOMAIN = b"qkd_circuits/shuffle/v1"


def _key_dtype(n: int) -> str:
    return "<u2" if n <= 1 << 20 else "<u4"


def _keys(seed: bytes, label: int, n: int) -> np.ndarray:
    if not isinstance(seed, bytes) or len(seed) > 0xFFFF:
        raise ValueError(f"seed must be bytes of at most 65535 bytes, got {type(seed).__name__}")
    if not 0 <= label < 2**32 or not 0 < n < 2**31:
        raise ValueError(f"need 0 <= label < 2^32 and 0 < n < 2^31, got label={label}, n={n}")
    prefix = DOMAIN + len(seed).to_bytes(2, "big") + seed + label.to_bytes(4, "big") + n.to_bytes(8, "big")
    dtype = _key_dtype(n)
    return np.frombuffer(hashlib.shake_256(prefix).digest(np.dtype(dtype).itemsize * n), dtype=dtype)


@lru_cache(maxsize=32)
def _cached(seed: bytes, label: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    keys = _keys(seed, label, n)
    if keys.dtype.itemsize == 2:
        order = np.argsort(keys, kind="stable").astype(np.int32)
    else:
        # A stable sort on 32-bit keys as two stable 16-bit passes (least significant first):
        # the same result as np.argsort(keys, kind="stable"), as numpy radix-sorts 16-bit keys.
        order = np.argsort((keys & 0xFFFF).astype(np.uint16), kind="stable")
        order = order[np.argsort((keys[order] >> 16).astype(np.uint16), kind="stable")].astype(np.int32)
    inverse = np.empty(n, dtype=np.int32)
    inverse[order] = np.arange(n, dtype=np.int32)
    order.setflags(write=False)
    inverse.setflags(write=False)
    return order, inverse


def derive_permutation(seed: bytes, label: int, n: int) -> np.ndarray:
    """The permutation of ``n`` positions for ``label`` (e.g. the Cascade pass), int32, read-only.

    Results are cached (both parties of an in-process simulation derive the same ones).

    Examples:
        >>> derive_permutation(b"seed", 1, 8).tolist()
        [2, 6, 5, 3, 4, 0, 1, 7]
    """
    return _cached(seed, label, n)[0]


def inverse_permutation(seed: bytes, label: int, n: int) -> np.ndarray:
    """``inverse[j]`` is the position of key index ``j`` under :func:`derive_permutation`."""
    return _cached(seed, label, n)[1]
