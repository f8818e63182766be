"""The post-processing messages and their canonical byte encoding.

Every message is a frozen dataclass; :func:`encode` and :func:`decode` map it to and from one
canonical byte string (the same message always encodes to the same bytes, which is what the
authentication layer will tag)::

    frame   = "QKDP" | version u8 (= 1) | type u8 | body length u32 | body
    fields  = in declaration order, big-endian:
        u8, u16, u32       unsigned integers
        f64                IEEE 754 binary64
        bytes              length u32 | raw bytes
        str                length u16 | UTF-8
        bits               count u32 | ceil(count/8) bytes, np.packbits order (first bit = MSB),
                           padding bits zero
        u16s, u32s         count u32 | count big-endian integers

:func:`decode` refuses anything else with :class:`~qkd_circuits.ProtocolError`: a wrong magic or
version, an unknown type, a truncated or oversized frame, a length field that disagrees with
the bytes, non-zero padding, trailing bytes.  Known-answer vectors: tests/vectors/messages.json.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np

from ..exceptions import ProtocolError

__all__ = ["encode", "decode", "register", "MESSAGE_TYPES", "MAX_FRAME_BYTES"] + [
    "SiftRequest", "SiftReply", "EstimateRequest", "EstimateReply", "ReconcileStart", "ReconcileAck",
    "TopParitiesRequest", "TopParitiesReply", "RangeParitiesRequest", "RangeParitiesReply",
    "VerifyRequest", "VerifyReply", "AmplifyRequest", "AmplifyReply",
    "IntensityRequest", "IntensityReply", "TestBitsRequest", "TestBitsReply", "KeyErrorsRequest", "KeyErrorsAck",
]

MAGIC = b"QKDP"
VERSION = 1
#: Frames above this size are refused before anything is allocated (64 MiB: room for the
#: sifting messages of ~2^28 pulses).
MAX_FRAME_BYTES = 64 << 20
_HEADER = struct.Struct(">4sBBI")


@dataclass(frozen=True)
class SiftRequest:
    """Bob → Alice: which pulses clicked and the bases he measured them in."""

    TYPE: ClassVar[int] = 1
    SCHEMA: ClassVar[tuple] = ("bits", "bits")
    detected: np.ndarray
    bases: np.ndarray


@dataclass(frozen=True)
class SiftReply:
    """Alice → Bob: the pulses kept (clicked and measured in Alice's basis)."""

    TYPE: ClassVar[int] = 2
    SCHEMA: ClassVar[tuple] = ("bits",)
    keep: np.ndarray


@dataclass(frozen=True)
class EstimateRequest:
    """Bob → Alice: the public seed that picks the sample, its size, and Bob's sample bits."""

    TYPE: ClassVar[int] = 3
    SCHEMA: ClassVar[tuple] = ("bytes", "u32", "bits")
    seed: bytes
    sample_size: int
    bob_bits: np.ndarray


@dataclass(frozen=True)
class EstimateReply:
    """Alice → Bob: her bits at the sampled positions."""

    TYPE: ClassVar[int] = 4
    SCHEMA: ClassVar[tuple] = ("bits",)
    alice_bits: np.ndarray


@dataclass(frozen=True)
class ReconcileStart:
    """Bob → Alice: the Cascade preset and the public seed of its shuffles."""

    TYPE: ClassVar[int] = 5
    SCHEMA: ClassVar[tuple] = ("str", "bytes")
    preset: str
    seed: bytes


@dataclass(frozen=True)
class ReconcileAck:
    TYPE: ClassVar[int] = 6
    SCHEMA: ClassVar[tuple] = ()


@dataclass(frozen=True)
class TopParitiesRequest:
    TYPE: ClassVar[int] = 7
    SCHEMA: ClassVar[tuple] = ("u16",)
    pass_number: int


@dataclass(frozen=True)
class TopParitiesReply:
    TYPE: ClassVar[int] = 8
    SCHEMA: ClassVar[tuple] = ("bits",)
    parities: np.ndarray


@dataclass(frozen=True)
class RangeParitiesRequest:
    TYPE: ClassVar[int] = 9
    SCHEMA: ClassVar[tuple] = ("u16s", "u32s", "u32s")
    passes: np.ndarray
    starts: np.ndarray
    ends: np.ndarray


@dataclass(frozen=True)
class RangeParitiesReply:
    TYPE: ClassVar[int] = 10
    SCHEMA: ClassVar[tuple] = ("bits",)
    parities: np.ndarray


@dataclass(frozen=True)
class VerifyRequest:
    """Bob → Alice: a fresh hash key and the tag of Bob's corrected key under it."""

    TYPE: ClassVar[int] = 11
    SCHEMA: ClassVar[tuple] = ("bytes", "bytes")
    hash_key: bytes
    tag: bytes


@dataclass(frozen=True)
class VerifyReply:
    """Alice → Bob: whether the tags matched, and her tag (so Bob can check for himself)."""

    TYPE: ClassVar[int] = 12
    SCHEMA: ClassVar[tuple] = ("u8", "bytes")
    match: int
    tag: bytes


@dataclass(frozen=True)
class AmplifyRequest:
    """Bob → Alice: the final key length Bob computed (Alice checks it against hers)."""

    TYPE: ClassVar[int] = 13
    SCHEMA: ClassVar[tuple] = ("u32",)
    final_length: int


@dataclass(frozen=True)
class AmplifyReply:
    """Alice → Bob: the Toeplitz seed (n + m − 1 bits from Alice's CSPRNG)."""

    TYPE: ClassVar[int] = 14
    SCHEMA: ClassVar[tuple] = ("bits",)
    seed: np.ndarray


# Decoy-state rounds (weak coherent pulses): after sifting, Alice announces each sifted pulse's
# intensity label; every test-basis bit is then disclosed (both parties count detections and
# errors per intensity); with one decoy, Bob announces the key-basis errors per intensity after
# verification (they are known only once the key is corrected).


@dataclass(frozen=True)
class IntensityRequest:
    """Bob → Alice: ask for the intensity labels of the sifted pulses."""

    TYPE: ClassVar[int] = 15
    SCHEMA: ClassVar[tuple] = ()


@dataclass(frozen=True)
class IntensityReply:
    """Alice → Bob: one intensity code (index into the agreed labels) per sifted pulse, in order."""

    TYPE: ClassVar[int] = 16
    SCHEMA: ClassVar[tuple] = ("u16s",)
    codes: np.ndarray


@dataclass(frozen=True)
class TestBitsRequest:
    """Bob → Alice: his bits of every sifted test-basis pulse, in sifted order."""

    __test__ = False  # not a pytest test class
    TYPE: ClassVar[int] = 17
    SCHEMA: ClassVar[tuple] = ("bits",)
    bob_bits: np.ndarray


@dataclass(frozen=True)
class TestBitsReply:
    """Alice → Bob: her bits of the same pulses."""

    __test__ = False
    TYPE: ClassVar[int] = 18
    SCHEMA: ClassVar[tuple] = ("bits",)
    alice_bits: np.ndarray


@dataclass(frozen=True)
class KeyErrorsRequest:
    """Bob → Alice: the key-basis errors per intensity code, counted after verification."""

    TYPE: ClassVar[int] = 19
    SCHEMA: ClassVar[tuple] = ("u32s",)
    errors: np.ndarray


@dataclass(frozen=True)
class KeyErrorsAck:
    TYPE: ClassVar[int] = 20
    SCHEMA: ClassVar[tuple] = ()


MESSAGE_TYPES = {cls.TYPE: cls for cls in (
    SiftRequest, SiftReply, EstimateRequest, EstimateReply, ReconcileStart, ReconcileAck,
    TopParitiesRequest, TopParitiesReply, RangeParitiesRequest, RangeParitiesReply,
    VerifyRequest, VerifyReply, AmplifyRequest, AmplifyReply,
    IntensityRequest, IntensityReply, TestBitsRequest, TestBitsReply, KeyErrorsRequest, KeyErrorsAck)}

_INT = {"u8": ">B", "u16": ">H", "u32": ">I"}
_ARRAYS = {"u16s": ">u2", "u32s": ">u4"}


def register(cls: type) -> type:
    """Add a message class defined outside this module (a protocol's own frames) to :data:`MESSAGE_TYPES`.

    Usable as a class decorator.  The class must be a frozen dataclass with an int ``TYPE`` in
    1..255 that no other class holds and a ``SCHEMA`` naming one known field kind per field;
    registering the same class twice is a no-op.  Anything else raises ``TypeError``.
    """
    type_id, schema = getattr(cls, "TYPE", None), getattr(cls, "SCHEMA", None)
    if not isinstance(type_id, int) or isinstance(type_id, bool) or not 1 <= type_id <= 255:
        raise TypeError(f"{cls.__name__}.TYPE must be an int in 1..255, got {type_id!r}")
    try:
        names = [f.name for f in fields(cls)]
    except TypeError:
        raise TypeError(f"{cls.__name__} is not a dataclass") from None
    if not getattr(getattr(cls, "__dataclass_params__", None), "frozen", False):
        raise TypeError(f"{cls.__name__} must be a frozen dataclass")
    known = set(_INT) | set(_ARRAYS) | {"f64", "bytes", "str", "bits"}
    if not isinstance(schema, tuple) or len(schema) != len(names) or not set(schema) <= known:
        raise TypeError(f"{cls.__name__}.SCHEMA must give one of {sorted(known)} per field {names}, got {schema!r}")
    held = MESSAGE_TYPES.get(type_id)
    if held is not None and held is not cls:
        raise TypeError(f"message TYPE {type_id} is already {held.__name__}; {cls.__name__} needs another id")
    MESSAGE_TYPES[type_id] = cls
    return cls


def _encode_field(kind: str, value, name: str) -> bytes:
    try:
        if kind in _INT:
            return struct.pack(_INT[kind], value)
        if kind == "f64":
            return struct.pack(">d", value)
        if kind == "bytes":
            return struct.pack(">I", len(value)) + bytes(value)
        if kind == "str":
            raw = value.encode("utf-8")
            return struct.pack(">H", len(raw)) + raw
        if kind == "bits":
            bits = np.asarray(value)
            if bits.ndim != 1:
                raise ValueError("bits must be 1-D")
            return struct.pack(">I", bits.size) + np.packbits(bits.astype(bool)).tobytes()
        arr = np.asarray(value)
        if arr.ndim != 1 or (arr.size and (arr.min() < 0 or arr.max() >= 1 << (8 * np.dtype(_ARRAYS[kind]).itemsize))):
            raise ValueError(f"{kind} values out of range")
        return struct.pack(">I", arr.size) + arr.astype(_ARRAYS[kind]).tobytes()
    except (struct.error, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"cannot encode field {name!r} as {kind}: {exc}") from None


def encode(message) -> bytes:
    """The canonical frame of ``message``."""
    cls = type(message)
    if MESSAGE_TYPES.get(getattr(cls, "TYPE", None)) is not cls:
        raise TypeError(f"not a post-processing message: {cls.__name__}")
    body = b"".join(_encode_field(kind, getattr(message, f.name), f.name)
                    for kind, f in zip(cls.SCHEMA, fields(cls)))
    if len(body) > MAX_FRAME_BYTES:
        raise ValueError(f"{cls.__name__} body of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    return _HEADER.pack(MAGIC, VERSION, cls.TYPE, len(body)) + body


class _Reader:
    def __init__(self, data: memoryview, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise ProtocolError(f"{self.what} is truncated: needs {n} more bytes at offset {self.pos}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def field(self, kind: str):
        if kind in _INT:
            size = struct.calcsize(_INT[kind])
            return struct.unpack(_INT[kind], self.take(size))[0]
        if kind == "f64":
            return struct.unpack(">d", self.take(8))[0]
        if kind == "bytes":
            return bytes(self.take(struct.unpack(">I", self.take(4))[0]))
        if kind == "str":
            raw = self.take(struct.unpack(">H", self.take(2))[0])
            try:
                return bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(f"{self.what} holds a string that is not UTF-8") from None
        count = struct.unpack(">I", self.take(4))[0]
        if kind == "bits":
            raw = np.frombuffer(self.take((count + 7) // 8), dtype=np.uint8)
            bits = np.unpackbits(raw)
            if bits[count:].any():
                raise ProtocolError(f"{self.what} has non-zero padding bits")
            return bits[:count]
        dtype = np.dtype(_ARRAYS[kind])
        return np.frombuffer(self.take(count * dtype.itemsize), dtype=dtype).astype(np.int64)


def decode(frame: bytes, *, expect: type | tuple[type, ...] | None = None):
    """Parse one frame; ``expect`` restricts the accepted message types (out-of-order check)."""
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise TypeError(f"frame must be bytes, got {type(frame).__name__}")
    if len(frame) > _HEADER.size + MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(frame)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    if len(frame) < _HEADER.size:
        raise ProtocolError(f"frame is truncated: {len(frame)} bytes, the header alone is {_HEADER.size}")
    magic, version, type_id, length = _HEADER.unpack_from(frame)
    if magic != MAGIC:
        raise ProtocolError("not a qkd_circuits post-processing frame (bad magic)")
    if version != VERSION:
        raise ProtocolError(f"frame version {version} is not supported (this side speaks {VERSION})")
    cls = MESSAGE_TYPES.get(type_id)
    if cls is None:
        raise ProtocolError(f"unknown message type {type_id}")
    if length != len(frame) - _HEADER.size:
        raise ProtocolError(f"{cls.__name__} frame says {length} body bytes but has {len(frame) - _HEADER.size}")
    if expect is not None and not issubclass(cls, expect):
        names = ", ".join(t.__name__ for t in (expect if isinstance(expect, tuple) else (expect,)))
        raise ProtocolError(f"out of order: got {cls.__name__}, expected {names}")
    reader = _Reader(memoryview(frame)[_HEADER.size:], cls.__name__)
    values = [reader.field(kind) for kind in cls.SCHEMA]
    if reader.pos != length:
        raise ProtocolError(f"{cls.__name__} frame has {length - reader.pos} trailing bytes")
    return cls(*values)
