"""Rounds too small for a key say so, and say how large a round would need to be."""

from __future__ import annotations

import re

import pytest

import qkd_circuits as qkd
from qkd_circuits.analysis.finite_key import minimum_sifted_bits
from qkd_circuits.postprocessing.estimation import estimate_qber
from qkd_circuits.postprocessing.protocol import PostProcessingConfig, explain_abort


def test_a_tiny_perfect_round_explains_its_qber_abort_and_the_advice_works():
    # 2,000 pulses on a perfect channel: ~1,000 sifted bits, a 100-bit sample with no errors,
    # whose Clopper–Pearson bound at ε = 1e-10 is ~21% > 11%.  The report says why and how many
    # pulses would do; a round of that size passes the QBER test.
    r = qkd.run_bb84(2000, seed=3)
    assert r.report.abort_reason == "qber_too_high" and r.report.qber.estimate == 0.0
    detail = r.report.abort_detail
    assert "upper bound" in detail and "at least 198 bits" in detail
    pulses = int(re.search(r"about ([\d,]+) pulses", detail).group(1).replace(",", ""))
    assert 3_500 < pulses < 5_000
    bigger = qkd.run_bb84(pulses + 200, seed=4)
    assert bigger.report.abort_reason != "qber_too_high"
    assert r.report.to_dict()["abort_detail"] == detail


def test_a_round_that_passes_the_test_but_is_too_short_names_the_size_a_key_needs():
    r = qkd.run_bb84(5000, seed=5)
    assert r.report.abort_reason == "key_too_short"
    need = minimum_sifted_bits(r.report.qber.estimate, sample_fraction=0.1, f_ec=1.2)
    assert f"at least {need:,} sifted bits" in r.report.abort_detail
    assert need > r.report.sifted


def test_a_round_with_a_key_has_no_detail():
    r = qkd.run_bb84(30_000, seed=6)
    assert not r.report.aborted and r.report.abort_detail is None


def test_explanations_for_each_reason():
    cfg = PostProcessingConfig()
    few = explain_abort(cfg, "too_few_sifted_bits", sifted=1)
    assert few.startswith("only 1 sifted bits") and "1,980 sifted bits" in few
    noisy = explain_abort(cfg, qkd.AbortReason.QBER_TOO_HIGH, sifted=10_000, qber=estimate_qber(300, 1000))
    assert "30.00%" in noisy and "too noisy" in noisy
    hopeless = explain_abort(cfg, "key_too_short", sifted=10_000, qber=estimate_qber(150, 1000))
    assert "no round size gives a key at 15.00% QBER" in hopeless
    assert explain_abort(cfg, "verification_failed", sifted=10_000) is None
    assert explain_abort(cfg, None, sifted=10_000) is None
    with pytest.raises(ValueError, match="is not a valid AbortReason"):
        explain_abort(cfg, "no_such_reason", sifted=10)
