"""Measurement records: round trip, provenance, and every way a file can be wrong."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import qkd_circuits as qkd
from qkd_circuits.records import FORMAT


@pytest.fixture(scope="module")
def record():
    return qkd.run_exchanges(3000, mode="prepared", eve=qkd.InterceptResend(0.5), seed=2,
                             detector=qkd.Detector(efficiency=0.8))


def test_round_trip_keeps_arrays_and_provenance(record, tmp_path):
    path = record.save(tmp_path / "r.npz")
    back = qkd.load_record(path)
    for name in ("alice_bits", "alice_bases", "bob_bases", "bob_results", "detected",
                 "eve_active", "eve_bases", "eve_results"):
        np.testing.assert_array_equal(getattr(back, name), getattr(record, name))
    assert back.provenance == record.provenance


def test_provenance_names_backend_jobs_shots_seed_and_versions(record):
    p = record.provenance
    assert (p.backend, p.mode, p.seed, p.lanes) == ("aer", "prepared", 2, 1)
    assert p.job_ids and all(isinstance(j, str) and j for j in p.job_ids)
    assert p.shots >= len(record)
    assert set(p.versions) >= {"qkd_circuits", "qiskit", "qiskit-aer", "numpy"}
    assert p.models["eve"] == {"kind": "intercept-resend", "fraction": 0.5, "basis": "random"}
    assert p.circuit["num_qubits"] == 5  # signal + Eve (flag, basis, copy) + arrival


def test_views_hold_only_each_partys_data(record):
    assert set(vars(record.alice_view())) == {"bits", "bases"}
    assert set(vars(record.bob_view())) == {"bases", "results", "detected"}


def test_repr_shows_no_key_material(record):
    text = repr(record)
    assert "n=3000" in text and "[" not in text


def test_arrays_are_read_only(record):
    with pytest.raises(ValueError, match="read-only"):
        record.alice_bits[0] = True


def test_missing_file(tmp_path):
    with pytest.raises(qkd.RecordError, match="no record file"):
        qkd.load_record(tmp_path / "nope.npz")


def test_corrupt_file(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"this is not a zip archive")
    with pytest.raises(qkd.RecordError, match="corrupt or truncated"):
        qkd.load_record(path)


def test_truncated_file(record, tmp_path):
    path = record.save(tmp_path / "r.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(qkd.RecordError, match="corrupt or truncated"):
        qkd.load_record(path)


def _rewrite(path, header=None, drop=()):
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files if k not in drop}
    if header is not None:
        arrays["header"] = np.array(json.dumps(header))
    np.savez(path, **arrays)


def test_other_version_is_refused_with_the_fix(record, tmp_path):
    path = record.save(tmp_path / "r.npz")
    _rewrite(path, header={"format": FORMAT, "version": 99, "provenance": record.provenance.to_dict()})
    with pytest.raises(qkd.RecordError, match="version 99.*load it with the version that wrote it"):
        qkd.load_record(path)


def test_foreign_npz_is_refused(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, x=np.arange(3))
    with pytest.raises(qkd.RecordError, match="not a qkd_circuits measurement record"):
        qkd.load_record(path)


def test_missing_arrays_are_named(record, tmp_path):
    path = record.save(tmp_path / "r.npz")
    _rewrite(path, drop=("bob_results",))
    with pytest.raises(qkd.RecordError, match="bob_results"):
        qkd.load_record(path)


def test_inconsistent_lengths_are_refused(record):
    with pytest.raises(qkd.RecordError, match="expected 3000"):
        qkd.MeasurementRecord(alice_bits=record.alice_bits, alice_bases=record.alice_bases,
                              bob_bases=record.bob_bases[:10], bob_results=record.bob_results,
                              detected=record.detected, provenance=record.provenance)
