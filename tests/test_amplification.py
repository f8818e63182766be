"""Toeplitz privacy amplification: the FFT path against the explicit GF(2) product, JSON known
answers written by that reference, linearity, the matrix convention, and misuse."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from qkd_circuits.hazmat import amplification
from qkd_circuits.hazmat.amplification import toeplitz_hash, toeplitz_hash_naive

VECTORS = json.loads((Path(__file__).parent / "vectors" / "toeplitz.json").read_text())


def bits(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8) == ord("1")


def random_case(rng: np.random.Generator, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.integers(0, 2, n, dtype=np.uint8), rng.integers(0, 2, n + m - 1, dtype=np.uint8)


# FFT == naive ---------------------------------------------------------------------------------

FIXED_SIZES = [(1, 1), (2, 1), (2, 2), (3, 2), (7, 7), (8, 1), (17, 9), (64, 64), (101, 50), (255, 128),
               (1000, 999), (1024, 512), (2049, 1), (3001, 1500)]


@pytest.mark.parametrize(("n", "m"), FIXED_SIZES)
def test_fft_matches_naive_on_fixed_sizes(n, m):
    key, seed = random_case(np.random.default_rng([n, m]), n, m)
    fast = toeplitz_hash(key, seed, m)
    assert fast.dtype == np.bool_ and fast.shape == (m,)
    np.testing.assert_array_equal(fast, toeplitz_hash_naive(key, seed, m))


def test_fft_matches_naive_on_random_sizes():
    rng = np.random.default_rng(2024)
    for _ in range(150):
        n = int(rng.integers(1, 400))
        m = int(rng.integers(1, n + 1))
        key, seed = random_case(rng, n, m)
        np.testing.assert_array_equal(toeplitz_hash(key, seed, m), toeplitz_hash_naive(key, seed, m),
                                      err_msg=f"n={n} m={m}")


def test_extreme_weights():
    for n, m in [(1, 1), (500, 250), (999, 999)]:
        for fill in (0, 1):
            key, seed = np.full(n, fill, np.uint8), np.full(n + m - 1, 1, np.uint8)
            np.testing.assert_array_equal(toeplitz_hash(key, seed, m), toeplitz_hash_naive(key, seed, m))


@pytest.mark.parametrize("n", [50_000, 200_003])
def test_large_inputs_threaded_and_serial_agree_and_spot_check(n):
    # Too big for the naive matrix: compare the two schedules and check output bits one by one,
    # y[i] = Σ_j seed[i − j + n − 1]·key[j] = <seed[i : i + n] reversed, key> mod 2.
    m = n // 2 + 1
    rng = np.random.default_rng(n)
    key, seed = rng.integers(0, 2, n).astype(bool), rng.integers(0, 2, n + m - 1).astype(bool)
    threaded = toeplitz_hash(key, seed, m, workers=2)
    np.testing.assert_array_equal(threaded, toeplitz_hash(key, seed, m, workers=1))
    for i in rng.integers(0, m, 40).tolist() + [0, m - 1]:
        assert threaded[i] == bool(np.count_nonzero(seed[i:i + n][::-1] & key) % 2), i


def test_input_dtypes_give_the_same_bits():
    key, seed = random_case(np.random.default_rng(5), 77, 30)
    expected = toeplitz_hash(key, seed, 30)
    for dtype in (np.bool_, np.uint8, np.int8, np.int64, np.uint32):
        np.testing.assert_array_equal(toeplitz_hash(key.astype(dtype), seed.astype(dtype), 30), expected)
    np.testing.assert_array_equal(toeplitz_hash(key.tolist(), seed.tolist(), np.int64(30)), expected)


# Convention and algebra -----------------------------------------------------------------------

def test_unit_vectors_read_out_the_columns_of_t():
    n, m = 6, 4
    seed = np.random.default_rng(9).integers(0, 2, n + m - 1, dtype=np.uint8)
    matrix = np.array([[seed[i - j + n - 1] for j in range(n)] for i in range(m)], dtype=bool)
    assert all((matrix[1:, 1:] == matrix[:-1, :-1]).ravel())  # constant along diagonals
    for j in range(n):
        e = np.zeros(n, np.uint8)
        e[j] = 1
        np.testing.assert_array_equal(toeplitz_hash(e, seed, m), matrix[:, j])
        np.testing.assert_array_equal(toeplitz_hash_naive(e, seed, m), matrix[:, j])


def test_linear_in_the_key_and_in_the_seed():
    rng = np.random.default_rng(77)
    for n, m in [(1, 1), (31, 16), (500, 123), (4096, 2048)]:
        x, s = random_case(rng, n, m)
        y, t = random_case(rng, n, m)
        np.testing.assert_array_equal(toeplitz_hash(x ^ y, s, m), toeplitz_hash(x, s, m) ^ toeplitz_hash(y, s, m))
        np.testing.assert_array_equal(toeplitz_hash(x, s ^ t, m), toeplitz_hash(x, s, m) ^ toeplitz_hash(x, t, m))
        assert not toeplitz_hash(np.zeros(n, np.uint8), s, m).any()


# Known answers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=[v["name"] for v in VECTORS["vectors"]])
def test_json_vectors(vector):
    key, seed, m = bits(vector["key"]), bits(vector["seed"]), vector["m"]
    assert key.size == vector["n"] and seed.size == vector["n"] + m - 1
    expected = bits(vector["output"])
    np.testing.assert_array_equal(toeplitz_hash(key, seed, m), expected)
    np.testing.assert_array_equal(toeplitz_hash_naive(key, seed, m), expected)
    if "matrix" in vector:  # the stated convention, row by row
        matrix = np.array([bits(row) for row in vector["matrix"]])
        np.testing.assert_array_equal(matrix.astype(int) @ key.astype(int) % 2 == 1, expected)


def test_json_vectors_say_where_they_came_from():
    assert "toeplitz_hash_naive" in VECTORS["note"] and len(VECTORS["vectors"]) >= 5


# FFT lengths and the numpy fallback ------------------------------------------------------------

def test_smooth_len_is_the_smallest_5_smooth_length():
    from scipy.fft import next_fast_len

    for target in list(range(1, 3000)) + [1_499_999, 1_500_001, 2**20 + 1]:
        assert amplification._smooth_len(target) == next_fast_len(target, real=True), target


def test_numpy_fallback_without_scipy():
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "scipy" or name.startswith("scipy."):
                    raise ImportError("scipy is blocked in this test")
        sys.meta_path.insert(0, Block())
        import numpy as np
        from qkd_circuits.hazmat import amplification as a
        assert a._scipy_fft() is None
        rng = np.random.default_rng(3)
        for n, m in [(1, 1), (97, 40), (1000, 1000), (70_000, 5)]:
            key, seed = rng.integers(0, 2, n), rng.integers(0, 2, n + m - 1)
            fast = a.toeplitz_hash(key, seed, m)
            if n <= 1000:
                assert (fast == a.toeplitz_hash_naive(key, seed, m)).all(), (n, m)
            else:
                assert (fast == a.toeplitz_hash(key, seed, m, workers=1)).all()
                assert fast[0] == bool(np.dot(seed[:n][::-1], key) % 2)
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_round_off_guard(monkeypatch):
    import scipy.fft

    class Noisy:  # an FFT whose inverse is off by 0.4: the guard must refuse to round it
        next_fast_len = staticmethod(scipy.fft.next_fast_len)
        rfft = staticmethod(scipy.fft.rfft)

        @staticmethod
        def irfft(*args, **kwargs):
            return scipy.fft.irfft(*args, **kwargs) + 0.4

    monkeypatch.setattr(amplification, "_scipy_fft", lambda: Noisy)
    key, seed = random_case(np.random.default_rng(1), 10, 5)
    with pytest.raises(ArithmeticError, match="round-off"):
        toeplitz_hash(key, seed, 5)


# Misuse ------------------------------------------------------------------------------------------

def test_wrong_seed_length():
    key = np.ones(8, np.uint8)
    with pytest.raises(ValueError, match=r"seed has 10 bits; .* needs n \+ m - 1 = 11 seed bits"):
        toeplitz_hash(key, np.ones(10, np.uint8), 4)
    with pytest.raises(ValueError, match="seed has 12 bits"):
        toeplitz_hash_naive(key, np.ones(12, np.uint8), 4)


@pytest.mark.parametrize("m", [0, -3])
def test_m_below_one(m):
    with pytest.raises(ValueError, match=f"m={m} output bits requested; m must be at least 1"):
        toeplitz_hash(np.ones(8, np.uint8), np.ones(8, np.uint8), m)


def test_m_above_n():
    with pytest.raises(ValueError, match=r"m=9 exceeds the key length n=8.*choose 1 <= m <= n"):
        toeplitz_hash(np.ones(8, np.uint8), np.ones(16, np.uint8), 9)


def test_empty_key():
    with pytest.raises(ValueError, match="key is empty"):
        toeplitz_hash(np.zeros(0, np.uint8), np.zeros(0, np.uint8), 1)


@pytest.mark.parametrize(("which", "value", "index"), [("key", 2, 3), ("seed", 255, 0), ("key", -1, 5)])
def test_non_binary_values(which, value, index):
    key, seed = np.zeros(8, np.int16), np.zeros(11, np.int16)
    (key if which == "key" else seed)[index] = value
    with pytest.raises(ValueError, match=rf"{which} must hold only 0 and 1, found {value} at index {index}; "
                                         r".*np\.unpackbits"):
        toeplitz_hash(key, seed, 4)


def test_wrong_shapes_and_types():
    with pytest.raises(ValueError, match=r"key must be a 1-D array of bits, got shape \(2, 4\)"):
        toeplitz_hash(np.ones((2, 4), np.uint8), np.ones(11, np.uint8), 4)
    with pytest.raises(TypeError, match=r"got dtype float64; convert with key\.astype\(np\.uint8\)"):
        toeplitz_hash(np.ones(8), np.ones(11, np.uint8), 4)
    with pytest.raises(TypeError, match="m must be an int, got float"):
        toeplitz_hash(np.ones(8, np.uint8), np.ones(11, np.uint8), 4.0)
    with pytest.raises(ValueError, match="workers must be an int >= 1, got 0"):
        toeplitz_hash(np.ones(8, np.uint8), np.ones(11, np.uint8), 4, workers=0)


def test_keys_too_long_for_float64_are_refused(monkeypatch):
    monkeypatch.setattr(amplification, "MAX_KEY_BITS", 8)  # 2**52 bits cannot be allocated here
    with pytest.raises(ValueError, match=r"n=8 bits; the float64 FFT is exact only for n < 2\*\*52"):
        toeplitz_hash(np.ones(8, np.uint8), np.ones(11, np.uint8), 4)
