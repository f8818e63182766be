"""One record type, one bit convention, inputs copied rather than frozen, one sifting.

A record saved by earlier versions (``tests/vectors/record_v1.npz``: its arrays stored as bool,
the expected values beside it in ``record_v1.json``) still loads, with the same bits.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

import qkd_circuits as qkd
from qkd_circuits import _provenance
from qkd_circuits.channel.admission import view_digest
from qkd_circuits.records import sift_mask
from qkd_circuits.quantum import execution
from qkd_circuits.quantum.wcp import PhotonNumberSplitting, WcpRecord, WeakCoherentSource, run_wcp_exchanges
from qkd_circuits.records import AliceView, BobView, Provenance

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
    assert all(getattr(record, k).dtype == np.uint8 for k in ("alice_bits", "alice_bases", "bob_bases", "bob_results",
                                                              "eve_results"))
    assert record.detected.dtype == np.bool_ and record.eve_active.dtype == np.bool_


@pytest.fixture(scope="module")
def record():
    return qkd.run_exchanges(400, mode="prepared", eve=qkd.InterceptResend(0.5), seed=3, lanes=1)


@pytest.fixture(scope="module")
def wcp():
    return run_wcp_exchanges(3000, source=WeakCoherentSource.vacuum_weak(0.5, 0.1), eve=PhotonNumberSplitting(),
                             seed=5)


# --- one bit convention ---------------------------------------------------------------------

def test_bits_and_bases_are_uint8_and_masks_bool_at_every_boundary(record, wcp):
    for r in (record, wcp):
        for name in ("alice_bits", "alice_bases", "bob_bases", "bob_results", "eve_results"):
            assert getattr(r, name).dtype == np.uint8, name
            assert set(np.unique(getattr(r, name))) <= {0, 1}, name
        assert r.detected.dtype == np.bool_ and r.eve_active.dtype == np.bool_
        assert r.eve_bases.dtype == np.int8
        a, b, e = r.alice_view(), r.bob_view(), r.eve_view()
        assert a.bits.dtype == a.bases.dtype == b.bases.dtype == b.results.dtype == e.results.dtype == np.uint8
        assert b.detected.dtype == e.active.dtype == np.bool_
        assert r.sifted_mask().dtype == np.bool_
    assert wcp.intensity.dtype == np.int8 and wcp.photons.dtype == np.int16
    choices = execution.draw_choices(50, seed=1)
    assert choices.alice_bits.dtype == choices.alice_bases.dtype == choices.bob_bases.dtype == np.uint8


def test_bool_and_integer_0_1_inputs_give_the_same_record(record):
    as_bool = {k: getattr(record, k).astype(bool) for k in ("alice_bits", "alice_bases", "bob_bases", "bob_results")}
    as_int = {k: v.astype(np.int64) for k, v in as_bool.items()}
    one = qkd.MeasurementRecord(detected=record.detected, provenance=record.provenance, **as_bool)
    two = qkd.MeasurementRecord(detected=record.detected.astype(np.uint8), provenance=record.provenance, **as_int)
    for name in as_bool:
        assert getattr(one, name).dtype == getattr(two, name).dtype == np.uint8
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name))
    assert two.detected.dtype == np.bool_


@pytest.mark.parametrize("name, value, match", [
    ("alice_bits", np.array([0, 2, 1]), r"alice_bits must hold 0/1 values"),
    ("bob_results", np.array([0.0, 1.0, 1.0]), r"bob_results must be a 1-D uint8 array, got float64"),
    ("detected", np.array([[True, False, True]]), r"detected must be a 1-D array, got shape \(1, 3\)"),
])
def test_values_outside_the_convention_are_refused(record, name, value, match):
    arrays = {k: np.zeros(3, np.uint8) for k in ("alice_bits", "alice_bases", "bob_bases", "bob_results")}
    arrays["detected"] = np.ones(3, bool)
    arrays[name] = value
    with pytest.raises(qkd.RecordError, match=match):
        qkd.MeasurementRecord(provenance=record.provenance, **arrays)


def test_eve_bases_codes_are_checked(record):
    with pytest.raises(qkd.RecordError, match=r"eve_bases must hold values in \[0, 2\]"):
        qkd.MeasurementRecord(alice_bits=[0, 1], alice_bases=[0, 1], bob_bases=[0, 1], bob_results=[0, 1],
                              detected=[True, True], provenance=record.provenance,
                              eve_active=[True, True], eve_bases=[0, 3], eve_results=[0, 1])


# --- arrays copied, not frozen in place ------------------------------------------------------

def test_a_record_copies_its_inputs_and_leaves_the_callers_arrays_writable(record):
    rng = np.random.default_rng(8)
    mine = {k: rng.integers(0, 2, 64, dtype=np.uint8) for k in ("alice_bits", "alice_bases", "bob_bases",
                                                                 "bob_results")}
    detected = rng.random(64) < 0.7
    r = qkd.MeasurementRecord(detected=detected, provenance=record.provenance, **mine)
    for name, a in [*mine.items(), ("detected", detected)]:
        assert a.flags.writeable, name
        kept = getattr(r, name).copy()
        a[:] = 1 - a if a.dtype == np.uint8 else ~a  # the caller changes its array ...
        np.testing.assert_array_equal(getattr(r, name), kept)  # ... the record does not see it
        with pytest.raises(ValueError, match="read-only"):
            getattr(r, name)[0] = 0


def test_views_copy_and_freeze_their_inputs():
    bits, bases = np.array([1, 0, 1], np.uint8), np.array([True, False, False])
    a = AliceView(bits, bases)
    b = BobView(bases, bits, np.array([True, True, False]))
    bits[0], bases[0] = 0, False
    assert bits.flags.writeable and bases.flags.writeable
    assert a.bits[0] == 1 and a.bases[0] == 1 and b.bases[0] == 1 and b.results[0] == 1
    assert a.bases.dtype == b.bases.dtype == np.uint8
    for arr in (a.bits, a.bases, b.bases, b.results, b.detected):
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 0


def test_final_key_copies_its_bits_and_leaves_the_callers_array_writable():
    bits = np.array([1, 0, 1, 1] * 8, dtype=np.uint8)
    key = qkd.FinalKey(bits)
    assert bits.flags.writeable
    bits[:] = 0
    assert key.bits.sum() == 24 and key.bits.dtype == np.uint8
    with pytest.raises(ValueError, match="read-only"):
        key.bits[0] = 0
    assert qkd.FinalKey(np.array([True, False, True])).bits.dtype == np.uint8


def test_view_digests_are_those_of_the_bool_arrays_earlier_versions_hashed(record):
    """Replay refusal compares a view's digest with the digests a pool remembers: converting the
    bits to uint8 must not change the digest of the same data."""
    alice, bob = record.alice_view(), record.bob_view()
    assert view_digest(alice.bits, alice.bases) == view_digest(alice.bits.astype(bool), alice.bases.astype(bool))
    assert (view_digest(bob.bases, bob.results, bob.detected)
            == view_digest(bob.bases.astype(bool), bob.results.astype(bool), bob.detected))
    assert view_digest(np.array([0, 2], np.uint8)) != view_digest(np.array([0, 1], np.uint8))


def test_a_view_without_intensities_digests_as_before_and_the_pool_recognises_it(record):
    # AliceView gained an optional intensity array; a single-photon view leaves it out of the
    # digest (so digests remembered before still match), and digesting an object array (whose
    # bytes are addresses, different in every process) is refused rather than never matching.
    from qkd_circuits.channel.admission import admit_view

    alice = record.alice_view()
    assert alice.intensity is None
    pool = qkd.AuthKeyPool.fresh(simulation=True)
    admit_view(pool, alice, seeded=True)
    assert pool.link.processed[-1] == view_digest(alice.bits, alice.bases)
    with pytest.raises(qkd.RecordError, match="post-processed with this pool before"):
        admit_view(pool, record.alice_view(), seeded=True)
    with pytest.raises(TypeError, match="bool or integer arrays"):
        view_digest(np.array([None]))


# --- one record type ------------------------------------------------------------------------

def test_wcp_record_is_a_measurement_record_without_fields_of_its_own(wcp):
    assert issubclass(WcpRecord, qkd.MeasurementRecord) and isinstance(wcp, qkd.MeasurementRecord)
    assert qkd.WcpRecord is WcpRecord
    assert [f.name for f in fields(WcpRecord)] == [f.name for f in fields(qkd.MeasurementRecord)]
    assert wcp.clicked is wcp.detected and wcp.eve_known is wcp.eve_active
    assert (wcp.seed, wcp.models, wcp.simulator_seed_bits) == (
        5, wcp.provenance.models, wcp.provenance.simulator_seed_bits)
    assert wcp.provenance.mode == "wcp" and wcp.provenance.models["eve"]["kind"] == "pns"
    with pytest.raises(qkd.RecordError, match="a WcpRecord needs intensity, source and photons"):
        WcpRecord(alice_bits=wcp.alice_bits, alice_bases=wcp.alice_bases, bob_bases=wcp.bob_bases,
                  bob_results=wcp.bob_results, detected=wcp.detected, provenance=wcp.provenance)


def test_a_honest_wcp_run_has_no_eve_arrays_and_eve_knows_nothing():
    r = run_wcp_exchanges(500, source=WeakCoherentSource.vacuum_weak(), seed=2)
    assert not r.has_eve and r.eve_view() is None
    assert r.eve_known.dtype == np.bool_ and not r.eve_known.any() and r.eve_known.shape == (500,)


def test_a_saved_wcp_record_loads_back_as_one(wcp, tmp_path):
    back = qkd.load_record(wcp.save(tmp_path / "w.npz"))
    assert type(back) is WcpRecord and back.source == wcp.source and back.provenance == wcp.provenance
    for name in ("alice_bits", "alice_bases", "bob_bases", "bob_results", "detected", "eve_active", "eve_bases",
                 "eve_results", "intensity", "photons"):
        np.testing.assert_array_equal(getattr(back, name), getattr(wcp, name), err_msg=name)
        assert getattr(back, name).dtype == getattr(wcp, name).dtype, name
    with np.load(tmp_path / "w.npz") as npz:  # on disk the bits are bool, as always
        assert npz["alice_bits"].dtype == np.bool_


def test_label_masks_need_labels(record, wcp):
    assert wcp.label_mask("signal").dtype == np.bool_
    assert int(sum(wcp.label_mask(k).sum() for k in wcp.source.labels)) == len(wcp)
    with pytest.raises(qkd.RecordError, match="no intensity 'bright'"):
        wcp.label_mask("bright")
    with pytest.raises(qkd.RecordError, match="not a weak-coherent-pulse run"):
        record.label_mask("signal")


def test_party_subset_keeps_the_parties_arrays_and_the_provenance(wcp):
    m = wcp.label_mask("signal")
    sub = wcp.party_subset(m)
    assert type(sub) is qkd.MeasurementRecord and len(sub) == int(m.sum()) and sub.provenance is wcp.provenance
    assert not sub.has_eve and sub.intensity is None and sub.photons is None
    np.testing.assert_array_equal(sub.bob_results, wcp.bob_results[m])
    np.testing.assert_array_equal(sub.detected, wcp.detected[m])


# --- one provenance builder -----------------------------------------------------------------

def test_every_run_gets_its_provenance_from_one_builder(record, wcp):
    for r in (record, wcp):
        p = r.provenance
        assert p.versions == _provenance.versions()
        assert p.backend == "aer" and p.backend_name == "aer_simulator"
        assert p.job_ids and p.shots >= len(r) and p.simulator_seed_bits == 0
        assert p.created_utc.endswith("+00:00")
        assert Provenance.from_dict(p.to_dict()) == p


# --- one sifting ----------------------------------------------------------------------------

def test_sift_mask_agrees_with_a_naive_loop():
    rng = np.random.default_rng(20240601)
    for n in (0, 1, 7, 1000):
        a, b = rng.integers(0, 2, n, dtype=np.uint8), rng.integers(0, 2, n).astype(bool)
        d = rng.random(n) < 0.6
        naive = np.array([bool(d[i]) and int(a[i]) == int(b[i]) for i in range(n)], dtype=bool)
        np.testing.assert_array_equal(sift_mask(a, b, d), naive)
    with pytest.raises(ValueError, match="1-D arrays of one length"):
        sift_mask(np.zeros(3, np.uint8), np.zeros(4, np.uint8), np.ones(3, bool))


def test_records_sift_with_sift_mask(record, wcp):
    for r in (record, wcp):
        np.testing.assert_array_equal(r.sifted_mask(), sift_mask(r.alice_bases, r.bob_bases, r.detected))
        naive = [bool(r.detected[i]) and r.alice_bases[i] == r.bob_bases[i] for i in range(len(r))]
        np.testing.assert_array_equal(r.sifted_mask(), np.array(naive, dtype=bool))
