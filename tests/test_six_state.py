"""Six-state through the stack: its threshold, key length, sifting, QBER against theory, and rounds.

Theory: sifting keeps 1/3 of the pulses (three bases, uniform choices); the sifted QBER is p/2
under depolarizing noise p (in each of Z, X and Y) and f/3 under intercept-resend on a fraction f
(Eve in Z or X: a Y pulse is wrong half the time).  The one-way rate (Lo 2001) is
r(Q) = 1 + (3Q/2)log2(Q/2) + (1 − 3Q/2)log2(1 − 3Q/2), zero at Q ≈ 12.62%.  Tolerances: 5
standard deviations of a binomial rate on the sifted count.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkd_circuits.analysis.finite_key import binary_entropy
from qkd_circuits.exceptions import AbortReason, ConfigurationError, ProtocolError, RecordError
from qkd_circuits.hazmat import messages as m
from qkd_circuits.postprocessing.estimation import estimate_qber
from qkd_circuits.postprocessing.protocol import AliceParty, PostProcessingConfig, _decide_length
from qkd_circuits.protocols import BB84, SIX_STATE, six_state_privacy_cost, six_state_rate
from qkd_circuits.records import AliceView, MeasurementRecord, load_record

N = 45_000


def test_the_one_way_threshold_is_12_6_percent():
    q = SIX_STATE.threshold
    assert q == pytest.approx(0.1262, abs=5e-4)
    assert six_state_rate(q) == pytest.approx(0.0, abs=1e-9)
    assert six_state_rate(q - 0.005) > 0 > six_state_rate(q + 0.005)
    assert SIX_STATE.abort_qber == 0.126 and SIX_STATE.sifting_fraction == pytest.approx(1 / 3)
    # r(Q) = 1 − χ(Q) − h(Q): privacy amplification pays χ = H(λ) − h(Q), error correction h(Q).
    for x in (0.01, 0.05, 0.1, 0.12):
        assert SIX_STATE.asymptotic_rate(x) == pytest.approx(max(0.0, six_state_rate(x)), abs=1e-12)
        assert six_state_privacy_cost(x) < binary_entropy(x)  # cheaper than BB84's h(Q)
    # Subtracting h(Q) once more counts error correction twice: its zero is 6.84%, not 12.6%.
    twice = lambda x: six_state_rate(x) - binary_entropy(x)  # noqa: E731
    assert twice(0.0680) > 0 > twice(0.0690)


def test_the_finite_key_length_keeps_bb84s_terms_and_beats_bb84_past_its_threshold():
    n, k = 10**7, 10**6
    for q in (0.02, 0.06):
        six, bb84 = (p.variable_key_length(n, k, q, 0) for p in (SIX_STATE, BB84))
        assert six.mu == bb84.mu and six.security_term == bb84.security_term  # the same finite-size terms
        assert six.privacy_term == pytest.approx(n * six_state_privacy_cost(six.qber_tolerance + six.mu))
        assert six.length > bb84.length
        assert "not a proven finite-key bound" in six.formula
    # At 11.5% QBER (error correction at the Shannon limit) BB84 gives nothing, six-state a key.
    leak = math.ceil(n * binary_entropy(0.115))
    assert BB84.variable_key_length(n, k, 0.115, leak).length == 0
    assert SIX_STATE.variable_key_length(n, k, 0.115, leak).length > 0
    # The protocol's bound is what the parties compute.
    config = PostProcessingConfig(protocol="six-state", abort_qber=0.126)
    sample = estimate_qber(int(0.05 * k), k, epsilon=config.qber_epsilon)
    assert _decide_length(config, n, k, sample, 10**6) == SIX_STATE.variable_key_length(n, k, 0.05, 10**6)


def test_the_smallest_round_that_gives_a_key_uses_the_protocols_length():
    from qkd_circuits.analysis.finite_key import minimum_sifted_bits
    from qkd_circuits.postprocessing.protocol import explain_abort
    from qkd_circuits.protocols import BBM92

    for q in (0.0, 0.05):
        assert BB84.minimum_sifted_bits(q, sample_fraction=0.1) == BBM92.minimum_sifted_bits(q, sample_fraction=0.1) \
            == minimum_sifted_bits(q, sample_fraction=0.1)
        assert SIX_STATE.minimum_sifted_bits(q, sample_fraction=0.1) <= BB84.minimum_sifted_bits(q, sample_fraction=0.1)
    assert BB84.minimum_sifted_bits(0.105, sample_fraction=0.1) is None  # 1 - 2.2 h(Q) < 0 at f_ec 1.2
    assert SIX_STATE.minimum_sifted_bits(0.105, sample_fraction=0.1) is not None  # 1 - chi - 1.2 h > 0
    sample = estimate_qber(105, 1000, epsilon=1e-10)
    six = PostProcessingConfig(protocol="six-state", abort_qber=0.126)
    assert "no round size" in explain_abort(PostProcessingConfig(abort_qber=0.126), AbortReason.KEY_TOO_SHORT,
                                            sifted=10_000, qber=sample)
    assert "sifted bits" in explain_abort(six, AbortReason.KEY_TOO_SHORT, sifted=10_000, qber=sample)


qiskit_aer = pytest.importorskip("qiskit_aer")
from qkd_circuits.quantum.entangled import build_six_state_circuit, run_protocol_exchanges  # noqa: E402
from qkd_circuits.quantum.models import Channel, InterceptResend  # noqa: E402
from qkd_circuits.session import postprocess, run_round  # noqa: E402


def _within_5_sigma(measured: float, expected: float, n: int) -> bool:
    return abs(measured - expected) <= 5 * math.sqrt(max(expected * (1 - expected), 1e-12) / n)


def test_sifting_keeps_a_third_and_depolarizing_gives_p_over_2_in_every_basis():
    p = 0.1
    record = run_protocol_exchanges(N, protocol="six-state", channel=Channel(depolarizing=p), seed=31)
    keep = record.sifted_mask()
    assert _within_5_sigma(keep.mean(), 1 / 3, N)
    assert set(np.unique(record.alice_bases)) == {0, 1, 2}
    for basis in (0, 1, 2):
        sel = keep & (record.alice_bases == basis)
        qber = (record.alice_bits[sel] != record.bob_results[sel]).mean()
        assert _within_5_sigma(qber, p / 2, int(sel.sum())), (basis, qber)


@pytest.mark.parametrize("eve", [InterceptResend(1.0), InterceptResend(0.6, "Z")])
def test_intercept_resend_gives_f_over_3(eve):
    record = run_protocol_exchanges(N, protocol="six-state", eve=eve, seed=32)
    keep = record.sifted_mask()
    qber = (record.alice_bits[keep] != record.bob_results[keep]).mean()
    assert _within_5_sigma(qber, eve.fraction / 3, int(keep.sum())), qber


def test_a_round_gives_identical_keys_at_both_ends_with_the_six_state_bound():
    result = run_round(60_000, protocol="six-state", channel=Channel(depolarizing=0.05), seed=33)
    report = result.report
    assert not report.aborted and report.protocol == "six-state" and report.qber.threshold == 0.126
    assert result.alice_key.matches(result.bob_key) and report.final_key_bits == len(result.alice_key) > 0
    assert "six-state privacy term" in report.key_length.formula
    assert abs(report.sifted / 60_000 - 1 / 3) < 0.01


def test_a_full_intercept_resend_aborts_with_the_measured_reason():
    report = run_round(15_000, protocol="six-state", eve=InterceptResend(1.0), seed=34).report
    assert report.aborted and report.abort_reason is AbortReason.QBER_TOO_HIGH
    assert abs(report.qber.estimate - 1 / 3) < 0.06 and report.qber.upper > 0.126


def test_bases_travel_as_two_bit_planes_and_bad_ones_are_refused():
    bases = np.array([0, 1, 2, 2, 1, 0, 2], np.uint8)
    bits = SIX_STATE.encode_bases(bases)
    assert bits.size == 2 * bases.size and set(np.unique(bits)) <= {0, 1}
    np.testing.assert_array_equal(SIX_STATE.decode_bases(bits, bases.size), bases)
    with pytest.raises(ValueError, match="basis code 3"):
        SIX_STATE.decode_bases(np.ones(14, np.uint8), 7)
    alice = AliceParty(AliceView(bits=np.zeros(7, np.uint8), bases=bases),
                       PostProcessingConfig(protocol="six-state"))
    with pytest.raises(ProtocolError, match="needs 2 for each of 7 pulses"):
        alice.handle(m.encode(m.SiftRequest(np.ones(7, np.uint8), bases % 2)))  # a BB84-sized request


def test_records_keep_the_y_basis_and_bb84_records_refuse_it(tmp_path):
    record = run_protocol_exchanges(600, protocol="six-state", seed=35)
    back = load_record(record.save(tmp_path / "six.npz"))
    np.testing.assert_array_equal(back.alice_bases, record.alice_bases)
    assert int(back.alice_bases.max()) == 2 and back.provenance.protocol == "six-state"
    arrays = {k: getattr(record, k) for k in ("alice_bits", "alice_bases", "bob_bases", "bob_results", "detected")}
    from dataclasses import replace

    with pytest.raises(RecordError, match="bb84 has the bases Z, X"):
        MeasurementRecord(provenance=replace(record.provenance, protocol="bb84"), **arrays)


def test_misuse():
    record = run_protocol_exchanges(300, protocol="six-state", seed=36)
    from qkd_circuits.postprocessing.protocol import BobParty

    with pytest.raises(ConfigurationError, match="Bob's bases holds basis codes in \\[0, 2\\]; bb84 has"):
        BobParty(record.bob_view(), PostProcessingConfig())  # e.g. qkd bob --record six.npz, bb84 agreed
    with pytest.raises(ConfigurationError, match="Alice's bases holds basis codes"):
        AliceParty(record.alice_view(), PostProcessingConfig())
    with pytest.raises(ConfigurationError, match="is a six-state round but the post-processing configuration"):
        postprocess(record, PostProcessingConfig())
    with pytest.raises(ConfigurationError, match="six-state has none"):
        run_round(100, protocol="six-state", source="alice")
    with pytest.raises(ConfigurationError, match="unknown protocol"):
        PostProcessingConfig(protocol="bb85")
    with pytest.raises(ConfigurationError, match="intercept-resend only"):
        from qkd_circuits.quantum.models import EntanglingProbe

        build_six_state_circuit(eve=EntanglingProbe(0.3))


def test_loss_and_dark_counts_as_bb84s_fragments():
    from qkd_circuits.quantum.models import Detector

    """Clicks 1 − (1 − η)(1 − p_d); a dark count replaces the result by a random bit: QBER (p_d/2)/clicks."""
    channel, detector = Channel(distance_km=20), Detector(efficiency=0.6, dark_count_probability=0.05)
    record = run_protocol_exchanges(N, protocol="six-state", channel=channel, detector=detector, seed=38)
    eta = channel.transmittance * detector.efficiency
    click = 1 - (1 - eta) * (1 - 0.05)
    assert _within_5_sigma(record.detected.mean(), click, N)
    keep = record.sifted_mask()
    qber = (record.alice_bits[keep] != record.bob_results[keep]).mean()
    assert _within_5_sigma(qber, 0.05 / 2 / click, int(keep.sum())), qber


def test_the_report_gives_the_qber_of_each_basis():
    p = 0.1  # a Z (phase) flip: errors in X and Y, none in Z
    report = run_round(40_000, protocol="six-state", channel=Channel(dephasing=p), seed=37).report
    by_basis = report.qber.true_by_basis
    assert set(by_basis) == {"Z", "X", "Y"} and by_basis["Z"] == 0.0
    n = report.sifted / 3  # about a third of the sifted bits per basis
    for label in ("X", "Y"):
        assert _within_5_sigma(by_basis[label], p, int(n)), (label, by_basis[label])
