"""Alice's parity oracle has a budget: whoever speaks as Bob learns at most the round's leak budget.

The budget, fixed by both parties from public values once the QBER is estimated, is
min(ceil(f·n·h(Q_upper)) + slack, ℓ(leak_EC = 0) − 1 − 128): see qkd_circuits/postprocessing/protocol.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkd_circuits.exceptions import ConfigurationError, ProtocolError
from qkd_circuits.hazmat import messages as m
from qkd_circuits.postprocessing import protocol
from qkd_circuits.hazmat.cascade import PRESETS, block_size, parities_asked
from qkd_circuits.analysis.finite_key import binary_entropy
from qkd_circuits.postprocessing.protocol import (LEAK_BUDGET_SLACK_BITS, AliceParty, BobParty,
                                                  PostProcessingConfig, drive, leak_budget)
from qkd_circuits.hazmat.shuffle import derive_permutation
from qkd_circuits.records import AliceView, BobView


def _views(n: int, q: float, seed: int):
    """Synthetic views: every pulse detected, Bob's results flipped with probability q."""
    rng = np.random.default_rng(seed)
    bits, bases = rng.random(n) < 0.5, rng.random(n) < 0.5
    return AliceView(bits, bases), BobView(bases.copy(), bits ^ (rng.random(n) < q), np.ones(n, bool))


def _alice(n=60_000, q=0.03, seed=1, config=PostProcessingConfig()):
    av, bv = _views(n, q, seed)
    return AliceParty(av, config, random_bytes=np.random.default_rng([seed, 1]).bytes), bv


class Attacker:
    """Poses as Bob with raw frames: sifts and estimates like Bob (he holds Bob's quantum data,
    e.g. intercepted), then asks Cascade questions until Alice stops answering."""

    def __init__(self, alice: AliceParty, view: BobView, *, sample_errors: float | None = None):
        self.alice, self.config, self.parity_bits = alice, alice.config, 0
        reply = m.decode(alice.handle(m.encode(m.SiftRequest(view.detected, view.bases))))
        key = view.results[reply.keep.astype(bool)].astype(np.uint8)
        n = key.size
        k = min(n - 1, max(1, math.ceil(self.config.sample_fraction * n)))
        seed = b"\x07" * 32
        positions = np.sort(derive_permutation(seed, 0, n)[:k])
        sample = key[positions].copy()
        if sample_errors is not None:  # claim a chosen QBER: flip his sample to inflate the budget
            flip = np.random.default_rng(5).random(k) < sample_errors
            sample ^= flip.astype(np.uint8)
        alice.handle(m.encode(m.EstimateRequest(seed, k, sample)))
        self.n = n - k
        m.decode(alice.handle(m.encode(m.ReconcileStart(self.config.cascade, b"\x01" * 16))), expect=m.ReconcileAck)

    def ask(self, request) -> np.ndarray:
        reply = m.decode(self.alice.handle(m.encode(request)))
        self.parity_bits += reply.parities.size
        return reply.parities

    def read_single_bits(self, chunk: int = 500):
        """The direct attack: the parity of the range [i, i+1) of pass 1 is a key bit."""
        for start in range(0, self.n, chunk):
            idx = np.arange(start, min(start + chunk, self.n))
            self.ask(m.RangeParitiesRequest(np.ones(idx.size, np.int64), idx, idx + 1))
        # Then the same ranges again, and again: Alice must count repeats too.
        while True:
            idx = np.arange(0, min(chunk, self.n))
            self.ask(m.RangeParitiesRequest(np.ones(idx.size, np.int64), idx, idx + 1))


def _assert_refused(alice: AliceParty, attacker: Attacker) -> None:
    o = alice.outcome
    assert attacker.parity_bits <= o.leak_budget.bits == o.cascade["leak_budget_bits"]
    assert o.cascade["leaked_bits"] == attacker.parity_bits  # she counted exactly what she sent
    assert o.key is None and o.aborted and o.abort_reason == "leak_budget_exceeded"
    assert alice.finished
    with pytest.raises(ProtocolError, match="round is over"):
        alice.handle(m.encode(m.TopParitiesRequest(1)))


def test_an_attacker_reading_single_bits_learns_at_most_the_budget():
    alice, view = _alice()
    attacker = Attacker(alice, view)
    with pytest.raises(ProtocolError, match=r"leak budget exceeded: .* the round's budget is \d+ bits"):
        attacker.read_single_bits()
    _assert_refused(alice, attacker)
    budget = alice.outcome.leak_budget
    assert budget.bits - 500 < attacker.parity_bits <= budget.bits < 0.5 * attacker.n  # chunks of 500
    assert budget.bits == math.ceil(budget.efficiency * budget.n * binary_entropy(alice.outcome.qber.upper)) \
        + LEAK_BUDGET_SLACK_BITS
    assert alice.outcome.ledger.entries["cascade_parity"] == attacker.parity_bits


def test_repeated_top_level_requests_are_counted_too():
    alice, view = _alice()
    attacker = Attacker(alice, view)
    with pytest.raises(ProtocolError, match="budget"):
        while True:
            for p in range(1, PRESETS[alice.config.cascade].passes + 1):
                attacker.ask(m.TopParitiesRequest(p))
    _assert_refused(alice, attacker)


def test_one_request_past_the_budget_is_refused_before_anything_is_computed():
    alice, view = _alice()
    attacker = Attacker(alice, view)
    idx = np.arange(attacker.n)
    with pytest.raises(ProtocolError, match=f"asks for {attacker.n} parity bits after 0 disclosed"):
        attacker.ask(m.RangeParitiesRequest(np.ones(idx.size, np.int64), idx, idx + 1))
    _assert_refused(alice, attacker)
    assert attacker.parity_bits == 0 and alice.outcome.cascade["blocked_request_bits"] == attacker.n


def test_claiming_a_high_qber_does_not_open_the_whole_key():
    # The attacker doctors his sample so Q_upper sits just under the abort threshold (11%),
    # which maximises f·n·h(Q_upper); the key-length cap then binds: past it no key is possible.
    alice, view = _alice(n=100_000, q=0.0)
    attacker = Attacker(alice, view, sample_errors=0.085)
    budget = alice.outcome.leak_budget
    assert alice.outcome.qber.upper <= 0.11 and budget.key_limit_bits < budget.efficiency_bits
    with pytest.raises(ProtocolError, match="budget"):
        attacker.read_single_bits(chunk=4000)
    _assert_refused(alice, attacker)
    assert attacker.parity_bits <= budget.key_limit_bits < 0.5 * attacker.n


def _honest(n, q, seed, config=PostProcessingConfig(), wrap=None):
    av, bv = _views(n, q, seed)
    alice = AliceParty(av, config, random_bytes=np.random.default_rng([seed, 1]).bytes)
    bob = BobParty(bv, config, random_bytes=np.random.default_rng([seed, 2]).bytes)
    return alice, bob, drive(bob, alice.handle if wrap is None else wrap(alice))


# Honest rounds never meet the budget.  Tolerance: the default f_budget is chosen above the
# largest leak/(n·h(Q_upper)) measured over 37 112 honest rounds (all presets, QBER 0-10%,
# 1e3-1e6 sifted bits), so a trip here would be a regression, not bad luck.
# (The original preset discloses too much at 8% for any key at this size: see the next test.)
HONEST = [(30_000, 0.0, p) for p in sorted(PRESETS)] + [(30_000, 0.03, p) for p in sorted(PRESETS)] + \
    [(250_000, 0.08, p) for p in ("option7", "option8", "yanetal")]


@pytest.mark.parametrize("n, q, preset", HONEST)
def test_honest_rounds_stay_within_the_budget_and_agree(n, q, preset):
    for seed in (1, 2):
        alice, bob, ob = _honest(n, q, seed, PostProcessingConfig(cascade=preset))
        oa = alice.outcome
        assert not ob.aborted, (preset, n, q, seed, ob.abort_reason, ob.cascade)
        assert ob.key.matches(oa.key) and alice.finished
        budget = ob.leak_budget
        assert budget == oa.leak_budget  # both ends computed the same budget from public values
        assert ob.cascade["leaked_bits"] == oa.cascade["leaked_bits"] <= budget.bits
        assert ob.cascade["leak_budget_bits"] == oa.cascade["leak_budget_bits"] == budget.bits
        assert ob.ledger.to_dict() == oa.ledger.to_dict()


def test_a_round_whose_cascade_leaves_no_key_stops_early_with_the_reason_it_always_had():
    # Original Cascade at 8% discloses more than the finite-key length can pay for: the round
    # used to end key_too_short after verification; now both stop disclosing at the cap.
    n, q, seed = 250_000, 0.08, 1
    cfg = PostProcessingConfig(cascade="original")
    starts = []

    def wrap(alice):
        def carry(frame):
            msg = m.decode(frame)
            if isinstance(msg, m.ReconcileStart):
                starts.append(msg)
            return alice.handle(frame)
        return carry

    alice, bob, ob = _honest(n, q, seed, cfg, wrap=wrap)
    b = ob.leak_budget
    assert ob.abort_reason == "key_too_short" and b.bits == b.key_limit_bits < b.efficiency_bits
    assert ob.cascade["leaked_bits"] == alice.outcome.cascade["leaked_bits"] <= b.bits
    assert ob.cascade["leaked_bits"] + ob.cascade["blocked_request_bits"] > b.key_limit_bits
    # Run Cascade to the end outside the protocol, same keys and seed: no key would be left.
    from qkd_circuits.hazmat.cascade import reconcile

    _, stats = reconcile(alice._key, ob.key_before_reconciliation, seed=starts[0].seed, preset="original",
                         qber=ob.qber.estimate)
    assert stats.leaked_bits > b.key_limit_bits
    full = protocol._decide_length(cfg, b.n, ob.ledger.sample_bits, ob.qber, stats.leaked_bits + protocol.TAG_BITS)
    assert full.length == 0


def test_alice_counts_exactly_what_each_request_reveals():
    seen = []

    def wrap(alice):
        def carry(frame):
            msg = m.decode(frame)
            before = alice._cascade.leaked_bits if alice._cascade is not None else 0
            reply = alice.handle(frame)
            if isinstance(msg, (m.TopParitiesRequest, m.RangeParitiesRequest)):
                asked = parities_asked(msg, preset=alice.config.cascade, qber=alice.outcome.qber.estimate,
                                       n=alice.outcome.leak_budget.n)
                seen.append((asked, alice._cascade.leaked_bits - before, m.decode(reply).parities.size))
            return reply
        return carry

    _, _, ob = _honest(20_000, 0.04, 3, wrap=wrap)
    assert not ob.aborted and seen
    assert all(asked == counted == sent for asked, counted, sent in seen)


def test_bob_stops_before_sending_a_request_past_the_budget(monkeypatch):
    class Greedy(protocol.CascadeBob):  # asks for every key bit first: more than any budget
        def run(self):
            idx = np.arange(self.n)
            yield m.RangeParitiesRequest(np.ones(self.n, np.int64), idx, idx + 1)
            raise AssertionError("Bob sent a request past the budget")

    monkeypatch.setattr(protocol, "CascadeBob", Greedy)
    alice, bob, ob = _honest(20_000, 0.03, 4)
    assert ob.aborted and ob.abort_reason == "leak_budget_exceeded" and ob.key is None
    assert ob.cascade["leaked_bits"] == 0 and ob.cascade["blocked_request_bits"] == ob.leak_budget.n
    assert alice.outcome.cascade["leaked_bits"] == 0 and not alice.outcome.aborted  # she was never asked


def test_a_round_too_small_for_any_key_stops_both_parties_after_estimation():
    # 3000 sifted bits, no errors: even with nothing disclosed the finite-key length is 0, so no
    # parity is worth revealing; both parties see it from the same public values.
    alice, bob, ob = _honest(3_000, 0.0, 1)
    oa = alice.outcome
    assert ob.abort_reason == oa.abort_reason == "key_too_short" and alice.finished
    assert ob.leak_budget == oa.leak_budget and ob.leak_budget.bits == 0 and ob.leak_budget.key_limit_bits < 0
    assert ob.ledger.leak_ec == oa.ledger.leak_ec == 0 and ob.cascade is None


def test_the_budget_follows_the_formula():
    cfg = PostProcessingConfig()
    _, _, ob = _honest(50_000, 0.02, 6, cfg)
    b, n, k = ob.leak_budget, ob.key_before_reconciliation.size, ob.ledger.sample_bits
    assert b == leak_budget(cfg, n, k, ob.qber) and b.n == n
    assert b.efficiency == cfg.leak_budget_efficiency and b.slack_bits == LEAK_BUDGET_SLACK_BITS
    assert b.efficiency_bits == math.ceil(cfg.leak_budget_efficiency * n * binary_entropy(ob.qber.upper)) \
        + LEAK_BUDGET_SLACK_BITS
    assert b.key_limit_bits == protocol._decide_length(cfg, n, k, ob.qber, 0).length - 1 - protocol.TAG_BITS
    assert b.bits == min(b.efficiency_bits, b.key_limit_bits)
    assert b.top_level_bits == sum(-(-n // block_size(PRESETS[cfg.cascade], ob.qber.estimate, n, p))
                                   for p in range(1, PRESETS[cfg.cascade].passes + 1))
    assert len(ob.key) == ob.key_length.length > 0


@pytest.mark.parametrize("value", [0.5, 0.999, 0.0, -1.0, math.nan, math.inf])
def test_misuse_a_budget_efficiency_below_one_or_not_finite(value):
    with pytest.raises(ConfigurationError, match="leak_budget_efficiency must be finite and >= 1.0"):
        PostProcessingConfig(leak_budget_efficiency=value)


def test_misuse_a_budget_efficiency_that_is_no_number():
    with pytest.raises(TypeError, match="leak_budget_efficiency must be a real number"):
        PostProcessingConfig(leak_budget_efficiency="1.5")
