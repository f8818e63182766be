"""The authenticated classical channel: attacks abort with no key, pads are spent once, and
authentication is real-time (the key does not depend on the authentication secrets)."""

from __future__ import annotations

import hmac
import logging
import os

import numpy as np
import pytest

import qkd_circuits as qkd
from qkd_circuits.channel import PAD_BYTES_PER_ROUND, authenticated
from qkd_circuits.hazmat import decode, toeplitz_hash
from qkd_circuits.hazmat import messages as m


@pytest.fixture(scope="module")
def record():
    return qkd.run_exchanges(150_000, channel=qkd.Channel(depolarizing=0.04), seed=21)


_RECORDS: dict[int, object] = {}


def fresh_record(i: int):
    """A distinct seeded record per use: a pool processes each record at most once."""
    if i not in _RECORDS:
        _RECORDS[i] = qkd.run_exchanges(60_000, channel=qkd.Channel(depolarizing=0.04), seed=1000 + i)
    return _RECORDS[i]


@pytest.fixture
def pools():
    alice = qkd.AuthKeyPool.fresh(1024, bootstrap="psk", simulation=True)  # seeded records: a simulation pool
    return alice, alice.copy()


def test_honest_rounds_verify_and_replenish(pools):
    alice_pool, bob_pool = pools
    for r in range(3):
        res = qkd.postprocess(fresh_record(r), alice_pool=alice_pool, bob_pool=bob_pool)
        a = res.report.auth
        assert not res.report.aborted and res.alice_key.matches(res.bob_key) and not res.report.pending
        assert a["round"] == r and a["verified"] and a["released"] and a["alice_released"]
        assert a["pool_bits_used"] == 512 and a["pool_bits_added"] == 1024 and a["pad_position"] == 64 * r
        assert 0 < a["forgery_bound"] < 1e-30
        assert alice_pool.position == bob_pool.position == (r + 1) * PAD_BYTES_PER_ROUND
        assert alice_pool.state_digest() == bob_pool.state_digest()
    assert alice_pool.available_bits == bob_pool.available_bits == 8 * 1024 + 3 * (1024 - 512)


ATTACKS = [
    ("tamper a data envelope to Alice", lambda c: qkd.attacks.tamper(c, index=1, bit=8 * 40 + 3)),
    ("tamper a sample bit to Alice", lambda c: qkd.attacks.tamper(c, index=2, bit=8 * 100 + 1)),
    ("tamper a reply to Bob", lambda c: qkd.attacks.tamper(c, index=1, bit=8 * 60, direction="to_bob")),
    ("replay an old envelope", lambda c: qkd.attacks.replay(c, index=3, old=1)),
    ("reorder replies", lambda c: qkd.attacks.reorder_replies(c, index=4)),
    ("drop Alice's tag", lambda c: qkd.attacks.drop(c, direction="to_bob")),
    ("drop Bob's tag", lambda c: qkd.attacks.drop(c, direction="to_alice")),
]


@pytest.mark.parametrize("name, attack", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_attacks_abort_with_no_key_at_either_end_and_the_next_round_recovers(pools, name, attack):
    alice_pool, bob_pool = pools
    res = qkd.postprocess(fresh_record(10), alice_pool=alice_pool, bob_pool=bob_pool, attack=attack)
    r = res.report
    # Usually the envelope checks or the tags fire; a corrupted sift reply can instead wreck
    # the sample so badly that the QBER check aborts first.  Either way: no key anywhere.
    assert r.aborted and r.abort_reason in ("authentication_failed", "qber_too_high")
    assert res.alice_key is None and res.bob_key is None
    assert r.final_key_bits == 0 and r.alice_key_sha256 is None and r.bob_key_sha256 is None
    assert r.auth["pool_bits_added"] == 0  # nothing replenished from a round that failed
    assert bob_pool.position - alice_pool.position in (0, PAD_BYTES_PER_ROUND)  # at most one slice apart
    nxt = qkd.postprocess(fresh_record(11), alice_pool=alice_pool, bob_pool=bob_pool)
    assert not nxt.report.aborted and nxt.alice_key.matches(nxt.bob_key)
    assert all(s["decision"] == "abort" for s in nxt.report.auth["alice_settled"] if s["round"] != nxt.report.auth["round"])
    assert alice_pool.state_digest() == bob_pool.state_digest() and not alice_pool.link.pending


def test_a_flipped_bit_caught_only_by_the_tag(pools):
    # Flip one of Bob's basis bits in the sift request: the message still decodes, the parties
    # just disagree; only the transcript tags notice.  Bob spent his slice; Alice never moved.
    alice_pool, bob_pool = pools
    res = qkd.postprocess(fresh_record(20), alice_pool=alice_pool, bob_pool=bob_pool,
                          attack=lambda c: qkd.attacks.tamper(c, index=1, bit=8 * 68 + 5))
    assert res.report.abort_reason == "authentication_failed" and res.report.auth["failure"] == "AuthenticationError"
    assert res.report.auth["pool_bits_used"] == 512  # the tag phase ran: Bob's slice is spent
    assert bob_pool.position == PAD_BYTES_PER_ROUND and alice_pool.position == 0
    assert alice_pool.link.failures == 1  # a tag that did not verify counts towards the halt


def test_spent_pads_are_never_reused(pools):
    alice_pool, bob_pool = pools
    # Bob's tag is lost: Bob spent his slice, Alice never reached the tag phase.
    qkd.postprocess(fresh_record(30), alice_pool=alice_pool, bob_pool=bob_pool,
                    attack=lambda c: qkd.attacks.drop(c, direction="to_alice"))
    assert bob_pool.position == PAD_BYTES_PER_ROUND and alice_pool.position == 0
    # The next round: Alice verifies at Bob's claimed slice, then burns forward (never back).
    res = qkd.postprocess(fresh_record(31), alice_pool=alice_pool, bob_pool=bob_pool)
    assert not res.report.aborted and res.alice_key.matches(res.bob_key)
    assert alice_pool.position == bob_pool.position == 2 * PAD_BYTES_PER_ROUND
    # A round that claims an older slice is refused outright, and moves nothing.
    stale = bob_pool.copy()
    stale.position, stale.link.next_round = 0, 0
    before = alice_pool.state_digest()
    res = qkd.postprocess(fresh_record(32), alice_pool=alice_pool, bob_pool=stale)
    assert res.report.abort_reason == "authentication_failed" and alice_pool.state_digest() == before


def test_a_lost_confirmation_leaves_alice_pending_until_the_next_round_settles_it(pools):
    def lose_confirm(carry):
        def carry_(envelope):
            if envelope[5] == authenticated.CONFIRM:
                raise TimeoutError("lost")
            return carry(envelope)
        return carry_

    alice_pool, bob_pool = pools
    res = qkd.postprocess(fresh_record(40), alice_pool=alice_pool, bob_pool=bob_pool, attack=lose_confirm)
    assert res.bob_key is not None and res.alice_key is None and res.report.pending  # Bob decided; Alice waits
    assert list(alice_pool.link.pending) == [0] and alice_pool.position == bob_pool.position
    nxt = qkd.postprocess(fresh_record(41), alice_pool=alice_pool, bob_pool=bob_pool)
    settled = {s["round"]: s for s in nxt.report.auth["alice_settled"]}
    assert settled[0]["decision"] == "commit" and settled[0]["key_sha256"] == res.bob_key.sha256()
    assert alice_pool.state_digest() == bob_pool.state_digest() and not alice_pool.link.pending


def test_a_forged_confirm_or_settle_moves_nothing_and_the_real_decision_still_lands(pools):
    alice_pool, bob_pool = pools

    def forge_confirm(carry):
        def carry_(envelope):
            if envelope[5] == authenticated.CONFIRM:  # Eve answers Bob herself and sends Alice "abort"
                forged = bytearray(envelope)
                forged[authenticated.ENVELOPE_HEADER_BYTES] = 0  # decision: abort, with the commit tag
                try:
                    carry(bytes(forged))
                except qkd.AuthenticationError:
                    pass
                return b""
            return carry(envelope)
        return carry_

    res = qkd.postprocess(fresh_record(50), alice_pool=alice_pool, bob_pool=bob_pool, attack=forge_confirm)
    assert res.bob_key is not None and res.alice_key is None and res.report.pending
    assert list(alice_pool.link.pending) == [0]  # the forged abort did not verify: her key is kept
    nxt = qkd.postprocess(fresh_record(51), alice_pool=alice_pool, bob_pool=bob_pool)
    assert {s["round"]: s["key_sha256"] for s in nxt.report.auth["alice_settled"]}[0] == res.bob_key.sha256()
    assert alice_pool.state_digest() == bob_pool.state_digest()


def test_an_exposed_slice_costs_one_round_only(pools):
    # Eve learns every byte of round 0's slice (as with a pool refilled from a known key): she
    # can tag round 0's transcript, but round 1 has a fresh hash key and fresh pads.
    alice_pool, bob_pool = pools
    exposed = bytes(bob_pool.peek(0, PAD_BYTES_PER_ROUND))
    assert qkd.postprocess(fresh_record(60), alice_pool=alice_pool, bob_pool=bob_pool).alice_key is not None
    assert bytes(bob_pool.peek(0, PAD_BYTES_PER_ROUND)) != exposed

    def forge_with_old_slice(carry):
        transcript = authenticated._Transcript(exposed[:16])

        def carry_(envelope):
            if envelope[5] == authenticated.TAG:  # replace Bob's tag with one made from round 0's slice
                forged = envelope[:authenticated.ENVELOPE_HEADER_BYTES] + transcript.tag(b"bob", exposed[16:32])
                return carry(forged)
            transcript.add(b"\x00", envelope)
            reply = carry(envelope)
            transcript.add(b"\x01", reply)
            return reply
        return carry_

    res = qkd.postprocess(fresh_record(61), alice_pool=alice_pool, bob_pool=bob_pool, attack=forge_with_old_slice)
    assert res.alice_key is None and res.bob_key is None and res.report.abort_reason == "authentication_failed"


def test_halt_after_consecutive_tag_failures_and_resume():
    alice_pool = qkd.AuthKeyPool.fresh(2048, bootstrap="psk", simulation=True)
    bob_pool = alice_pool.copy()
    alice_pool.link.halt_after = bob_pool.link.halt_after = 3
    flip = lambda c: qkd.attacks.tamper(c, index=1, bit=8 * 68 + 5)  # noqa: E731 - caught only by the tag
    for i in range(2):
        qkd.postprocess(fresh_record(70 + i), alice_pool=alice_pool, bob_pool=bob_pool, attack=flip)
    assert alice_pool.link.failures == 2 and not alice_pool.link.halted  # one failure does not stop the link
    assert not qkd.postprocess(fresh_record(72), alice_pool=alice_pool, bob_pool=bob_pool).report.aborted
    assert alice_pool.link.failures == 0  # a verified tag resets the count
    for i in range(3):
        qkd.postprocess(fresh_record(73 + i), alice_pool=alice_pool, bob_pool=bob_pool, attack=flip)
    assert alice_pool.link.halted
    with pytest.raises(qkd.LinkHalted, match="qkd psk resume"):
        qkd.postprocess(fresh_record(76), alice_pool=alice_pool, bob_pool=bob_pool)
    alice_pool.link.failures = 0  # what 'qkd psk resume' does after an operator looked
    assert not qkd.postprocess(fresh_record(76), alice_pool=alice_pool, bob_pool=bob_pool).report.aborted


def test_epsilon_ledger_adds_up(pools):
    alice_pool, bob_pool = pools
    rounds = [qkd.postprocess(fresh_record(80 + i), alice_pool=alice_pool, bob_pool=bob_pool).report for i in range(3)]
    for pool in (alice_pool, bob_pool):
        ledger = pool.ledger.to_dict()
        per_round = sum(r.auth["epsilon"]["tag_bob"] + r.auth["epsilon"]["tag_alice"] + r.auth["epsilon"]["confirm"]
                        for r in rounds)
        assert ledger["auth_forgery"] == pytest.approx(per_round, rel=1e-12)
        config = qkd.PostProcessingConfig()  # each key counts the round's ε_sec + ε_cor as a whole
        assert ledger["keys"] == pytest.approx(len(rounds) * (config.eps_sec + config.eps_cor))
        assert ledger["total"] == pytest.approx(ledger["auth_forgery"] + ledger["pad_sources"] + ledger["keys"])
    # Pads drawn from earlier keys: drain the PSK part so the refills are spent, each key's ε once.
    small = qkd.AuthKeyPool.fresh(64, bootstrap="psk", simulation=True)
    other = small.copy()
    reports = [qkd.postprocess(fresh_record(90 + i), alice_pool=small, bob_pool=other).report for i in range(4)]
    eps = qkd.PostProcessingConfig().eps_sec
    # Round 0 spends the PSK's single slice; rounds 1-3 spend refills of rounds 0, 0 and 0 (1024 bits each
    # hold two slices), then 1: keys 0 and 1 are charged, each once.
    assert small.ledger.pad_sources == pytest.approx(2 * eps)
    assert [r.auth["epsilon"]["pad_sources"] for r in reports] == pytest.approx([0, eps, 0, eps])


def test_seeded_rounds_never_refill_a_real_pool_and_records_are_used_once(record):
    real = qkd.AuthKeyPool.fresh(1024, bootstrap="psk")
    with pytest.raises(qkd.ConfigurationError, match="seeded simulation.*simulation pool"):
        qkd.postprocess(record, alice_pool=real, bob_pool=real.copy())
    assert real.position == 0 and not real.link.processed  # refused before anything happened
    sim = qkd.AuthKeyPool.fresh(1024, bootstrap="psk", simulation=True)
    other = sim.copy()
    qkd.postprocess(record, alice_pool=sim, bob_pool=other)
    with pytest.raises(qkd.RecordError, match="post-processed with this pool before"):
        qkd.postprocess(record, alice_pool=sim, bob_pool=other)


def test_pads_are_zeroised_and_exhaustion_asks_for_a_bootstrap():
    pool = qkd.AuthKeyPool(b"\x5a" * 72)
    pad = pool.take(64)
    assert pad == b"\x5a" * 64 and bytes(pool._pad) == b"\x5a" * 8
    with pytest.raises(qkd.KeyPoolExhausted, match="bootstrap again"):
        pool.take(64)
    with pytest.raises(ValueError, match="cannot move the pool back"):
        pool.skip_to(0)


def test_psk_files(tmp_path):
    path = qkd.create_psk_file(tmp_path / "link.psk", pad_bits=4096)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    with pytest.raises(qkd.ConfigurationError, match="refusing to overwrite"):
        qkd.create_psk_file(path)
    pool = qkd.AuthKeyPool.load(path)
    assert pool.available_bits == 4096 and pool.position == 0 and not pool.simulation
    pool.take(64)
    pool.link.next_round = 1
    pool.save(path)
    again = qkd.AuthKeyPool.load(path)
    assert (again.position, again.link.next_round, again.epoch) == (64, 1, pool.epoch)
    assert again.state_digest() == pool.state_digest()
    (tmp_path / "bad.psk").write_bytes(b"nonsense")
    with pytest.raises(qkd.RecordError, match="not a qkd_circuits PSK file"):
        qkd.AuthKeyPool.load(tmp_path / "bad.psk")
    with pytest.raises(qkd.ConfigurationError, match="at least 512"):
        qkd.create_psk_file(tmp_path / "tiny.psk", pad_bits=256)


def test_pool_files_refuse_symlinks_and_keep_pending_keys_secret(tmp_path, pools):
    alice_pool, bob_pool = pools
    target = tmp_path / "elsewhere"
    target.write_bytes(b"untouched")
    link = tmp_path / "alice.psk"
    link.symlink_to(target)
    alice_pool.save(link)  # replaces the planted link itself, never writes through it
    assert target.read_bytes() == b"untouched" and not link.is_symlink()
    assert oct(os.stat(link).st_mode & 0o777) == "0o600"


def test_mitm_gets_keys_without_authentication_and_is_caught_with_it():
    open_ = qkd.run_mitm(120_000, authenticated=False, channel=qkd.Channel(depolarizing=0.02), seed=3)
    assert open_.alice_key.matches(open_.eve_key_with_alice)
    assert open_.bob_key.matches(open_.eve_key_with_bob)
    assert not open_.detected
    pool = qkd.AuthKeyPool.fresh(1024, bootstrap="psk", simulation=True)
    guarded = qkd.run_mitm(120_000, authenticated=True, channel=qkd.Channel(depolarizing=0.02), seed=3,
                           alice_pool=pool, bob_pool=pool.copy())
    assert guarded.detected and guarded.alice_key is None and guarded.bob_key is None
    assert guarded.alice_failure == guarded.bob_failure == "authentication_failed"


def test_authentication_is_real_time_the_key_does_not_depend_on_the_psk(record):
    keys = []
    for _ in range(2):
        pool = qkd.AuthKeyPool.fresh(1024, simulation=True)  # a different PSK each time
        res = qkd.postprocess(record, alice_pool=pool, bob_pool=pool.copy())
        keys.append(res.alice_key)
    assert keys[0].matches(keys[1])


def test_record_now_decrypt_later_fails(record):
    pool = qkd.AuthKeyPool.fresh(1024, simulation=True)
    secrets_after = (bytes(pool.peek(0, 16)), bytes(pool._pad))  # every PSK bit, handed to the attacker
    wire: list[bytes] = []
    res = qkd.postprocess(record, alice_pool=pool, bob_pool=pool.copy(),
                          attack=lambda c: qkd.attacks.record(c, wire))
    final = res.alice_key
    # Everything public: decode every frame on the wire.
    h = authenticated.ENVELOPE_HEADER_BYTES
    frames = [decode(env[h:]) for env in wire if len(env) > h and env[5] == 1]
    seed = next(f.seed for f in frames if isinstance(f, m.AmplifyReply))
    keep = next(f.keep for f in frames if isinstance(f, m.SiftReply))
    # The transcript and the PSK let her check the tags, not learn key bits: her best public
    # guess of the reconciled key (here all zeros, or Bob's bases as bits) hashes to noise.
    n = seed.size - (len(final) + 1024) + 1
    for guess in (np.zeros(n, np.uint8), np.resize(keep.astype(np.uint8), n)):
        attempt = toeplitz_hash(guess, seed, len(final) + 1024)[1024:].astype(np.uint8)
        agreement = (attempt == final.bits).mean()
        assert 0.47 < agreement < 0.53
    assert secrets_after[0] not in b"".join(wire)
    key_bytes = final.to_bytes()
    wire_bytes = b"".join(wire)
    for i in range(0, len(key_bytes) - 8, 997):
        assert key_bytes[i:i + 8] not in wire_bytes  # no key byte run on the wire


def test_no_key_bits_in_reprs_or_logs(record, caplog):
    caplog.set_level(logging.DEBUG)
    res = qkd.postprocess(record)
    key_hex = res.alice_key.to_bytes()[:16].hex()
    texts = [repr(res), str(res.report.to_dict()), repr(res.alice_key), caplog.text,
             repr(qkd.AuthKeyPool.fresh(64))]
    for text in texts:
        assert key_hex not in text and str(res.alice_key.bits[:64].tolist()) not in text


def test_tags_are_compared_in_constant_time(record, monkeypatch):
    calls = []

    class Spy:
        @staticmethod
        def compare_digest(a, b):
            calls.append((len(a), len(b)))
            return hmac.compare_digest(a, b)

    monkeypatch.setattr(authenticated, "hmac", Spy)
    res = qkd.postprocess(record)
    assert not res.report.aborted
    assert calls == [(16, 16), (16, 16), (16, 16)]  # Alice checks t_B, Bob t_A, Alice the CONFIRM


def _pki(tmp_path, name, algorithm="ed25519", **kwargs):
    from cryptography import x509

    from qkd_circuits.channel import pki
    from qkd_circuits.channel.authenticated import PkiIdentity

    directory = tmp_path / name
    paths = pki.init_demo_pki(directory, algorithm=algorithm, **kwargs)
    anchor = x509.load_pem_x509_certificate(paths["ca"].read_bytes())
    return (PkiIdentity(pki.load_credentials(directory, "alice"), anchor, "bob"),
            PkiIdentity(pki.load_credentials(directory, "bob"), anchor, "alice"))


@pytest.mark.parametrize("algorithm", ["ed25519", "ml-dsa-65"])
def test_pki_bootstrap_then_the_pool_takes_over(record, tmp_path, algorithm):
    alice_pki, bob_pki = _pki(tmp_path, "pki", algorithm)
    first = qkd.postprocess(record, alice_pki=alice_pki, bob_pki=bob_pki)
    assert not first.report.aborted and first.alice_key.matches(first.bob_key)
    assert first.report.auth["bootstrap"] == "pki" and first.report.auth["verified"]
    alice_pool, bob_pool = first.pools
    assert alice_pool.state_digest() == bob_pool.state_digest() and alice_pool.available_bits == 4096
    assert alice_pool.simulation  # the signed round was a seeded simulation: its pool says so
    second = qkd.postprocess(fresh_record(100), alice_pool=alice_pool, bob_pool=bob_pool)
    assert not second.report.aborted and second.report.auth["pool_bits_used"] == 512


def test_pki_failures_abort_with_no_key(record, tmp_path):
    from dataclasses import replace
    from datetime import datetime, timedelta, timezone

    alice_pki, bob_pki = _pki(tmp_path, "ours")
    other_alice, _ = _pki(tmp_path, "theirs")
    cases = {
        "wrong CA": (replace(alice_pki, trust_anchor=other_alice.trust_anchor), bob_pki),
        "wrong name": (replace(alice_pki, peer_name="mallory"), bob_pki),
        "expired": (replace(alice_pki, now=datetime.now(timezone.utc) + timedelta(days=400)), bob_pki),
        "impostor": (alice_pki, replace(bob_pki, credentials=other_alice.credentials)),
    }
    for name, (a, b) in cases.items():
        res = qkd.postprocess(record, alice_pki=a, bob_pki=b)
        assert res.report.abort_reason == "authentication_failed", name
        assert res.alice_key is None and res.bob_key is None and res.pools is None, name


def test_real_time_authentication_with_two_different_signing_keys(record, tmp_path):
    keys = []
    for name in ("pki-1", "pki-2"):
        alice_pki, bob_pki = _pki(tmp_path, name)
        keys.append(qkd.postprocess(record, alice_pki=alice_pki, bob_pki=bob_pki).alice_key)
    assert keys[0].matches(keys[1])


def test_an_empty_pool_is_refused_before_any_work(record):
    tiny = qkd.AuthKeyPool(b"\0" * 16, simulation=True)
    with pytest.raises(qkd.KeyPoolExhausted, match="holds 128 bits, a round needs 512"):
        qkd.postprocess(record, alice_pool=tiny, bob_pool=tiny.copy())


def test_seeded_mitm_rounds_are_reproducible():
    runs = [qkd.run_mitm(60_000, authenticated=False, seed=5) for _ in range(2)]
    assert runs[0].alice_key.matches(runs[1].alice_key) and runs[0].bob_key.matches(runs[1].bob_key)


@pytest.mark.parametrize("trials", [24, pytest.param(120, marks=pytest.mark.slow)])
def test_any_single_flipped_bit_leaves_no_one_sided_key(trials):
    # Random (envelope, bit, direction) choices over a whole round; seeded.  A flip before
    # Bob's decision leaves both ends without a key; a flip of the CONFIRM leaves Alice pending
    # (Bob committed), and the next round settles her key; a flip of her final ACK changes nothing.
    # (tests/test_fuzz_link.py mutates whole envelopes many more times; the slow case runs 120.)
    rec = qkd.run_exchanges(40_000, channel=qkd.Channel(depolarizing=0.04), seed=31)
    wire: list[bytes] = []
    qkd.postprocess(rec, attack=lambda c: qkd.attacks.record(c, wire))
    rng = np.random.default_rng(7)
    for trial in range(trials):
        index = int(rng.integers(0, len(wire) // 2))
        direction = "to_alice" if rng.random() < 0.5 else "to_bob"
        size = len(wire[2 * index] if direction == "to_alice" else wire[2 * index + 1])
        bit = int(rng.integers(0, 8 * size))
        a, b = qkd.AuthKeyPool.fresh(1024, simulation=True), None
        b = a.copy()
        res = qkd.postprocess(rec, alice_pool=a, bob_pool=b,
                              attack=lambda c: qkd.attacks.tamper(c, index=index, bit=bit, direction=direction))
        case = (index, bit, direction)
        if res.bob_key is None:
            assert res.alice_key is None and res.report.aborted, case
        elif res.alice_key is None:
            assert res.report.pending and wire[2 * index][5] == authenticated.CONFIRM, case
            nxt = qkd.postprocess(fresh_record(200 + trial), alice_pool=a, bob_pool=b)
            assert {s["round"]: s["key_sha256"] for s in nxt.report.auth["alice_settled"]}[0] == res.bob_key.sha256()
        else:
            assert res.alice_key.matches(res.bob_key) and wire[2 * index][5] == authenticated.CONFIRM, case
        assert a.position in (b.position, b.position - PAD_BYTES_PER_ROUND), case


# Known answer: the tag bytes for a fixed transcript and a fixed pool -----------------------------
# Pinned from this implementation; test_pinned_tags_follow_the_documented_formula rebuilds them
# independently from the wire and the module docstring's formulas.

_PIN_POOL = bytes(range(7, 7 + 64)) + bytes(64)
_PIN_EPOCH = bytes.fromhex("0102030405060708")
_PIN_FRAMES = [b"", b"\x01", bytes(range(15)), bytes(range(16)), bytes(range(17)),
               bytes(i * 7 % 251 for i in range(5000))]


def _pinned_round():
    from types import SimpleNamespace

    outcome = SimpleNamespace(key=qkd.FinalKey(np.resize(np.array([1, 0, 1, 1], np.uint8), 2048)), key_length=None)

    def handler(frame):
        return frame[::-1] + b"!"

    alice = authenticated.AuthenticatedAlice(qkd.AuthKeyPool(_PIN_POOL, epoch=_PIN_EPOCH), handler,
                                             outcome=lambda: outcome, key_epsilon=(1e-10, 1e-15))
    wire: list[tuple[bytes, bytes]] = []

    def carry(envelope):
        reply = alice.handle(envelope)
        wire.append((envelope, reply))
        return reply

    bob = authenticated.AuthenticatedBob(qkd.AuthKeyPool(_PIN_POOL, epoch=_PIN_EPOCH), carry, outcome=lambda: outcome, key_epsilon=(1e-10, 1e-15))
    for frame in _PIN_FRAMES:
        assert bob.request(frame) == handler(frame)
    return alice, bob, bob.close(), wire


def test_tags_for_a_fixed_transcript_and_pool_are_pinned():
    alice, bob, summary, wire = _pinned_round()
    assert summary.verified and summary.released and alice.released
    h = authenticated.ENVELOPE_HEADER_BYTES
    (bob_tag, alice_tag), = [(e, r) for e, r in wire if e[5] == authenticated.TAG]
    (confirm, _), = [(e, r) for e, r in wire if e[5] == authenticated.CONFIRM]
    assert bob_tag[:h].hex() == "514b4441020201020304050607080000000000000000000000000000000000000007"
    pins = (bob_tag[h:].hex(), alice_tag[h:].hex(), confirm[h:].hex())
    assert pins == PINNED, pins
    assert alice.released_key.matches(bob.released_key) and len(bob.released_key) == 2048 - 1024


PINNED = ("31e2556c50c297982e37eb575d442c91", "065b069692fe21b6919d66e6792f0326",
          "01d58a731437f993ae6f79700fbb6adb39")  # t_B, t_A, CONFIRM (decision | t_C)


def test_pinned_tags_follow_the_documented_formula():
    # Independent of _Transcript: rebuild the framed transcript from the wire and hash it whole.
    from qkd_circuits.hazmat.universal_hash import ghash

    _, _, _, wire = _pinned_round()
    h = authenticated.ENVELOPE_HEADER_BYTES

    def part(direction, envelope):
        return direction + len(envelope).to_bytes(4, "big") + envelope

    before_tags = b"".join(part(b"\x00", e) + part(b"\x01", r) for e, r in wire
                           if e[5] in (authenticated.DATA, authenticated.SETTLE))
    (bob_tag, alice_tag), = [(e, r) for e, r in wire if e[5] == authenticated.TAG]
    (confirm, _), = [(e, r) for e, r in wire if e[5] == authenticated.CONFIRM]
    k, pad_b, pad_a, pad_c = _PIN_POOL[:16], _PIN_POOL[16:32], _PIN_POOL[32:48], _PIN_POOL[48:64]
    xor = lambda x, y: bytes(a ^ b for a, b in zip(x, y))  # noqa: E731
    t_b = xor(ghash(k, before_tags + b"bob"), pad_b)
    t_a = xor(ghash(k, before_tags + part(b"\x00", bob_tag) + b"alice"), pad_a)
    m_c = b"qkd_circuits/confirm/v2" + _PIN_EPOCH + (0).to_bytes(8, "big") + b"\x01" + t_a
    assert bob_tag[h:] == t_b and alice_tag[h:] == t_a
    assert confirm[h:] == b"\x01" + xor(ghash(k, m_c), pad_c)


def test_incremental_transcript_tags_equal_hashing_the_joined_transcript():
    # Kept bytes and the running hash side by side: every tag (and every "without the last
    # part" tag) equals GHASH of the joined transcript, for seeded envelopes of many sizes.
    from qkd_circuits.hazmat.universal_hash import ghash

    rng = np.random.default_rng(99)
    key, pad = rng.bytes(16), rng.bytes(16)
    both = authenticated._Transcript(key, keep_bytes=True)
    for i in range(60):
        size = int(rng.choice([0, 1, 11, 15, 16, 17, int(rng.integers(0, 3000))]))
        both.add(b"\x00" if i % 2 else b"\x01", rng.bytes(size))
        for view in (both, both.without_last()):
            joined = view.joined()
            assert view.size == len(joined)
            expected = bytes(x ^ y for x, y in zip(ghash(key, joined + b"bob"), pad))
            assert view.tag(b"bob", pad) == expected
    assert both.tag(b"alice", pad) == both.tag(b"alice", pad)  # tagging does not consume the stream


def test_pool_rounds_keep_no_transcript_bytes():
    alice, bob, summary, _ = _pinned_round()
    assert summary.verified
    for end in (alice, bob):
        assert end._transcript._parts is None
