"""Fuzzing the link's decoders (hypothesis): envelopes, whole rounds at Alice's end, pool files.

* :func:`qkd_circuits.channel.authenticated.open_envelope` and an :class:`AuthenticatedAlice` fed a
  valid round's envelopes with one mutated (a peer's bytes): only :class:`ProtocolError` or
  :class:`AuthenticationError`, and a mutated round never releases a key nor moves her pool
  unless the mutation left the envelope byte-identical;
* :meth:`AuthKeyPool.from_bytes` (a state file on disk): only :class:`RecordError`.

Examples per test: ``QKD_FUZZ_EXAMPLES`` (default 300).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from fuzzing import fuzz_settings, mutate, mutated, only_typed
from hypothesis import given
from hypothesis import strategies as st

import qkd_circuits as qkd
from qkd_circuits.channel import authenticated
from qkd_circuits.exceptions import AuthenticationError, ProtocolError, RecordError

_POOL = bytes(range(64)) * 3
_EPOCH = bytes(8)
_OUTCOME = SimpleNamespace(key=qkd.FinalKey(np.ones(2048, np.uint8)), key_length=None)


def _wire() -> list[bytes]:
    """Bob's envelopes of one honest round (SETTLE, DATA×3, TAG, CONFIRM)."""
    alice = authenticated.AuthenticatedAlice(qkd.AuthKeyPool(_POOL, epoch=_EPOCH), lambda f: f[::-1],
                                             outcome=lambda: _OUTCOME, key_epsilon=(1e-10, 1e-15))
    sent = []

    def carry(envelope):
        sent.append(envelope)
        return alice.handle(envelope)

    bob = authenticated.AuthenticatedBob(qkd.AuthKeyPool(_POOL, epoch=_EPOCH), carry, outcome=lambda: _OUTCOME, key_epsilon=(1e-10, 1e-15))
    for frame in (b"sift", b"x" * 40, b""):
        bob.request(frame)
    bob.close()
    return sent


WIRE = _wire()


@fuzz_settings()
@given(envelope=st.binary(max_size=200) | mutated(WIRE))
def test_open_envelope_raises_only_protocol_error(envelope):
    only_typed(ProtocolError, authenticated.open_envelope, envelope)


@fuzz_settings()
@given(which=st.integers(0, len(WIRE) - 1),
       ops=st.lists(st.tuples(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]),
                              st.integers(0, 1 << 12), st.integers(0, 7)), min_size=1, max_size=3))
def test_a_round_with_one_mutated_envelope_fails_closed(which, ops):
    ops = [(k, i, b"\x00" if k == "insert" else (j + 1 if k == "delete" else j)) for k, i, j in ops]
    pool = qkd.AuthKeyPool(_POOL, epoch=_EPOCH)
    before = pool.state_digest()
    alice = authenticated.AuthenticatedAlice(pool, lambda f: f[::-1], outcome=lambda: _OUTCOME, key_epsilon=(1e-10, 1e-15))
    envelopes = list(WIRE)
    envelopes[which] = mutate(envelopes[which], ops)
    for envelope in envelopes:
        if only_typed((ProtocolError, AuthenticationError), alice.handle, envelope) is None:
            break
    if envelopes[which] != WIRE[which]:
        # Only a mutated CONFIRM can come after Alice verified Bob's tag: then she holds the key
        # pending (spent slice, key kept apart), never released.
        assert alice.released_key is None
        assert pool.state_digest() == before or list(pool.link.pending) == [0]


def _pool_file() -> bytes:
    pool = qkd.AuthKeyPool(_POOL, epoch=_EPOCH, simulation=True)
    pool.link.pending[3] = {"key": bytearray(b"k" * 8), "key_bits": 64, "refill": bytearray(b"r" * 8),
                            "hash_key": bytearray(16), "pad": bytearray(16), "tag": bytearray(16),
                            "eps_sec": 1e-10, "eps_cor": 1e-15}
    pool.link.unconfirmed[2] = {"round": 2, "decision": 1, "hash_key": bytearray(), "pad": bytearray(),
                                "tag": bytearray(16)}
    pool.replenish(b"z" * 32, eps=1e-10)
    return bytes(pool.to_bytes())


POOL_FILE = _pool_file()


def test_a_pool_file_round_trips():
    again = qkd.AuthKeyPool.from_bytes(POOL_FILE)
    assert bytes(again.to_bytes()) == POOL_FILE


@fuzz_settings()
@given(data=st.binary(max_size=300) | mutated([POOL_FILE], max_operations=3))
def test_pool_files_raise_only_record_error(data):
    only_typed(RecordError, qkd.AuthKeyPool.from_bytes, data)
