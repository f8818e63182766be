"""Model validation and spec parsing: bad input gets a clear error naming the value."""

from __future__ import annotations

import math

import pytest

import qkd_circuits as qkd
from qkd_circuits.quantum.models import parse_eve, parse_noise


@pytest.mark.parametrize("kwargs, match", [
    (dict(depolarizing=1.5), r"depolarizing must be a probability in \[0, 1\], got 1.5"),
    (dict(dephasing=-0.1), "dephasing must be a probability"),
    (dict(bit_flip="lots"), "bit_flip must be a number"),
    (dict(misalignment=float("nan")), "misalignment must be a probability"),
    (dict(distance_km=-3), "distance_km must be a finite number >= 0, got -3"),
    (dict(alpha_db_per_km=float("inf")), "alpha_db_per_km must be a finite number"),
])
def test_channel_rejects_bad_values(kwargs, match):
    with pytest.raises(qkd.ConfigurationError, match=match):
        qkd.Channel(**kwargs)


def test_detector_and_eve_reject_bad_values():
    with pytest.raises(qkd.ConfigurationError, match="efficiency"):
        qkd.Detector(efficiency=2)
    with pytest.raises(qkd.ConfigurationError, match="intercept fraction"):
        qkd.InterceptResend(fraction=-0.5)
    with pytest.raises(qkd.ConfigurationError, match="basis must be random, Z, X or breidbart"):
        qkd.InterceptResend(basis="Y")
    with pytest.raises(qkd.ConfigurationError, match="probe strength"):
        qkd.EntanglingProbe(1.2)


def test_transmittance_follows_the_fibre_formula():
    # η_ch = 10^(−αL/10): 0.2 dB/km × 50 km = 10 dB = 0.1
    assert qkd.Channel(distance_km=50, alpha_db_per_km=0.2).transmittance == pytest.approx(0.1)


def test_noise_and_eve_specs_parse():
    channel, detector = parse_noise(["depolarizing:0.05", "readout:0.01", "bit-flip:0.02"])
    assert channel == {"depolarizing": 0.05, "bit_flip": 0.02}
    assert detector == {"readout_error": 0.01}
    assert parse_eve("intercept-resend:0.5:breidbart") == qkd.InterceptResend(0.5, "breidbart")
    assert parse_eve("intercept-resend:1") == qkd.InterceptResend(1.0, "random")
    assert parse_eve("probe:0.3") == qkd.EntanglingProbe(0.3)
    assert parse_eve(None) is None


@pytest.mark.parametrize("spec, match", [
    ("depolarizing", "needs a probability"),
    ("thermal:0.1", "unknown noise model 'thermal'"),
    ("depolarizing:2", "depolarizing must be a probability"),
])
def test_bad_noise_specs(spec, match):
    with pytest.raises(qkd.ConfigurationError, match=match):
        parse_noise([spec])


@pytest.mark.parametrize("spec, match", [
    ("mitm:1", "unknown eavesdropper 'mitm'"),
    ("intercept-resend", "use intercept-resend:FRACTION"),
    ("intercept-resend:1:Q", "basis must be"),
    ("probe", "use probe:STRENGTH"),
])
def test_bad_eve_specs(spec, match):
    with pytest.raises(qkd.ConfigurationError, match=match):
        parse_eve(spec)


def test_probe_formula_limits():
    assert qkd.EntanglingProbe(0).expected_qber() == 0
    full = qkd.EntanglingProbe(1)  # a full CNOT copy is intercept-resend
    assert full.expected_qber() == pytest.approx(0.25)
    assert full.expected_eve_error() == pytest.approx(0.0)
    assert qkd.EntanglingProbe(0.5).expected_qber() == pytest.approx((1 - math.cos(math.pi / 4)) / 4)
