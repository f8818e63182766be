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
from qkd_circuits.postprocessing import messages as m


@pytest.fixture(scope="module")
def record():
    return qkd.run_exchanges(150_000, channel=qkd.Channel(depolarizing=0.04), seed=21)


@pytest.fixture
def pools():
    alice = qkd.AuthKeyPool.fresh(1024, bootstrap="psk")
    return alice, alice.copy()


def test_honest_rounds_verify_and_replenish(record, pools):
    alice_pool, bob_pool = pools
    for r in range(3):
        res = qkd.postprocess(record, alice_pool=alice_pool, bob_pool=bob_pool, round_number=r)
        a = res.report.auth
        assert not res.report.aborted and res.alice_key.matches(res.bob_key)
        assert a["verified"] and a["released"] and a["pool_bits_used"] == 256 and a["pool_bits_added"] == 512
        assert 0 < a["forgery_bound"] < 1e-30
        assert alice_pool.position == bob_pool.position == (r + 1) * PAD_BYTES_PER_ROUND
    assert alice_pool.available_bits == bob_pool.available_bits == 8 * 1024 + 3 * (512 - 256)


ATTACKS = [
    ("tamper a data envelope to Alice", lambda c: qkd.attacks.tamper(c, index=0, bit=8 * 40 + 3)),
    ("tamper a sample bit to Alice", lambda c: qkd.attacks.tamper(c, index=1, bit=8 * 100 + 1)),
    ("tamper a reply to Bob", lambda c: qkd.attacks.tamper(c, index=0, bit=8 * 60, direction="to_bob")),
    ("replay an old envelope", lambda c: qkd.attacks.replay(c, index=3, old=1)),
    ("reorder replies", lambda c: qkd.attacks.reorder_replies(c, index=4)),
    ("drop Alice's tag", lambda c: qkd.attacks.drop(c, direction="to_bob")),
    ("drop Bob's tag", lambda c: qkd.attacks.drop(c, direction="to_alice")),
]


@pytest.mark.parametrize("name, attack", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_attacks_abort_with_no_key_at_either_end(record, pools, name, attack):
    alice_pool, bob_pool = pools
    res = qkd.postprocess(record, alice_pool=alice_pool, bob_pool=bob_pool, attack=attack)
    r = res.report
    # Usually the envelope checks or the tags fire; a corrupted sift reply can instead wreck
    # the sample so badly that the QBER check aborts first.  Either way: no key anywhere.
    assert r.aborted and r.abort_reason in ("authentication_failed", "qber_too_high")
    assert res.alice_key is None and res.bob_key is None
    assert r.final_key_bits == 0 and r.alice_key_sha256 is None and r.bob_key_sha256 is None
    assert r.auth["pool_bits_added"] == 0  # nothing replenished from a round that failed


def test_a_flipped_bit_caught_only_by_the_tag(record, pools):
    # Flip one of Bob's basis bits in the sift request: the message still decodes, the parties
    # just disagree; only the transcript tags notice.
    alice_pool, bob_pool = pools
    res = qkd.postprocess(record, alice_pool=alice_pool, bob_pool=bob_pool,
                          attack=lambda c: qkd.attacks.tamper(c, index=0, bit=8 * 60 + 5))
    assert res.report.abort_reason == "authentication_failed" and res.report.auth["failure"] == "AuthenticationError"
    assert res.report.auth["pool_bits_used"] == 256  # the tag phase ran: its pads are spent
    assert alice_pool.position == bob_pool.position == PAD_BYTES_PER_ROUND


def test_spent_pads_are_never_reused(record, pools):
    alice_pool, bob_pool = pools
    # Bob's tag is lost: Bob spent his pads, Alice never reached the tag phase.
    qkd.postprocess(record, alice_pool=alice_pool, bob_pool=bob_pool,
                    attack=lambda c: qkd.attacks.drop(c, direction="to_alice"))
    assert bob_pool.position == PAD_BYTES_PER_ROUND and alice_pool.position == 0
    # The next round: Alice burns forward to Bob's position (never back), and it verifies.
    res = qkd.postprocess(record, alice_pool=alice_pool, bob_pool=bob_pool, round_number=1)
    assert not res.report.aborted and res.alice_key.matches(res.bob_key)
    assert alice_pool.position == bob_pool.position == 2 * PAD_BYTES_PER_ROUND
    # A round that claims an older pool position is refused outright.
    stale = qkd.AuthKeyPool(alice_pool.hash_key, b"\0" * 64, position=0)
    res = qkd.postprocess(record, alice_pool=alice_pool, bob_pool=stale, round_number=2)
    assert res.report.abort_reason == "authentication_failed"


def test_pads_are_zeroised_and_exhaustion_asks_for_a_bootstrap():
    pool = qkd.AuthKeyPool(b"k" * 16, b"\x5a" * 40)
    pad = pool.take(32)
    assert pad == b"\x5a" * 32 and bytes(pool._pad) == b"\x5a" * 8
    with pytest.raises(qkd.KeyPoolExhausted, match="bootstrap again"):
        pool.take(32)
    with pytest.raises(ValueError, match="cannot move the pool back"):
        pool.skip_to(0)


def test_psk_files(tmp_path):
    path = qkd.create_psk_file(tmp_path / "link.psk", pad_bits=4096)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    with pytest.raises(qkd.ConfigurationError, match="refusing to overwrite"):
        qkd.create_psk_file(path)
    pool = qkd.AuthKeyPool.load(path)
    assert pool.available_bits == 4096 and pool.position == 0
    pool.take(32)
    pool.save(path)
    assert qkd.AuthKeyPool.load(path).position == 32
    (tmp_path / "bad.psk").write_bytes(b"nonsense")
    with pytest.raises(qkd.RecordError, match="not a qkd_circuits PSK file"):
        qkd.AuthKeyPool.load(tmp_path / "bad.psk")


def test_mitm_gets_keys_without_authentication_and_is_caught_with_it():
    open_ = qkd.run_mitm(120_000, authenticated=False, channel=qkd.Channel(depolarizing=0.02), seed=3)
    assert open_.alice_key.matches(open_.eve_key_with_alice)
    assert open_.bob_key.matches(open_.eve_key_with_bob)
    assert not open_.detected
    guarded = qkd.run_mitm(120_000, authenticated=True, channel=qkd.Channel(depolarizing=0.02), seed=3)
    assert guarded.detected and guarded.alice_key is None and guarded.bob_key is None
    assert guarded.alice_failure == guarded.bob_failure == "authentication_failed"


def test_authentication_is_real_time_the_key_does_not_depend_on_the_psk(record):
    keys = []
    for _ in range(2):
        pool = qkd.AuthKeyPool.fresh(1024)  # a different PSK each time
        res = qkd.postprocess(record, alice_pool=pool, bob_pool=pool.copy())
        keys.append(res.alice_key)
    assert keys[0].matches(keys[1])


def test_record_now_decrypt_later_fails(record):
    pool = qkd.AuthKeyPool.fresh(1024)
    secrets_after = (pool.hash_key, bytes(pool._pad))  # every PSK and pad bit, handed to the attacker
    wire: list[bytes] = []
    res = qkd.postprocess(record, alice_pool=pool, bob_pool=pool.copy(),
                          attack=lambda c: qkd.attacks.record(c, wire))
    final = res.alice_key
    # Everything public: decode every frame on the wire.
    frames = [decode(env[26:]) for env in wire if len(env) > 26 and env[5] == 1]
    seed = next(f.seed for f in frames if isinstance(f, m.AmplifyReply))
    keep = next(f.keep for f in frames if isinstance(f, m.SiftReply))
    # The transcript and the PSK let her check the tags, not learn key bits: her best public
    # guess of the reconciled key (here all zeros, or Bob's bases as bits) hashes to noise.
    n = seed.size - (len(final) + 512) + 1
    for guess in (np.zeros(n, np.uint8), np.resize(keep.astype(np.uint8), n)):
        attempt = toeplitz_hash(guess, seed, len(final) + 512)[512:].astype(np.uint8)
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
    assert calls == [(16, 16), (16, 16)]  # Alice checks Bob's tag, Bob checks Alice's


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
    assert alice_pool.hash_key == bob_pool.hash_key and alice_pool.available_bits == 4096
    second = qkd.postprocess(record, alice_pool=alice_pool, bob_pool=bob_pool, round_number=1)
    assert not second.report.aborted and second.report.auth["pool_bits_used"] == 256


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


def test_a_lost_confirmation_leaves_both_ends_without_a_key(record, pools):
    def lose_confirm(carry):
        def carry_(envelope):
            if envelope[5] == 3:  # CONFIRM
                raise TimeoutError("lost")
            return carry(envelope)
        return carry_

    alice_pool, bob_pool = pools
    res = qkd.postprocess(record, alice_pool=alice_pool, bob_pool=bob_pool, attack=lose_confirm)
    assert res.report.abort_reason == "authentication_failed"
    assert res.alice_key is None and res.bob_key is None
    assert alice_pool.position == bob_pool.position == PAD_BYTES_PER_ROUND  # spent at both ends


def test_an_empty_pool_is_refused_before_any_work(record):
    tiny = qkd.AuthKeyPool(b"k" * 16, b"\0" * 16)
    with pytest.raises(qkd.KeyPoolExhausted, match="holds 128 bits, a round needs 256"):
        qkd.postprocess(record, alice_pool=tiny, bob_pool=tiny.copy())


def test_seeded_mitm_rounds_are_reproducible():
    runs = [qkd.run_mitm(60_000, authenticated=False, seed=5) for _ in range(2)]
    assert runs[0].alice_key.matches(runs[1].alice_key) and runs[0].bob_key.matches(runs[1].bob_key)


def test_any_single_flipped_bit_leaves_both_ends_without_a_key():
    # 40 random (envelope, bit, direction) choices over a whole round; seeded.
    rec = qkd.run_exchanges(40_000, channel=qkd.Channel(depolarizing=0.04), seed=31)
    wire: list[bytes] = []
    qkd.postprocess(rec, attack=lambda c: qkd.attacks.record(c, wire))
    rng = np.random.default_rng(7)
    for _ in range(40):
        index = int(rng.integers(0, len(wire) // 2))
        direction = "to_alice" if rng.random() < 0.5 else "to_bob"
        size = len(wire[2 * index] if direction == "to_alice" else wire[2 * index + 1])
        if size == 0:
            continue  # Alice's empty answer to CONFIRM has no bits to flip
        bit = int(rng.integers(0, 8 * size))
        res = qkd.postprocess(rec, attack=lambda c: qkd.attacks.tamper(c, index=index, bit=bit, direction=direction))
        assert res.alice_key is None and res.bob_key is None, (index, bit, direction)
        assert res.report.aborted


# Known answer: the tag bytes for a fixed transcript and a fixed pool -----------------------------
# Pinned with the original implementation, which hashed the joined transcript from scratch at
# each tag; an incremental (streaming) transcript hash must reproduce these bytes exactly.

_PIN_HASH_KEY = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
_PIN_PAD = bytes(range(7, 7 + 64))
_PIN_FRAMES = [b"", b"\x01", bytes(range(15)), bytes(range(16)), bytes(range(17)),
               bytes(i * 7 % 251 for i in range(5000))]


def _pinned_round():
    def handler(frame):
        return frame[::-1] + b"!"

    alice = authenticated.AuthenticatedAlice(qkd.AuthKeyPool(_PIN_HASH_KEY, _PIN_PAD), handler, round_number=5)
    wire: list[tuple[bytes, bytes]] = []

    def carry(envelope):
        reply = alice.handle(envelope)
        wire.append((envelope, reply))
        return reply

    bob = authenticated.AuthenticatedBob(qkd.AuthKeyPool(_PIN_HASH_KEY, _PIN_PAD), carry, round_number=5)
    for frame in _PIN_FRAMES:
        assert bob.request(frame) == handler(frame)
    return alice, bob, bob.close(), wire


def test_tags_for_a_fixed_transcript_and_pool_are_pinned():
    alice, bob, summary, wire = _pinned_round()
    assert summary.verified and summary.released and alice.released
    (bob_tag, alice_tag), = [(e, r) for e, r in wire if e[5] == authenticated.TAG]
    assert bob_tag[26:].hex() == "f3511836588bcfde6ed6c55196c63de8"  # t_B
    assert alice_tag[26:].hex() == "dbc164ae489fce12dbc57ce96de39368"  # t_A
    assert summary.forgery_bound * 2**128 == 657  # L blocks of Bob's tagged input
    assert alice.summary.forgery_bound * 2**128 == 660


def test_pinned_tags_follow_the_documented_formula():
    # Independent of _Transcript: rebuild the framed transcript from the wire and hash it whole.
    from qkd_circuits.postprocessing.universal_hash import ghash

    _, _, _, wire = _pinned_round()

    def part(direction, envelope):
        return direction + len(envelope).to_bytes(4, "big") + envelope

    before_tags = b"".join(part(b"\x00", e) + part(b"\x01", r) for e, r in wire if e[5] == authenticated.DATA)
    (bob_tag, alice_tag), = [(e, r) for e, r in wire if e[5] == authenticated.TAG]
    pad_b, pad_a = _PIN_PAD[:16], _PIN_PAD[16:32]
    t_b = bytes(x ^ y for x, y in zip(ghash(_PIN_HASH_KEY, before_tags + b"bob"), pad_b))
    t_a = bytes(x ^ y for x, y in zip(ghash(_PIN_HASH_KEY, before_tags + part(b"\x00", bob_tag) + b"alice"), pad_a))
    assert bob_tag[26:] == t_b and alice_tag[26:] == t_a


def test_incremental_transcript_tags_equal_hashing_the_joined_transcript():
    # Kept bytes and the running hash side by side: every tag (and every "without the last
    # part" tag) equals GHASH of the joined transcript, for seeded envelopes of many sizes.
    from qkd_circuits.postprocessing.universal_hash import ghash

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


def test_pool_rounds_keep_no_transcript_bytes_and_pki_rounds_keep_them():
    alice, bob, summary, _ = _pinned_round()
    assert summary.verified
    for end in (alice, bob):
        assert end._transcript._parts is None
        with pytest.raises(ValueError, match="keeps no bytes"):
            end._transcript.joined()
    pki_transcript = authenticated._new_transcript(None)
    pki_transcript.add(b"\x00", b"envelope")
    assert pki_transcript.joined() == b"\x00\x00\x00\x00\x08envelope"
    with pytest.raises(ValueError, match="no hash key"):
        pki_transcript.tag(b"bob", bytes(16))
    with pytest.raises(ValueError, match="hashed .* kept"):
        authenticated._Transcript()
