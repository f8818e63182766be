"""Alice and Bob as two processes over TCP (``qkd alice --listen`` / ``qkd bob --connect``).

Each side holds only its own view of the measurement record (from a record file, or from a
seeded simulation both processes run), its own pool and link state, and talks to the other
through :mod:`qkd_circuits.channel.tcp` inside authenticated envelopes
(:mod:`qkd_circuits.channel.authenticated`).  Bob releases a key when Alice's tag verifies;
Alice when Bob's authenticated CONFIRM arrives, at the end of the round or at the start of the
next connection (until then her key is *pending*).  ``persist`` saves a party's state at every
point the protocol needs it saved, so a party killed at any moment resumes without reusing a pad.

Several rounds can run on one listening socket (``rounds``): Bob names each round's quantum
block in his SETTLE (public, authenticated with the round), and ``records`` may be a function
of that block, which is how two processes share a seeded simulation round after round.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Callable, Union

from .channel.admission import admit_view
from .channel.authenticated import DEFAULT_REPLENISH_BITS, AuthenticatedAlice, AuthenticatedBob
from .channel.pool import AuthKeyPool
from .channel.rounds import CHANNEL_ERRORS, channel_failure, check_pools, drive_authenticated, random_sources
from .channel.tcp import TcpClient, TcpServer
from .exceptions import AbortReason, ProtocolError, QKDError
from .postprocessing.protocol import AliceParty, BobParty, FinalKey, PartyOutcome, PostProcessingConfig
from .records import MeasurementRecord

__all__ = ["PartyResult", "party_result", "run_alice", "run_bob"]

Records = Union[MeasurementRecord, Callable[[bytes], MeasurementRecord]]


@dataclass(frozen=True)
class PartyResult:
    """One party's end of a round run over the network.

    ``key`` is this round's released key (``None`` when aborted or pending); ``settled`` lists
    every round decided during this connection (earlier pending rounds included), with the
    delivered key of each commit.
    """

    role: str
    key: FinalKey | None
    abort_reason: AbortReason | None
    auth: dict
    sifted: int
    qber: dict | None
    pending: bool = False
    settled: tuple = field(default=())

    @property
    def aborted(self) -> bool:
        return self.key is None and not self.pending

    def to_dict(self) -> dict:
        return {"role": self.role, "aborted": self.aborted, "pending": self.pending,
                "abort_reason": None if self.abort_reason is None else str(self.abort_reason),
                "round": self.auth.get("round"),
                "final_key_bits": 0 if self.key is None else len(self.key),
                "key_sha256": None if self.key is None else self.key.sha256(),
                "sifted": self.sifted, "qber": self.qber, "auth": self.auth,
                "settled": [s.to_dict() for s in self.settled]}


def party_result(role: str, outcome: PartyOutcome | None, end, failure: str | None,
                 pool: AuthKeyPool) -> PartyResult:
    """One party's :class:`PartyResult` after its round: ``end`` is its authenticated end, ``failure``
    the channel error that ended the round (:func:`~qkd_circuits.channel.rounds.channel_failure`)."""
    auth = end.summary.to_dict()
    auth.update(failure=failure, pool_position=pool.position, pool_bits_available=pool.available_bits,
                pool_state_sha256=pool.state_digest(), simulation_pool=pool.simulation)
    pending = bool(end.summary.pending)
    key = end.released_key
    reason = None if key is not None or pending else _abort_reason(outcome, end, failure)
    q = outcome.qber.to_dict() if outcome is not None and outcome.qber else None
    return PartyResult(role, key, reason, auth, outcome.sifted_bits if outcome is not None else 0, q, pending,
                       tuple(end.settled))


def _abort_reason(outcome: PartyOutcome | None, end, failure: str | None) -> AbortReason:
    """Why a party's round released no key: the channel error, its own abort, or its end's decision."""
    if failure:
        return AbortReason.for_channel_failure(failure)
    if outcome is not None and outcome.abort_reason:
        return AbortReason(outcome.abort_reason)
    if end.summary.released:
        return AbortReason.NO_KEY_LEFT_AFTER_REPLENISHMENT
    return AbortReason.NO_KEY_RELEASED


def _admit_view(pool: AuthKeyPool, record: MeasurementRecord, role: str) -> None:
    view = record.alice_view() if role == "alice" else record.bob_view()
    admit_view(pool, view, seeded=record.provenance.seed is not None)


def _record_for(records: Records, block: bytes) -> MeasurementRecord:
    return records(block) if callable(records) else records


def run_alice(records: Records, pool: AuthKeyPool, *, host: str, port: int,
              config: PostProcessingConfig | None = None, replenish_bits: int = DEFAULT_REPLENISH_BITS,
              timeout: float = 30.0, accept_timeout: float = 120.0, rounds: int = 1,
              persist: Callable[[], None] | None = None, on_listening=None,
              on_round: Callable[[PartyResult], None] | None = None) -> list[PartyResult]:
    """Serve ``rounds`` connections as Alice on ``host:port``, one round each (her view only).

    Returns one :class:`PartyResult` per connection (``on_round`` gets each as it ends).
    """
    config = config or PostProcessingConfig()
    check_pools(pool)
    if not callable(records):  # one record: refused now, before listening, if it cannot be used
        _admit_view(pool, records, "alice")
        if persist is not None:
            persist()
    with TcpServer(host, port, on_listening=on_listening) as server:
        return _run_rounds(rounds, pool, persist, on_round, lambda: _alice_round(
            server, records, pool, config, replenish_bits, timeout, accept_timeout, persist))


def _run_rounds(rounds: int, pool: AuthKeyPool, persist, on_round, one_round) -> list[PartyResult]:
    """Run ``one_round`` up to ``rounds`` times, saving the state after each; stop if the link halts."""
    results = []
    for _ in range(rounds):
        check_pools(pool)
        results.append(one_round())
        if persist is not None:
            persist()
        if on_round is not None:
            on_round(results[-1])
        if pool.link.halted:
            break
    return results


def _alice_round(server, records, pool, config, replenish_bits, timeout, accept_timeout, persist) -> PartyResult:
    state: dict = {}

    def handler(frame: bytes) -> bytes:
        if "party" not in state:
            record = _record_for(records, end.block or b"")
            if callable(records):
                try:
                    _admit_view(pool, record, "alice")
                except QKDError as exc:
                    raise ProtocolError(f"Alice refused the round: {exc}") from None
                if persist is not None:
                    persist()  # the record is marked as used before anything about it is disclosed
            view = record.alice_view()
            state["party"] = AliceParty(view, config, random_bytes=random_sources(record.provenance.seed)[0])
        return state["party"].handle(frame)

    def outcome():
        return state["party"].outcome if "party" in state else None

    end = AuthenticatedAlice(pool, handler, outcome=outcome, key_epsilon=(config.eps_sec, config.eps_cor),
                             replenish_bits=replenish_bits, persist=persist)
    failure = None
    try:
        server.serve_one(end.handle, timeout=timeout, accept_timeout=accept_timeout)
    except CHANNEL_ERRORS as exc:
        failure = channel_failure(exc)
    if failure is None and not end.summary.verified and not end.summary.pending and outcome() is not None \
            and not outcome().aborted:
        failure = ConnectionError.__name__  # Bob went away before the tags
    return party_result("alice", outcome(), end, failure, pool)


def run_bob(records: Records, pool: AuthKeyPool, *, host: str, port: int,
            config: PostProcessingConfig | None = None, replenish_bits: int = DEFAULT_REPLENISH_BITS,
            timeout: float = 30.0, rounds: int = 1, persist: Callable[[], None] | None = None,
            on_round: Callable[[PartyResult], None] | None = None) -> list[PartyResult]:
    """Run ``rounds`` rounds as Bob against Alice at ``host:port`` (his view only), one connection each."""
    config = config or PostProcessingConfig()
    return _run_rounds(rounds, pool, persist, on_round,
                       lambda: _bob_round(records, pool, host, port, config, replenish_bits, timeout, persist))


def _bob_round(records, pool, host, port, config, replenish_bits, timeout, persist) -> PartyResult:
    block = secrets.token_bytes(16) if callable(records) else b""
    record = _record_for(records, block)
    view = record.bob_view()
    _admit_view(pool, record, "bob")
    if persist is not None:
        persist()
    bob = BobParty(view, config, random_bytes=random_sources(record.provenance.seed)[1])
    eps = (config.eps_sec, config.eps_cor)
    try:
        client = TcpClient(host, port, timeout=timeout)
    except ConnectionError as exc:
        end = AuthenticatedBob(pool, lambda env: b"", outcome=lambda: bob.outcome, key_epsilon=eps)
        return party_result("bob", None, end, channel_failure(exc), pool)
    with client:
        end = AuthenticatedBob(pool, client.request, outcome=lambda: bob.outcome, key_epsilon=eps,
                               replenish_bits=replenish_bits, persist=persist, block=block)
        _, failure = drive_authenticated(bob, end)
    return party_result("bob", bob.outcome, end, failure, pool)
