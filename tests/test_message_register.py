"""hazmat.messages.register: a protocol's own frames join the canonical encoding, and misuse is refused."""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from qkd_circuits.hazmat import messages as m


@dataclass(frozen=True)
class _Probe:
    TYPE: ClassVar[int] = 250
    SCHEMA: ClassVar[tuple] = ("bits", "u32")
    flags: np.ndarray
    count: int


def test_a_registered_class_encodes_to_its_known_answer_and_decodes_back():
    try:
        assert m.register(_Probe) is _Probe and m.register(_Probe) is _Probe  # twice is a no-op
        frame = m.encode(_Probe(np.array([1, 0, 1], dtype=np.uint8), 5))
        # "QKDP" | version 1 | type 250 | body length 9 | bit count 3, 0b101_00000 | u32 5
        assert frame.hex() == "514b4450" "01" "fa" "00000009" "00000003" "a0" "00000005"
        back = m.decode(frame, expect=_Probe)
        assert back.count == 5 and back.flags.tolist() == [1, 0, 1]
    finally:
        m.MESSAGE_TYPES.pop(250, None)
    with pytest.raises(m.ProtocolError, match="unknown"):
        m.decode(frame)


def test_register_refuses_a_taken_id_a_bad_schema_and_non_dataclasses():
    @dataclass(frozen=True)
    class Clash:
        TYPE: ClassVar[int] = m.SiftRequest.TYPE
        SCHEMA: ClassVar[tuple] = ()

    @dataclass(frozen=True)
    class BadSchema:
        TYPE: ClassVar[int] = 251
        SCHEMA: ClassVar[tuple] = ("u64",)
        x: int

    @dataclass
    class Mutable:
        TYPE: ClassVar[int] = 252
        SCHEMA: ClassVar[tuple] = ()

    class Plain:
        TYPE = 253
        SCHEMA = ()

    with pytest.raises(TypeError, match="already SiftRequest"):
        m.register(Clash)
    with pytest.raises(TypeError, match="SCHEMA must give"):
        m.register(BadSchema)
    with pytest.raises(TypeError, match="frozen"):
        m.register(Mutable)
    with pytest.raises(TypeError, match="not a dataclass"):
        m.register(Plain)
    with pytest.raises(TypeError, match="TYPE must be an int"):
        m.register(type("Zero", (), {"TYPE": 0}))
    assert not {251, 252, 253} & set(m.MESSAGE_TYPES)
