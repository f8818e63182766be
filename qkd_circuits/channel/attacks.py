"""Classical-channel attacks users can run: wrappers around the frame carrier between the parties.

Each attack takes the honest ``carry`` (Bob's envelope in, Alice's reply out) and returns a
dishonest one.  They act on envelopes exactly as an active network attacker would: flip bits,
replay an old message, deliver replies out of order, drop a message.  The man-in-the-middle, who
talks BB84 with each party separately, is :func:`qkd_circuits.session.run_mitm`.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["tamper", "replay", "reorder_replies", "drop", "record", "ATTACKS"]

Carry = Callable[[bytes], bytes]


def tamper(carry: Carry, *, index: int = 1, bit: int = 300, direction: str = "to_alice") -> Carry:
    """Flip one bit of the ``index``-th envelope going ``to_alice`` or ``to_bob``."""
    count = [0]

    def flip(frame: bytes) -> bytes:
        data = bytearray(frame)
        data[(bit // 8) % len(data)] ^= 1 << (bit % 8)
        return bytes(data)

    def carry_(envelope: bytes) -> bytes:
        i = count[0]
        count[0] += 1
        if direction == "to_alice" and i == index:
            envelope = flip(envelope)
        reply = carry(envelope)
        if direction == "to_bob" and i == index:
            reply = flip(reply)
        return reply

    return carry_


def replay(carry: Carry, *, index: int = 2, old: int = 0) -> Carry:
    """Deliver Bob's ``old``-th envelope again in place of his ``index``-th."""
    seen: list[bytes] = []

    def carry_(envelope: bytes) -> bytes:
        seen.append(envelope)
        if len(seen) - 1 == index:
            envelope = seen[old]
        return carry(envelope)

    return carry_


def reorder_replies(carry: Carry, *, index: int = 2) -> Carry:
    """Hand Bob the reply to his previous envelope instead of the reply to his ``index``-th."""
    replies: list[bytes] = []

    def carry_(envelope: bytes) -> bytes:
        replies.append(carry(envelope))
        if len(replies) - 1 == index:
            return replies[-2]
        return replies[-1]

    return carry_


def drop(carry: Carry, *, index: int = -1, direction: str = "to_bob", total: list | None = None) -> Carry:
    """Lose one message: Bob's ``index``-th envelope (``to_alice``) or Alice's reply to it
    (``to_bob``).  A negative ``index`` (the default) targets the tag exchange: Bob's TAG
    envelope, or Alice's TAG reply."""
    count = [0]

    def carry_(envelope: bytes) -> bytes:
        i = count[0]
        count[0] += 1
        is_target = i == index or (index < 0 and envelope[5] == 2)  # kind byte 2 = TAG
        if is_target and direction == "to_alice":
            raise TimeoutError("the message was lost")
        reply = carry(envelope)
        if is_target and direction == "to_bob":
            raise TimeoutError("the reply was lost")
        return reply

    return carry_


def record(carry: Carry, wire: list[bytes]) -> Carry:
    """A passive eavesdropper: keep a copy of everything that crosses the channel."""

    def carry_(envelope: bytes) -> bytes:
        wire.append(envelope)
        reply = carry(envelope)
        wire.append(reply)
        return reply

    return carry_


ATTACKS = {"tamper": tamper, "replay": replay, "reorder": reorder_replies, "drop": drop}
