"""What Cascade's two directions disclose, as the key length counts it.

Alice's answers are parities of her key: each is a disclosed bit (``cascade_parity`` in the
ledger, part of leak_EC).  Bob's requests carry no parity at all; which ranges he asks about
depends only on where his parities differ from Alice's, i.e. on the *error pattern* W = X ⊕ Y
(and the public shuffle seed).  These tests check that property of the implementation: two runs
with different keys but the same error pattern send Bob's requests byte for byte alike.  Why W
is not charged to the key length is in docs/key-length.md (a phase-error argument); this is
the property that argument needs.
"""

from __future__ import annotations

import numpy as np
import pytest

from qkd_circuits.hazmat import messages as m
from qkd_circuits.hazmat.cascade import PRESETS, CascadeAlice, CascadeBob


def transcript(alice_key, bob_key, preset, seed=b"s" * 16, qber=0.03):
    alice = CascadeAlice(alice_key, seed=seed, preset=preset, qber=qber)
    bob = CascadeBob(bob_key, seed=seed, preset=preset, qber=qber)
    requests, replies = [], []
    gen = bob.run()
    try:
        request = next(gen)
        while True:
            requests.append(m.encode(request))
            reply = alice.handle(request)
            replies.append(m.encode(reply))
            request = gen.send(reply)
    except StopIteration as stop:
        corrected = stop.value
    return requests, replies, corrected, alice.leaked_bits


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_bobs_requests_depend_only_on_the_error_pattern(preset):
    rng = np.random.default_rng(11)  # sim-rng: test data only
    n = 4000
    x = rng.integers(0, 2, n).astype(np.uint8)
    w = (rng.random(n) < 0.03).astype(np.uint8)  # the error pattern
    r = rng.integers(0, 2, n).astype(np.uint8)  # a different key pair with the same pattern
    req1, rep1, key1, leak1 = transcript(x, x ^ w, preset)
    req2, rep2, key2, leak2 = transcript(x ^ r, x ^ r ^ w, preset)
    assert np.array_equal(key1, x) and np.array_equal(key2, x ^ r)  # both corrected
    assert req1 == req2  # Bob's side of the wire: identical bytes
    assert rep1 != rep2  # Alice's parities are about her key, and differ
    assert leak1 == leak2 == sum(m.decode(f).parities.size for f in rep1)  # what is counted


def test_a_different_error_pattern_changes_bobs_requests():
    # The control: the property above is not vacuous (Bob's requests do follow the errors).
    rng = np.random.default_rng(12)  # sim-rng: test data only
    x = rng.integers(0, 2, 3000).astype(np.uint8)
    w1 = (rng.random(3000) < 0.03).astype(np.uint8)
    w2 = (rng.random(3000) < 0.03).astype(np.uint8)
    assert transcript(x, x ^ w1, "yanetal")[0] != transcript(x, x ^ w2, "yanetal")[0]
