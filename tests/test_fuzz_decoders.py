"""Fuzzing the decoders of untrusted bytes (hypothesis): they raise their typed error or succeed.

* :func:`qkd_circuits.hazmat.messages.decode` — a peer's frames: :class:`ProtocolError`;
* :func:`qkd_circuits.load_record` — a record file: :class:`RecordError`;
* :func:`qkd_circuits.channel.pki.chain_from_bytes` — a peer's certificate chain: :class:`ProtocolError`.

Each gets random bytes, mutations of valid inputs (bit flips, insertions, deletions, truncation,
length fields overwritten; see ``fuzzing.py``) and structure-aware inputs that get past the
outer layer (a valid frame header over a random body; a record archive with one member mutated
and re-zipped with good CRCs; a chain whose DER is mutated and re-framed).  Any other exception
type fails the test.  A successful decode must also be canonical: re-encoding gives the input.
Examples per test: ``QKD_FUZZ_EXAMPLES`` (default 300).
"""

from __future__ import annotations

import io
import json
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from hypothesis import example, given
from hypothesis import strategies as st

import qkd_circuits as qkd
from fuzzing import fuzz_settings, mutated, only_typed
from qkd_circuits.channel import pki
from qkd_circuits.exceptions import ProtocolError, RecordError
from qkd_circuits.hazmat import messages

VECTORS = Path(__file__).parent / "vectors"

# What the libraries say about the odd inputs they are fed here (numpy parsing a fuzzed npy
# header as Python; cryptography about a mutated serial number) is expected, not news.
pytestmark = [
    pytest.mark.filterwarnings("ignore:invalid escape sequence"),
    pytest.mark.filterwarnings("ignore:Reading `.npy` or `.npz` file required additional header parsing"),
    pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive"),
]


# -- (a) post-processing frames ------------------------------------------------------------------

def _valid_frames() -> list[bytes]:
    cases = json.loads((VECTORS / "messages.json").read_text())["cases"]
    frames = [bytes.fromhex(c["frame_hex"]) for c in cases]
    rng = np.random.default_rng(7)  # sim-rng: test data only
    frames += [messages.encode(m) for m in (
        messages.SiftRequest(rng.integers(0, 2, 37).astype(bool), rng.integers(0, 2, 37).astype(bool)),
        messages.EstimateRequest(b"\x00" * 32, 5, np.array([1, 0, 1, 1, 0], dtype=bool)),
        messages.ReconcileStart("option8-é", b"seed"),
        messages.RangeParitiesRequest(np.array([1, 2, 65535]), np.array([0, 9, 1 << 31]), np.array([8, 70000, 0])),
        messages.VerifyReply(1, b"\xff" * 16),
        messages.AmplifyRequest(0xFFFFFFFF),
        messages.AmplifyReply(np.ones(13, dtype=bool)),
    )]
    return frames


FRAMES = _valid_frames()
_HEADER = struct.Struct(">4sBBI")


def _frame(type_id: int, body: bytes) -> bytes:
    return _HEADER.pack(messages.MAGIC, messages.VERSION, type_id, len(body)) + body


def _check_frame(frame: bytes) -> None:
    message = only_typed(ProtocolError, messages.decode, frame)
    if message is not None:
        assert messages.encode(message) == frame, "decode accepted a non-canonical frame"


@fuzz_settings()
@given(frame=st.binary(max_size=512))
@example(frame=b"")
@example(frame=messages.MAGIC)
def test_decode_random_bytes(frame):
    _check_frame(frame)


@fuzz_settings()
@given(frame=mutated(FRAMES))
def test_decode_mutated_frames(frame):
    _check_frame(frame)


@fuzz_settings()
@given(type_id=st.sampled_from(sorted(messages.MESSAGE_TYPES)) | st.integers(0, 255),
       body=st.binary(max_size=256) | mutated([f[_HEADER.size:] for f in FRAMES]),
       expect=st.none() | st.sampled_from(sorted(messages.MESSAGE_TYPES.values(), key=lambda c: c.TYPE)))
def test_decode_random_bodies_under_a_valid_header(type_id, body, expect):
    frame = _frame(type_id, body)
    message = only_typed(ProtocolError, messages.decode, frame, expect=expect)
    if message is not None:
        assert expect is None or isinstance(message, expect)
        assert messages.encode(message) == frame


# -- (b) measurement record files ----------------------------------------------------------------

def _small_record_bytes(directory: Path) -> bytes:
    record = qkd.run_exchanges(48, mode="prepared", eve=qkd.InterceptResend(0.5), seed=5)
    return record.save(directory / "small.npz").read_bytes()


class _RecordFile(tuple):
    """(valid record bytes, a scratch path the examples overwrite), with a short repr:
    hypothesis prints the fixture with every falsifying example."""

    def __repr__(self) -> str:
        return f"RecordFile({len(self[0])} valid bytes, scratch {self[1].name})"


@pytest.fixture(scope="module")
def record_file(tmp_path_factory) -> _RecordFile:
    directory = tmp_path_factory.mktemp("fuzz_records")
    return _RecordFile((_small_record_bytes(directory), directory / "fuzzed.npz"))


def _check_record(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    record = only_typed(RecordError, qkd.load_record, path)
    if record is not None:
        assert isinstance(record, qkd.MeasurementRecord) and len(record.detected) == len(record)


def _members(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(info.filename, zf.read(info)) for info in zf.infolist()]


def _rezip(members: list[tuple[str, bytes]], compression: int) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", compression=compression) as zf:
        warnings.simplefilter("ignore")  # "Duplicate name": repeated members are on purpose
        for name, content in members:
            zf.writestr(name, content)
    return buffer.getvalue()


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=12)


@fuzz_settings()
@given(data=st.binary(max_size=1024))
@example(data=b"PK\x03\x04")
@example(data=b"PK\x05\x06" + bytes(18))  # an empty zip archive
@example(data=b"\x93NUMPY\x01\x00v\x00{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }" + b" " * 57 + b"\n\x01\x00\x01")
def test_load_record_random_bytes(record_file, data):
    _check_record(record_file[1], data)


@fuzz_settings()
@given(operations=st.data())
def test_load_record_mutated_file(record_file, operations):
    valid, path = record_file
    _check_record(path, operations.draw(mutated([valid], max_operations=3)))


@fuzz_settings()
@given(index=st.integers(0, 64), how=st.sampled_from(["mutate", "json", "rename", "drop", "add"]),
       ops=st.data(), compression=st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
def test_load_record_mutated_member(record_file, index, how, ops, compression):
    """One member of a valid record changed, the archive rebuilt with good CRCs: exercises the
    npy header parser, the JSON header and the record checks rather than the zip layer."""
    valid, path = record_file
    members = _members(valid)
    i = index % len(members)
    name, content = members[i]
    if how == "mutate":
        members[i] = (name, ops.draw(mutated([content], max_operations=3)))
    elif how == "json":
        header = json.loads(str(np.load(io.BytesIO(valid))["header"]))
        target = ops.draw(st.sampled_from(["whole", "provenance", "field"]))
        if target == "whole":
            header = ops.draw(_JSON)
        elif target == "provenance":
            header["provenance"] = ops.draw(_JSON)
        else:
            header["provenance"][ops.draw(st.sampled_from(sorted(header["provenance"])))] = ops.draw(_JSON)
        buffer = io.BytesIO()
        np.save(buffer, np.array(json.dumps(header)))
        members = [(n, buffer.getvalue() if n == "header.npy" else c) for n, c in members]
    elif how == "rename":
        members[i] = (ops.draw(st.sampled_from(["header", "x.npy", "alice_bits", "eve_bases.npy", "../a.npy"])
                               | st.text(st.characters(codec="utf-8", exclude_characters="\x00/\\"),
                                         min_size=1, max_size=12)), content)
    elif how == "drop":
        del members[i]
    else:
        members.append((ops.draw(st.sampled_from(["extra.npy", "eve_active.npy", "header.npy"])),
                        ops.draw(st.sampled_from([c for _, c in members] or [b""]))))
    _check_record(path, _rezip(members, compression))


# -- (c) certificate chains ----------------------------------------------------------------------

class _Chains(list):
    def __repr__(self) -> str:
        return f"Chains({[len(c) for c in self]} bytes)"


@pytest.fixture(scope="module")
def chains(tmp_path_factory) -> _Chains:
    """Wire forms of real chains (leaf alone, leaf + CA) for both algorithms."""
    out = _Chains()
    for algorithm in pki.ALGORITHMS:
        directory = tmp_path_factory.mktemp(f"fuzz_pki_{algorithm}")
        paths = pki.init_demo_pki(directory, algorithm=algorithm)
        credentials = pki.load_credentials(directory, "alice")
        ca = x509.load_pem_x509_certificate(paths["ca"].read_bytes())
        out += [pki.chain_to_bytes(credentials.chain), pki.chain_to_bytes([*credentials.chain, ca])]
    return out


def _check_chain(data: bytes) -> None:
    chain = only_typed(ProtocolError, pki.chain_from_bytes, data)
    if chain is not None:
        assert pki.chain_to_bytes(chain) == data, "chain_from_bytes accepted a non-canonical chain"


@fuzz_settings()
@given(data=st.binary(max_size=1024))
@example(data=b"\x01\x00\x00\x00\x01\x30")
def test_chain_random_bytes(data):
    _check_chain(data)


@fuzz_settings()
@given(ops=st.data())
def test_chain_mutated_bytes(chains, ops):
    _check_chain(ops.draw(mutated(chains, max_operations=3)))


@fuzz_settings()
@given(ops=st.data(), which=st.integers(0, 7))
def test_chain_mutated_der_reframed(chains, ops, which):
    """The framing stays valid (count and lengths recomputed) around mutated DER, so every
    example reaches the X.509 parser."""
    data = chains[which % len(chains)]
    ders, pos = [], 1
    for _ in range(data[0]):
        (size,) = struct.unpack_from(">I", data, pos)
        ders.append(data[pos + 4:pos + 4 + size])
        pos += 4 + size
    k = ops.draw(st.integers(0, len(ders) - 1))
    ders[k] = ops.draw(mutated([ders[k]], max_operations=3))
    if not ders[k]:
        ders[k] = b"\x30"
    _check_chain(bytes([len(ders)]) + b"".join(struct.pack(">I", len(d)) + d for d in ders))


def test_chain_with_an_unknown_x509_version_is_a_protocol_error(chains):
    """Found by the fuzzer: cryptography raises InvalidVersion (not a ValueError) for a version
    field other than v1/v3; it used to escape chain_from_bytes."""
    data = chains[0]
    (size,) = struct.unpack_from(">I", data, 1)
    der = data[5:5 + size]
    version = b"\xa0\x03\x02\x01\x02"  # [0] EXPLICIT INTEGER 2 (v3) in the TBSCertificate
    assert version in der
    forged = der.replace(version, b"\xa0\x03\x02\x01\x05", 1)
    with pytest.raises(ProtocolError, match="not a valid DER certificate"):
        pki.chain_from_bytes(b"\x01" + struct.pack(">I", len(forged)) + forged)
