"""qkd_circuits.teaching: the pulse table and the one-photon step-through."""

from __future__ import annotations

import numpy as np
import pytest

from qkd_circuits import ConfigurationError, MeasurementRecord, Provenance, teaching

PROV = Provenance(backend="aer", backend_name="aer_simulator", mode="prepared", schedule="bound", lanes=1, shots=6,
                  job_ids=(), seed=1, versions={}, created_utc="2026-01-01T00:00:00+00:00")

# Six hand-made pulses, one of each case:
#   0: same basis, click, right bit      -> kept
#   1: other basis, click                -> dropped
#   2: same basis, no click              -> dropped
#   3: same basis, click, wrong bit      -> kept, error
#   4: same basis (X), click, right bit  -> kept
#   5: other basis, no click             -> dropped
ALICE_BITS = [1, 0, 1, 0, 1, 1]
ALICE_BASES = [0, 1, 0, 1, 1, 0]
BOB_BASES = [0, 0, 0, 1, 1, 1]
BOB_RESULTS = [1, 1, 0, 1, 1, 0]
DETECTED = [True, True, False, True, True, False]


def _record(**eve) -> MeasurementRecord:
    return MeasurementRecord(np.array(ALICE_BITS), np.array(ALICE_BASES), np.array(BOB_BASES), np.array(BOB_RESULTS),
                             np.array(DETECTED), PROV, **eve)


def test_pulse_table_known_answer():
    rows = teaching.pulse_table(_record(), 6)
    assert rows == [
        {"index": 0, "alice_bit": 1, "alice_basis": "+", "bob_basis": "+", "detected": True, "bob_result": 1,
         "kept": True, "error": False},
        {"index": 1, "alice_bit": 0, "alice_basis": "x", "bob_basis": "+", "detected": True, "bob_result": 1,
         "kept": False, "error": False},
        {"index": 2, "alice_bit": 1, "alice_basis": "+", "bob_basis": "+", "detected": False, "bob_result": None,
         "kept": False, "error": False},
        {"index": 3, "alice_bit": 0, "alice_basis": "x", "bob_basis": "x", "detected": True, "bob_result": 1,
         "kept": True, "error": True},
        {"index": 4, "alice_bit": 1, "alice_basis": "x", "bob_basis": "x", "detected": True, "bob_result": 1,
         "kept": True, "error": False},
        {"index": 5, "alice_bit": 1, "alice_basis": "+", "bob_basis": "x", "detected": False, "bob_result": None,
         "kept": False, "error": False},
    ]


def test_pulse_table_with_eve():
    rec = _record(eve_active=np.array([True, False, True, True, False, False]),
                  eve_bases=np.array([1, 0, 2, 0, 0, 0]), eve_results=np.array([0, 0, 1, 1, 0, 0]))
    rows = teaching.pulse_table(rec, 4)
    assert [(r["eve_active"], r["eve_basis"], r["eve_result"]) for r in rows] == [
        (True, "x", 0), (False, None, None), (True, "B", 1), (True, "+", 1)]
    assert list(rows[0]) == ["index", "alice_bit", "alice_basis", "eve_active", "eve_basis", "eve_result",
                             "bob_basis", "detected", "bob_result", "kept", "error"]


def test_pulse_table_n_is_clipped_and_prefix():
    rec = _record()
    assert len(teaching.pulse_table(rec, 1000)) == 6
    assert teaching.pulse_table(rec, 2) == teaching.pulse_table(rec, 6)[:2]


@pytest.mark.parametrize("n, match", [(0, "must be >= 1, got 0"), (-3, "must be >= 1, got -3"),
                                      (2.5, "must be an integer >= 1, got 2.5"), (True, "integer >= 1, got True")])
def test_pulse_table_refuses_bad_counts(n, match):
    with pytest.raises(ConfigurationError, match=match):
        teaching.pulse_table(_record(), n)


def test_pulse_table_refuses_a_non_record():
    with pytest.raises(TypeError, match="reads a MeasurementRecord, got dict"):
        teaching.pulse_table({"alice_bits": [1]}, 1)


def test_format_pulse_table():
    text = teaching.format_pulse_table(teaching.pulse_table(_record(), 6))
    lines = text.splitlines()
    assert lines[0].split() == ["pulse", "Alice", "bit", "Alice", "basis", "Bob", "basis", "Bob", "click",
                                "Bob", "bit", "kept", "error"]
    assert len({len(line) for line in lines[:8]}) == 1  # fixed width: header, rule, 6 rows
    assert lines[2].split() == ["0", "1", "+", "+", "yes", "1", "yes", "-"]
    assert lines[4].split() == ["2", "1", "+", "+", "-", "-", "-", "-"]
    assert lines[5].split() == ["3", "0", "x", "x", "yes", "1", "yes", "yes"]
    assert lines[8].startswith("bases: + = Z (rectilinear), x = X (diagonal)")
    assert lines[9] == "6 pulses shown: 3 kept, 1 of them in error"
    assert "Eve" not in lines[0]


def test_format_pulse_table_shows_eve_columns():
    rec = _record(eve_active=np.ones(6, bool), eve_bases=np.zeros(6, np.int8), eve_results=np.array(ALICE_BITS))
    header = teaching.format_pulse_table(teaching.pulse_table(rec, 2)).splitlines()[0]
    assert "Eve active" in header and "Eve basis" in header and "Eve bit" in header


def test_format_pulse_table_refuses_foreign_rows():
    with pytest.raises(ConfigurationError, match=r"not a pulse_table row: it lacks \['alice_bit'"):
        teaching.format_pulse_table([{"index": 0}])


# --- one photon, step by step (needs Qiskit) ---------------------------------------------------------

BLOCH = {(0, "+"): (0.0, 0.0, 1.0), (1, "+"): (0.0, 0.0, -1.0), (0, "x"): (1.0, 0.0, 0.0), (1, "x"): (-1.0, 0.0, 0.0)}


@pytest.mark.parametrize("bit, basis", sorted(BLOCH))
@pytest.mark.parametrize("bob_basis", ["+", "x"])
def test_one_photon_without_eve(bit, basis, bob_basis):
    from qiskit.quantum_info import Statevector

    steps = teaching.one_photon(bit, basis, bob_basis)
    assert [s.title for s in steps] == ["Alice prepares", "Bob rotates into his basis", "Bob measures"]
    assert steps[0].bloch_vector() == BLOCH[bit, basis]
    # Each step's state is what its own circuit computes (the circuit is not decoration).
    for s in steps[:2]:
        assert Statevector(s.circuit.remove_final_measurements(inplace=False)).equiv(s.state)
    assert steps[-1].circuit.count_ops()["measure"] == 1
    expected = ((1.0, 0.0) if bit == 0 else (0.0, 1.0)) if basis == bob_basis else (0.5, 0.5)
    assert steps[-1].probabilities == pytest.approx(expected, abs=1e-12)
    assert ("kept" in steps[-1].explanation) == (basis == bob_basis)


def test_one_photon_with_eve_in_alices_basis_is_invisible():
    steps = teaching.one_photon(1, "x", "x", eve_basis="x", seed=0)
    assert [s.title for s in steps][1] == "Eve measures and resends"
    assert steps[1].outcome == 1 and steps[1].bloch_vector() == BLOCH[1, "x"]
    assert steps[-1].probabilities == pytest.approx((0.0, 1.0), abs=1e-12)
    assert [r.name for r in steps[-1].circuit.cregs] == ["eve_bit", "bob_bit"]
    assert [r.name for r in steps[-1].circuit.qregs] == ["photon"]


def test_one_photon_eve_in_the_wrong_basis_makes_errors_half_the_time():
    # Eve measures Alice's |+> in Z: a coin toss (seeded), and Bob, in Alice's basis, then reads
    # Alice's bit with probability 1/2 whatever Eve got.
    outcomes = []
    for seed in range(200):
        steps = teaching.one_photon(0, "x", "x", eve_basis="+", seed=seed)
        eve = steps[1]
        assert eve.probabilities in ((1.0, 0.0), (0.0, 1.0))  # she resends a Z state
        assert steps[-1].probabilities == pytest.approx((0.5, 0.5), abs=1e-12)
        outcomes.append(eve.outcome)
    # Binomial(200, 1/2): 100 ± 5σ (σ ≈ 7.1).
    assert 65 <= sum(outcomes) <= 135
    assert teaching.one_photon(0, "x", "x", eve_basis="+", seed=7)[1].outcome == \
        teaching.one_photon(0, "x", "x", eve_basis="+", seed=7)[1].outcome


def test_one_photon_breidbart():
    steps = teaching.one_photon(0, "+", "+", eve_basis="B", seed=1)
    p_right = np.cos(np.pi / 8) ** 2
    assert steps[1].probabilities[steps[1].outcome] == pytest.approx(p_right if steps[1].outcome == 0 else 1 - p_right)
    assert max(steps[-1].probabilities) == pytest.approx(p_right)


@pytest.mark.parametrize("args, kwargs, match", [
    ((2, "+", "+"), {}, "Alice's bit must be 0 or 1, got 2"),
    ((True, "+", "+"), {}, "Alice's bit must be 0 or 1, got True"),
    ((0, "y", "+"), {}, "Alice's basis must be '\\+' or 'x'"),
    ((0, "+", "B"), {}, "Bob's basis must be '\\+' or 'x'"),
    ((0, "+", "+"), {"eve_basis": "q"}, "Eve's basis must be '\\+', 'x', 'B'"),
])
def test_one_photon_refuses_bad_input(args, kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        teaching.one_photon(*args, **kwargs)


def _qber_of_full_intercept_resend(eve_basis_choices):
    """Bob's error rate on kept pulses, Eve on every photon: exact, from the branches of her measurement."""
    total = 0.0
    cases = [(bit, a, e) for bit in (0, 1) for a in "+x" for e in eve_basis_choices]
    for bit, a, e in cases:
        for outcome in (0, 1):
            first = teaching.one_photon(bit, a, a, eve_basis=e, seed=0)[1].outcome_probabilities
            if first[outcome] == 0:
                continue
            steps = teaching.one_photon(bit, a, a, eve_basis=e, eve_outcome=outcome)
            assert steps[1].outcome == outcome and steps[1].outcome_probabilities == first
            total += first[outcome] * steps[-1].probabilities[1 - bit]
    return total / len(cases)


def test_one_photon_branches_give_the_intercept_resend_qber():
    # Random Z/X: 1/4 (the f/4 line at f = 1); Breidbart: also 1/4 (c^4 + s^4 = 3/4 right).
    assert _qber_of_full_intercept_resend("+x") == pytest.approx(0.25, abs=1e-12)
    assert _qber_of_full_intercept_resend("B") == pytest.approx(0.25, abs=1e-12)
    assert _qber_of_full_intercept_resend("+") == pytest.approx(0.25, abs=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    ({"eve_outcome": 1}, "needs an eve_basis, got 1 without Eve"),
    ({"eve_basis": "+", "eve_outcome": 2}, "eve_outcome must be 0 or 1"),
    ({"eve_basis": "+", "eve_outcome": 1}, "Eve cannot get 1 here"),
])
def test_one_photon_refuses_bad_eve_outcomes(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        teaching.one_photon(0, "+", "+", **kwargs)


def test_pulse_table_of_a_weak_coherent_pulse_record():
    from qkd_circuits import WcpRecord, WeakCoherentSource

    rec = WcpRecord(np.array(ALICE_BITS), np.array(ALICE_BASES), np.array(BOB_BASES), np.array(BOB_RESULTS),
                    np.array(DETECTED), PROV, intensity=np.array([0, 1, 2, 0, 0, 1]),
                    source=WeakCoherentSource.vacuum_weak(mu=0.5, nu=0.1), photons=np.array([1, 0, 0, 2, 1, 0]))
    rows = teaching.pulse_table(rec, 3)
    assert [r["intensity"] for r in rows] == ["signal", "decoy", "vacuum"]
    assert "photons" not in rows[0]  # the simulator's ground truth stays out of the table
    assert teaching.format_pulse_table(rows).splitlines()[0].split()[:2] == ["pulse", "intensity"]
