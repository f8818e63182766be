"""E91 with CHSH: the analysis (known answers, closed forms against an exact density matrix, the
Hoeffding bound) and the circuits on Aer, a fake IBM device and the Braket local simulator.

Statistical tolerances are 5 standard deviations, estimated from the data: for Ŝ,
σ² = Σ_ij (1 − Ê_ij²)/n_ij over the four test pairs; for a QBER, Q(1 − Q)/k over k key rounds.
Every seed is fixed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkd_circuits.analysis import chsh
from qkd_circuits.analysis.finite_key import binary_entropy
from qkd_circuits.exceptions import ConfigurationError

SQRT2 = math.sqrt(2.0)


def _s_sigma(est: chsh.CHSHEstimate) -> float:
    return math.sqrt(sum((1.0 - est.correlators[i][j] ** 2) / est.counts[i][j] for i, j, _ in chsh.CHSH_TERMS))


def _q_sigma(q: float, k: int) -> float:
    return math.sqrt(max(q * (1.0 - q), 1e-12) / k)


# ----------------------------------------------------------------------------------- analysis


def test_known_answers():
    assert chsh.chsh_value() == pytest.approx(chsh.TSIRELSON_BOUND, abs=1e-12)
    assert chsh.TSIRELSON_BOUND == pytest.approx(2 * SQRT2, abs=1e-15)
    assert chsh.di_key_rate(2 * SQRT2, 0.0) == pytest.approx(1.0, abs=1e-12)
    assert chsh.di_key_rate(2.0, 0.0) == 0.0
    assert chsh.di_key_rate(1.2, 0.0) == 0.0  # no violation, no key
    assert chsh.di_key_rate(-2.7, 0.02) == chsh.di_key_rate(2.7, 0.02)  # a relabelling of outcomes
    assert chsh.di_key_rate(2.9, 0.0) == chsh.di_key_rate(2 * SQRT2, 0.0)  # a fluctuation past Tsirelson
    # Acín et al. 2007: on the depolarizing line the DI rate vanishes at Q ≈ 7.1%; BB84's at 11.0%.
    threshold = chsh.di_threshold_qber()
    assert 0.0705 < threshold < 0.0725
    s = chsh.TSIRELSON_BOUND * (1 - 2 * threshold)
    assert chsh.di_key_rate(s, threshold) < 1e-9
    assert chsh.bb84_key_rate(threshold) > 0.1  # the device-dependent rate is still well above 0
    assert chsh.bb84_key_rate(0.0) == 1.0
    assert chsh.di_privacy_cost(2.0) == 1.0 and chsh.di_privacy_cost(2 * SQRT2) == pytest.approx(0.0, abs=1e-12)
    assert chsh.di_key_rate(2.6, 0.04) == pytest.approx(1 - binary_entropy(0.04) - chsh.di_privacy_cost(2.6), abs=1e-12)
    assert chsh.bb84_key_rate(0.1095) > 0.0 and chsh.bb84_key_rate(0.1105) == 0.0
    # the rate between the end points, from the formula written out once more
    s, q = 2.6, 0.03
    x = (1 + math.sqrt((s / 2) ** 2 - 1)) / 2
    assert chsh.di_key_rate(s, q) == pytest.approx(1 - binary_entropy(q) - binary_entropy(1 - x), abs=1e-12)


@pytest.mark.parametrize("model", [
    {}, {"depolarizing": 0.1}, {"depolarizing": 0.3}, {"misalignment": 0.05}, {"dephasing": 0.1},
    {"bit_flip": 0.1},
])
def test_noise_closed_forms_match_the_density_matrix(model):
    exact = chsh.predicted_statistics(**model)
    lam, e = model.get("depolarizing", 0.0), model.get("misalignment", 0.0)
    q = model.get("dephasing", 0.0) + model.get("bit_flip", 0.0)
    v = chsh.visibility_from_depolarizing(lam) * chsh.visibility_from_misalignment(e) * (1 - q)
    assert exact.s == pytest.approx(chsh.chsh_value(v), abs=1e-12)  # S = 2√2·V
    expected_q = {"dephasing": 0.75 * q, "bit_flip": 0.25 * q}.get(next(iter(model), ""), chsh.key_qber(v))
    assert exact.qber == pytest.approx(expected_q, abs=1e-12)
    for i in range(3):
        for j in range(3):
            if not q:  # a visibility alone: E = V·cos(a − b ± φ)
                phi = 2 * math.asin(math.sqrt(e))
                a, b = chsh.ALICE_ANGLES[i], chsh.BOB_ANGLES[j]
                assert exact.correlators[i][j] == pytest.approx(
                    chsh.visibility_from_depolarizing(lam) * math.cos(a - b + phi), abs=1e-12)


def test_pauli_probability_and_qiskit_depolarizing_agree():
    # p (uniform random Pauli) = 3λ/4: both write the same channel, S = 2√2(1 − 4p/3) = 2√2(1 − λ).
    for lam in (0.0, 0.1, 0.4, 1.0):
        assert chsh.visibility_from_pauli_probability(0.75 * lam) == pytest.approx(1 - lam, abs=1e-12)
    # S reaches the classical bound at V = 1/√2, i.e. Q = (1 − 1/√2)/2 ≈ 14.6%
    assert chsh.chsh_value(1 / SQRT2) == pytest.approx(chsh.CLASSICAL_BOUND, abs=1e-12)


@pytest.mark.parametrize("basis", ["Z", "X", "breidbart", "random"])
@pytest.mark.parametrize("fraction", [0.0, 0.3, 2 - SQRT2, 1.0])
def test_intercept_resend_closed_forms_match_the_density_matrix(basis, fraction):
    exact = chsh.predicted_statistics(eve_fraction=fraction, eve_basis=basis, depolarizing=0.05)
    assert exact.s == pytest.approx(chsh.intercept_resend_chsh(fraction, basis, visibility=0.95), abs=1e-12)
    assert exact.s == pytest.approx(0.95 * SQRT2 * (2 - fraction), abs=1e-12)
    assert exact.qber == pytest.approx(chsh.intercept_resend_qber(fraction, basis, visibility=0.95), abs=1e-12)


def test_intercept_resend_gives_sqrt2_on_every_axis():
    # E = cos(a − e)cos(b − e): the e-dependent halves cancel in S for every axis in the X–Z plane.
    for e in np.linspace(0, math.pi, 13):
        s = sum(sign * chsh.intercept_resend_correlator(chsh.ALICE_ANGLES[i], chsh.BOB_ANGLES[j], e)
                for i, j, sign in chsh.CHSH_TERMS)
        assert s == pytest.approx(SQRT2, abs=1e-12)
    assert chsh.intercept_resend_chsh(2 - SQRT2) == pytest.approx(chsh.CLASSICAL_BOUND, abs=1e-12)
    assert chsh.intercept_resend_qber(1.0, "random") == pytest.approx(0.25, abs=1e-12)  # as in BB84
    assert chsh.intercept_resend_qber(1.0, "Z") == pytest.approx((0.25 + 0.5) / 2, abs=1e-12)


def _synthetic(n: int, prediction: chsh.Prediction, rng: np.random.Generator):
    """n pulses with uniform settings and outcomes of the predicted correlators (numpy, no circuit)."""
    a = rng.integers(0, 3, n)  # sim-rng: seeded test data
    b = rng.integers(0, 3, n)  # sim-rng
    x = rng.integers(0, 2, n).astype(bool)  # sim-rng
    corr = np.array(prediction.correlators)[a, b]
    flip = rng.random(n) < (1 - corr) / 2  # sim-rng: P[x != y] = (1 − E)/2
    return a, b, x, x ^ flip


def test_estimate_counts_and_bounds_on_a_handmade_round():
    # Each of the 9 pairs once with x = y (product +1), then pair (0, 2) once more with x != y.
    a = np.array([i for i in range(3) for _ in range(3)] + [0])
    b = np.array([j for _ in range(3) for j in range(3)] + [2])
    x = np.zeros(10, dtype=bool)
    y = np.zeros(10, dtype=bool)
    y[-1] = True
    est = chsh.estimate_chsh(a, b, x, y, epsilon=0.01)
    assert est.counts[0][2] == 2 and sum(map(sum, est.counts)) == 10
    assert est.correlators[0][2] == 0.0 and est.correlators[1][1] == 1.0
    assert est.s == pytest.approx(1 - 0 + 1 + 1)
    radius = 3 * math.sqrt(2 * math.log(4 / 0.01)) + math.sqrt(2 * math.log(4 / 0.01) / 2)
    assert est.s_lower == pytest.approx(est.s - radius) and est.s_upper == pytest.approx(est.s + radius)
    assert (est.test_rounds, est.key_rounds, est.key_errors, est.qber) == (5, 2, 0, 0.0)
    assert (est.di_key_rounds, est.di_key_errors, est.di_qber) == (1, 0, 0.0)
    assert est.qber_upper == pytest.approx(1 - 0.01 ** 0.5)  # Clopper–Pearson, 0 of 2: 1 − ε^(1/k)
    assert not est.violation and est.di_rate_lower == 0.0
    assert set(est.to_dict()) >= {"s", "s_lower", "s_upper", "qber", "di_rate", "bb84_rate"}


def test_hoeffding_bound_covers_the_true_s():
    # 300 seeded rounds of 3,000 pulses at V = 0.9: the ε = 0.05 bounds must hold in at least 95%;
    # Hoeffding is loose, so none fail here, while the point estimate is centred on the truth.
    rng = np.random.default_rng(2024)  # sim-rng
    truth = chsh.predicted_statistics(depolarizing=0.1)
    lower_fails = upper_fails = 0
    estimates = []
    for _ in range(300):
        est = chsh.estimate_chsh(*_synthetic(3000, truth, rng), epsilon=0.05)
        lower_fails += est.s_lower > truth.s
        upper_fails += est.s_upper < truth.s
        estimates.append(est.s)
    assert lower_fails <= 15 and upper_fails <= 15
    assert abs(np.mean(estimates) - truth.s) < 5 * np.std(estimates) / math.sqrt(len(estimates))


@pytest.mark.parametrize("call, error, match", [
    (lambda: chsh.di_key_rate(4.5, 0.0), ConfigurationError, "algebraic range"),
    (lambda: chsh.di_key_rate(float("nan"), 0.0), ConfigurationError, "S must be in"),
    (lambda: chsh.di_key_rate("high", 0.0), ConfigurationError, "S must be a number"),
    (lambda: chsh.di_key_rate(2.5, -0.1), ConfigurationError, "QBER must be in"),
    (lambda: chsh.bb84_key_rate(1.5), ConfigurationError, "QBER must be in"),
    (lambda: chsh.hoeffding_radius(0, 0.1), ConfigurationError, "n must be a whole number"),
    (lambda: chsh.hoeffding_radius(10, 0.0), ConfigurationError, "epsilon must be in"),
    (lambda: chsh.visibility_from_pauli_probability(0.8), ConfigurationError, "at most 3/4"),
    (lambda: chsh.intercept_resend_chsh(1.0, "Y"), ConfigurationError, "basis must be"),
    (lambda: chsh.predicted_statistics(depolarizing=1.2), ConfigurationError, "depolarizing must be in"),
    (lambda: chsh.estimate_chsh([0, 1], [0], [0, 1], [0, 1]), ConfigurationError, "one entry per pulse"),
    (lambda: chsh.estimate_chsh([0, 3], [0, 0], [0, 1], [0, 1]), ConfigurationError, "setting indices"),
    (lambda: chsh.estimate_chsh([0, 1], [0, 0], [0, 2], [0, 1]), ConfigurationError, "must hold bits"),
    (lambda: chsh.estimate_chsh([1, 1], [0, 0], [0, 1], [0, 1]), ConfigurationError, "have no rounds"),
    (lambda: chsh.estimate_chsh([0, 0, 2, 2], [0, 2, 0, 2], [0] * 4, [0] * 4), ConfigurationError,
     "no key rounds"),
    (lambda: chsh.estimate_chsh([0], [0], [0], [0], epsilon=1.0), ConfigurationError, "epsilon must be in"),
    (lambda: chsh.estimate_chsh([0, 0, 2, 2, 1], [0, 2, 0, 2, 0], [0] * 5, [0] * 5), ConfigurationError,
     "no rounds of the DI key pair"),
])
def test_analysis_misuse(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ----------------------------------------------------------------------------------- circuits

qiskit = pytest.importorskip("qiskit")
from qkd_circuits.quantum import e91  # noqa: E402  (after the importorskip)
from qkd_circuits.quantum.models import Channel, EntanglingProbe, InterceptResend  # noqa: E402


def test_circuit_structure():
    t = e91.build_e91_circuit(lanes=3)
    assert t.registers == ("alice_result", "bob_result") and t.circuit.num_qubits == 6
    assert len(t.alice_theta) == len(t.bob_theta) == 3 and t.circuit.num_parameters == 6
    t = e91.build_e91_circuit(eve=InterceptResend(0.5, "random"), channel=Channel(depolarizing=0.1))
    assert t.registers == ("alice_result", "bob_result", "eve_active", "eve_basis", "eve_result")
    assert t.eve_fixed_basis is None and "quantum_channel" in t.circuit.count_ops()
    assert e91.build_e91_circuit(eve=InterceptResend(1.0, "X")).eve_fixed_basis == 1
    with pytest.raises(ConfigurationError, match="models no loss"):
        e91.build_e91_circuit(channel=Channel(distance_km=10))
    with pytest.raises(TypeError, match="eve must be InterceptResend"):
        e91.build_e91_circuit(eve=EntanglingProbe(0.5))
    with pytest.raises(ConfigurationError, match="lanes must be"):
        e91.build_e91_circuit(lanes=0)


def test_settings_are_uniform_and_secret_by_default():
    c = e91.draw_e91_choices(90_000, seed=1)
    counts = np.bincount(3 * c.alice_settings.astype(int) + c.bob_settings, minlength=9)
    assert np.all(np.abs(counts - 10_000) < 5 * math.sqrt(10_000 * 8 / 9))  # each pair 1/9
    assert repr(c) == "E91Choices(n=90000)"
    assert not c.alice_settings.flags.writeable
    fresh = [e91.draw_e91_choices(200) for _ in range(2)]  # secrets: differ with probability 1 − 9^-200
    assert not np.array_equal(fresh[0].alice_settings, fresh[1].alice_settings)
    with pytest.raises(ConfigurationError, match="settings 0, 1, 2"):
        e91.E91Choices(np.array([0, 3]), np.array([0, 1]))
    with pytest.raises(ConfigurationError, match="pulses"):
        e91.E91Choices(np.array([0, 1]), np.array([0]))


def test_noiseless_aer_violates_chsh_and_gives_identical_keys():
    rec = e91.run_e91(18_000, seed=11)
    est = rec.estimate()
    assert abs(est.s - chsh.TSIRELSON_BOUND) < 5 * _s_sigma(est)
    assert est.violation and est.s_lower > chsh.CLASSICAL_BOUND
    alice, bob = rec.sifted_keys()
    assert alice.size == est.key_rounds and np.array_equal(alice, bob)  # equal angles on |Φ+>: no error
    assert est.qber == 0.0 and est.bb84_rate == 1.0
    # the DI rate falls steeply below 2√2 (dr/dS is infinite there): at Ŝ itself it is still high
    assert est.di_rate == chsh.di_key_rate(est.s, 0.0) and est.di_rate > 0.8
    assert est.di_key_rounds == est.counts[2][1] and est.di_qber == 0.0
    assert abs(est.key_rounds - 18_000 * 2 / 9) < 5 * math.sqrt(18_000 * (2 / 9) * (7 / 9))
    assert rec.lanes == 2 and rec.executions % 9 == 0 and rec.eve_results is None
    # the key rounds are BB84's sifting rule on the basis codes (indices into ANGLES)
    assert np.array_equal(rec.key_mask(), rec.alice_bases == rec.bob_bases)
    for codes, settings in ((rec.alice_bases, rec.alice_settings), (rec.bob_bases, rec.bob_settings)):
        angles = np.array(chsh.ANGLES)[codes]
        table = chsh.ALICE_ANGLES if settings is rec.alice_settings else chsh.BOB_ANGLES
        assert np.array_equal(angles, np.array(table)[settings])
    assert "alice_results" not in repr(rec) and repr(rec).startswith("E91Record(n=18000")


@pytest.mark.parametrize("channel, eve", [
    ({"depolarizing": 0.1}, None),
    ({"depolarizing": 0.25}, None),
    ({"misalignment": 0.05}, None),
    ({"dephasing": 0.1}, None),
    ({}, ("random", 1.0)),
    ({}, ("Z", 1.0)),
    ({}, ("random", 2 - SQRT2)),  # S = √2(2 − f) = 2: the classical bound
    ({"depolarizing": 0.05}, ("random", 0.3)),
])
def test_s_and_qber_on_aer_match_theory(channel, eve):
    rec = e91.run_e91(18_000, seed=29, channel=Channel(**channel),
                      eve=None if eve is None else InterceptResend(eve[1], eve[0]))
    est = rec.estimate()
    theory = chsh.predicted_statistics(**channel, **({} if eve is None else
                                                    {"eve_basis": eve[0], "eve_fraction": eve[1]}))
    assert abs(est.s - theory.s) < 5 * _s_sigma(est), (est.s, theory.s)
    assert abs(est.qber - theory.qber) < 5 * _q_sigma(theory.qber, est.key_rounds), (est.qber, theory.qber)
    q_di = theory.key_qbers[chsh.KEY_PAIRS.index(chsh.DI_KEY_PAIR)]  # e.g. 50% for a Z-basis Eve
    assert abs(est.di_qber - q_di) < 5 * _q_sigma(q_di, est.di_key_rounds), (est.di_qber, q_di)
    if eve is not None and eve[1] == 1.0:  # full intercept-resend: S = √2, no violation at 1 − ε
        assert est.s_upper < chsh.CLASSICAL_BOUND and not est.violation and est.di_rate_lower == 0.0


def test_eve_reads_alices_bit_in_her_own_basis():
    rec = e91.run_e91(9_000, seed=5, eve=InterceptResend(1.0, "random"))
    assert rec.eve_active.all()
    same = rec.eve_results == rec.alice_results
    for alice_setting, eve_basis in ((0, 0), (2, 1)):  # Alice at 0 = Z, π/2 = X
        hit = (rec.alice_settings == alice_setting) & (rec.eve_bases == eve_basis)
        assert hit.sum() > 500 and same[hit].all()
    other = (rec.alice_settings == 0) & (rec.eve_bases == 1)  # Z against X: no correlation
    assert abs(same[other].mean() - 0.5) < 5 * math.sqrt(0.25 / other.sum())


def test_a_seed_reproduces_the_round_and_no_seed_varies():
    one, two = (e91.run_e91(300, seed=9) for _ in range(2))
    for name in ("alice_settings", "bob_settings", "alice_results", "bob_results"):
        assert np.array_equal(getattr(one, name), getattr(two, name))
    fresh = [e91.run_e91(300) for _ in range(2)]
    assert not np.array_equal(fresh[0].alice_results, fresh[1].alice_results)
    assert fresh[0].seed is None


def test_given_choices_are_used():
    choices = e91.E91Choices(np.array([1, 2] * 50), np.array([0, 1] * 50))  # key pairs only
    rec = e91.run_e91(100, seed=2, choices=choices)
    assert rec.key_mask().all() and not rec.test_mask().any()
    assert np.array_equal(rec.alice_results, rec.bob_results)


def test_run_misuse():
    with pytest.raises(ConfigurationError, match="n must be a whole number"):
        e91.run_e91(0)
    with pytest.raises(ConfigurationError, match="seed must be a whole number"):
        e91.run_e91(10, seed=-1)
    with pytest.raises(ConfigurationError, match="hold 5 pulses, not 10"):
        e91.run_e91(10, choices=e91.draw_e91_choices(5, seed=1))
    with pytest.raises(TypeError, match="choices must be E91Choices"):
        e91.run_e91(10, choices=[0] * 10)
    with pytest.raises(ConfigurationError, match="Aer noise instructions"):
        e91.run_e91(10, backend="fake:nairobi", channel=Channel(depolarizing=0.1))


def test_smoke_fake_ibm_device():
    pytest.importorskip("qiskit_ibm_runtime")
    rec = e91.run_e91(900, seed=3, backend="fake:nairobi")
    est = rec.estimate()
    assert rec.backend == "fake:nairobi" and rec.lanes == 1 and rec.n == 900
    # the device's own noise: keys mostly agree and S stays well above intercept-resend's √2
    assert est.qber < 0.2 and est.s > 1.8


def test_smoke_braket_local():
    pytest.importorskip("qiskit_braket_provider")
    rec = e91.run_e91(900, seed=3, backend="braket-local")
    est = rec.estimate()
    assert abs(est.s - chsh.TSIRELSON_BOUND) < 5 * _s_sigma(est) and est.qber == 0.0
    rec = e91.run_e91(900, seed=4, backend="braket-local", eve=InterceptResend(1.0, "random"))
    est = rec.estimate()
    assert abs(est.s - SQRT2) < 5 * _s_sigma(est)
    assert abs(est.qber - 0.25) < 5 * _q_sigma(0.25, est.key_rounds)


def test_between_the_thresholds_a_device_dependent_key_but_no_di_key():
    # λ = 0.18: Q = 9% lies between the DI threshold (7.1%) and BB84's (11.0%); S = 2√2·0.82 ≈ 2.32
    # still violates CHSH, yet Eve's DI term h((1 + √((S/2)² − 1))/2) ≈ 0.73 leaves nothing.
    rec = e91.run_e91(90_000, seed=41, channel=Channel(depolarizing=0.18))
    est = rec.estimate()
    theory = chsh.predicted_statistics(depolarizing=0.18)
    assert abs(est.qber - theory.qber) < 5 * _q_sigma(theory.qber, est.key_rounds)
    assert est.violation  # S_lower > 2 at ε = 10^-6
    assert est.di_rate == 0.0 and est.bb84_rate > 0.05
    assert chsh.di_key_rate(theory.s, theory.qber) == 0.0 and chsh.bb84_key_rate(theory.qber) > 0.1


# -- E91 through the protocol seam: run_round(protocol="e91") and qkd run --protocol e91 --------

from qkd_circuits.exceptions import AbortReason  # noqa: E402
from qkd_circuits.protocols import E91, get_protocol  # noqa: E402

_E91_PULSES = 60_000  # 13,401 key rounds at seed 1: enough for a key after the 1,024-bit pool refill


@pytest.mark.parametrize("link", ["perfect", "depolarizing 0.04", "misalignment 0.02", "depolarizing 0.1"])
def test_e91_round_gives_identical_keys_or_aborts_with_the_measured_reason(link):
    from qkd_circuits.quantum.models import Channel
    from qkd_circuits.session import run_round

    channel = {"perfect": Channel(), "depolarizing 0.04": Channel(depolarizing=0.04),
               "misalignment 0.02": Channel(misalignment=0.02), "depolarizing 0.1": Channel(depolarizing=0.1)}[link]
    result = run_round(_E91_PULSES, protocol="e91", seed=1, channel=channel)
    r = result.report
    assert r.protocol == "e91" and r.exchanges == _E91_PULSES
    h = r.chsh
    # S on the depolarizing line, 2√2(1 − λ) (misalignment e: 2√2(1 − 2e)), within 5σ of the data.
    v = {"perfect": 1.0, "depolarizing 0.04": 0.96, "misalignment 0.02": 0.96, "depolarizing 0.1": 0.9}[link]
    assert abs(h["s"] - 2 * SQRT2 * v) < 5 * 0.012, h["s"]  # σ(Ŝ) <= 0.012 at 26,685 test rounds
    if r.aborted:
        # the only abort these links can measure: the violation holds, so it is the key's own length
        assert h["s_lower"] > 2 and r.abort_reason in (AbortReason.KEY_TOO_SHORT,
                                                        AbortReason.NO_KEY_LEFT_AFTER_REPLENISHMENT), r.abort_reason
        assert result.alice_key is None and result.bob_key is None
    else:
        assert h["violation"] and h["s_lower"] > 2
        assert result.alice_key.matches(result.bob_key) and len(result.bob_key) == r.final_key_bits > 0
        assert r.alice_key_sha256 == r.bob_key_sha256


def test_e91_full_intercept_resend_aborts_on_chsh_before_any_message():
    from qkd_circuits.quantum.models import InterceptResend
    from qkd_circuits.session import run_round

    result = run_round(_E91_PULSES, protocol="e91", seed=1, eve=InterceptResend(1.0))
    r = result.report
    # Eve's measurement makes the pairs separable: S = √2 exactly (chsh.intercept_resend_chsh), far
    # below 2, and the key rounds' QBER is 25% (above the 11% abort too).  The CHSH test runs first,
    # so the reason is chsh_not_violated and no post-processing message (no pool bit) was spent.
    assert r.aborted and r.abort_reason is AbortReason.CHSH_NOT_VIOLATED
    assert abs(r.chsh["s"] - SQRT2) < 0.06 and r.chsh["s_lower"] <= 2 and not r.chsh["violation"]
    assert abs(r.qber.true_sifted - 0.25) < 0.02
    assert r.sample_bits == 0 and r.cascade is None and r.auth is None and r.final_key_bits == 0
    assert result.alice_key is None and result.bob_key is None
    assert "S_lower" in r.abort_detail and "1.133" in r.abort_detail


def test_e91_report_fields_and_the_test_rounds_are_disclosed_not_keyed():
    import json

    from qkd_circuits.session import run_round

    result = run_round(_E91_PULSES, protocol="e91", seed=1)
    d = result.report.to_dict()
    json.dumps(d)
    h = d["chsh"]
    for key in ("s", "s_lower", "s_upper", "epsilon", "test_rounds", "di_rate", "di_rate_lower", "bb84_rate"):
        assert key in h, key
    assert h["s_lower"] < h["s"] < h["s_upper"] and h["epsilon"] == 1e-6
    rec = result.record
    settings = 3 * rec.alice_bases.astype(int) + rec.bob_bases
    test = np.isin(settings, [3 * i + j for i, j, _ in chsh.CHSH_TERMS])
    key = E91.sift(rec.alice_bases, rec.bob_bases, rec.detected)
    assert h["test_rounds"] == int(test.sum()) and h["disclosed_test_bits"] == 2 * h["test_rounds"]
    assert not (test & key).any()  # no test round is ever a key round
    assert d["sifted"] == int(key.sum()) == h["key_rounds"]
    assert abs(d["sifted"] / d["exchanges"] - E91.sifting_fraction) < 5 * math.sqrt(2 / 9 * 7 / 9 / d["exchanges"])
    assert d["key_length"]["n"] + d["sample_bits"] == d["sifted"]  # the key comes from the key rounds only
    assert get_protocol("e91").describe()["estimates"] == ["qber", "chsh"]


def test_bb84_report_has_no_chsh_part():
    from qkd_circuits.session import run_round

    assert "chsh" not in run_round(2_000, seed=3).report.to_dict()


@pytest.mark.parametrize("kwargs, match", [
    ({"source": "alice"}, "BBM92 pair source"),
    ({"mode": "qrng"}, "parties' own choices"),
    ({"detector": "tight"}, "no detector"),
    ({"probe": 1}, "take backend, channel, eve, seed and lanes"),
])
def test_e91_round_misuse(kwargs, match):
    from qkd_circuits.quantum.models import Detector
    from qkd_circuits.session import run_round

    if kwargs.get("detector") == "tight":
        kwargs = {"detector": Detector(efficiency=0.5)}
    with pytest.raises(ConfigurationError, match=match):
        run_round(1_000, protocol="e91", seed=1, **kwargs)


def test_e91_round_too_small_for_the_chsh_test():
    from qkd_circuits.session import run_round

    with pytest.raises(ConfigurationError, match="no rounds"):
        run_round(2, protocol="e91", seed=1)


def test_e91_sift_keeps_the_key_pairs_only():
    a = np.array([0, 1, 2, 1, 2, 2, 0, 1], dtype=np.uint8)
    b = np.array([0, 0, 1, 1, 0, 1, 2, 0], dtype=np.uint8)
    d = np.array([1, 1, 1, 1, 1, 0, 1, 1], dtype=bool)
    assert E91.sift(a, b, d).tolist() == [False, True, True, False, False, False, False, True]
    with pytest.raises(ValueError, match="one length"):
        E91.sift(a, b[:3], d)


def test_cli_run_protocol_e91_json_and_exit_codes():
    import json

    from click.testing import CliRunner

    from qkd_circuits.cli import main

    ok = CliRunner().invoke(main, ["run", "--protocol", "e91", "-n", str(_E91_PULSES), "--seed", "1", "--json"])
    assert ok.exit_code == 0, ok.output
    d = json.loads(ok.output)
    assert d["protocol"] == "e91" and d["chsh"]["s_lower"] > 2 and d["final_key_bits"] > 0
    bad = CliRunner().invoke(main, ["run", "--protocol", "e91", "-n", str(_E91_PULSES), "--seed", "1", "--json",
                                    "--eve", "intercept-resend:1"])
    assert bad.exit_code == 3, bad.output
    assert json.loads(bad.output)["abort_reason"] == "chsh_not_violated"
    text = CliRunner().invoke(main, ["run", "--protocol", "e91", "-n", str(_E91_PULSES), "--seed", "1"])
    assert text.exit_code == 0 and "E91 round" in text.output and "CHSH           S 2.800" in text.output
