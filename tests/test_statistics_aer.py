"""BB84 statistics on Aer against theory.

Every expected value cites its source (see qkd_circuits/quantum/models.py); tolerances are
5 binomial standard deviations at the stated sample size, with fixed seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import qkd_circuits as qkd
from conftest import assert_rate, sifted_stats

N = 200_000


def test_noiseless_channel_has_zero_qber_and_sifts_half(mode):
    rec = qkd.run_exchanges(N, mode=mode, seed=11)
    s = sifted_stats(rec)
    assert s["qber"] == 0.0
    assert rec.detected.all()
    assert_rate(s["sifted"] / N, 0.5, N)  # bases agree with probability 1/2


def test_choices_are_uniform(mode):
    rec = qkd.run_exchanges(N, mode=mode, seed=12)
    for name in ("alice_bits", "alice_bases", "bob_bases", "bob_results"):
        assert_rate(getattr(rec, name).mean(), 0.5, N)


@pytest.mark.parametrize("basis", ["random", "Z", "X", "breidbart"])
@pytest.mark.parametrize("fraction", [0.3, 1.0])
def test_intercept_resend_gives_a_quarter_of_the_fraction(mode, basis, fraction):
    eve = qkd.InterceptResend(fraction, basis)
    rec = qkd.run_exchanges(N, mode=mode, eve=eve, seed=13)
    s = sifted_stats(rec)
    assert_rate(s["qber"], fraction / 4, s["sifted"])  # Bennett et al. 1992: QBER = f/4
    assert_rate(rec.eve_active.mean(), fraction, N)
    # What Eve learned: perfect where her basis was Alice's; cos²(π/8) everywhere for Breidbart.
    m = s["mask"] & rec.eve_active
    if basis == "breidbart":
        right = m
        expected_error = math.sin(math.pi / 8) ** 2
    else:
        right = m & (rec.eve_bases == rec.alice_bases)
        expected_error = 0.0
    err = (rec.eve_results[right] != rec.alice_bits[right]).mean()
    assert_rate(err, expected_error, int(right.sum()))
    if basis in ("Z", "X"):
        assert (rec.eve_bases == {"Z": 0, "X": 1}[basis]).all()


@pytest.mark.parametrize("p", [0.05, 0.2])
def test_depolarizing_channel_gives_half_p(mode, p):
    rec = qkd.run_exchanges(N, mode=mode, channel=qkd.Channel(depolarizing=p), seed=14)
    s = sifted_stats(rec)
    assert_rate(s["qber"], p / 2, s["sifted"])


@pytest.mark.parametrize(
    "channel, detector, z_error, x_error",
    [
        # Each model must change the statistics, in the basis physics says (no silently dropped noise).
        (qkd.Channel(bit_flip=0.1), None, 0.1, 0.0),
        (qkd.Channel(dephasing=0.1), None, 0.0, 0.1),
        (qkd.Channel(misalignment=0.07), None, 0.07, 0.07),
        (None, qkd.Detector(readout_error=0.08), 0.08, 0.08),
        (qkd.Channel(depolarizing=0.12), None, 0.06, 0.06),
    ],
)
def test_every_noise_model_changes_the_statistics_it_should(channel, detector, z_error, x_error):
    rec = qkd.run_exchanges(N, mode="qrng", channel=channel, detector=detector, seed=15)
    s = sifted_stats(rec)
    for basis, expected in ((False, z_error), (True, x_error)):
        m = s["mask"] & (rec.alice_bases == basis)
        assert_rate((rec.alice_bits[m] != rec.bob_results[m]).mean(), expected, int(m.sum()))


def test_channel_expected_qber_composes_the_models():
    ch = qkd.Channel(depolarizing=0.04, misalignment=0.01, dephasing=0.02)
    rec = qkd.run_exchanges(N, mode="qrng", channel=ch, seed=16)
    s = sifted_stats(rec)
    assert_rate(s["qber"], ch.expected_qber(), s["sifted"])


@pytest.mark.parametrize("strength", [0.25, 0.5, 0.8])
def test_entangling_probe_trades_information_for_errors(mode, strength):
    eve = qkd.EntanglingProbe(strength)
    rec = qkd.run_exchanges(N, mode=mode, eve=eve, seed=17)
    s = sifted_stats(rec)
    theta = math.pi * strength
    assert_rate(s["qber"], (1 - math.cos(theta / 2)) / 4, s["sifted"])  # see EntanglingProbe
    right = s["mask"] & (rec.eve_bases == rec.alice_bases)
    err = (rec.eve_results[right] != rec.alice_bits[right]).mean()
    assert_rate(err, (1 - math.sin(theta / 2)) / 2, int(right.sum()))  # Helstrom bound
    wrong = s["mask"] & (rec.eve_bases != rec.alice_bases)
    assert_rate((rec.eve_results[wrong] != rec.alice_bits[wrong]).mean(), 0.5, int(wrong.sum()))


@pytest.mark.parametrize("distance, efficiency, dark", [(25.0, 0.5, 0.0), (50.0, 0.2, 0.01), (0.0, 1.0, 0.05)])
def test_loss_and_dark_counts_give_the_expected_detection_rate(mode, distance, efficiency, dark):
    ch = qkd.Channel(distance_km=distance, alpha_db_per_km=0.2)
    det = qkd.Detector(efficiency=efficiency, dark_count_probability=dark)
    rec = qkd.run_exchanges(N, mode=mode, channel=ch, detector=det, seed=18)
    eta = 10 ** (-0.2 * distance / 10) * efficiency
    p_click = 1 - (1 - eta) * (1 - dark)
    assert_rate(rec.detected.mean(), p_click, N)
    # A dark click gives a random result: errors = half the dark clicks among sifted clicks.
    s = sifted_stats(rec)
    assert_rate(s["qber"], dark / 2 / p_click, s["sifted"])


def test_sequential_schedule_and_lanes_give_the_same_statistics():
    eve = qkd.InterceptResend(1.0)
    for kwargs in (dict(mode="prepared", schedule="sequential"), dict(mode="qrng", lanes=3),
                   dict(mode="prepared", lanes=2)):
        rec = qkd.run_exchanges(12_000, eve=eve, seed=19, **kwargs)
        assert len(rec) == 12_000
        s = sifted_stats(rec)
        assert_rate(s["qber"], 0.25, s["sifted"])
        assert_rate(s["sifted"] / 12_000, 0.5, 12_000)


def test_prepared_mode_uses_the_given_choices():
    choices = qkd.draw_choices(5000, seed=3)
    rec = qkd.run_exchanges(5000, mode="prepared", choices=choices, seed=3)
    np.testing.assert_array_equal(rec.alice_bits, choices.alice_bits)
    np.testing.assert_array_equal(rec.bob_bases, choices.bob_bases)
    m = rec.alice_bases == rec.bob_bases
    np.testing.assert_array_equal(rec.bob_results[m], rec.alice_bits[m])  # noiseless: exact


def test_chunks_are_independent_and_seeds_reproduce():
    a = qkd.run_exchanges(30_000, mode="qrng", seed=5, chunk=10_000)
    b = qkd.run_exchanges(30_000, mode="qrng", seed=5, chunk=10_000)
    np.testing.assert_array_equal(a.alice_bits, b.alice_bits)
    first, second = a.alice_bits[:10_000], a.alice_bits[10_000:20_000]
    assert (first != second).any(), "chunks must not repeat the same samples"
    assert len(a.provenance.job_ids) == 3


def test_unseeded_prepared_choices_come_from_the_csprng():
    a, b = qkd.draw_choices(256), qkd.draw_choices(256)
    assert (a.alice_bits != b.alice_bits).any()


def test_progress_is_reported_per_job_up_to_the_total():
    seen = []
    qkd.run_exchanges(25_000, mode="qrng", seed=6, chunk=10_000, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(10_000, 25_000), (20_000, 25_000), (25_000, 25_000)]
