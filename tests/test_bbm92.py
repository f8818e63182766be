"""BBM92 (Bell pairs) through the stack: QBER against theory, identical keys or a measured abort.

Theory (``qkd_circuits.quantum.entangled``): on the sifted pairs the QBER is p/2 under
depolarizing noise p on the link (wherever the source sits: in the middle each arm carries
1 − √(1 − p)), f/4 under intercept-resend on a fraction f of one arm (any of Eve's bases), and
(2p + f − pf)/4 with both.  Tolerance: 5 standard deviations of a binomial rate on the sifted
count, sqrt(Q(1 − Q)/n_sifted) (a fixed seed makes each run reproducible; 5σ keeps the bound
honest rather than tuned to the seed).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkd_circuits.exceptions import AbortReason, ConfigurationError
from qkd_circuits.protocols import BB84, BBM92

pytest.importorskip("qiskit_aer")
from qkd_circuits.quantum.entangled import build_bbm92_circuit, run_protocol_exchanges  # noqa: E402
from qkd_circuits.quantum.models import Channel, Detector, EntanglingProbe, InterceptResend  # noqa: E402
from qkd_circuits.records import load_record  # noqa: E402
from qkd_circuits.session import run_round  # noqa: E402

N = 40_000


def _sifted_qber(record):
    keep = record.sifted_mask()
    return float((record.alice_bits[keep] != record.bob_results[keep]).mean()), int(keep.sum())


def _within_5_sigma(measured: float, expected: float, n: int) -> bool:
    sigma = math.sqrt(max(expected * (1 - expected), 1e-12) / n)
    return abs(measured - expected) <= 5 * sigma


@pytest.mark.parametrize("source", ["alice", "middle", "bob"])
def test_qber_under_depolarizing_noise_is_p_over_2_wherever_the_source_sits(source):
    p = 0.12
    record = run_protocol_exchanges(N, protocol="bbm92", channel=Channel(depolarizing=p), source=source, seed=11)
    qber, n = _sifted_qber(record)
    assert abs(n / N - 0.5) < 5 * math.sqrt(0.25 / N)  # Z/X each: half the pairs sift
    assert _within_5_sigma(qber, p / 2, n), (qber, p / 2, n)
    assert record.provenance.protocol == "bbm92"
    assert record.provenance.models["source"]["position"] == source


@pytest.mark.parametrize("source, arm, eve", [
    ("middle", "bob", InterceptResend(1.0)),
    ("middle", "alice", InterceptResend(1.0, "X")),
    ("alice", "bob", InterceptResend(0.5, "Z")),
    ("bob", "alice", InterceptResend(0.6, "breidbart")),
])
def test_qber_under_intercept_resend_is_f_over_4(source, arm, eve):
    record = run_protocol_exchanges(N, protocol="bbm92", eve=eve, source=source, eve_arm=arm, seed=12)
    qber, n = _sifted_qber(record)
    assert _within_5_sigma(qber, eve.fraction / 4, n), (qber, eve.fraction / 4, n)
    assert record.has_eve and abs(record.eve_active.mean() - eve.fraction) < 5 * math.sqrt(0.25 / N)


def test_qber_with_noise_and_eve_composes():
    p, f = 0.08, 0.5
    record = run_protocol_exchanges(N, protocol="bbm92", channel=Channel(depolarizing=p), eve=InterceptResend(f),
                                    seed=13)
    qber, n = _sifted_qber(record)
    assert _within_5_sigma(qber, (2 * p + f - p * f) / 4, n)


def test_a_round_gives_identical_keys_at_both_ends():
    result = run_round(60_000, protocol="bbm92", channel=Channel(depolarizing=0.06), seed=21)
    report = result.report
    assert not report.aborted and report.protocol == "bbm92"
    assert result.alice_key.matches(result.bob_key) and len(result.bob_key) == report.final_key_bits > 0
    assert report.alice_key_sha256 == report.bob_key_sha256
    assert report.qber.threshold == 0.11  # BB84's abort threshold
    assert report.key_length.formula.startswith("Tomamichel-Lim-Gisin-Renner")  # BB84's finite-key analysis
    assert report.auth.verified and report.auth.released


def test_a_full_intercept_resend_aborts_with_the_measured_reason():
    report = run_round(20_000, protocol="bbm92", eve=InterceptResend(1.0), seed=22).report
    assert report.aborted and report.abort_reason is AbortReason.QBER_TOO_HIGH
    assert report.qber.upper > 0.11 and abs(report.qber.estimate - 0.25) < 0.05
    assert report.final_key_bits == 0 and report.bob_key_sha256 is None


def test_threshold_and_analysis_are_bb84s():
    assert BBM92.threshold == pytest.approx(0.1100, abs=1e-4) and BBM92.abort_qber == BB84.abort_qber == 0.11
    for q in (0.0, 0.03, 0.08):
        assert BBM92.variable_key_length(10**5, 10**4, q, 10**4) == BB84.variable_key_length(10**5, 10**4, q, 10**4)


def test_the_record_saves_and_loads_with_its_protocol(tmp_path):
    record = run_protocol_exchanges(500, protocol="bbm92", seed=3)
    back = load_record(record.save(tmp_path / "r.npz"))
    assert back.provenance.protocol == "bbm92" and back.provenance == record.provenance
    np.testing.assert_array_equal(back.alice_bits, record.alice_bits)


def test_loss_and_dark_counts_with_the_source_at_alice():
    """η = 10^(−0.2·25/10) × 0.5 ≈ 0.158 of the pairs arrive and click at Bob; dark counts
    p_d = 0.05 click too (clicks 1 − (1 − η)(1 − p_d)) and replace his result by a random bit
    whether or not the photon arrived (BB84's fragment), so the sifted QBER is (p_d/2)/clicks."""
    channel, detector = Channel(distance_km=25), Detector(efficiency=0.5, dark_count_probability=0.05)
    record = run_protocol_exchanges(N, protocol="bbm92", channel=channel, detector=detector, source="alice", seed=14)
    eta = channel.transmittance * detector.efficiency
    click = 1 - (1 - eta) * (1 - 0.05)
    assert _within_5_sigma(record.detected.mean(), click, N)
    qber, n = _sifted_qber(record)
    assert _within_5_sigma(qber, 0.05 / 2 / click, n), (qber, 0.05 / 2 / click)
    result = run_round(N, protocol="bbm92", channel=channel, detector=detector, source="alice", seed=15)
    assert result.report.detected == int(result.record.detected.sum()) < N
    assert (result.report.aborted and result.report.abort_reason) or result.alice_key.matches(result.bob_key)


def test_misuse():
    with pytest.raises(ConfigurationError, match="never leaves the source's lab"):
        build_bbm92_circuit(eve=InterceptResend(1.0), source="alice", eve_arm="alice")
    with pytest.raises(ConfigurationError, match="source must be one of"):
        build_bbm92_circuit(source="space")
    with pytest.raises(ConfigurationError, match="eve_arm must be one of"):
        build_bbm92_circuit(eve_arm="charlie")
    with pytest.raises(ConfigurationError, match="she would have to announce her own clicks"):
        build_bbm92_circuit(channel=Channel(distance_km=10))  # the source in the middle
    with pytest.raises(ConfigurationError, match="she would have to announce her own clicks"):
        build_bbm92_circuit(channel=Channel(distance_km=10), source="bob")
    with pytest.raises(ConfigurationError, match="intercept-resend only"):
        build_bbm92_circuit(eve=EntanglingProbe(0.5))
    with pytest.raises(ConfigurationError, match="mode='prepared', lanes=1"):
        run_round(100, protocol="bbm92", mode="qrng")
    with pytest.raises(ConfigurationError, match="BB84 has none"):
        run_round(100, protocol="bb84", source="alice")
    with pytest.raises(ConfigurationError, match="runs through submit"):
        run_protocol_exchanges(100, protocol="bb84")
