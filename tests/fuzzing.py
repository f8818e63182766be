"""Shared pieces of the decoder fuzzers (hypothesis): settings, byte mutations, the typed-error check.

``QKD_FUZZ_EXAMPLES`` sets the examples per fuzz test (default 300, enough for every ``make
test``); a longer campaign runs e.g. ``QKD_FUZZ_EXAMPLES=10000 pytest tests/test_fuzz_decoders.py``.
No example database is kept (``database=None``), so a run never replays another's failures; a
failure prints its falsifying example, which hypothesis has already shrunk.

Use::

    from fuzzing import fuzz_settings, mutated, only_typed

    @fuzz_settings()
    @given(frame=mutated([valid_frame_1, valid_frame_2]))
    def test_decode(frame):
        only_typed(ProtocolError, decode, frame)

:func:`only_typed` lets the allowed exception types through silently; any other exception
(``IndexError``, ``struct.error``, ``zipfile.BadZipFile``...) propagates and fails the test.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

__all__ = ["FUZZ_EXAMPLES", "fuzz_settings", "mutated", "mutate", "only_typed", "INTERESTING_U32"]

#: Examples per fuzz test, from the environment (``QKD_FUZZ_EXAMPLES``, default 300).
FUZZ_EXAMPLES = int(os.environ.get("QKD_FUZZ_EXAMPLES", "300"))

#: Length-field values that find off-by-one and overflow bugs.
INTERESTING_U32 = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000,
                   0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)


def fuzz_settings(**overrides: Any) -> settings:
    """The settings of every decoder fuzz test: :data:`FUZZ_EXAMPLES` examples, no deadline (the
    first example pays for imports), no example database, and no ``too_slow`` health check
    (building a valid input can be slow).  ``overrides`` replace any of them."""
    options: dict[str, Any] = dict(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                                   suppress_health_check=[HealthCheck.too_slow])
    options.update(overrides)
    return settings(**options)


def only_typed(allowed: type[BaseException] | tuple[type[BaseException], ...], fn: Callable, *args: Any,
               **kwargs: Any) -> Any:
    """Call ``fn``; return its result, or ``None`` if it raised one of ``allowed``.  Anything else
    propagates (and fails the calling test)."""
    try:
        return fn(*args, **kwargs)
    except allowed:
        return None


def _apply(data: bytearray, op: tuple) -> bytearray:
    kind = op[0]
    if kind == "truncate":
        return data[:op[1] % (len(data) + 1)]
    if not data and kind != "insert":
        return data
    at = op[1] % (len(data) + (1 if kind == "insert" else 0))
    if kind == "flip":  # one bit
        data[at] ^= 1 << op[2]
    elif kind == "set":  # one byte
        data[at] = op[2]
    elif kind == "insert":
        data[at:at] = op[2]
    elif kind == "delete":
        del data[at:at + op[2]]
    elif kind == "duplicate":  # repeat a slice in place (repeated fields, list items)
        data[at:at] = data[at:at + op[2]]
    elif kind == "u32":  # overwrite 4 bytes with a big-endian length-like value
        data[at:at + 4] = op[2].to_bytes(4, "big")
    elif kind == "u16":
        data[at:at + 2] = (op[2] & 0xFFFF).to_bytes(2, "big")
    return data


_index = st.integers(min_value=0, max_value=1 << 20)
_OPERATION = st.one_of(
    st.tuples(st.just("flip"), _index, st.integers(0, 7)),
    st.tuples(st.just("set"), _index, st.integers(0, 255)),
    st.tuples(st.just("insert"), _index, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), _index, st.integers(1, 16)),
    st.tuples(st.just("duplicate"), _index, st.integers(1, 64)),
    st.tuples(st.just("truncate"), _index),
    st.tuples(st.just("u32"), _index, st.sampled_from(INTERESTING_U32) | st.integers(0, 0xFFFFFFFF)),
    st.tuples(st.just("u16"), _index, st.sampled_from(INTERESTING_U32)),
)


def mutate(data: bytes, operations: Sequence[tuple]) -> bytes:
    """``data`` after the mutation ``operations`` (as drawn by :func:`mutated`), in order."""
    out = bytearray(data)
    for op in operations:
        out = _apply(out, op)
    return bytes(out)


def mutated(valid: Sequence[bytes], *, max_operations: int = 4) -> st.SearchStrategy[bytes]:
    """Strategy: one of the ``valid`` inputs after 1 to ``max_operations`` random mutations
    (bit flips, byte sets, insertions, deletions, duplicated slices, truncation, and 16- or
    32-bit big-endian length-like values written over the bytes)."""
    if not valid:
        raise ValueError("mutated() needs at least one valid input")
    return st.builds(mutate, st.sampled_from(list(valid)),
                     st.lists(_OPERATION, min_size=1, max_size=max_operations))
