"""The link holds over a faulty network: real ``qkd alice``/``qkd bob`` processes through a proxy.

Each fault hits one frame of one round (both directions, every kind of frame of the protocol:
SETTLE/ACK, post-processing DATA, the two TAGs, CONFIRM and its ACK) and is followed by an honest
round.  Asserted for every run (:func:`linkharness.check_link`): no one-sided release, no
mismatched keys, no pool slice used twice, both pools identical at the end, and the round after
each fault makes a key at both ends.  The full matrix (every frame index) is the slow test.
"""

from __future__ import annotations

import json

import pytest
from faultproxy import Fault
from linkharness import ACK, CONFIRM, DATA, SETTLE, TAG, TIMEOUT_S, check_link, run_link

ACTIONS = ("drop", "duplicate", "delay", "flip_header", "flip_payload", "reorder", "cut")
#: (direction, envelope kind, index among frames of that kind): one of every frame of a round.
POSITIONS = [("c2s", SETTLE, 0), ("s2c", ACK, 0), ("c2s", DATA, 0), ("s2c", DATA, 3), ("c2s", TAG, 0),
             ("s2c", TAG, 0), ("c2s", CONFIRM, 0), ("s2c", ACK, 1)]


def _schedule(targets):
    """Connection 0 honest, then each fault on connection 2k+1 followed by an honest 2k+2."""
    faults, honest_after = [], []
    for k, (direction, kind, index, action) in enumerate(targets):
        faults.append(Fault(2 * k + 1, direction, index, action, delay_s=1.5 * TIMEOUT_S, kind=kind))
        honest_after.append(2 * k + 2)
    return faults, honest_after, 2 * len(targets) + 1


def test_every_fault_on_every_kind_of_frame_leaves_the_link_consistent_and_alive(tmp_path):
    # One fault on each of the 8 positions, the 7 actions rotated over them (every action is used,
    # drop twice); the slow test runs every action on every frame of a round, both directions.
    targets = [(d, kind, i, ACTIONS[p % len(ACTIONS)]) for p, (d, kind, i) in enumerate(POSITIONS)]
    faults, honest_after, rounds = _schedule(targets)
    run = run_link(tmp_path, rounds, faults)
    counts = check_link(run, honest_after=honest_after)
    applied = [e for e in run.log if e.action]
    assert len(applied) == len(faults), applied  # every scripted fault found its frame
    assert counts["keys"] >= len(honest_after) + 1


def test_lost_confirm_leaves_alice_pending_until_the_next_connection_settles_it(tmp_path):
    run = run_link(tmp_path, 2, [Fault(0, "c2s", 0, "drop", kind=CONFIRM)])
    first_alice, first_bob = run.alice[0], run.bob[0]
    assert first_bob["key_sha256"] is not None  # Bob decided: commit
    assert first_alice["pending"] and first_alice["key_sha256"] is None  # Alice holds it apart
    settled = {s["round"]: s for s in run.alice[1]["settled"]}
    assert settled[first_bob["round"]]["key_sha256"] == first_bob["key_sha256"]
    check_link(run, honest_after=[1])


def test_lost_alice_tag_aborts_the_round_at_both_ends(tmp_path):
    run = run_link(tmp_path, 2, [Fault(0, "s2c", 0, "drop", kind=TAG)])
    assert run.bob[0]["key_sha256"] is None and run.alice[0]["pending"]
    settled = {s["round"]: s["decision"] for s in run.alice[1]["settled"]}
    assert settled[run.bob[0]["round"]] == "abort"  # her pending key is dropped, not released
    check_link(run, honest_after=[1])
    # The lost round cost its slice, once.  The honest round after it spent one too, unless
    # Cascade left an error there and verification stopped it before the tags (check_link
    # allows that at Cascade's frame error rate): such a round spends nothing.
    assert run.bob[0]["auth"]["pad_position"] is not None
    spent_after = run.bob[1]["auth"]["pad_position"] is not None
    assert spent_after or run.bob[1]["abort_reason"] == "verification_failed"
    assert run.bob_pool.link.next_round == 1 + spent_after


@pytest.mark.slow
def test_full_fault_matrix_every_frame_both_directions(tmp_path):
    """Every frame index of a round × both directions × 7 faults, each followed by an honest round."""
    (tmp_path / "probe").mkdir()
    probe = run_link(tmp_path / "probe", 1)
    frames = {d: sum(1 for e in probe.log if e.direction == d) for d in ("c2s", "s2c")}
    targets = [(d, None, i, action) for d in ("c2s", "s2c") for i in range(frames[d]) for action in ACTIONS]
    faults, honest_after, rounds = _schedule(targets)
    run = run_link(tmp_path, rounds, faults, deadline_s=3000)
    counts = check_link(run, honest_after=honest_after)
    faulty = [run.bob[i - 1] for i in honest_after]
    counts.update(frames_per_round=frames, faulty_rounds=len(faulty),
                  faulty_rounds_with_key=sum(1 for x in faulty if x["key_sha256"] is not None),
                  pad_bits_spent_per_round=512)
    print("fault matrix:", json.dumps(counts))
