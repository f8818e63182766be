"""Alice and Bob as two processes over TCP (``qkd alice --listen`` / ``qkd bob --connect``).

Each side holds only its own view of the measurement record (from a shared, seeded simulation
or a record file), its own copy of the authentication key pool, and talks to the other through
:mod:`qkd_circuits.channel.tcp` inside authenticated envelopes.  A side outputs a key only when
the round's authentication completed at its end; the pool is replenished from that key.
"""

from __future__ import annotations

from dataclasses import dataclass

from .channel.authenticated import PAD_BYTES_PER_ROUND, AuthenticatedAlice, AuthenticatedBob
from .channel.pool import AuthKeyPool
from .channel.tcp import TcpClient, serve_round
from .exceptions import AuthenticationError, ProtocolError
from .postprocessing.protocol import AliceParty, BobParty, FinalKey, PostProcessingConfig
from .records import MeasurementRecord
from .session import _check_pools, _random_sources, _split_key, drive_authenticated

__all__ = ["PartyResult", "run_alice", "run_bob"]


@dataclass(frozen=True)
class PartyResult:
    """One party's end of a round run over the network."""

    role: str
    key: FinalKey | None
    abort_reason: str | None
    auth: dict
    sifted: int
    qber: dict | None

    @property
    def aborted(self) -> bool:
        return self.key is None

    def to_dict(self) -> dict:
        return {"role": self.role, "aborted": self.aborted, "abort_reason": self.abort_reason,
                "final_key_bits": 0 if self.key is None else len(self.key),
                "key_sha256": None if self.key is None else self.key.sha256(),
                "sifted": self.sifted, "qber": self.qber, "auth": self.auth}


def _finish(role, party_outcome, released: bool, failure, pool: AuthKeyPool, summary, replenish_bits: int) -> PartyResult:
    refill, key = _split_key(party_outcome.key, replenish_bits) if released else (None, None)
    auth = summary.to_dict()
    if key is not None:
        pool.replenish(refill)
        auth["pool_bits_added"] = 8 * len(refill)
    auth.update(failure=failure, pool_position=pool.position, pool_bits_available=pool.available_bits)
    reason = ("authentication_failed" if failure else party_outcome.abort_reason
              or (None if key is not None else "no_key_released"))
    q = party_outcome.qber.to_dict() if party_outcome.qber else None
    return PartyResult(role, key, None if key is not None else reason, auth, party_outcome.sifted_bits, q)


def run_alice(record: MeasurementRecord, pool: AuthKeyPool, *, host: str, port: int,
              config: PostProcessingConfig | None = None, replenish_bits: int = 512, timeout: float = 30.0,
              on_listening=None) -> PartyResult:
    """Serve one round as Alice on ``host:port`` (uses only ``record.alice_view()``)."""
    config = config or PostProcessingConfig()
    _check_pools(pool)
    alice = AliceParty(record.alice_view(), config, random_bytes=_random_sources(record.provenance.seed)[0])
    end = AuthenticatedAlice(pool, alice.handle, round_number=pool.position // PAD_BYTES_PER_ROUND)
    failure = None
    try:
        serve_round(host, port, end.handle, timeout=timeout, on_listening=on_listening)
    except (AuthenticationError, ProtocolError, TimeoutError, ConnectionError) as exc:
        failure = type(exc).__name__
    return _finish("alice", alice.outcome, end.released and failure is None, failure, pool, end.summary,
                   replenish_bits)


def run_bob(record: MeasurementRecord, pool: AuthKeyPool, *, host: str, port: int,
            config: PostProcessingConfig | None = None, replenish_bits: int = 512,
            timeout: float = 30.0) -> PartyResult:
    """Run one round as Bob against Alice at ``host:port`` (uses only ``record.bob_view()``)."""
    config = config or PostProcessingConfig()
    _check_pools(pool)
    bob = BobParty(record.bob_view(), config, random_bytes=_random_sources(record.provenance.seed)[1])
    with TcpClient(host, port, timeout=timeout) as client:
        end = AuthenticatedBob(pool, client.request, round_number=pool.position // PAD_BYTES_PER_ROUND)
        _, failure = drive_authenticated(bob, end)
    return _finish("bob", bob.outcome, end.summary.released and failure is None, failure, pool, end.summary,
                   replenish_bits)
