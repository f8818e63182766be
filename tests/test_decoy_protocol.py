"""Decoy-state rounds: the intensity labels and decoy counts travel as protocol messages, and the
key length is the composable bound of the round's own counts.

The party tests run on synthetic views (numpy draws from the Lim et al. 2014 link without
afterpulses, two million pulses in well under a second) so that many rounds fit in the suite; one
round goes through the circuits end to end.  Each party gets only its own view: Bob never sees the
intensities except through Alice's message.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

import qkd_circuits as qkd
from qkd_circuits.analysis.finite_decoy import lim2014, rusca2018, terms_total
from qkd_circuits.analysis.keyrate import PRESETS
from qkd_circuits.exceptions import ConfigurationError, ProtocolError
from qkd_circuits.hazmat import messages as m
from qkd_circuits.postprocessing.decoy_rounds import KEY_BASIS, TEST_BASIS, DecoyProtocol, count_bits
from qkd_circuits.postprocessing.protocol import AliceParty, BobParty, PostProcessingConfig, drive
from qkd_circuits.records import AliceView, BobView, WeakCoherentSource

LINK = PRESETS["Lim2014"].with_(afterpulse=0.0)
THREE = WeakCoherentSource({"signal": 0.76, "decoy": 0.24, "vacuum": 0.0}, {"signal": 0.16, "decoy": 0.54, "vacuum": 0.30})
TWO = WeakCoherentSource({"signal": 0.64, "decoy": 0.20}, {"signal": 0.31, "decoy": 0.69})


def views(source, pulses=2_000_000, seed=0, distance_km=0.0, pns=False, q=0.5):
    """Alice's and Bob's views of a simulated run (test data: sim-rng)."""
    rng = np.random.default_rng(seed)  # sim-rng: test data only
    labels = source.labels
    codes = rng.choice(len(labels), size=pulses, p=[source.probabilities[k] for k in labels]).astype(np.int8)
    mu = np.array([source.intensities[k] for k in labels])[codes]
    eta = float(LINK.transmittance(distance_km))
    photons = rng.poisson(mu)
    if pns:  # Eve blocks every single photon and forwards multi-photon pulses losslessly
        click = rng.random(pulses) < np.where(photons >= 2, 1.0, 0.0) * 0.5 + LINK.y0
    else:
        click = rng.random(pulses) < 1 - (1 - LINK.y0) * (1 - eta) ** photons
    bits, a_bases, b_bases = (rng.integers(0, 2, pulses).astype(np.uint8) for _ in range(3))
    if q != 0.5:  # each party picks the key basis (0) with probability q
        a_bases, b_bases = ((rng.random(pulses) >= q).astype(np.uint8) for _ in range(2))
    flip = rng.random(pulses) < LINK.e_detector
    results = np.where(a_bases == b_bases, bits ^ flip, rng.integers(0, 2, pulses)).astype(np.uint8)
    return AliceView(bits, a_bases, codes), BobView(b_bases, results, click)


def run(alice_view, bob_view, config, *, tamper=None):
    alice, bob = AliceParty(alice_view, config), BobParty(bob_view, config)

    def carry(frame):
        reply = alice.handle(frame)
        return tamper(frame, reply) if tamper else reply

    return alice, drive(bob, carry)


def truth(alice_view, bob_view, protocol):
    """The counts recomputed from both views (what neither party holds alone)."""
    sifted = bob_view.detected & (alice_view.bases == bob_view.bases)
    key, test = sifted & (alice_view.bases == KEY_BASIS), sifted & (alice_view.bases == TEST_BASIS)
    wrong = alice_view.bits != bob_view.results
    errors = np.bincount(alice_view.intensity[key & wrong], minlength=len(protocol.labels))
    # Two decoys never announce the key-basis errors (their bound does not need them).
    return protocol.counts(alice_view.intensity[key], alice_view.intensity[test], wrong[test],
                           errors if protocol.method == "rusca2018" else None)


@pytest.mark.parametrize("source, method, bound", [(THREE, "lim2014", lim2014), (TWO, "rusca2018", rusca2018)])
def test_a_decoy_round_releases_exactly_the_composable_bound_of_its_counts(source, method, bound):
    a_view, b_view = views(source, seed=1)
    protocol = DecoyProtocol.from_source(source)
    assert protocol.method == method
    config = PostProcessingConfig(decoy=protocol)
    alice, ob = run(a_view, b_view, config)
    oa = alice.outcome
    assert not ob.aborted and ob.key.matches(oa.key)
    # Both parties computed the same counts from the messages; they equal the ground truth.
    assert oa.decoy_counts == ob.decoy_counts == truth(a_view, b_view, protocol)
    kl = ob.decoy_key_length
    assert len(ob.key) == kl.length == oa.decoy_key_length.length > 0
    # The length is the published bound on these counts with everything disclosed counted.
    independent = bound(truth(a_view, b_view, protocol), leak_ec=ob.ledger.leak_ec, eps_sec=config.eps_sec,
                        eps_cor=config.eps_cor, verification_bits=0, sampling="serfling")
    assert kl.length == independent.length
    assert ob.ledger.leak_ec == ob.cascade["leaked_bits"] + 128 + ob.ledger.entries["statistics"]
    # The ε ledger adds up to ε_sec, in 21 (Lim) or 19 (Rusca) equal parts.
    assert math.isclose(kl.ledger.total, config.eps_sec, rel_tol=1e-12)
    assert terms_total(kl.ledger.terms) == (21 if method == "lim2014" else 19)
    # Every test-basis bit was disclosed and none of them is in the key.
    assert ob.ledger.sample_bits == int(truth(a_view, b_view, protocol).test.n) == oa.qber.n


def test_one_decoy_counts_the_announced_error_statistics_as_disclosed():
    a_view, b_view = views(TWO, seed=2)
    protocol = DecoyProtocol.from_source(TWO)
    _, ob = run(a_view, b_view, PostProcessingConfig(decoy=protocol))
    det = ob.decoy_counts.key.detections
    assert ob.ledger.entries["statistics"] == sum(count_bits(det[k]) for k in protocol.labels) > 0
    assert ob.decoy_counts.key.errors == truth(a_view, b_view, protocol).key.errors
    # Two decoys need no key-basis statistics: nothing is announced after verification.
    a3, b3 = views(THREE, seed=2)
    _, ob3 = run(a3, b3, PostProcessingConfig(decoy=DecoyProtocol.from_source(THREE)))
    assert ob3.ledger.entries["statistics"] == 0 and ob3.decoy_counts.key.errors is None


def test_the_bound_falls_with_fewer_pulses_and_a_tiny_round_stops_before_error_correction():
    big = run(*views(THREE, pulses=3_000_000, seed=3), PostProcessingConfig(decoy=DecoyProtocol.from_source(THREE)))[1]
    small_alice, small = run(*views(THREE, pulses=300_000, seed=3),
                             PostProcessingConfig(decoy=DecoyProtocol.from_source(THREE)))
    assert not big.aborted and len(big.key) > 0
    assert small.aborted and small.abort_reason == "decoy_check_failed"
    assert small.cascade is None and small.ledger.entries["cascade_parity"] == 0  # nothing reconciled
    assert small_alice.outcome.abort_reason == "decoy_check_failed" and small_alice.outcome.key is None
    assert small.decoy_key_length.s_key_1 == 0.0 or small.decoy_key_length.phase_error >= 0.5


def test_a_photon_number_splitting_attack_is_caught_by_the_decoys():
    a_view, b_view = views(THREE, seed=4, pns=True)
    alice, ob = run(a_view, b_view, PostProcessingConfig(decoy=DecoyProtocol.from_source(THREE)))
    assert ob.aborted and alice.outcome.aborted
    assert ob.abort_reason == alice.outcome.abort_reason == "decoy_check_failed"
    assert ob.key is None and alice.outcome.key is None
    assert ob.cascade is None  # no parity was disclosed


def _replace_reply(kind, make):
    def tamper(frame, reply):
        msg = m.decode(reply)
        return m.encode(make(msg)) if isinstance(msg, kind) else reply
    return tamper


def test_bob_refuses_intensity_codes_outside_the_agreed_labels():
    a_view, b_view = views(THREE, pulses=200_000, seed=5)
    bad = _replace_reply(m.IntensityReply, lambda msg: m.IntensityReply(np.where(msg.codes == 1, 3, msg.codes)))
    with pytest.raises(ProtocolError, match="intensity code 3 names no agreed intensity"):
        run(a_view, b_view, PostProcessingConfig(decoy=DecoyProtocol.from_source(THREE)), tamper=bad)


def test_bob_refuses_a_label_list_of_the_wrong_length():
    a_view, b_view = views(THREE, pulses=200_000, seed=6)
    short = _replace_reply(m.IntensityReply, lambda msg: m.IntensityReply(msg.codes[:-1]))
    with pytest.raises(ProtocolError, match="intensity codes for"):
        run(a_view, b_view, PostProcessingConfig(decoy=DecoyProtocol.from_source(THREE)), tamper=short)


def test_alice_refuses_test_bits_and_error_counts_that_do_not_fit():
    a_view, b_view = views(TWO, pulses=2_000_000, seed=7)
    config = PostProcessingConfig(decoy=DecoyProtocol.from_source(TWO))
    alice = AliceParty(a_view, config)
    alice.handle(m.encode(m.SiftRequest(b_view.detected, b_view.bases)))
    alice.handle(m.encode(m.IntensityRequest()))
    with pytest.raises(ProtocolError, match="test bits request holds 3 bits"):
        alice.handle(m.encode(m.TestBitsRequest(np.zeros(3, dtype=np.uint8))))

    # Past verification, Bob's key-basis error counts must fit the detections Alice counted.
    class Liar(BobParty):
        def run(self):
            gen = super().run()
            frame = next(gen)
            while True:
                msg = m.decode(frame)
                if isinstance(msg, m.KeyErrorsRequest):
                    frame = m.encode(m.KeyErrorsRequest(msg.errors + 10**9))
                frame = gen.send((yield frame))

    with pytest.raises(ProtocolError, match="do not fit the detections"):
        drive(Liar(b_view, config), AliceParty(a_view, config).handle)


def test_messages_out_of_order_are_refused():
    a_view, b_view = views(THREE, pulses=100_000, seed=8)
    alice = AliceParty(a_view, PostProcessingConfig(decoy=DecoyProtocol.from_source(THREE)))
    alice.handle(m.encode(m.SiftRequest(b_view.detected, b_view.bases)))
    with pytest.raises(ProtocolError, match="TestBitsRequest"):
        alice.handle(m.encode(m.TestBitsRequest(np.zeros(3, dtype=np.uint8))))  # before the labels


def test_misuse_of_the_decoy_configuration():
    plain = AliceView(np.zeros(4, dtype=np.uint8), np.zeros(4, dtype=np.uint8))
    with pytest.raises(ConfigurationError, match="needs Alice's intensity labels"):
        AliceParty(plain, PostProcessingConfig(decoy=DecoyProtocol.from_source(THREE)))
    with pytest.raises(ConfigurationError, match="lim2014 needs 3 intensities"):
        DecoyProtocol.from_source(TWO, "lim2014")
    with pytest.raises(ConfigurationError, match="lim2014 needs μ1 > μ2 \\+ μ3"):
        DecoyProtocol(("a", "b", "c"), (0.3, 0.2, 0.15), (0.5, 0.3, 0.2))
    with pytest.raises(ConfigurationError, match="decoy sampling must be one of"):
        DecoyProtocol.from_source(THREE, sampling="gauss")
    with pytest.raises(ConfigurationError, match="not both"):
        PostProcessingConfig(decoy=DecoyProtocol.from_source(THREE), single_photon=(0.5, 0.02))
    with pytest.raises(ConfigurationError, match="must be a DecoyProtocol"):
        PostProcessingConfig(decoy={"method": "lim2014"})


@functools.lru_cache(maxsize=1)
def _circuit_round():
    # One round end to end: circuits on Aer, two parties over authenticated envelopes (made once
    # per process: the attack tests post-process its record again).
    channel, detector = qkd.decoy.link_models(0.0, LINK)
    return qkd.decoy.run_decoy_session(1_500_000, source=THREE, channel=channel, detector=detector, seed=7,
                                       link=LINK, replenish_bits=256)


@pytest.fixture
def circuit_round():
    return _circuit_round()


def test_a_decoy_round_through_the_circuits_and_the_authenticated_channel(circuit_round):
    r = circuit_round
    d = r.to_dict()
    assert r.method == "lim2014" and d["composable"] and not r.aborted
    kl = r.key_length
    rep = r.bb84.report
    assert rep.final_key_bits + 256 == kl.length > 0
    assert rep.key_length["formula"].startswith("Lim, Curty")
    assert d["report"]["decoy_key_length"]["ledger"]["total_secrecy"] == pytest.approx(1e-10, rel=1e-12)
    assert r.alice_key.matches(r.bob_key)


# Bob's envelopes of a two-decoy round: 0 sift, 1 intensity labels, 2 test bits, 3 reconcile start...
@pytest.mark.parametrize("attack, reason", [
    (lambda c: qkd.attacks.tamper(c, index=1, bit=8 * 60 + 1, direction="to_bob"), "authentication_failed"),
    (lambda c: qkd.attacks.tamper(c, index=2, bit=8 * 40 + 5, direction="to_alice"), "authentication_failed"),
    (lambda c: qkd.attacks.replay(c, index=2, old=1), "authentication_failed"),
    (lambda c: qkd.attacks.reorder_replies(c, index=2), "authentication_failed"),
    (lambda c: qkd.attacks.drop(c, index=1, direction="to_bob"), "authentication_failed"),
    (lambda c: qkd.attacks.drop(c, direction="to_bob"), "authentication_failed"),  # Alice's closing tag lost
])
def test_an_attacker_on_the_wire_gets_no_decoy_key_accepted(circuit_round, attack, reason):
    # Tampered labels or test bits, a replayed or reordered message, a lost reply: the round ends
    # without a key on either side (no one-sided key), whatever Eve changed.
    config = PostProcessingConfig(decoy=DecoyProtocol.from_source(THREE))
    out = qkd.postprocess(circuit_round.record, config, attack=attack)
    assert out.report.aborted and out.alice_key is None and out.bob_key is None
    assert out.report.abort_reason == reason and out.report.auth["failure"]


def test_the_circuits_refuse_a_link_they_cannot_simulate():
    with pytest.raises(ConfigurationError, match="do not model afterpulsing"):
        qkd.decoy.link_models(0.0, PRESETS["Lim2014"])


def test_biased_bases_in_the_circuits():
    # Efficient BB84 (Lim et al. 2014): each party picks the key basis with probability q.
    # 40,000 pulses at q = 0.8: each basis frequency within 5 standard deviations of q.
    channel, detector = qkd.decoy.link_models(0.0, LINK)
    from qkd_circuits.quantum.wcp import run_wcp_exchanges

    r = run_wcp_exchanges(40_000, source=THREE, channel=channel, detector=detector, seed=3,
                          key_basis_probability=0.8)
    sd = math.sqrt(0.8 * 0.2 / 40_000)
    for bases in (r.alice_bases, r.bob_bases):
        assert abs(float((bases == KEY_BASIS).mean()) - 0.8) < 5 * sd
    assert r.models["key_basis_probability"] == 0.8
    symmetric = run_wcp_exchanges(1000, source=THREE, channel=channel, detector=detector, seed=3)
    assert "key_basis_probability" not in symmetric.models  # the symmetric run's record is as before
    unseeded = run_wcp_exchanges(20_000, source=THREE, channel=channel, detector=detector, key_basis_probability=0.2)
    assert abs(float((unseeded.alice_bases == KEY_BASIS).mean()) - 0.2) < 5 * math.sqrt(0.16 / 20_000)
    with pytest.raises(ConfigurationError, match="key_basis_probability must be in \\(0, 1\\)"):
        run_wcp_exchanges(10, source=THREE, key_basis_probability=1.0)
    with pytest.raises(ConfigurationError, match="assumes symmetric bases"):
        qkd.decoy.run_decoy_session(10, source=THREE, method="decoy-vacuum-weak", key_basis_probability=0.7)


def test_the_protocol_takes_biased_bases():
    # Synthetic views with q = 0.75: (0.75/0.25)² = 9 times as many key-basis events as test ones,
    # and the key is the bound of those counts.
    a_view, b_view = views(THREE, seed=9, q=0.75)
    protocol = DecoyProtocol.from_source(THREE)
    _, ob = run(a_view, b_view, PostProcessingConfig(decoy=protocol))
    counts = truth(a_view, b_view, protocol)
    assert 7 < counts.key.n / counts.test.n < 11
    assert not ob.aborted
    assert len(ob.key) == lim2014(counts, leak_ec=ob.ledger.leak_ec, verification_bits=0).length > 0
