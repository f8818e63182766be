"""Measurement records: round trip, provenance, and every way a file can be wrong."""

from __future__ import annotations

import json
import os
import stat
import zipfile

import numpy as np
import pytest

import qkd_circuits as qkd
from qkd_circuits.records import FORMAT


@pytest.fixture(scope="module")
def record():
    return qkd.run_exchanges(3000, mode="prepared", eve=qkd.InterceptResend(0.5), seed=2,
                             detector=qkd.Detector(efficiency=0.8), lanes=1)  # one lane's circuit, below


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
    # Alice's intensity labels are hers (None for a single-photon run); Bob learns them only from
    # her message in a decoy-state round.
    assert set(vars(record.alice_view())) == {"bits", "bases", "intensity"}
    assert record.alice_view().intensity is None
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


@pytest.mark.skipif(os.name != "posix", reason="file modes and symlinks are POSIX")
def test_saved_record_is_a_secret_file(record, tmp_path):
    old = os.umask(0)
    try:
        path = record.save(tmp_path / "r.npz")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        stale = tmp_path / "stale.npz"  # save replaces an existing file, as it always did ...
        stale.write_bytes(b"old")
        os.chmod(stale, 0o644)
        record.save(stale)
        assert stat.S_IMODE(os.stat(stale).st_mode) == 0o600  # ... and the old 0644 does not survive
        victim = tmp_path / "victim"
        victim.write_bytes(b"untouched")
        link = tmp_path / "link.npz"
        link.symlink_to(victim)
        record.save(link)  # the link is replaced, its target never written through
        assert not link.is_symlink() and victim.read_bytes() == b"untouched"
        assert qkd.load_record(link).provenance == record.provenance
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.npz", "r.npz", "stale.npz", "victim"]


@pytest.mark.parametrize("provenance, match", [
    ([1, 2], "JSON object was expected"),
    ({}, "missing fields"),
    ("LANES", "lanes = 'x'"),
    ("SEED", "seed = -3"),
    ("EXTRA", r"unknown fields \['colour'\]"),
])
def test_malformed_provenance_is_refused(record, tmp_path, provenance, match):
    d = record.provenance.to_dict()
    if provenance == "LANES":
        provenance = {**d, "lanes": "x"}
    elif provenance == "SEED":
        provenance = {**d, "seed": -3}
    elif provenance == "EXTRA":
        provenance = {**d, "colour": "blue"}
    path = record.save(tmp_path / "r.npz")
    _rewrite(path, header={"format": FORMAT, "version": 1, "provenance": provenance})
    with pytest.raises(qkd.RecordError, match=match):
        qkd.load_record(path)


def test_foreign_or_forged_archives_raise_record_error(record, tmp_path):
    path = tmp_path / "x.npz"
    with open(path, "wb") as fh:
        np.save(fh, np.zeros(3, dtype=bool))  # a bare .npy array: np.load reads it, but not an archive
    with pytest.raises(qkd.RecordError, match="not an npz archive"):
        qkd.load_record(path)
    good = record.save(tmp_path / "r.npz")
    with np.load(good) as npz:
        arrays = {k: npz[k] for k in npz.files}
    np.savez(path, extra=np.zeros(3), **arrays)  # an array this format does not have
    with pytest.raises(qkd.RecordError, match="unexpected or repeated members"):
        qkd.load_record(path)
    # a member whose npy header claims far more data than the archive holds (no allocation)
    header = "{'descr': '|b1', 'fortran_order': False, 'shape': (1000000000000,), }"
    npy = b"\x93NUMPY\x01\x00" + (len(header) + 1).to_bytes(2, "little") + header.encode() + b"\n" + b"\x00" * 8
    with zipfile.ZipFile(good) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    members["alice_bits.npy"] = npy
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    with pytest.raises(qkd.RecordError, match="declares 1000000000000 bytes"):
        qkd.load_record(path)
    # an npy header that is no Python literal: numpy's tokenizer fallback raised TokenError
    header = "{'descr': '|b1', 'fortran_order': False, 'shape': ((3,), }"
    members["alice_bits.npy"] = b"\x93NUMPY\x01\x00" + (len(header) + 1).to_bytes(2, "little") + header.encode() + b"\n"
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    with pytest.raises(qkd.RecordError, match="corrupt or truncated"):
        qkd.load_record(path)
    path.write_bytes(b"{" * 100_000)
    with pytest.raises(qkd.RecordError):
        qkd.load_record(path)
