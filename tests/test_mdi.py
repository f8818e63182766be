"""MDI-QKD: the relay's Bell-state measurement as a circuit, cheating relays, and the LCQ 2012 rate.

Statistical tests use fixed seeds; a tolerance of ``k`` sd is ``k`` standard deviations of the
binomial count (5 sd unless said otherwise).  The circuit is compared with an independent
second-quantisation calculation (:func:`qkd_circuits.analysis.mdi.output_mode_probabilities`),
and the key-rate formulas with a direct evaluation of the same linear optics.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from qkd_circuits.analysis import mdi as A
from qkd_circuits.analysis.finite_key import binary_entropy
from qkd_circuits.exceptions import ConfigurationError
from qkd_circuits.quantum.execution import sample_circuit
from qkd_circuits.quantum.mdi import (BELL_SOURCES, InterceptRelay, RandomAnnouncer, build_relay_circuit,
                                      run_mdi_wcp_exchanges,
                                      relay_announcements, run_mdi_exchanges)
from qkd_circuits.quantum.models import Channel, Detector

S = 1 / math.sqrt(2)
BB84 = {(0, 0): np.array([1, 0]), (1, 0): np.array([0, 1]), (0, 1): np.array([S, S]), (1, 1): np.array([-S, S])}
#  (bit, basis) -> RY(π·bit + π/2·basis)|0>: H, V, +, −|−> (the circuit's states, global phase included)


def _within(observed: float, expected: float, n: int, sds: float = 5.0) -> bool:
    sd = math.sqrt(max(expected * (1 - expected), 1e-12) / n)
    return abs(observed - expected) <= sds * sd


def _rate(errors_sifted: tuple[int, int]) -> float:
    e, n = errors_sifted
    return e / n


# --- the circuit against linear optics --------------------------------------------------------


def test_bell_states_psi_identified_phi_never():
    """ψ+ and ψ− are each identified with certainty and φ± never: 1/2 for a random Bell state."""
    expected = {"psi+": A.PSI_PLUS, "psi-": A.PSI_MINUS, "phi+": A.FAIL, "phi-": A.FAIL}
    successes = 0
    for i, source in enumerate(BELL_SOURCES):
        ann = relay_announcements(sample_circuit(build_relay_circuit(source=source), 400, seed=10 + i))
        assert np.all(ann == expected[source]), source
        successes += int(np.sum(ann != A.FAIL))
    assert successes / (4 * 400) == 0.5
    # the reference calculation agrees
    states = {"psi+": [0, S, S, 0], "psi-": [0, S, -S, 0], "phi+": [S, 0, 0, S], "phi-": [S, 0, 0, -S]}
    for source, state in states.items():
        p = A.linear_optics_probabilities(state)
        assert p[A.ANNOUNCEMENTS[expected[source]]] == pytest.approx(1.0, abs=1e-12)


def test_bb84_pairs_give_the_linear_optics_pattern_statistics():
    """All 16 BB84 input pairs: every detector pattern's frequency within 5 sd of the
    second-quantisation probability (4,000 shots per pair); (H, H) never succeeds."""
    circuit = build_relay_circuit()
    settings = list(itertools.product(BB84, BB84))
    theta = np.array([[math.pi * a[0] + math.pi / 2 * a[1], math.pi * b[0] + math.pi / 2 * b[1]]
                      for a, b in settings])
    params = sorted(circuit.parameters, key=lambda p: p.name)  # alice_theta, bob_theta
    shots = 4000
    data = sample_circuit(circuit, shots, seed=5, parameter_values={tuple(params): theta})
    det = 2 * data["path"].astype(int) + data["pol"].astype(int)  # (16, shots, 2)
    lo, hi = np.minimum(det[..., 0], det[..., 1]), np.maximum(det[..., 0], det[..., 1])
    ann = relay_announcements(data)
    for s, (a, b) in enumerate(settings):
        ref = A.output_mode_probabilities((BB84[a], BB84[b]))
        for x in range(4):
            for y in range(x, 4):
                f = float(np.mean((lo[s] == x) & (hi[s] == y)))
                assert _within(f, ref[x, y], shots), (a, b, x, y, f, ref[x, y])
        p = A.linear_optics_probabilities((BB84[a], BB84[b]))
        for code, name in enumerate(A.ANNOUNCEMENTS):
            assert _within(float(np.mean(ann[s] == code)), p[name], shots), (a, b, name)
    hh = settings.index(((0, 0), (0, 0)))
    assert np.all(ann[hh] == A.FAIL)  # Hong-Ou-Mandel: both photons leave by one port
    # the textbook values the reference gives
    assert A.linear_optics_probabilities((BB84[(0, 0)], BB84[(1, 0)]))["psi-"] == pytest.approx(0.5)
    assert A.linear_optics_probabilities((BB84[(0, 1)], BB84[(0, 1)]))["psi+"] == pytest.approx(0.5)
    assert A.linear_optics_probabilities((BB84[(0, 1)], BB84[(1, 1)]))["psi-"] == pytest.approx(0.5)


def test_noiseless_relay_qber_zero_in_both_bases():
    rec = run_mdi_exchanges(12_000, seed=1)
    q = rec.qber()
    assert q["Z"][0] == 0 and q["X"][0] == 0
    assert q["Z"][1] > 1300 and q["X"][1] > 1300  # ≈ 12,000/8 each
    assert _within(1 - rec.announcement_rate(A.FAIL), 0.5, rec.pairs)
    assert _within(rec.announcement_rate(A.PSI_MINUS), 0.25, rec.pairs)
    assert repr(rec) == "MdiRecord(pairs=12000, relay={'kind': 'linear-optics'})"  # no bits


def test_depolarizing_arms_qber_matches_theory():
    """Depolarizing p on an arm flips that photon's value with probability p/2 in either basis, so
    the sifted QBER is e_a(1 − e_b) + e_b(1 − e_a) in both bases (0.14 for p = 0.1 and 0.2)."""
    rec = run_mdi_exchanges(12_000, seed=2, channel_alice=Channel(depolarizing=0.1),
                            channel_bob=Channel(depolarizing=0.2))
    ea, eb = 0.05, 0.10
    expected = ea * (1 - eb) + eb * (1 - ea)
    for basis in ("Z", "X"):
        e, n = rec.qber()[basis]
        assert _within(e / n, expected, n), (basis, e / n)
    assert _within(1 - rec.announcement_rate(A.FAIL), 0.5, rec.pairs)


def test_loss_and_dark_counts_match_the_single_photon_yield_and_error():
    """With loss and dark counts the circuit's success rate is Y_11 and its X error e_11^X
    (e_d = 0) of :mod:`qkd_circuits.analysis.mdi`."""
    ch = Channel(distance_km=10.0, alpha_db_per_km=0.2)
    det = Detector(efficiency=0.6, dark_count_probability=0.03)
    rec = run_mdi_exchanges(12_000, seed=3, channel_alice=ch, channel_bob=Channel(distance_km=5.0), detector=det)
    eta_a, eta_b = 0.6 * 10 ** -0.2, 0.6 * 10 ** -0.1
    y11 = A.single_photon_yield(eta_a, eta_b, 0.03)
    assert _within(1 - rec.announcement_rate(A.FAIL), y11, rec.pairs)
    e, n = rec.qber()["X"]
    assert _within(e / n, A.single_photon_error_x(eta_a, eta_b, 0.03, 0.0), n)
    assert rec.arrived.mean(axis=0) == pytest.approx([eta_a, eta_b], abs=0.02)


# --- cheating relays --------------------------------------------------------------------------


def test_random_announcer_shows_as_half_qber_in_both_bases():
    rec = run_mdi_exchanges(8000, seed=4, relay=RandomAnnouncer())
    for basis in ("Z", "X"):
        e, n = rec.qber()[basis]
        assert _within(e / n, 0.5, n), basis


def test_intercepting_relay_learns_z_only_by_paying_x_errors():
    """A relay measuring every photon in Z knows every sifted Z key bit, keeps the honest success
    rate and Z QBER 0, and the X basis errs half the time: h(e_X) = 1 leaves no key."""
    rec = run_mdi_exchanges(8000, seed=5, relay=InterceptRelay("Z"))
    q = rec.qber()
    assert q["Z"][0] == 0
    assert _within(_rate(q["X"]), 0.5, q["X"][1])
    assert _within(1 - rec.announcement_rate(A.FAIL), 0.5, rec.pairs)
    z = rec.sifted_mask() & (rec.alice_bases == 0)
    assert rec.eve_attacked[z].all()
    assert np.array_equal(rec.eve_results[z, 0], rec.alice_bits[z].astype(bool))  # she knows Alice's bits


def test_partial_interception_is_paid_for_by_the_phase_error():
    """On a fraction f = 0.4: X QBER f/2, and the fraction of Z key bits Eve knows (f) is at most
    h(measured X QBER), what privacy amplification from the phase error removes."""
    f = 0.4
    rec = run_mdi_exchanges(12_000, seed=6, relay=InterceptRelay("Z", fraction=f))
    e, n = rec.qber()["X"]
    assert _within(e / n, f / 2, n)
    z = rec.sifted_mask() & (rec.alice_bases == 0)
    known = float(np.mean(rec.eve_attacked[z]))
    assert _within(known, f, int(z.sum()))
    sd = math.sqrt(f / 2 * (1 - f / 2) / n)
    assert known <= float(binary_entropy(e / n - 5 * sd))  # h(0.2 − 5 sd) ≈ 0.62 > 0.4
    # the mirror attack (measure in X) shows up in Z
    mirror = run_mdi_exchanges(6000, seed=7, relay=InterceptRelay("X"))
    assert mirror.qber()["X"][0] == 0
    assert _within(_rate(mirror.qber()["Z"]), 0.5, mirror.qber()["Z"][1])


# --- the analysis -----------------------------------------------------------------------------


def test_flip_rule_and_sifting():
    ann = np.array([A.FAIL, A.PSI_PLUS, A.PSI_MINUS, A.PSI_PLUS, A.PSI_MINUS])
    bases = np.array([0, 0, 0, 1, 1])
    bob = np.array([0, 0, 0, 0, 0])
    assert A.bob_key_bits(bob, bases, ann).astype(int).tolist() == [0, 1, 1, 0, 1]
    assert A.sift_mask(bases, np.array([0, 0, 1, 1, 1]), ann).tolist() == [False, True, False, True, True]
    with pytest.raises(ConfigurationError, match="codes 0"):
        A.sift_mask(bases, bases, np.array([3, 0, 0, 0, 0]))
    with pytest.raises(ConfigurationError, match="4 detectors"):
        A.announce(np.zeros((2, 3), dtype=bool))


@pytest.mark.parametrize("args", [(0.3, 0.3, 0.1, 0.05, 3e-6, 0.015), (0.5, 0.2, 0.3, 0.8, 0.01, 0.02),
                                  (1.0, 1.5, 0.9, 0.6, 0.05, 0.0)])
def test_closed_form_gains_equal_the_phase_averaged_linear_optics(args):
    for basis, closed in (("Z", A.gain_z), ("X", A.gain_x)):
        q, e = closed(*args)
        q_ref, e_ref = A.phase_averaged_gain(basis, *args)
        assert q == pytest.approx(q_ref, rel=1e-9) and e == pytest.approx(e_ref, rel=1e-9)


def test_single_photon_yield_equals_an_enumeration_of_losses_and_dark_counts():
    """Y_11 and e_11^X (e_d = 0) by brute force: each photon arrives or not, the two-photon output
    from the second-quantisation reference, every one of the 2^4 dark-count patterns."""
    eta_a, eta_b, pd = 0.3, 0.7, 0.05
    for basis in (0, 1):
        success = errors = 0.0
        for a_bit, b_bit in itertools.product((0, 1), repeat=2):
            pa, pb = BB84[(a_bit, basis)], BB84[(b_bit, basis)]
            outs = []  # (probability, detectors hit by photons)
            modes = A.output_mode_probabilities((pa, pb))
            outs += [(eta_a * eta_b * modes[x, y], {x, y}) for x in range(4) for y in range(x, 4)]
            for eta, other, state, port in ((eta_a, eta_b, pa, 0), (eta_b, eta_a, pb, 1)):
                for out_port in (0, 1):
                    for pol in (0, 1):
                        outs.append((eta * (1 - other) * 0.5 * abs(state[pol]) ** 2, {2 * out_port + pol}))
            outs.append(((1 - eta_a) * (1 - eta_b), set()))
            for p, hit in outs:
                for dark in itertools.product((0, 1), repeat=4):
                    clicks = np.array([k in hit or dark[k] == 1 for k in range(4)])
                    pdark = math.prod(pd if d else 1 - pd for d in dark)
                    code = int(A.announce(clicks))
                    if code == A.FAIL:
                        continue
                    ok = (a_bit != b_bit) if basis == 0 else ((a_bit == b_bit) == (code == A.PSI_PLUS))
                    success += p * pdark / 4
                    errors += (0 if ok else p * pdark) / 4
        assert success == pytest.approx(A.single_photon_yield(eta_a, eta_b, pd), rel=1e-12)
        if basis == 1:
            assert errors / success == pytest.approx(A.single_photon_error_x(eta_a, eta_b, pd, 0.0), rel=1e-12)


def test_rate_known_answers():
    """Without dark counts and misalignment, R = max_μ μ² e^(−2μ) η_a η_b / 2 = e^(−2) η_a η_b / 2
    at μ = 1 (e_11 = E_Z = 0): the MDI rate scales with the total transmittance, not its root."""
    ideal = A.MdiLink(p_dark=0.0, e_d=0.0, eta_detector=0.145, name="ideal")
    for d in (0.0, 100.0):
        eta = float(ideal.transmittance(d / 2))
        rate, mu = A.optimal_key_rate(d, ideal)
        assert rate == pytest.approx(math.exp(-2) * eta ** 2 / 2, rel=1e-6)
        assert mu == pytest.approx(1.0, abs=1e-3)
    # misalignment only: the formula by hand at μ = 0.5, L = 20 km
    link = A.MdiLink(p_dark=0.0, e_d=0.02, f_ec=1.16)
    eta, mu = float(link.transmittance(10.0)), 0.5
    q = 2 * math.exp(-eta * mu) * (1 - math.exp(-eta * mu / 2)) ** 2
    h = float(binary_entropy(0.02))
    by_hand = mu ** 2 * math.exp(-2 * mu) * eta ** 2 / 2 * (1 - h) - q * 1.16 * h
    assert A.key_rate(20.0, link, mu=mu) == pytest.approx(by_hand, rel=1e-12)


def test_lcq2012_parameters_reach():
    """LCQ 2012's simulation parameters (as recalled: e_d 1.5%, p_d 3e-6, η_d 14.5%, f 1.16,
    α 0.2 dB/km): the computed maximum distance with infinite decoys, relay in the middle, is
    232.0 km (our figure; the paper's curve could not be re-read to compare)."""
    link = A.MDI_PRESETS["LCQ2012"]
    dmax = A.max_distance_km(link, tolerance_km=0.05)
    assert dmax == pytest.approx(232.0, abs=0.2)
    assert A.optimal_key_rate(dmax - 1.0, link)[0] > 0
    assert A.optimal_key_rate(dmax + 1.0, link)[0] == 0.0
    # a relay off-centre shortens the reach
    assert A.optimal_key_rate(200.0, link, relay_fraction=0.2)[0] < A.optimal_key_rate(200.0, link)[0]


# --- misuse -----------------------------------------------------------------------------------


def test_bad_input_is_refused():
    with pytest.raises(ConfigurationError, match="pair of 0/1"):
        build_relay_circuit((2, 1))
    with pytest.raises(ConfigurationError, match="source must be"):
        build_relay_circuit(source="ghz")
    with pytest.raises(ConfigurationError, match="both photons"):
        build_relay_circuit((1, 0), source="psi+")
    with pytest.raises(ConfigurationError, match="relay must be"):
        run_mdi_exchanges(10, relay="honest")
    with pytest.raises(ConfigurationError, match="readout_error"):
        run_mdi_exchanges(10, detector=Detector(readout_error=0.1))
    with pytest.raises(ConfigurationError, match="pairs must be"):
        run_mdi_exchanges(0)
    with pytest.raises(ConfigurationError, match="basis must be"):
        InterceptRelay("Y")
    with pytest.raises(ConfigurationError, match="<= 1"):
        RandomAnnouncer(0.7, 0.7)
    with pytest.raises(ConfigurationError, match="e_d must be"):
        A.MdiLink(e_d=0.6)
    with pytest.raises(ConfigurationError, match="mu must be"):
        A.key_rate(10.0, mu=0.0)
    with pytest.raises(ConfigurationError, match="normalised"):
        A.linear_optics_probabilities([1, 1, 0, 0])


# --- weak coherent pulses -----------------------------------------------------------------------


def test_weak_coherent_pulses_give_the_closed_form_gains():
    """Phase-randomised pulses as Fock components through the n-photon relay circuit: each
    intensity pair's gain and QBER in both bases within 5 sd of gain_z / gain_x (e_d = 0), the
    X basis's multi-photon interference (the Bessel terms) included."""
    ints = {"signal": 0.8, "decoy": 0.2}
    det = Detector(efficiency=0.3, dark_count_probability=0.02)
    rec = run_mdi_wcp_exchanges(24_000, intensities=ints, detector=det, seed=8)
    assert rec.photons.max() >= 2  # multi-photon components did reach the relay
    for a, b in itertools.product(ints, ints):
        m = rec.intensity_mask(a, b)
        for basis, closed in (("Z", A.gain_z), ("X", A.gain_x)):
            q_ref, e_ref = closed(ints[a], ints[b], 0.3, 0.3, 0.02, 0.0)
            q, e = rec.gain_and_qber(basis, m)
            both = int((m & (rec.alice_bases == rec.bob_bases) & (rec.alice_bases == (basis == "X"))).sum())
            assert _within(q, q_ref, both), (a, b, basis, q, q_ref)
            kept = round(q * both)
            assert _within(e, e_ref, kept), (a, b, basis, e, e_ref)
    with pytest.raises(ConfigurationError, match="unknown intensity"):
        rec.intensity_mask("signal", "vacuum")
    with pytest.raises(ConfigurationError, match="MAX_RELAY_PHOTONS"):
        run_mdi_wcp_exchanges(200, intensities={"bright": 8.0}, seed=1)


def test_decoy_bounds_bracket_the_model_and_tighten_with_more_decoys():
    link = A.MDI_PRESETS["LCQ2012"]
    ints = (0.5, 0.1, 0.0)
    for d in (0.0, 100.0, 180.0):
        eta = float(link.transmittance(d / 2))
        qz, eqz = A.model_gains("Z", ints, ints, d, link)
        qx, eqx = A.model_gains("X", ints, ints, d, link)
        y11 = A.single_photon_yield(eta, eta, link.p_dark)
        e11 = A.single_photon_error_x(eta, eta, link.p_dark, link.e_d)
        bz, bx = A.decoy_bounds(ints, ints, qz, eqz), A.decoy_bounds(ints, ints, qx, eqx)
        assert 0.85 * y11 <= bz.y11_lower <= y11 * (1 + 1e-9)
        assert e11 * (1 - 1e-9) <= bx.e11_upper <= 0.5
    # 100 km, μ = 0.5: 1.35e-6 with (0.5, 0.1, 0), 4.84e-6 with (0.5, 0.1, 0.01, 0), 4.86e-6 exact
    exact = A.key_rate(100.0, link, mu=0.5)
    three = A.decoy_key_rate(100.0, link, intensities=(0.5, 0.1, 0.0))
    four = A.decoy_key_rate(100.0, link, intensities=(0.5, 0.1, 0.01, 0.0))
    assert 0 < three < four <= exact * (1 + 1e-9)
    assert four == pytest.approx(exact, rel=0.01)
    # gains no source could produce: a vacuum pair that never clicks, a signal-vacuum pair that always does
    q = np.array([[1.0, 1.0], [1.0, 0.0]])
    with pytest.raises(ConfigurationError, match="admit no set"):
        A.decoy_bounds((0.5, 0.0), (0.5, 0.0), q, q / 4)
    with pytest.raises(ConfigurationError, match="shape"):
        A.decoy_bounds((0.5, 0.0), (0.5,), q, q)


def test_relay_circuit_runs_on_the_local_backends():
    """The same record type from a fake IBM device (its noise is the channel: measured here
    Z 9/89, X 12/108 errors, seed 2) and from Braket's local simulator (noiseless: QBER 0)."""
    pytest.importorskip("qiskit_ibm_runtime")
    fake = run_mdi_exchanges(800, seed=2, backend="fake:nairobi")
    q = fake.qber()
    assert q["Z"][1] > 50 and q["X"][1] > 50
    assert 0 < (q["Z"][0] + q["X"][0]) / (q["Z"][1] + q["X"][1]) < 0.25
    assert _within(1 - fake.announcement_rate(A.FAIL), 0.5, fake.pairs, sds=6)
    pytest.importorskip("qiskit_braket_provider")
    local = run_mdi_exchanges(800, seed=2, backend="braket-local")
    assert local.qber()["Z"][0] == 0 and local.qber()["X"][0] == 0
    with pytest.raises(ConfigurationError, match="noise instructions"):
        run_mdi_exchanges(10, channel_alice=Channel(depolarizing=0.1), backend="braket-local")


def test_decoy_bounds_with_fluctuations_loosen_and_still_bracket():
    """Observed gains widened by u_alpha sd: looser than exact ones, still around the model's Y_11.
    (A circuit run of 60,000 pairs, 0.3 per arm, is too small for a useful bound: Y_11 >= 0 at
    u_alpha = 3; the test uses the model's gains with a nominal 1e9 pairs per intensity pair.)"""
    link = A.MDI_PRESETS["LCQ2012"]
    ints = (0.5, 0.1, 0.0)
    qz, eqz = A.model_gains("Z", ints, ints, 50.0, link)
    exact = A.decoy_bounds(ints, ints, qz, eqz)
    loose = A.decoy_bounds(ints, ints, qz, eqz, pulses=np.full((3, 3), 1e9), u_alpha=5.0)
    eta = float(link.transmittance(25.0))
    assert 0 < loose.y11_lower < exact.y11_lower <= A.single_photon_yield(eta, eta, link.p_dark)
    with pytest.raises(ConfigurationError, match="needs pulses"):
        A.decoy_bounds(ints, ints, qz, eqz, u_alpha=3.0)


def test_channel_model_refuses_bad_numbers():
    with pytest.raises(ConfigurationError, match="mean photon number"):
        A.gain_z(-0.1, 0.5, 0.1, 0.1, 1e-6, 0.01)
    with pytest.raises(ConfigurationError, match="eta_b must be a probability"):
        A.gain_x(0.5, 0.5, 0.1, 1.5, 1e-6, 0.01)
    with pytest.raises(ConfigurationError, match="basis must be"):
        A.phase_averaged_gain("Y", 0.5, 0.5, 0.1, 0.1, 1e-6, 0.01)


def test_an_mdi_round_through_the_unchanged_post_processing():
    """Single-photon MDI as BB84 with the relay as Eve: 40,000 pairs (seed 12) give identical
    1,459-bit keys at both ends over the authenticated channel; an intercepting relay (seed 13)
    makes the round abort with qber_too_high (X errs half the time, Z not at all)."""
    from qkd_circuits.exceptions import AbortReason
    from qkd_circuits.session import postprocess

    record = run_mdi_exchanges(40_000, seed=12).to_measurement_record()
    assert record.provenance.mode == "mdi"
    report = postprocess(record).report
    assert not report.aborted and report.final_key_bits > 1000
    assert report.alice_key_sha256 == report.bob_key_sha256
    cheat = postprocess(run_mdi_exchanges(20_000, seed=13, relay=InterceptRelay("Z")).to_measurement_record()).report
    assert cheat.aborted and cheat.abort_reason is AbortReason.QBER_TOO_HIGH
    assert cheat.qber.true_by_basis["Z"] == 0.0 and cheat.qber.true_by_basis["X"] > 0.4
    with pytest.raises(ConfigurationError, match="single-photon MDI runs"):
        run_mdi_wcp_exchanges(50, intensities={"signal": 0.1}, seed=1).to_measurement_record()


def test_key_rate_curve_falls_with_distance_like_the_total_transmittance():
    """Each 50 km (10 dB in total) costs about a factor 10 in rate far from the end: the rate
    goes with η_a η_b, as the closed form at p_d = e_d = 0 says."""
    curve = A.key_rate_curve([50.0, 100.0, 150.0])
    assert [p["distance_km"] for p in curve] == [50.0, 100.0, 150.0]
    ratios = [curve[i]["rate"] / curve[i + 1]["rate"] for i in range(2)]
    assert all(9.0 < r < 13.0 for r in ratios), ratios
    assert curve[0]["rate"] == pytest.approx(5.298e-5, rel=1e-3)
