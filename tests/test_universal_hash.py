"""GHASH (SP 800-38D) against AES-GCM, the bit-by-bit reference, field algebra and JSON vectors.

Known answers come from ``cryptography``'s AESGCM: for a 96-bit IV, tag = GHASH_H(A, C) ⊕ E_K(J0)
with H = E_K(0^128) and J0 = IV || 0^31 || 1 (SP 800-38D §7.1), so GHASH_H(A, C) ⊕ E_K(J0) must
reproduce the tag AESGCM returns for the ciphertext it returns.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from qkd_circuits.hazmat.universal_hash import ONE, R, PolyHash128, PolyHash128Stream, gf128_mul, ghash

VECTORS = json.loads((Path(__file__).parent / "vectors" / "ghash.json").read_text())
BLOCKS = st.integers(min_value=0, max_value=2**128 - 1)


def aes_block(key: bytes, block: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def reference_ghash(h: bytes, aad: bytes, ciphertext: bytes) -> bytes:
    """SP 800-38D §6.4 with Algorithm 1 (gf128_mul) for every block: independent of the tables."""
    def pad(data: bytes) -> bytes:
        return data + bytes(-len(data) % 16)
    data = pad(aad) + pad(ciphertext) + (8 * len(aad)).to_bytes(8, "big") + (8 * len(ciphertext)).to_bytes(8, "big")
    key, y = int.from_bytes(h, "big"), 0
    for i in range(0, len(data), 16):
        y = gf128_mul(y ^ int.from_bytes(data[i:i + 16], "big"), key)
    return y.to_bytes(16, "big")


# (a) AES-GCM known answers -------------------------------------------------------------------

AAD_LENGTHS = (0, 1, 15, 16, 17, 1000)
PLAINTEXT_LENGTHS = (0, 1, 16, 33, 1000)


@pytest.mark.parametrize("key_bytes", [16, 24, 32])
@pytest.mark.parametrize("aad_len", AAD_LENGTHS)
@pytest.mark.parametrize("pt_len", PLAINTEXT_LENGTHS)
def test_ghash_reproduces_the_aesgcm_tag(key_bytes, aad_len, pt_len):
    rng = np.random.default_rng([key_bytes, aad_len, pt_len])
    key, nonce = rng.bytes(key_bytes), rng.bytes(12)
    aad, plaintext = rng.bytes(aad_len), rng.bytes(pt_len)
    sealed = AESGCM(key).encrypt(nonce, plaintext, aad)
    ciphertext, tag = sealed[:-16], sealed[-16:]
    h = aes_block(key, bytes(16))
    e_j0 = aes_block(key, nonce + b"\x00\x00\x00\x01")  # J0 = IV || 0^31 || 1
    assert xor(ghash(h, aad, ciphertext), e_j0) == tag


# (b) the table-driven path equals the bit-by-bit reference ----------------------------------

@settings(max_examples=200, deadline=None)
@given(h=st.binary(min_size=16, max_size=16), aad=st.binary(max_size=80), ciphertext=st.binary(max_size=80))
def test_fast_path_matches_reference(h, aad, ciphertext):
    assert ghash(h, aad, ciphertext) == reference_ghash(h, aad, ciphertext)


def test_fast_path_matches_reference_on_longer_seeded_inputs():
    rng = np.random.default_rng(128)
    for _ in range(20):
        h = rng.bytes(16)
        hasher = PolyHash128(h)
        for _ in range(3):  # one hasher, many messages: no state carries over
            aad, ciphertext = rng.bytes(int(rng.integers(0, 600))), rng.bytes(int(rng.integers(0, 600)))
            assert hasher.digest(aad, ciphertext) == reference_ghash(h, aad, ciphertext)


def test_special_keys():
    assert ghash(bytes(16), b"anything", b"at all") == bytes(16)  # H = 0 is the (weak) zero key
    one = ONE.to_bytes(16, "big")  # H = 1: GHASH is the XOR of all blocks, length block included
    length_block = (128).to_bytes(8, "big") + (0).to_bytes(8, "big")  # len(A) = 128 bits, len(C) = 0
    assert ghash(one, b"\x01" * 16) == xor(b"\x01" * 16, length_block)


def test_accepts_bytes_like_inputs():
    h = bytes(range(16))
    assert ghash(bytearray(h), memoryview(b"abc"), bytearray(b"de")) == ghash(h, b"abc", b"de")


# (c) field algebra of the reference ------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(x=BLOCKS, y=BLOCKS, z=BLOCKS)
def test_gf128_mul_is_a_commutative_ring_product(x, y, z):
    assert gf128_mul(x, y) == gf128_mul(y, x)
    assert gf128_mul(x, y ^ z) == gf128_mul(x, y) ^ gf128_mul(x, z)
    assert gf128_mul(gf128_mul(x, y), z) == gf128_mul(x, gf128_mul(y, z))
    assert gf128_mul(x, ONE) == x == gf128_mul(ONE, x)
    assert gf128_mul(x, 0) == 0


def test_gf128_reduction_polynomial():
    x = ONE >> 1  # the element x
    x127 = 1  # the rightmost bit is the coefficient of x^127
    assert gf128_mul(x127, x) == R  # x^128 = 1 + x + x^2 + x^7
    assert ONE == 0x80000000000000000000000000000000


def test_gf128_mul_single_block_matches_the_spec_test_case():
    # GCM spec Test Case 2: X1 = C1 · H.
    h = 0x66E94BD4EF8A2C3B884CFA59CA342B2E
    assert gf128_mul(0x0388DACE60B6A392F328C2B971B2FE78, h) == 0x5E2EC746917062882C85B0685353DEB7


# (d) JSON vectors -------------------------------------------------------------------------------

@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=[v["name"] for v in VECTORS["vectors"]])
def test_json_vectors(vector):
    h, aad, ciphertext = (bytes.fromhex(vector[k]) for k in ("h", "aad", "ciphertext"))
    assert ghash(h, aad, ciphertext).hex() == vector["ghash"]
    assert reference_ghash(h, aad, ciphertext).hex() == vector["ghash"]
    if "aes_key" in vector:  # re-derive it from AES-GCM as the note says
        key, nonce = bytes.fromhex(vector["aes_key"]), bytes.fromhex(vector["nonce"])
        assert aes_block(key, bytes(16)) == h
        sealed = AESGCM(key).encrypt(nonce, bytes.fromhex(vector["plaintext"]), aad)
        assert sealed.hex() == vector["ciphertext"] + vector["tag"]


def test_json_vectors_say_where_they_came_from():
    assert "AESGCM" in VECTORS["note"] and len(VECTORS["vectors"]) >= 10


# (e) streaming: any chunking of A gives the one-shot digest ------------------------------------

def _chunks(rng, data: bytes):
    """Split ``data`` at seeded random points; chunk lengths include 0, 1, 15, 16, 17 and long runs."""
    i = 0
    while i < len(data):
        size = int(rng.choice([0, 1, 1, 2, 15, 16, 17, 31, 33, int(rng.integers(0, 200)), int(rng.integers(0, 5000))]))
        yield data[i:i + size]
        i += size


@pytest.mark.parametrize("seed", range(8))
def test_stream_in_random_chunks_equals_the_one_shot_digest(seed):
    rng = np.random.default_rng([0x5EED, seed])
    h = rng.bytes(16)
    poly = PolyHash128(h)
    for length in (0, 1, 15, 16, 17, 31, 32, 33, int(rng.integers(0, 20_000))):
        data = rng.bytes(length)
        stream = poly.stream()
        for chunk in _chunks(rng, data):
            stream.update(chunk)
        stream.update(b"")  # an empty update anywhere is a no-op
        assert stream.bytes_hashed == length
        assert stream.digest() == poly.digest(data) == ghash(h, data, b"")


def test_stream_one_byte_at_a_time_matches_the_reference():
    rng = np.random.default_rng(38)
    h, data = rng.bytes(16), rng.bytes(70)
    stream = PolyHash128(h).stream()
    for i in range(len(data)):
        stream.update(data[i:i + 1])
        assert stream.digest() == reference_ghash(h, data[:i + 1], b"")  # digest() leaves it usable


@settings(max_examples=100, deadline=None)
@given(h=st.binary(min_size=16, max_size=16), pieces=st.lists(st.binary(max_size=40), max_size=8))
def test_stream_matches_the_reference_for_any_pieces(h, pieces):
    stream = PolyHash128(h).stream()
    for piece in pieces:
        stream.update(piece)
    assert stream.digest() == reference_ghash(h, b"".join(pieces), b"")


def test_stream_initial_data_and_bytes_like_inputs():
    h = bytes(range(16))
    poly = PolyHash128(h)
    stream = poly.stream(bytearray(b"abc"))
    stream.update(memoryview(b"defghijklmnopqrstuvwxyz"))
    assert stream.digest() == poly.digest(b"abcdefghijklmnopqrstuvwxyz")
    assert poly.stream().digest() == poly.digest(b"") == bytes(16)
    with pytest.raises(TypeError, match="data must be bytes"):
        poly.stream().update("text")
    with pytest.raises(TypeError, match="data must be bytes"):
        poly.stream().update(5)  # bytes(5) would silently hash five zero bytes
    with pytest.raises(TypeError, match="takes a PolyHash128"):
        PolyHash128Stream(h)


def test_stream_copy_is_independent_of_later_updates():
    rng = np.random.default_rng(2024)
    h = rng.bytes(16)
    poly = PolyHash128(h)
    head, tail_a, tail_b = rng.bytes(1000 + 7), rng.bytes(53), rng.bytes(16)  # a partial block pending
    stream = poly.stream(head)
    snapshot = stream.copy()
    stream.update(tail_a)
    assert snapshot.digest() == poly.digest(head)  # the snapshot did not see tail_a
    snapshot.update(tail_b)
    assert stream.digest() == poly.digest(head + tail_a)  # nor did the original see tail_b
    assert snapshot.digest() == poly.digest(head + tail_b)
    assert snapshot.bytes_hashed == len(head + tail_b) and stream.bytes_hashed == len(head + tail_a)
    again = snapshot.copy()
    again.update(b"x")
    assert snapshot.digest() == poly.digest(head + tail_b)


def test_stream_never_shows_or_pickles_the_key():
    stream = PolyHash128(SECRET).stream(b"some data, longer than a block")
    text = repr(stream) + str(stream)
    assert "deadbeef" not in text.lower() and SECRET.hex() not in text
    assert str(int.from_bytes(SECRET, "big")) not in text
    assert repr(stream) == "PolyHash128Stream(<key hidden>, bytes_hashed=30)"
    running = str(stream._y)  # the running Horner value is key-dependent: not shown either
    assert running not in text and hex(stream._y)[2:] not in text
    for obj in (stream, stream.copy()):
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(obj)


# (f) misuse --------------------------------------------------------------------------------------

SECRET = bytes.fromhex("deadbeefcafef00d0123456789abcdef")


@pytest.mark.parametrize("length", [0, 8, 15, 17, 32])
def test_wrong_key_length(length):
    with pytest.raises(ValueError, match=f"must be 16 bytes, got {length} bytes"):
        ghash((SECRET * 2)[:length], b"")


def test_key_never_shown():
    hasher = PolyHash128(SECRET)
    assert "deadbeef" not in repr(hasher).lower() and "deadbeef" not in str(hasher).lower()
    with pytest.raises(ValueError) as info:
        PolyHash128(SECRET + b"\x00")
    assert "deadbeef" not in str(info.value).lower() and SECRET.hex() not in str(info.value)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(hasher)


@pytest.mark.parametrize("bad", [SECRET.hex(), 16, None])
def test_key_must_be_bytes(bad):
    with pytest.raises(TypeError, match="h must be bytes"):
        PolyHash128(bad)


def test_messages_must_be_bytes():
    with pytest.raises(TypeError, match="aad must be bytes"):
        ghash(SECRET, "text")
    with pytest.raises(TypeError, match="ciphertext must be bytes"):
        ghash(SECRET, b"", 5)  # bytes(5) would silently hash five zero bytes


def test_gf128_mul_rejects_out_of_range_blocks():
    with pytest.raises(ValueError, match=r"ints in \[0, 2\*\*128\)"):
        gf128_mul(2**128, 1)
    with pytest.raises(ValueError, match="128-bit blocks"):
        gf128_mul(-1, 1)
    with pytest.raises(TypeError, match="takes ints"):
        gf128_mul(b"\x00" * 16, 1)
