"""What every runner of a round over the authenticated channel shares.

The in-process session (:mod:`qkd_circuits.session`), the two processes over TCP
(:mod:`qkd_circuits.network`) and the link node (:mod:`qkd_circuits.node`) all refuse a pool
that cannot pay for a round before any work (:func:`check_pools`), drive Bob's protocol through
his authenticated end and close the round with the tags (:func:`drive_authenticated`), name a
channel error the same way (:data:`CHANNEL_ERRORS`, :func:`channel_failure`) and draw the
parties' public random choices from the same sources (:func:`random_sources`).
"""

from __future__ import annotations

import secrets
from typing import Callable

import numpy as np

from ..exceptions import AuthenticationError, KeyPoolExhausted, LinkHalted, ProtocolError
from ..postprocessing.protocol import BobParty, PartyOutcome, drive
from .authenticated import PAD_BYTES_PER_ROUND, AuthenticatedBob
from .pool import AuthKeyPool

__all__ = ["CHANNEL_ERRORS", "channel_failure", "check_pools", "drive_authenticated", "random_sources"]

#: The errors that end a round on the channel (not a bug): a tag or signature that did not verify,
#: a malformed or out-of-order message, a peer gone silent, a broken connection.
CHANNEL_ERRORS = (AuthenticationError, ProtocolError, TimeoutError, ConnectionError)


def channel_failure(exc: BaseException) -> str:
    """The ``failure`` a round reports for a channel error: the name of its kind in :data:`CHANNEL_ERRORS`.

    >>> channel_failure(TimeoutError()), channel_failure(ConnectionResetError())
    ('TimeoutError', 'ConnectionError')
    """
    for kind in CHANNEL_ERRORS:
        if isinstance(exc, kind):
            return kind.__name__
    raise TypeError(f"not a channel error: {type(exc).__name__}")


def check_pools(*pools: AuthKeyPool | None) -> None:
    """Refuse to start a round a pool could not pay for, or on a halted link (before any work).

    Raises:
        LinkHalted: the link halted after repeated authentication failures.
        KeyPoolExhausted: a pool holds fewer bits than one round's tags need.
    """
    for pool in pools:
        if pool is None:
            continue
        if pool.link.halted:
            raise LinkHalted(f"the link halted after {pool.link.failures} consecutive authentication failures; "
                             "inspect both sites, then resume it with 'qkd psk resume FILE'")
        if pool.available_bits < 8 * PAD_BYTES_PER_ROUND:
            raise KeyPoolExhausted(
                f"the authentication key pool holds {pool.available_bits} bits, a round needs "
                f"{8 * PAD_BYTES_PER_ROUND}: bootstrap again (qkd psk init, or PKI)")


def drive_authenticated(bob: BobParty, end: AuthenticatedBob) -> tuple[PartyOutcome, str | None]:
    """Run Bob's protocol through his authenticated end and close the round with the tags.

    Returns ``(outcome, failure)``: ``failure`` names what went wrong on the channel
    (:func:`channel_failure`: ``"AuthenticationError"``, ``"ProtocolError"``,
    ``"TimeoutError"`` or ``"ConnectionError"``), or is ``None``.
    """
    try:
        outcome = drive(bob, end.request)
        if not outcome.aborted:
            end.close()
    except CHANNEL_ERRORS as exc:
        return bob.outcome, channel_failure(exc)
    return outcome, None


def random_sources(seed: int | None) -> tuple[Callable[[int], bytes], Callable[[int], bytes]]:
    """Alice's and Bob's public random choices: the CSPRNG, or seeded for a reproducible simulation."""
    if seed is None:
        return secrets.token_bytes, secrets.token_bytes
    return (np.random.default_rng([seed, 1]).bytes,  # sim-rng: seeded simulation only
            np.random.default_rng([seed, 2]).bytes)  # sim-rng
