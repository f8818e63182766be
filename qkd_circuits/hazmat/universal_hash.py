"""Hazmat: the polynomial evaluation hash over GF(2^128) — GHASH of NIST SP 800-38D (AES-GCM).

Used for key verification now and for Wegman–Carter authentication tags later.  This is a raw
primitive: it gives no security unless its key H is uniformly random and secret, and a tag
built from it must be one-time padded (below).  Prefer the recipes that build on it.

Blocks and bit order (SP 800-38D §6.3): a 16-byte block is read as a 128-bit big-endian int;
its leftmost bit (the int's most significant bit) is the coefficient of x^0 and its rightmost
bit that of x^127, in GF(2^128) = GF(2)[x] / (x^128 + x^7 + x^2 + x + 1).  So the field's 1 is
``0x80 00 .. 00`` and multiplying by x is a right shift, reduced with R = 0xE1 || 0^120.

The hash (SP 800-38D §6.4, Algorithm 2, on the input of §7.1, Algorithm 4 step 5): A (associated
data) and C (ciphertext) are each zero-padded to a multiple of 16 bytes and followed by the
length block [len(A) in bits]_64 || [len(C) in bits]_64; with the resulting L blocks X_1 .. X_L,

    GHASH_H(A, C) = X_1·H^L ⊕ X_2·H^(L−1) ⊕ … ⊕ X_L·H     (Horner: Y_i = (Y_(i−1) ⊕ X_i)·H).

Security (Wegman & Carter, JCSS 22, 265 (1981); McGrew & Viega, "The Security and Performance
of the Galois/Counter Mode (GCM) of Operation", INDOCRYPT 2004, LNCS 3348, 343): for distinct
inputs M ≠ M' of at most L blocks each, counting the length block, and any 128-bit c,

    Pr_H[ GHASH_H(M) ⊕ GHASH_H(M') = c ] ≤ L / 2^128,

because the difference is a nonzero polynomial in H of degree ≤ L (the length block keeps
inputs that differ only by zero padding apart) and has at most L roots: the family is
ε-almost-XOR-universal with ε = L/2^128.  A Wegman–Carter tag is GHASH_H(M) ⊕ r with r fresh
one-time-pad bits for every message; H may be reused (Portmann, IEEE Trans. IT 60, 4383
(2014)), r never.

AES-GCM uses exactly this: H = E_K(0^128) and, for a 96-bit IV, tag = GHASH_H(A, C) ⊕ E_K(J0)
with J0 = IV || 0^31 || 1 (SP 800-38D §7.1, steps 1, 2, 5 and 6).  So ``cryptography``'s
AESGCM gives independent known answers: GHASH_H(A, C) = tag ⊕ E_K(J0) (tests/).

Two implementations: :func:`gf128_mul` is Algorithm 1 of SP 800-38D bit by bit — slow,
obviously correct, the reference for the tests.  :class:`PolyHash128` precomputes, once per key
(~0.3 ms), sixteen 256-entry tables T_i[b] = (the block with byte i = b, all else 0)·H — the
per-byte-position tables of the GCM specification (McGrew & Viega, 2005, §4.1), after Shoup —
so that, by linearity, X·H is the XOR of T_i[byte i of X] with no reduction step.  In pure
Python that hashes ~230 Mbit/s (10^6 bits in ~4.4 ms; see benchmarks/amplification.py).

Streaming: :meth:`PolyHash128.stream` returns a :class:`PolyHash128Stream` that absorbs A piece
by piece (Horner's rule only needs the running Y and at most 15 buffered bytes), so a message
that grows over time — a protocol transcript — is hashed once, as it arrives, instead of being
kept and re-hashed.  ``update`` takes any lengths; ``copy`` snapshots the running state (a few
ints, the tables are shared); ``digest`` pads the buffered bytes, appends the length block
[len(A)·8]_64 || 0^64 and leaves the stream usable.  Streaming x in any pieces then calling
``digest()`` gives exactly ``PolyHash128(h).digest(x)``, i.e. GHASH_H(A = x, C = empty).

Examples:
    >>> h = bytes.fromhex("66e94bd4ef8a2c3b884cfa59ca342b2e")  # AES_0(0^128), GCM spec test case 2
    >>> ghash(h, b"", bytes.fromhex("0388dace60b6a392f328c2b971b2fe78")).hex()
    'f38cbb1ad69223dcc3457ae5b6b0f885'
    >>> stream = PolyHash128(h).stream()
    >>> stream.update(b"transcript, "); stream.update(b"in pieces")
    >>> stream.digest() == ghash(h, b"transcript, in pieces")
    True
"""

from __future__ import annotations

from ..exceptions import ConfigurationError

__all__ = ["BLOCK_BYTES", "R", "ONE", "gf128_mul", "PolyHash128", "PolyHash128Stream", "ghash"]

BLOCK_BYTES = 16
R = 0xE1 << 120  # x^128 = 1 + x + x^2 + x^7 in GCM's reflected bit order (SP 800-38D §6.3)
ONE = 1 << 127  # the field's 1: the coefficient of x^0 is the leftmost bit
_MASK = (1 << 128) - 1
_BYTES_LIKE = (bytes, bytearray, memoryview)


def gf128_mul(x: int, y: int) -> int:
    """X • Y in GF(2^128), SP 800-38D §6.3 Algorithm 1, one bit at a time (the slow reference).

    Args:
        x, y: blocks as ints in [0, 2^128), each the big-endian reading of 16 bytes.

    Examples:
        >>> gf128_mul(ONE, 0x1234) == 0x1234
        True
        >>> hex(gf128_mul(1, 1 << 126))  # x^127 · x = x^128 = 1 + x + x^2 + x^7
        '0xe1000000000000000000000000000000'
    """
    if not (isinstance(x, int) and isinstance(y, int)):
        raise TypeError(f"gf128_mul takes ints, got {type(x).__name__} and {type(y).__name__}")
    if not (0 <= x <= _MASK and 0 <= y <= _MASK):
        raise ConfigurationError("gf128_mul takes 128-bit blocks: ints in [0, 2**128); "
                                 "read 16 bytes with int.from_bytes(block, 'big')")
    z, v = 0, y
    for i in range(128):  # x_i, the coefficient of x^i, is bit 127 − i of the int
        if (x >> (127 - i)) & 1:
            z ^= v
        v = (v >> 1) ^ R if v & 1 else v >> 1  # V · x
    return z


def _as_bytes(value, name: str) -> bytes:
    if not isinstance(value, _BYTES_LIKE):
        raise TypeError(f"{name} must be bytes, bytearray or memoryview, got {type(value).__name__}")
    return bytes(value)


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK_BYTES)


class PolyHash128:
    """GHASH_H with tables precomputed for one key H (~0.3 ms); reuse it for many messages.

    Args:
        h: the 16-byte hash key H.  It must be uniform and secret; it is not kept as bytes and
            never appears in ``repr`` or in error messages.

    Examples:
        >>> hasher = PolyHash128(bytes.fromhex("66e94bd4ef8a2c3b884cfa59ca342b2e"))
        >>> hasher
        PolyHash128(<key hidden>)
        >>> hasher.digest(b"").hex()  # empty A and C: only the all-zero length block
        '00000000000000000000000000000000'
    """

    __slots__ = ("_tables",)

    def __init__(self, h: bytes) -> None:
        h = _as_bytes(h, "h")
        if len(h) != BLOCK_BYTES:
            raise ConfigurationError(f"the GHASH key h must be 16 bytes, got {len(h)} bytes; "
                                     "in AES-GCM it is H = AES_K(0^128)")
        powers, v = [], int.from_bytes(h, "big")
        for _ in range(128):  # powers[k] = x^k · H
            powers.append(v)
            v = (v >> 1) ^ R if v & 1 else v >> 1
        tables = []
        for i in range(BLOCK_BYTES):
            t = [0] * 256
            for bit in range(8):  # 0x80 in byte i is the coefficient of x^(8i)
                t[0x80 >> bit] = powers[8 * i + bit]
            for b in range(1, 256):  # by linearity: T[b] = T[b without its lowest bit] ⊕ T[that bit]
                low = b & -b
                if b != low:
                    t[b] = t[b ^ low] ^ t[low]
            tables.append(t)
        self._tables = tuple(tables)

    def __repr__(self) -> str:
        return "PolyHash128(<key hidden>)"

    def __reduce__(self):
        raise TypeError("PolyHash128 holds key material and cannot be pickled")

    def digest(self, aad: bytes, ciphertext: bytes = b"") -> bytes:
        """GHASH_H(A, C) as 16 bytes (SP 800-38D §6.4 on the input formatted as in §7.1).

        Args:
            aad: A, any length (bytes-like).  For plain key verification pass the message here.
            ciphertext: C, any length (bytes-like); empty by default.
        """
        a, c = _as_bytes(aad, "aad"), _as_bytes(ciphertext, "ciphertext")
        lengths = (8 * len(a)).to_bytes(8, "big") + (8 * len(c)).to_bytes(8, "big")
        return self._absorb(0, _padded(a) + _padded(c) + lengths).to_bytes(BLOCK_BYTES, "big")

    def stream(self, data: bytes = b"") -> PolyHash128Stream:
        """A fresh incremental hasher for A under this key (C empty), optionally fed ``data``.

        ``s = hasher.stream(); s.update(x1); s.update(x2); s.digest()`` equals
        ``hasher.digest(x1 + x2)``.  The stream shares this object's tables (no copy of the key).
        """
        stream = PolyHash128Stream(self)
        if data:
            stream.update(data)
        return stream

    def _absorb(self, y: int, data: bytes, start: int = 0, end: int | None = None) -> int:
        """Horner's rule Y ← (Y ⊕ X_i)·H over the whole blocks of ``data[start:end]``; one table
        lookup per byte.  ``end - start`` must be a multiple of 16 (no slice of ``data`` is made)."""
        t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13, t14, t15 = self._tables
        from_bytes = int.from_bytes
        for i in range(start, len(data) if end is None else end, BLOCK_BYTES):
            b = (y ^ from_bytes(data[i:i + BLOCK_BYTES], "big")).to_bytes(BLOCK_BYTES, "big")
            y = (t0[b[0]] ^ t1[b[1]] ^ t2[b[2]] ^ t3[b[3]] ^ t4[b[4]] ^ t5[b[5]] ^ t6[b[6]]
                 ^ t7[b[7]] ^ t8[b[8]] ^ t9[b[9]] ^ t10[b[10]] ^ t11[b[11]] ^ t12[b[12]]
                 ^ t13[b[13]] ^ t14[b[14]] ^ t15[b[15]])
        return y


class PolyHash128Stream:
    """GHASH_H(A, C = empty) computed incrementally: feed A in pieces, read the digest at any time.

    Made by :meth:`PolyHash128.stream`.  Holds the running Horner value Y (over the whole blocks
    absorbed so far), the 0–15 bytes of a partial block, and the byte count of A.  Like the
    hasher it is key material: never in ``repr``, not picklable.

    Examples:
        >>> poly = PolyHash128(bytes(range(16)))
        >>> s = poly.stream(b"abc")
        >>> snapshot = s.copy()
        >>> s.update(b"def")
        >>> s.digest() == poly.digest(b"abcdef"), snapshot.digest() == poly.digest(b"abc")
        (True, True)
    """

    __slots__ = ("_hasher", "_y", "_pending", "_length")

    def __init__(self, hasher: PolyHash128) -> None:
        if not isinstance(hasher, PolyHash128):
            raise TypeError(f"PolyHash128Stream takes a PolyHash128, got {type(hasher).__name__}")
        self._hasher = hasher
        self._y = 0  # Y over the whole blocks absorbed so far
        self._pending = b""  # the bytes of the current, partial block (always < 16)
        self._length = 0  # len(A) in bytes so far

    def __repr__(self) -> str:
        return f"PolyHash128Stream(<key hidden>, bytes_hashed={self._length})"

    def __reduce__(self):
        raise TypeError("PolyHash128Stream holds key material and cannot be pickled")

    @property
    def bytes_hashed(self) -> int:
        """len(A) so far, in bytes."""
        return self._length

    def update(self, data: bytes) -> None:
        """Append ``data`` (bytes-like, any length, empty included) to A."""
        data = _as_bytes(data, "data")
        n = len(data)
        if not n:
            return
        self._length += n
        start = 0
        if self._pending:
            need = BLOCK_BYTES - len(self._pending)
            if n < need:
                self._pending += data
                return
            self._y = self._hasher._absorb(self._y, self._pending + data[:need])
            start = need
        end = n - (n - start) % BLOCK_BYTES
        if end > start:
            self._y = self._hasher._absorb(self._y, data, start, end)
        self._pending = data[end:]

    def copy(self) -> PolyHash128Stream:
        """An independent snapshot of the running state (O(1): the key tables are shared)."""
        other = PolyHash128Stream.__new__(PolyHash128Stream)
        other._hasher, other._y, other._pending, other._length = self._hasher, self._y, self._pending, self._length
        return other

    def digest(self) -> bytes:
        """GHASH_H(A, empty C) of everything fed so far, as 16 bytes; the stream stays usable.

        Zero-pads the partial block and appends the length block [8·len(A)]_64 || [0]_64
        (SP 800-38D §7.1 step 5), exactly as :meth:`PolyHash128.digest` does for ``aad = A``.
        """
        y = self._y
        if self._pending:
            y = self._hasher._absorb(y, _padded(self._pending))
        lengths = (8 * self._length).to_bytes(8, "big") + bytes(8)
        return self._hasher._absorb(y, lengths).to_bytes(BLOCK_BYTES, "big")


def ghash(h: bytes, aad: bytes, ciphertext: bytes = b"") -> bytes:
    """GHASH_H(A, C): one-shot :class:`PolyHash128` (use the class to hash many messages).

    Args:
        h: the 16-byte key H (``ValueError`` for any other length).
        aad, ciphertext: A and C, bytes-like, any lengths.

    Returns:
        16 bytes, the big-endian block Y_L of SP 800-38D §6.4.
    """
    return PolyHash128(h).digest(aad, ciphertext)
