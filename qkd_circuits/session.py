"""One BB84 round, end to end, and its report.

The quantum exchange runs on a real circuit (:mod:`qkd_circuits.quantum`); then Alice and Bob,
as two parties that share only messages (:mod:`qkd_circuits.postprocessing.protocol`), sift,
estimate the QBER on a disclosed sample, reconcile with Cascade, verify with a universal hash
and amplify privacy with Toeplitz hashing to the finite-key length.  Every message travels in an
authenticated envelope (:mod:`qkd_circuits.channel`), and no key is released unless the round's
Wegman–Carter tags (or, for a PKI bootstrap, signatures) verified at both ends.  The report
says what each step disclosed and cost.  A key made on a simulator is known to the simulator's
operator.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from .channel.admission import admit_view
from .channel.authenticated import (DEFAULT_REPLENISH_BITS, PAD_BYTES_PER_ROUND, AuthenticatedAlice, AuthenticatedBob,
                                    PkiIdentity)
from .channel.pool import AuthKeyPool
from .exceptions import (AuthenticationError, ConfigurationError, KeyPoolExhausted, LinkHalted, ProtocolAborted,
                         ProtocolError, QBERTooHigh)
from .postprocessing.estimation import estimate_qber
from .analysis.finite_key import binary_entropy
from .postprocessing.protocol import AliceParty, BobParty, FinalKey, PostProcessingConfig, drive
from .postprocessing.sifting import sift_mask
from .records import MeasurementRecord

__all__ = ["Report", "BB84Result", "MitmResult", "run_bb84", "run_mitm", "postprocess", "check_pools",
           "drive_authenticated", "random_sources"]

@dataclass(frozen=True)
class Report:
    """The report of one round; ``to_dict()`` is what ``qkd run --json`` prints.

    Field names are a contract (scripts and notebooks read them): add, never rename.
    ``qber`` is what the parties measured on their disclosed sample (``estimate``, ``upper``...)
    plus ``true_sifted``, the simulator's count over every sifted bit (for studies only).
    """

    exchanges: int
    detected: int
    sifted: int
    qber: dict
    aborted: bool
    abort_reason: str | None
    final_key_bits: int
    timings_s: dict
    backend: str
    mode: str
    seed: int | None
    stage: str = "final"
    sample_bits: int = 0
    leaked_ec_bits: int = 0
    cascade: dict | None = None
    verification: dict | None = None
    key_length: dict | None = None
    alice_key_sha256: str | None = None
    bob_key_sha256: str | None = None
    auth: dict | None = None
    eve: dict | None = None
    provenance: dict = field(default_factory=dict)
    pending: bool = False  # Alice holds the key pending Bob's decision (see report.auth)

    def to_dict(self) -> dict:
        return asdict(self)

    def raise_for_abort(self) -> None:
        """Raise the :class:`~qkd_circuits.ProtocolAborted` this round ended with, if any."""
        if not self.aborted:
            return
        q = self.qber
        if self.abort_reason == QBERTooHigh.reason:
            raise QBERTooHigh(q["upper"], q["threshold"], q["estimate"])
        error = ProtocolAborted(f"the round aborted: {self.abort_reason}")
        error.reason = self.abort_reason
        raise error


@dataclass(frozen=True)
class BB84Result:
    """A round's :class:`Report`, the record behind it and both parties' keys (``None`` when aborted).

    In a simulation one process holds both keys; a deployment would have each party keep its own.
    """

    report: Report
    record: MeasurementRecord
    alice_key: FinalKey | None = None
    bob_key: FinalKey | None = None
    pools: tuple | None = field(default=None, repr=False)  # (Alice's, Bob's) after the round


def _eve_summary(record: MeasurementRecord, sifted: np.ndarray) -> dict | None:
    """How much of the sifted key Eve's own results got right (where she attacked)."""
    if not record.has_eve:
        return None
    attacked = sifted & record.eve_active
    # Eve's result is a guess of Alice's bit in Eve's basis; after basis reconciliation she
    # knows which of her guesses were in the right basis (Breidbart guesses count everywhere).
    right_basis = attacked & ((record.eve_bases == record.alice_bases) | (record.eve_bases == 2))
    correct = int((record.eve_results[right_basis] == record.alice_bits[right_basis]).sum())
    n_sifted = int(sifted.sum())
    return {
        "attack": record.provenance.models.get("eve"),
        "attacked_fraction": float(attacked.sum() / n_sifted) if n_sifted else None,
        "right_basis_fraction": float(right_basis.sum() / n_sifted) if n_sifted else None,
        "guess_error_right_basis": float(1 - correct / right_basis.sum()) if right_basis.any() else None,
    }


def random_sources(seed: int | None):
    """The parties' public random choices: CSPRNG, or seeded for a reproducible simulation."""
    if seed is None:
        return secrets.token_bytes, secrets.token_bytes
    return (np.random.default_rng([seed, 1]).bytes,  # sim-rng: seeded simulation only
            np.random.default_rng([seed, 2]).bytes)  # sim-rng


def postprocess(record: MeasurementRecord, config: PostProcessingConfig | None = None, *,
                alice_pool: AuthKeyPool | None = None, bob_pool: AuthKeyPool | None = None,
                round_number: int | None = None, replenish_bits: int = DEFAULT_REPLENISH_BITS,
                attack: Callable[[Callable[[bytes], bytes]], Callable[[bytes], bytes]] | None = None,
                alice_pki: PkiIdentity | None = None, bob_pki: PkiIdentity | None = None,
                pki_pool_bits: int = 4096, timings_s: dict | None = None) -> BB84Result:
    """Run the two-party post-processing on ``record`` over the authenticated channel.

    Alice gets only ``record.alice_view()`` and Bob only ``record.bob_view()``; every message
    between them travels in an authenticated envelope (:mod:`qkd_circuits.channel`), and the
    round closes with one Wegman–Carter tag per direction and Bob's authenticated CONFIRM.  Bob
    releases his key when Alice's tag verifies; Alice releases hers on the CONFIRM, or holds it
    *pending* (``report.auth["pending"]``) until the next round settles it.  The first
    ``replenish_bits`` of the final key refill the pools, the rest is delivered.  ``attack``
    wraps the carrier between the parties (see :mod:`qkd_circuits.channel.attacks`).  Without
    pools, a fresh demo PSK (a simulation pool) is made and the report says so.

    Kept pools refuse what would make a key known: a seeded record refills only a simulation pool
    (``AuthKeyPool.fresh(..., simulation=True)``), and a record is processed at most once per
    pool.  An abort before the tag exchange (e.g. ``qber_too_high``) spends no pool bits: nothing
    computed from the round's slice was disclosed.

    Raises:
        KeyPoolExhausted: a pool cannot pay for this round's tags (checked before any work).
        ConfigurationError: a seeded record with a real pool, or inconsistent arguments.
        RecordError: this record was processed with these pools before.
        LinkHalted: a pool halted after repeated authentication failures.
    """
    config = config or PostProcessingConfig()
    if (alice_pool is None) != (bob_pool is None) or (alice_pki is None) != (bob_pki is None):
        raise ConfigurationError("give both parties a pool (or both a PKI identity), or neither")
    if alice_pki is not None and alice_pool is not None:
        raise ConfigurationError("bootstrap with a PSK pool or with PKI, not both")
    if alice_pki is not None:
        replenish_bits = pki_pool_bits  # the signed round's key seeds the pool
    elif alice_pool is None:
        alice_pool = AuthKeyPool.fresh(bootstrap="demo-psk", simulation=True)
        bob_pool = alice_pool.copy()
    check_pools(alice_pool, bob_pool)
    if round_number is not None and bob_pool is not None and round_number != bob_pool.link.next_round:
        raise ConfigurationError(f"round_number {round_number} disagrees with the pool's next round "
                                 f"{bob_pool.link.next_round}; rounds are numbered by the pools now (omit it)")
    if replenish_bits < 0 or replenish_bits % 8:
        raise ConfigurationError(f"replenish_bits must be a non-negative multiple of 8, got {replenish_bits}")
    seeded = record.provenance.seed is not None
    alice_view, bob_view = record.alice_view(), record.bob_view()
    admit_view(alice_pool, alice_view, seeded=seeded)
    admit_view(bob_pool, bob_view, seeded=seeded)
    alice_random, bob_random = random_sources(record.provenance.seed)
    alice = AliceParty(alice_view, config, random_bytes=alice_random)
    bob = BobParty(bob_view, config, random_bytes=bob_random)
    eps = (config.eps_sec, config.eps_cor)
    alice_end = AuthenticatedAlice(alice_pool, alice.handle, outcome=lambda: alice.outcome, key_epsilon=eps,
                                   replenish_bits=replenish_bits, pki=alice_pki)
    carry = alice_end.handle if attack is None else attack(alice_end.handle)
    bob_end = AuthenticatedBob(bob_pool, carry, outcome=lambda: bob.outcome, key_epsilon=eps,
                               replenish_bits=replenish_bits, pki=bob_pki)
    t0 = time.perf_counter()
    ob, auth_failure = drive_authenticated(bob, bob_end)
    auth_seconds = time.perf_counter() - t0 - sum(ob.timings_s.values())
    oa = alice.outcome

    alice_key, bob_key = alice_end.released_key, bob_end.released_key
    if alice_pki is not None and bob_key is not None and alice_end.released:
        alice_pool = AuthKeyPool(alice_end.pki_seed, epoch=alice_end.pki_epoch, bootstrap="pki", simulation=seeded)
        bob_pool = AuthKeyPool(bob_end.pki_seed, epoch=bob_end.pki_epoch, bootstrap="pki", simulation=seeded)
    auth = bob_end.summary.to_dict()
    auth.update(alice_pending=alice_end.summary.pending, alice_settled=alice_end.summary.to_dict()["settled"],
                alice_released=alice_end.released)
    auth["pool_bits_available"] = bob_pool.available_bits if bob_pool is not None else 0
    auth["pool_position"] = bob_pool.position if bob_pool is not None else 0
    auth["failure"] = auth_failure
    auth["simulation_pool"] = bool(bob_pool is not None and bob_pool.simulation)

    sifted = sift_mask(record.alice_bases, record.bob_bases, record.detected)
    true_errors = int((record.alice_bits[sifted] != record.bob_results[sifted]).sum())
    true_q = estimate_qber(true_errors, int(sifted.sum()), epsilon=config.qber_epsilon)
    qber = {"threshold": config.abort_qber, "method": "sampled (Clopper-Pearson)",
            "true_sifted": true_q.estimate if true_q.n else None}
    qber.update(ob.qber.to_dict() if ob.qber else {"estimate": None, "upper": None})
    cascade = dict(ob.cascade) if ob.cascade else None
    if cascade and oa.reconciled_key is not None and ob.key_before_reconciliation is not None \
            and oa.reconciled_key.size == ob.key_before_reconciliation.size:
        # f = leaked / (n·h(Q)) with Q the true error rate of the bits Cascade worked on.
        errors = int((oa.reconciled_key != ob.key_before_reconciliation).sum())
        q_key = errors / oa.reconciled_key.size
        cascade["errors_before"] = errors
        if 0 < q_key < 0.5:
            cascade["efficiency"] = cascade["leaked_bits"] / (oa.reconciled_key.size * binary_entropy(q_key))
    aborted = bob_key is None  # Bob decides; also when the refill took the whole key
    reason = ("authentication_failed" if auth_failure else ob.abort_reason or oa.abort_reason
              or ("no_key_left_after_replenishment" if bob_end.summary.released and bob_key is None else None))
    p = record.provenance
    report = Report(
        exchanges=len(record), detected=int(record.detected.sum()), sifted=ob.sifted_bits, qber=qber,
        aborted=aborted, abort_reason=reason if aborted else None,
        final_key_bits=0 if aborted else len(bob_key),
        timings_s={**(timings_s or {}), **ob.timings_s, "authentication": max(auth_seconds, 0.0)},
        backend=p.backend, mode=p.mode, seed=p.seed,
        sample_bits=ob.ledger.sample_bits, leaked_ec_bits=ob.ledger.leak_ec, cascade=cascade,
        verification=ob.verification, key_length=ob.key_length.to_dict() if ob.key_length else None,
        alice_key_sha256=alice_key.sha256() if alice_key else None,
        bob_key_sha256=bob_key.sha256() if bob_key else None,
        auth=auth, eve=_eve_summary(record, sifted), provenance=p.to_dict(),
        pending=bool(alice_end.summary.pending),
    )
    pools = (alice_pool, bob_pool) if alice_pool is not None else None
    return BB84Result(report, record, alice_key, bob_key, pools)


def check_pools(*pools: AuthKeyPool | None) -> None:
    """Refuse to start a round a pool could not pay for, or on a halted link (before any work)."""
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


def drive_authenticated(bob: BobParty, end: AuthenticatedBob) -> tuple:
    """Run Bob's protocol through his authenticated end and close the round with the tags.

    Returns ``(outcome, failure)``: ``failure`` names what went wrong on the channel (an
    authentication, protocol, timeout or connection error), or is ``None``.
    """
    try:
        outcome = drive(bob, end.request)
        if not outcome.aborted:
            end.close()
    except (AuthenticationError, ProtocolError, TimeoutError, ConnectionError) as exc:
        return bob.outcome, type(exc).__name__
    return outcome, None


def run_bb84(exchanges: int = 100_000, *, config: PostProcessingConfig | None = None,
             progress: Callable[[int, int], None] | None = None, alice_pool: AuthKeyPool | None = None,
             bob_pool: AuthKeyPool | None = None, round_number: int | None = None, attack=None,
             alice_pki: PkiIdentity | None = None, bob_pki: PkiIdentity | None = None,
             **exchange_options) -> BB84Result:
    """Run one BB84 round: circuits on a backend, then the two-party post-processing.

    Args:
        exchanges: pulses Alice sends.
        config: the post-processing parameters (sample fraction, abort threshold, Cascade
            preset, ε's); defaults to :class:`PostProcessingConfig`'s.
        progress: called as ``progress(done, total)`` after each quantum job.
        alice_pool, bob_pool: the parties' authentication key pools (a fresh demo PSK if omitted);
            they are consumed and replenished in place.
        round_number: optional check: the round number the pools must be at (they number rounds).
        attack: a carrier wrapper from :mod:`qkd_circuits.channel.attacks`.
        alice_pki, bob_pki: bootstrap this round with signatures instead of a pool; on success
            ``result.pools`` holds the pools seeded from its key.
        **exchange_options: ``mode``, ``backend``, ``channel``, ``detector``, ``eve``,
            ``seed``, ``lanes``, ``schedule``, as for :func:`qkd_circuits.submit`.

    Returns:
        A :class:`BB84Result`.  An aborted round has ``report.aborted`` set and no keys; it does
        not raise (``report.raise_for_abort()`` does).
    """
    from .quantum.execution import submit  # the only route to qiskit from here

    t0 = time.perf_counter()
    record = submit(exchanges, **exchange_options).result(progress=progress)
    return postprocess(record, config, alice_pool=alice_pool, bob_pool=bob_pool, round_number=round_number,
                       attack=attack, alice_pki=alice_pki, bob_pki=bob_pki,
                       timings_s={"quantum": time.perf_counter() - t0})


@dataclass(frozen=True)
class MitmResult:
    """A classical man-in-the-middle round: what each party and Eve ended with.

    Eve runs BB84 with Alice (as a fake Bob) and with Bob (as a fake Alice), on two separate
    quantum links, and relays nothing: every key is made with her.  Without authentication the
    parties cannot notice; with it, Eve cannot produce a tag that verifies and both abort.
    """

    authenticated: bool
    alice_key: FinalKey | None
    bob_key: FinalKey | None
    eve_key_with_alice: FinalKey | None
    eve_key_with_bob: FinalKey | None
    alice_failure: str | None
    bob_failure: str | None

    @property
    def detected(self) -> bool:
        return self.alice_key is None and self.bob_key is None and self.alice_failure is not None


def run_mitm(exchanges: int = 100_000, *, authenticated: bool = True, config: PostProcessingConfig | None = None,
             alice_pool: AuthKeyPool | None = None, bob_pool: AuthKeyPool | None = None,
             **exchange_options) -> MitmResult:
    """Put a classical man-in-the-middle between Alice and Bob (``qkd run --mitm``)."""
    from .quantum.execution import submit

    config = config or PostProcessingConfig()
    if (alice_pool is None) != (bob_pool is None):
        raise ConfigurationError("give both parties a pool, or neither (a demo PSK is made then)")
    if alice_pool is None:
        alice_pool = AuthKeyPool.fresh()
        bob_pool = alice_pool.copy()
    seed = exchange_options.pop("seed", None)
    link_ae = submit(exchanges, seed=seed, **exchange_options).result()  # Alice ↔ Eve (as Bob)
    link_eb = submit(exchanges, seed=None if seed is None else seed + 1, **exchange_options).result()  # Eve ↔ Bob
    (a_random, e_random_b), (e_random_a, b_random) = random_sources(seed), random_sources(
        None if seed is None else seed + 1)
    alice = AliceParty(link_ae.alice_view(), config, random_bytes=a_random)
    eve_as_bob = BobParty(link_ae.bob_view(), config, random_bytes=e_random_b)
    eve_as_alice = AliceParty(link_eb.alice_view(), config, random_bytes=e_random_a)
    bob = BobParty(link_eb.bob_view(), config, random_bytes=b_random)
    # Eve does not know the parties' pools, only what their envelopes show (epoch, round, position).
    eve_pool = AuthKeyPool.fresh(alice_pool.available_bits // 8, epoch=alice_pool.epoch)
    eve_pool.position, eve_pool.link.next_round = alice_pool.position, alice_pool.link.next_round

    def leg(driver: BobParty, responder: AliceParty, driver_pool, responder_pool):
        if not authenticated:
            out = drive(driver, responder.handle)
            return responder.outcome.key, out.key, None, None
        resp_end = AuthenticatedAlice(responder_pool, responder.handle, outcome=lambda: responder.outcome,
                                      key_epsilon=(config.eps_sec, config.eps_cor))
        drv_end = AuthenticatedBob(driver_pool, resp_end.handle, outcome=lambda: driver.outcome,
                                     key_epsilon=(config.eps_sec, config.eps_cor))
        _, failure = drive_authenticated(driver, drv_end)
        # Who noticed: the side whose check failed.
        responder_failure = "authentication_failed" if failure and not resp_end.summary.verified else None
        driver_failure = "authentication_failed" if failure and not drv_end.summary.verified else None
        resp_key, drv_key = resp_end.released_key, drv_end.released_key
        return resp_key, drv_key, responder_failure, driver_failure

    alice_key, eve_key_a, alice_failure, _ = leg(eve_as_bob, alice, eve_pool, alice_pool)
    eve_key_b, bob_key, _, bob_failure = leg(bob, eve_as_alice, bob_pool, eve_pool.copy())
    return MitmResult(authenticated, alice_key, bob_key, eve_key_a, eve_key_b, alice_failure, bob_failure)
