"""Known-answer vectors and misuse for the shared permutations and the wire format."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import qkd_circuits as qkd
from qkd_circuits.hazmat import decode, derive_permutation, encode, inverse_permutation
from qkd_circuits.hazmat import messages as m
from qkd_circuits.hazmat.shuffle import _keys

VECTORS = Path(__file__).parent / "vectors"


def test_permutation_vectors():
    data = json.loads((VECTORS / "shuffle.json").read_text())
    for case in data["cases"]:
        got = derive_permutation(bytes.fromhex(case["seed_hex"]), case["label"], case["n"])
        assert got.tolist() == case["permutation"]
    for case in data["cases_sha256"]:
        got = derive_permutation(bytes.fromhex(case["seed_hex"]), case["label"], case["n"])
        assert hashlib.sha256(got.astype("<i4").tobytes()).hexdigest() == case["sha256_of_int32_le"]


@pytest.mark.parametrize("n", [1, 2, 1000, (1 << 20) + 5])
def test_permutation_is_the_stable_sort_of_the_shake_keys(n):
    # The specification, computed the slow obvious way.
    want = np.argsort(_keys(b"spec", 9, n), kind="stable")
    assert np.array_equal(derive_permutation(b"spec", 9, n), want)
    inv = inverse_permutation(b"spec", 9, n)
    assert np.array_equal(inv[want], np.arange(n))


def test_permutation_misuse():
    with pytest.raises(ValueError, match="0 < n < 2"):
        derive_permutation(b"x", 1, 0)
    with pytest.raises(ValueError, match="seed must be bytes"):
        derive_permutation("text", 1, 5)


def test_message_vectors():
    data = json.loads((VECTORS / "messages.json").read_text())
    for case in data["cases"]:
        cls = getattr(m, case["type"])
        kwargs = {}
        for name, value in case["fields"].items():
            kwargs[name] = bytes.fromhex(value) if isinstance(value, str) and name in ("seed", "hash_key", "tag") else value
        if case["type"] == "ReconcileStart":
            kwargs["preset"] = case["fields"]["preset"]
        msg = cls(**{k: np.array(v) if isinstance(v, list) else v for k, v in kwargs.items()})
        frame = encode(msg)
        assert frame.hex() == case["frame_hex"]
        back = decode(frame)
        assert type(back) is cls
        assert encode(back) == frame  # canonical: decode-encode is the identity


def test_every_message_type_round_trips():
    rng = np.random.default_rng(1)
    bits = lambda n: rng.integers(0, 2, n).astype(np.uint8)  # noqa: E731
    samples = [m.SiftRequest(bits(1000), bits(1000)), m.SiftReply(bits(77)), m.EstimateRequest(b"s" * 32, 5, bits(5)),
               m.EstimateReply(bits(5)), m.ReconcileStart("yanetal", b"k" * 16), m.ReconcileAck(),
               m.TopParitiesRequest(14), m.TopParitiesReply(bits(3)),
               m.RangeParitiesRequest(np.array([1, 2]), np.array([0, 5]), np.array([4, 9])),
               m.RangeParitiesReply(bits(2)), m.VerifyRequest(b"h" * 16, b"t" * 16), m.VerifyReply(0, b"t" * 16),
               m.AmplifyRequest(99), m.AmplifyReply(bits(130)),
               m.IntensityRequest(), m.IntensityReply(np.array([0, 2, 1, 65535])), m.TestBitsRequest(bits(40)),
               m.TestBitsReply(bits(40)), m.KeyErrorsRequest(np.array([0, 1 << 31, 7])), m.KeyErrorsAck()]
    assert {type(s) for s in samples} == set(m.MESSAGE_TYPES.values())
    for msg in samples:
        back = decode(encode(msg))
        for name, value in msg.__dict__.items():
            got = getattr(back, name)
            assert np.array_equal(got, value) if isinstance(value, np.ndarray) else got == value


GOOD = encode(m.SiftReply(np.array([1, 0, 1], dtype=np.uint8)))


@pytest.mark.parametrize("frame, match", [
    (b"QKD", "truncated"),
    (b"XXXX" + GOOD[4:], "bad magic"),
    (GOOD[:4] + b"\x02" + GOOD[5:], "version 2 is not supported"),
    (GOOD[:5] + b"\x63" + GOOD[6:], "unknown message type 99"),
    (GOOD[:-1], "says 5 body bytes but has 4"),
    (GOOD + b"\x00", "says 5 body bytes but has 6"),
    (GOOD[:6] + (6).to_bytes(4, "big") + GOOD[10:] + b"\x00", "1 trailing bytes"),
    (GOOD[:-1] + b"\xbf", "non-zero padding"),
    (GOOD[:6] + (5).to_bytes(4, "big") + (400).to_bytes(4, "big") + b"\xa0", "truncated"),
])
def test_malformed_frames_are_refused(frame, match):
    with pytest.raises(qkd.ProtocolError, match=match):
        decode(frame)


def test_oversized_and_out_of_order_frames():
    with pytest.raises(qkd.ProtocolError, match="exceeds"):
        decode(GOOD[:6] + (m.MAX_FRAME_BYTES + 1).to_bytes(4, "big") + bytes(m.MAX_FRAME_BYTES + 1))
    with pytest.raises(qkd.ProtocolError, match="out of order: got SiftReply, expected EstimateReply"):
        decode(GOOD, expect=m.EstimateReply)


def test_encode_rejects_bad_values():
    with pytest.raises(ValueError, match="cannot encode field 'final_length' as u32"):
        encode(m.AmplifyRequest(-1))
    with pytest.raises(ValueError, match="out of range"):
        encode(m.RangeParitiesRequest(np.array([70000]), np.array([0]), np.array([1])))
    with pytest.raises(TypeError, match="not a post-processing message"):
        encode("hello")
