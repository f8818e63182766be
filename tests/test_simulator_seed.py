"""Simulator seeds: 64 secret bits per job when no seed is given, never recorded; a user seed kept."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from qiskit import QuantumCircuit

import qkd_circuits as qkd
from qkd_circuits.quantum import backends, execution
from qkd_circuits.quantum.backends import SIMULATOR_SEED_BITS, Backend, draw_simulator_seed
from qkd_circuits.records import Provenance


def _coin_flips(seed: int, shots: int = 256) -> np.ndarray:
    from qiskit_aer.primitives import SamplerV2

    qc = QuantumCircuit(1)
    qc.h(0)
    qc.measure_all()
    return SamplerV2(seed=seed).run([qc], shots=shots).result()[0].data.meas.to_bool_array().ravel()


def test_aer_takes_exactly_the_signed_64_bit_seeds_and_uses_all_64_bits():
    """Pins what backends.py relies on (found by experiment): if an Aer upgrade changes it,
    SIMULATOR_SEED_BITS and draw_simulator_seed must change too."""
    for seed in (2**63 - 1, -2**63, -1, 0):
        assert _coin_flips(seed).size == 256
    for seed in (2**63, 2**64 - 1):
        with pytest.raises(TypeError):
            _coin_flips(seed)
    base = _coin_flips(5)
    for other in (5 - 2**63, 5 + 2**62, 5 + 2**32):  # the sign bit and the high bits all matter
        assert (_coin_flips(other) != base).any()
    np.testing.assert_array_equal(_coin_flips(5), base)


def test_draw_simulator_seed_covers_the_signed_64_bit_range(monkeypatch):
    draws = [draw_simulator_seed() for _ in range(256)]
    assert all(-2**63 <= s < 2**63 for s in draws) and len(set(draws)) == 256
    assert any(s < 0 for s in draws) and any(s >= 2**62 for s in draws)
    assert SIMULATOR_SEED_BITS == 64
    for raw, seed in ((0, 0), (2**63 - 1, 2**63 - 1), (2**63, -2**63), (2**64 - 1, -1)):
        monkeypatch.setattr(backends.secrets, "randbits", lambda bits, raw=raw: raw)
        assert draw_simulator_seed() == seed


def test_which_backends_take_a_simulator_seed():
    kinds = {"aer": True, "fake": True, "ibm": False, "braket-local": True, "braket": False}
    for kind, takes in kinds.items():
        assert Backend(kind, kind, kind, None, False, False).takes_simulator_seed is takes


@pytest.fixture
def spy(monkeypatch):
    """Records every seed drawn from secrets and every seed a sampler is built with."""
    drawn, used = [], []

    def draw():
        drawn.append(draw_simulator_seed())
        return drawn[-1]

    real_sampler = Backend.sampler

    def sampler(self, *, seed, num_qubits):
        used.append(seed)
        return real_sampler(self, seed=seed, num_qubits=num_qubits)

    monkeypatch.setattr(execution, "draw_simulator_seed", draw)
    monkeypatch.setattr(Backend, "sampler", sampler)
    return drawn, used


def _mentions(text: str, seeds) -> list[int]:
    return [s for s in seeds if str(s) in text or str(s & (2**64 - 1)) in text]


@pytest.mark.parametrize("mode", ["qrng", "prepared"])
def test_unseeded_runs_draw_a_fresh_secret_seed_per_job_and_record_only_its_width(spy, tmp_path, mode):
    drawn, used = spy
    record = qkd.run_exchanges(3000, mode=mode, chunk=1000)
    assert len(drawn) == 3 and len(set(drawn)) == 3 and used == drawn  # one per job, all different
    p = record.provenance
    assert p.seed is None and p.simulator_seed_bits == SIMULATOR_SEED_BITS
    assert not _mentions(json.dumps(p.to_dict()), drawn) and not _mentions(repr(p), drawn)
    saved = record.save(tmp_path / "r.npz")
    with np.load(saved) as npz:
        assert not _mentions(str(npz["header"]), drawn)
    assert qkd.load_record(saved).provenance.simulator_seed_bits == SIMULATOR_SEED_BITS
    if mode == "qrng":  # same circuit in every job: only distinct seeds make the jobs differ
        chunks = record.alice_bits.reshape(3, 1000)
        assert (chunks[0] != chunks[1]).any() and (chunks[1] != chunks[2]).any()


def test_a_user_seed_is_kept_reproducible_and_counts_as_no_entropy(spy):
    drawn, used = spy
    first = qkd.run_exchanges(2000, mode="qrng", seed=7, chunk=1000)
    again = qkd.run_exchanges(2000, mode="qrng", seed=7, chunk=1000)
    assert drawn == []  # nothing from secrets: the seeds derive from the public seed
    assert used[:2] == used[2:] and len(set(used[:2])) == 2
    assert first.provenance.seed == 7 and first.provenance.simulator_seed_bits == 0
    np.testing.assert_array_equal(first.alice_bits, again.alice_bits)
    np.testing.assert_array_equal(first.bob_results, again.bob_results)


def test_records_written_before_the_field_load_with_none():
    d = qkd.run_exchanges(50, seed=1).provenance.to_dict()
    del d["simulator_seed_bits"]
    assert Provenance.from_dict(d).simulator_seed_bits is None


def test_weak_coherent_runs_draw_secret_seeds_too(monkeypatch):
    from qkd_circuits.quantum import wcp

    drawn = []
    monkeypatch.setattr(wcp, "draw_simulator_seed", lambda: drawn.append(draw_simulator_seed()) or drawn[-1])
    unseeded = wcp.run_wcp_exchanges(300)
    assert unseeded.simulator_seed_bits == SIMULATOR_SEED_BITS and drawn and len(set(drawn)) == len(drawn)
    assert str(drawn[0]) not in repr(unseeded)
    count = len(drawn)
    assert wcp.run_wcp_exchanges(300, seed=3).simulator_seed_bits == 0 and len(drawn) == count


def test_fake_devices_take_the_full_width_seed(spy, monkeypatch):
    pytest.importorskip("qiskit_ibm_runtime")
    drawn, used = spy
    extremes = iter([-2**63, 2**63 - 1])
    monkeypatch.setattr(execution, "draw_simulator_seed", lambda: drawn.append(next(extremes)) or drawn[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        record = qkd.run_exchanges(400, mode="prepared", backend="fake:manila", chunk=200)
    assert used == [-2**63, 2**63 - 1] and record.provenance.simulator_seed_bits == SIMULATOR_SEED_BITS
    assert len(record) == 400


@pytest.mark.parametrize("backend", ["aer", "fake:nairobi", "braket-local"])
def test_a_seed_is_honoured_on_every_local_backend(backend):
    """The same seed gives the same record, column for column; another seed gives another (qrng mode:
    the simulator's own randomness is the raw key, so this is where a seed that went nowhere shows)."""
    def record(seed):
        r = qkd.run_exchanges(600, mode="qrng", backend=backend, seed=seed)
        return np.stack([r.alice_bits, r.alice_bases, r.bob_bases, r.bob_results, r.detected])

    first, again, other = record(3), record(3), record(4)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)  # 3,000 bits agreeing by chance: 2^-1500
