"""The two-party protocol end to end on Aer, and every way a peer can misbehave."""

from __future__ import annotations

import math

import numpy as np
import pytest

import qkd_circuits as qkd
from qkd_circuits.hazmat import decode, encode
from qkd_circuits.hazmat import messages as m


BATCH = [(0.02, 100_000), (0.06, 100_000), (0.10, 150_000), (0.16, 600_000)]  # sifted QBER 1, 3, 5, 8%
# The six-seed batch runs 8% on 400,000 pulses: seeds 0-5 then make 5,676-8,298-bit keys (well
# clear of none); the 50-seed batch keeps 600,000, where no seed comes near the edge.
SMALL_BATCH = [*BATCH[:3], (0.16, 400_000)]


def _check_batch(depolarizing, exchanges, seeds):
    for seed in seeds:
        result = qkd.run_bb84(exchanges, channel=qkd.Channel(depolarizing=depolarizing), seed=seed)
        r = result.report
        assert not r.aborted, (seed, r.abort_reason)
        assert result.alice_key.matches(result.bob_key)
        assert r.alice_key_sha256 == r.bob_key_sha256
        assert r.final_key_bits == len(result.alice_key) > 0
        assert r.verification["ok"]


@pytest.mark.parametrize("depolarizing, exchanges", SMALL_BATCH)
def test_final_keys_are_identical_in_every_run_of_a_seeded_batch(depolarizing, exchanges):
    _check_batch(depolarizing, exchanges, range(6))


@pytest.mark.slow
@pytest.mark.parametrize("depolarizing, exchanges", BATCH)
def test_final_keys_are_identical_in_a_large_seeded_batch(depolarizing, exchanges):
    _check_batch(depolarizing, exchanges, range(100, 150))


def test_full_intercept_resend_aborts_with_no_key():
    result = qkd.run_bb84(60_000, eve=qkd.InterceptResend(1.0), seed=5)
    r = result.report
    assert r.aborted and r.abort_reason == "qber_too_high"
    assert result.alice_key is None and result.bob_key is None
    assert r.final_key_bits == 0 and r.alice_key_sha256 is None
    assert r.leaked_ec_bits == 0  # nothing was reconciled, nothing disclosed beyond the sample
    with pytest.raises(qkd.QBERTooHigh, match="exceeds the abort threshold"):
        r.raise_for_abort()


def test_key_length_near_the_threshold_follows_the_formula():
    # QBER near 8-9%: the key is short and every term of the formula shows.
    result = qkd.run_bb84(400_000, channel=qkd.Channel(depolarizing=0.17), seed=8)
    r = result.report
    kl = r.key_length
    # Q_tol is the sampled QBER rounded up to the 0.1% grid, each grid value at eps_sec / 500.
    q_tol = math.ceil(round(r.qber["estimate"] / 0.001, 9)) * 0.001
    assert kl["qber_tolerance"] == pytest.approx(q_tol) and kl["qber_tolerance"] >= r.qber["estimate"]
    want = qkd.finite_key_length(kl["n"], kl["k"], q_tol, r.leaked_ec_bits, eps_sec=1e-10 / 500)
    assert kl["length"] == want.length > 0
    # A key longer than the 1024-bit refill is split; a shorter one refills the pool whole (whole bytes).
    ell = kl["length"]
    assert r.final_key_bits + r.auth["pool_bits_added"] == (ell if ell > 1024 else ell // 8 * 8)
    assert kl["k"] == r.sample_bits and kl["leak_ec"] == r.leaked_ec_bits
    assert r.leaked_ec_bits == r.cascade["leaked_bits"] + r.verification["tag_bits"]


def test_seeded_rounds_are_reproducible_and_unseeded_ones_are_not():
    a = qkd.run_bb84(50_000, channel=qkd.Channel(depolarizing=0.04), seed=11)
    b = qkd.run_bb84(50_000, channel=qkd.Channel(depolarizing=0.04), seed=11)
    assert a.report.alice_key_sha256 == b.report.alice_key_sha256
    rec = a.record
    c, d = qkd.postprocess(_unseeded(rec)), qkd.postprocess(_unseeded(rec))
    assert c.alice_key.matches(c.bob_key) and d.alice_key.matches(d.bob_key)
    assert c.report.alice_key_sha256 != d.report.alice_key_sha256  # fresh Toeplitz seeds


def _unseeded(record):
    from dataclasses import replace

    return replace(record, provenance=replace(record.provenance, seed=None))


@pytest.fixture
def parties():
    rec = qkd.run_exchanges(20_000, channel=qkd.Channel(depolarizing=0.04), seed=3)
    alice_random, bob_random = np.random.default_rng(1).bytes, np.random.default_rng(2).bytes
    return (qkd.AliceParty(rec.alice_view(), random_bytes=alice_random),
            qkd.BobParty(rec.bob_view(), random_bytes=bob_random), rec)


def test_alice_refuses_messages_out_of_order(parties):
    alice, _, rec = parties
    with pytest.raises(qkd.ProtocolError, match="out of order: got EstimateRequest, expected SiftRequest"):
        alice.handle(encode(m.EstimateRequest(b"s", 1, np.zeros(1, np.uint8))))


def test_alice_refuses_a_sift_request_of_the_wrong_size(parties):
    alice, _, _ = parties
    with pytest.raises(qkd.ProtocolError, match="covers 10 pulses, Alice sent 20000"):
        alice.handle(encode(m.SiftRequest(np.ones(10, np.uint8), np.ones(10, np.uint8))))


def test_alice_refuses_a_final_length_she_did_not_compute(parties):
    alice, bob, _ = parties

    def tamper(frame):
        msg = decode(frame)
        if isinstance(msg, m.AmplifyRequest):
            frame = encode(m.AmplifyRequest(msg.final_length + 1))
        return alice.handle(frame)

    with pytest.raises(qkd.ProtocolError, match="Alice computed"):
        qkd.drive(bob, tamper)
    assert alice.outcome.key is None


def test_a_residual_error_is_caught_by_verification(parties, monkeypatch):
    from qkd_circuits.postprocessing import protocol

    class LeavesOneError(protocol.CascadeBob):
        def run(self):
            key = yield from super().run()
            key = key.copy()
            key[0] ^= 1
            return key

    monkeypatch.setattr(protocol, "CascadeBob", LeavesOneError)
    alice, bob, _ = parties
    outcome = qkd.drive(bob, alice.handle)
    assert outcome.aborted and outcome.abort_reason == "verification_failed"
    assert alice.outcome.abort_reason == "verification_failed"
    assert outcome.key is None and alice.outcome.key is None


def test_garbled_parity_replies_never_yield_a_key(parties):
    alice, bob, _ = parties

    def garble(frame):
        reply = alice.handle(frame)
        msg = decode(reply)
        if isinstance(msg, m.RangeParitiesReply):
            reply = encode(m.RangeParitiesReply(1 - msg.parities))
        return reply

    try:
        outcome = qkd.drive(bob, garble)
    except qkd.ProtocolError as exc:  # Cascade may refuse to go on, or verification fails
        assert "did not converge" in str(exc)
    else:
        assert outcome.aborted and outcome.key is None
    assert alice.outcome.key is None


def test_a_finished_party_takes_no_more_messages(parties):
    alice, bob, _ = parties
    outcome = qkd.drive(bob, alice.handle)
    assert outcome.key is not None and alice.finished
    with pytest.raises(qkd.ProtocolError, match="round is over"):
        alice.handle(encode(m.SiftRequest(np.ones(1, np.uint8), np.ones(1, np.uint8))))


def test_final_key_hides_its_bits():
    key = qkd.FinalKey(np.array([1, 0, 1, 1] * 20, dtype=np.uint8))
    assert "sha256=" in repr(key) and "1, 0" not in repr(key)
    assert not key.matches(qkd.FinalKey(np.zeros(80, np.uint8)))


def test_too_few_pulses_abort_cleanly():
    result = qkd.run_bb84(2, seed=1)
    assert result.report.aborted and result.alice_key is None


def test_a_tolerance_fixed_in_advance_is_honoured():
    rec = qkd.run_exchanges(200_000, channel=qkd.Channel(depolarizing=0.08), seed=12)  # QBER ~4%
    strict = qkd.postprocess(rec, qkd.PostProcessingConfig(qber_tolerance=0.02))
    assert strict.report.aborted and strict.report.abort_reason == "key_too_short" and strict.alice_key is None
    loose = qkd.postprocess(rec, qkd.PostProcessingConfig(qber_tolerance=0.06))
    kl = loose.report.key_length
    assert kl["qber_tolerance"] == 0.06 and kl["tolerance_rule"] == "fixed in advance"
    assert loose.report.final_key_bits + 1024 == qkd.finite_key_length(kl["n"], kl["k"], 0.06, kl["leak_ec"]).length
