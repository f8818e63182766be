"""Hazmat: privacy amplification by Toeplitz hashing over GF(2).

An m×n Toeplitz matrix over GF(2) is fixed by its first column and first row, n + m − 1 bits in
all.  Over a uniformly random seed the family {x ↦ T·x mod 2} is 2-universal: two distinct keys
collide with probability 2^−m (universal classes: Carter & Wegman, JCSS 18, 143 (1979); the
Toeplitz family, with a seed of n + m − 1 bits instead of the m·n of a random matrix: Mansour,
Nisan & Tiwari, STOC 1990, 235).

The leftover hash lemma (Impagliazzo, Levin & Luby, STOC 1989, 12) makes such a family an
extractor, also against quantum side information E (Renner, PhD thesis, ETH Zurich 2005,
arXiv:quant-ph/0512258; Tomamichel, Schaffner, Smith & Renner, IEEE Trans. IT 57, 5524 (2011):
distance from a uniform key independent of E at most 2ε + ½·2^(−(H_min^ε(X|E) − m)/2)).
Hashing to

    m = ℓ = H_min(X|E) − 2 log2(1/ε_PA)

bits therefore leaves the key ε_PA-close to ideal (½·ε_PA, plus 2ε for the smooth version).
The seed must be uniform and independent of the key; it may be public.

Convention (this module's contract): for a key x of n bits and a seed s of n + m − 1 bits,

    T[i, j] = s[i − j + n − 1]        (0 <= i < m, 0 <= j < n),
    y[i]    = Σ_j T[i, j]·x[j] mod 2.

So s[n − 1 .. n + m − 2] is T's first column top to bottom and s[n − 1], s[n − 2], …, s[0] is
its first row left to right.  y[i] is entry i + n − 1 of the linear convolution s * x, which
:func:`toeplitz_hash` computes with a real FFT.  A cyclic convolution of any length
N >= n + m − 1 agrees with the linear one on exactly those entries (the wrapped-around tail,
at most n − 1 long, lands on entries 0 .. n − 2 only), so N is the smallest 5-smooth length
>= n + m − 1 rather than >= 2n + m − 2.  The sums are integers <= n; float64 holds them exactly while
n < 2^52 (larger n is rejected; memory runs out long before).  Rounding recovers them while
the FFT round-off, growing roughly like 1e-16·n·log2 N, stays below ½ — it is 1.2e-10 for
all-ones inputs at n = 10^6, m = 5·10^5 — and every result is checked to lie within 1/4 of an
integer, else ArithmeticError.
"""

from __future__ import annotations

import numbers
import threading

import numpy as np

from ..exceptions import ConfigurationError

_FFT: list = []  # [scipy.fft or None], filled on first use: importing scipy costs ~0.5 s


def _scipy_fft():
    """scipy.fft if installed (an optional extra), else None: numpy.fft is the same pocketfft,
    only without ``overwrite_x``.  Imported lazily, so ``import qkd_circuits`` does not pay for it."""
    if not _FFT:
        try:
            import scipy.fft as fft
        except ImportError:
            fft = None
        _FFT.append(fft)
    return _FFT[0]

__all__ = ["MAX_KEY_BITS", "toeplitz_hash", "toeplitz_hash_naive"]

MAX_KEY_BITS = 2**52  # exclusive: sums up to n must be exact integers in float64
_THREAD_MIN_LEN = 1 << 16  # below this a helper thread costs more than it saves


def _smooth_len(target: int) -> int:
    """Smallest 2^a·3^b·5^c >= target: pocketfft (numpy's and scipy's) is fastest on these."""
    best, p5 = 2 * target, 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < target:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def _bits(value, name: str) -> np.ndarray:
    """A 1-D bool or integer 0/1 array, one bit per element (not packed)."""
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise ConfigurationError(f"{name} must be a 1-D array of bits, got shape {arr.shape}; "
                                 "flatten it with .ravel()")
    if arr.dtype == np.bool_:
        return arr
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold bits as bool or integer 0/1, got dtype {arr.dtype}; "
                        f"convert with {name}.astype(np.uint8)")
    if arr.size and (arr.max() > 1 or (arr.dtype.kind == "i" and arr.min() < 0)):
        bad = np.flatnonzero((arr < 0) | (arr > 1))
        raise ConfigurationError(
            f"{name} must hold only 0 and 1, found {arr[bad[0]]} at index {bad[0]}; pass one bit per "
            "element (unpack packed bytes with np.unpackbits(..., bitorder='big'))")
    return arr


def _check(key, seed, m) -> tuple[np.ndarray, np.ndarray, int, int]:
    key, seed = _bits(key, "key"), _bits(seed, "seed")
    if isinstance(m, bool) or not isinstance(m, numbers.Integral):
        raise TypeError(f"m must be an int, got {type(m).__name__}")
    n, m = key.size, int(m)
    if n == 0:
        raise ConfigurationError("key is empty; there is nothing to amplify")
    if n >= MAX_KEY_BITS:
        raise ConfigurationError(f"key has n={n} bits; the float64 FFT is exact only for n < 2**52, "
                                 "hash the key in blocks")
    if m < 1:
        raise ConfigurationError(f"m={m} output bits requested; m must be at least 1")
    if m > n:
        raise ConfigurationError(f"m={m} exceeds the key length n={n}; privacy amplification "
                                 "shortens the key, choose 1 <= m <= n")
    if seed.size != n + m - 1:
        raise ConfigurationError(f"seed has {seed.size} bits; hashing n={n} key bits to m={m} needs "
                                 f"n + m - 1 = {n + m - 1} seed bits")
    return key, seed, n, m


def _spectrum(bits: np.ndarray, size: int, out: list, slot: int) -> None:
    """out[slot] = rfft of the bits zero-padded to ``size`` (or the exception that stopped it)."""
    try:
        buf = np.zeros(size)  # float64; the zero padding of the cyclic convolution
        buf[:bits.size] = bits
        _fft = _scipy_fft()
        out[slot] = np.fft.rfft(buf) if _fft is None else _fft.rfft(buf, overwrite_x=True)
    except BaseException as exc:  # noqa: BLE001 - handed back to the calling thread
        out[slot] = exc


def toeplitz_hash(key: np.ndarray, seed: np.ndarray, m: int, *, workers: int = 2) -> np.ndarray:
    """T·key mod 2 for the m×n Toeplitz matrix T[i, j] = seed[i − j + n − 1], by real FFT.

    Args:
        key: shape (n,), bool or integer 0/1, one bit per element in key order (unpack packed
            keys first).  1 <= n < 2^52.
        seed: shape (n + m − 1,), bool or integer 0/1: the hash choice, uniform and independent
            of the key (it may be public).
        m: output length, 1 <= m <= n (ℓ from the leftover hash lemma, module docstring).
        workers: 1 computes the two forward transforms one after the other; 2 (default) runs
            the seed's on a helper thread for large inputs (pocketfft releases the GIL).
            Larger values behave as 2.

    Returns:
        shape (m,), dtype bool: y[i] = Σ_j seed[i − j + n − 1]·key[j] mod 2.

    Raises:
        ValueError: a length, m or a non-binary bit is wrong (the message says which and how to
            fix it).  TypeError: m is not an int or the bits are not bool/integer.
        ArithmeticError: the FFT round-off guard tripped (never observed; see module docstring).

    Examples:
        >>> key = np.array([1, 0, 1], dtype=np.uint8)
        >>> seed = np.array([1, 1, 0, 1], dtype=np.uint8)  # n=3, m=2: T = [[0, 1, 1], [1, 0, 1]]
        >>> toeplitz_hash(key, seed, 2)
        array([ True, False])
    """
    key, seed, n, m = _check(key, seed, m)
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 1:
        raise ConfigurationError(f"workers must be an int >= 1, got {workers!r}")
    _fft = _scipy_fft()
    size = _smooth_len(n + m - 1) if _fft is None else _fft.next_fast_len(n + m - 1, real=True)
    spectra: list = [None, None]
    if workers > 1 and size >= _THREAD_MIN_LEN:
        helper = threading.Thread(target=_spectrum, args=(seed, size, spectra, 1), daemon=True)
        helper.start()
        _spectrum(key, size, spectra, 0)
        helper.join()
    else:
        _spectrum(key, size, spectra, 0)
        _spectrum(seed, size, spectra, 1)
    for spectrum in spectra:
        if isinstance(spectrum, BaseException):
            raise spectrum
    product = spectra[0]
    product *= spectra[1]
    if _fft is None:
        conv = np.fft.irfft(product, size)
    else:
        conv = _fft.irfft(product, size, overwrite_x=True)
    # In place where possible: at n = 10^6 every fresh temporary costs ~1000 page faults.
    window = conv[n - 1:n + m - 1]
    sums = np.rint(window)
    window -= sums
    np.abs(window, out=window)
    if float(window.max()) > 0.25:
        raise ArithmeticError(f"FFT round-off too large for n={n}; use toeplitz_hash_naive or "
                              "hash the key in smaller blocks")
    sums *= 0.5  # exact: the sums are integers < 2^52, so sums/2 is whole iff the sum is even
    np.floor(sums, out=window)
    return window != sums


def toeplitz_hash_naive(key: np.ndarray, seed: np.ndarray, m: int) -> np.ndarray:
    """SLOW REFERENCE: the same hash as an explicit GF(2) matrix–vector product.

    Builds the m×n matrix T[i, j] = seed[i − j + n − 1] and XORs, row by row, the entries where
    the key is 1: O(m·n) memory and time, for tests, known-answer vectors and small inputs only.
    Same arguments and result as :func:`toeplitz_hash`.

    Examples:
        >>> toeplitz_hash_naive(np.array([1, 0, 1]), np.array([1, 1, 0, 1]), 2)
        array([ True, False])
    """
    key, seed, n, m = _check(key, seed, m)
    i = np.arange(m)[:, None]
    j = np.arange(n)[None, :]
    matrix = seed.astype(np.bool_)[i - j + n - 1]
    return np.bitwise_xor.reduce(matrix & key.astype(np.bool_)[None, :], axis=1)
