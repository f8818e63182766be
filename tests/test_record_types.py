"""One record type, one bit convention, inputs copied rather than frozen, one sifting.

A record saved by earlier versions (``tests/vectors/record_v1.npz``: its arrays stored as bool,
the expected values beside it in ``record_v1.json``) still loads, with the same bits.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import qkd_circuits as qkd

VECTORS = Path(__file__).parent / "vectors"


def _bits(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8) - ord("0")


def test_a_record_saved_by_an_earlier_version_loads_with_the_same_arrays():
    expected = json.loads((VECTORS / "record_v1.json").read_text())
    record = qkd.load_record(VECTORS / "record_v1.npz")
    assert len(record) == 48 and record.has_eve
    for name, text in expected["arrays"].items():
        np.testing.assert_array_equal(getattr(record, name).astype(np.uint8), _bits(text), err_msg=name)
    np.testing.assert_array_equal(record.eve_bases, np.array(expected["eve_bases"], dtype=np.int8))
    assert record.provenance.to_dict() == expected["provenance"]
