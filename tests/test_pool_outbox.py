"""The link state's outbox: a released key saved with the decision that releases it (link nodes)."""

from __future__ import annotations

import numpy as np
import pytest

import qkd_circuits as qkd
from qkd_circuits.exceptions import RecordError


@pytest.fixture(scope="module")
def record():
    return qkd.run_exchanges(60_000, channel=qkd.Channel(depolarizing=0.02), seed=41)


def test_the_outbox_is_off_unless_a_service_turns_it_on(record):
    a = qkd.AuthKeyPool.fresh(4096, simulation=True)
    b = a.copy()
    result = qkd.postprocess(record, alice_pool=a, bob_pool=b)
    assert result.bob_key is not None
    assert a.link.outbox is None and b.link.outbox is None
    assert qkd.AuthKeyPool.from_bytes(a.to_bytes()).link.outbox is None


def test_both_ends_put_the_released_key_into_their_outbox_and_it_survives_a_save(record):
    a = qkd.AuthKeyPool.fresh(4096, simulation=True)
    a.link.outbox = {}
    b = a.copy()
    result = qkd.postprocess(record, alice_pool=a, bob_pool=b)
    assert result.alice_key is not None and result.alice_key.matches(result.bob_key)
    (r,) = b.link.outbox
    assert set(a.link.outbox) == {r}
    for pool, key in ((a, result.alice_key), (b, result.bob_key)):
        entry = qkd.AuthKeyPool.from_bytes(pool.to_bytes()).link.outbox[r]
        bits = np.unpackbits(np.frombuffer(bytes(entry["key"]), dtype=np.uint8))[:entry["key_bits"]]
        assert entry["key_bits"] == len(key) and np.array_equal(bits, key.bits)
    a.erase()
    assert a.link.outbox == {}


def test_a_malformed_outbox_in_a_state_file_is_a_typed_error():
    pool = qkd.AuthKeyPool.fresh(1024, simulation=True)
    pool.link.outbox = {3: {"key": bytearray(b"\x01\x02"), "key_bits": -1}}
    with pytest.raises(RecordError, match="corrupt"):
        qkd.AuthKeyPool.from_bytes(pool.to_bytes())
