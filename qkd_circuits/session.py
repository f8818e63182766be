"""One BB84 round (or BBM92, six-state: :func:`run_round`), end to end, and its report.

The quantum exchange runs on a real circuit (:mod:`qkd_circuits.quantum`); then Alice and Bob,
as two parties that share only messages (:mod:`qkd_circuits.postprocessing.protocol`), sift,
estimate the QBER on a disclosed sample, reconcile with Cascade, verify with a universal hash
and amplify privacy with Toeplitz hashing to the finite-key length.  Every message travels in an
authenticated envelope (:mod:`qkd_circuits.channel`), and no key is released unless the round's
Wegman–Carter tags (or, for a PKI bootstrap, signatures) verified at both ends.  The report
says what each step disclosed and cost.  A key made on a simulator is known to the simulator's
operator.

Other protocols go through the same post-processing, channel and report
(:mod:`qkd_circuits.protocols`): :func:`run_round` runs their circuits
(:mod:`qkd_circuits.quantum.entangled`) and :func:`postprocess` takes the protocol from the
record's provenance; ``report.protocol`` names it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar

import numpy as np

from .analysis.finite_key import KeyLength, binary_entropy
from .channel.admission import admit_view
from .channel.authenticated import DEFAULT_REPLENISH_BITS, AuthenticatedAlice, AuthenticatedBob, PkiIdentity
from .channel.pool import AuthKeyPool
from .channel.rounds import check_pools, drive_authenticated, random_sources
from .exceptions import AbortReason, ConfigurationError, ProtocolAborted, QBERTooHigh
from .postprocessing.estimation import QBEREstimate, estimate_qber
from .postprocessing.protocol import (AliceParty, BobParty, FinalKey, PartyOutcome, PostProcessingConfig, drive,
                                      explain_abort)
from .records import MeasurementRecord, sift_mask

__all__ = ["Report", "QberSummary", "CascadeSummary", "VerificationSummary", "KeyLengthSummary",
           "RoundAuthSummary", "EveSummary", "BB84Result", "MitmResult", "run_bb84", "run_mitm", "run_round",
           "postprocess", "round_arguments", "classroom_report"]

# check_pools, drive_authenticated and random_sources live in qkd_circuits.channel.rounds; the
# names above stay importable from here for older scripts.


class _ReportPart(Mapping):
    """A typed part of a :class:`Report` that also reads like the dict ``to_dict()`` gives.

    ``report.qber.upper`` and ``report.qber["upper"]`` are the same value; ``get``, ``in``,
    ``dict(part)``, iteration (the keys, in ``to_dict()`` order) and ``==`` with a dict work as
    they did when the parts were dicts.  Fields named in ``_omitted_when_none`` are left out of
    ``to_dict()`` (and of the mapping) while ``None``: the dicts never had those keys then.
    """

    _omitted_when_none: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if not (f.name in self._omitted_when_none and getattr(self, f.name) is None)}

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self):
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


@dataclass(frozen=True, eq=False)
class QberSummary(_ReportPart):
    """``report.qber``: what the parties measured on their disclosed sample, and the simulator's count.

    ``estimate``/``upper``/``lower`` are the sample's QBER and its Clopper–Pearson bounds
    (``errors`` of ``n`` sample bits, failure probability ``epsilon``); before any sample was
    disclosed ``estimate`` and ``upper`` are ``None`` and the other sample keys are absent.
    ``true_sifted`` is the simulator's error rate over every sifted bit (studies only), and
    ``true_by_basis`` the same per basis (``{"Z": ..., "X": ...}``, and ``"Y"`` for six-state;
    ``None`` for a basis with no sifted bit): the parties estimate one QBER over all bases.
    """

    threshold: float
    method: str
    true_sifted: float | None
    estimate: float | None = None
    upper: float | None = None
    lower: float | None = None
    errors: int | None = None
    n: int | None = None
    epsilon: float | None = None
    true_by_basis: dict | None = None

    _omitted_when_none: ClassVar[tuple[str, ...]] = ("lower", "errors", "n", "epsilon", "true_by_basis")

    @classmethod
    def of(cls, threshold: float, true_sifted: float | None, sample: QBEREstimate | None,
           true_by_basis: dict | None = None) -> QberSummary:
        measured = sample.to_dict() if sample is not None else {}
        return cls(threshold, "sampled (Clopper-Pearson)", true_sifted, **measured, true_by_basis=true_by_basis)


def _sifted(record: MeasurementRecord) -> np.ndarray:
    """The pulses the record's protocol keeps (:meth:`~qkd_circuits.protocols.Protocol.sift`; E91: its key pairs)."""
    from .protocols import get_protocol

    return get_protocol(record.provenance.protocol).sift(record.alice_bases, record.bob_bases, record.detected)


def _true_by_basis(record: MeasurementRecord, sifted: np.ndarray) -> dict:
    """The simulator's error rate of the sifted bits in each of the record's protocol's bases."""
    from .protocols import get_protocol

    out = {}
    for code, label in enumerate(get_protocol(record.provenance.protocol).bases):
        sel = sifted & (record.alice_bases == code)
        out[label] = float((record.alice_bits[sel] != record.bob_results[sel]).mean()) if sel.any() else None
    return out


@dataclass(frozen=True, eq=False)
class CascadeSummary(_ReportPart):
    """``report.cascade``: Bob's Cascade run (``PartyOutcome.cascade``) and its measured efficiency.

    ``blocked_request_bits`` only after a leak-budget abort; ``errors_before`` (the true errors
    of the bits Cascade worked on) and ``efficiency`` (f = leaked / (n·h(Q))) only where known.
    """

    variant: str
    passes: int
    channel_uses: int
    leaked_bits: int
    corrected_bits: int
    block_sizes: list
    qber_estimate: float
    leak_budget_bits: int
    blocked_request_bits: int | None = None
    errors_before: int | None = None
    efficiency: float | None = None

    _omitted_when_none: ClassVar[tuple[str, ...]] = ("blocked_request_bits", "errors_before", "efficiency")


@dataclass(frozen=True, eq=False)
class VerificationSummary(_ReportPart):
    """``report.verification``: the universal-hash check of the reconciled keys."""

    ok: bool
    tag_bits: int
    collision_bound: float


@dataclass(frozen=True, eq=False)
class KeyLengthSummary(_ReportPart, KeyLength):
    """``report.key_length``: the round's :class:`~qkd_circuits.KeyLength`, readable as a mapping too."""

    @classmethod
    def of(cls, key_length: KeyLength) -> KeyLengthSummary:
        return cls(**{f.name: getattr(key_length, f.name) for f in fields(KeyLength)})


@dataclass(frozen=True, eq=False)
class RoundAuthSummary(_ReportPart):
    """``report.auth``: Bob's :class:`~qkd_circuits.channel.AuthSummary` of the round, then Alice's side.

    The first fields are Bob's end's summary (``settled`` as dicts); ``alice_pending``,
    ``alice_settled`` and ``alice_released`` are Alice's end; ``pool_bits_available`` and
    ``pool_position`` Bob's pool after the round; ``failure`` the channel error that ended the
    round (:func:`~qkd_circuits.channel.rounds.channel_failure`) or ``None``.
    """

    bootstrap: str
    round: int
    verified: bool
    released: bool
    pending: bool
    pool_bits_used: int
    pool_bits_added: int
    tag_bits: int
    forgery_bound: float | None
    pad_position: int | None
    epsilon: dict
    epsilon_lifetime: dict
    settled: list
    failures: int
    halted: bool
    alice_pending: bool
    alice_settled: list
    alice_released: bool
    pool_bits_available: int
    pool_position: int
    failure: str | None
    simulation_pool: bool


@dataclass(frozen=True, eq=False)
class EveSummary(_ReportPart):
    """``report.eve`` (simulations with an eavesdropper): how much of the sifted key Eve's results got right."""

    attack: dict | None
    attacked_fraction: float | None
    right_basis_fraction: float | None
    guess_error_right_basis: float | None


@dataclass(frozen=True)
class Report:
    """The report of one round; ``to_dict()`` is what ``qkd run --json`` prints.

    Field names are a contract (scripts and notebooks read them): add, never rename.  The parts
    (``qber``, ``cascade``, ``verification``, ``key_length``, ``auth``, ``eve``) are typed
    (:class:`QberSummary`...) and read like the dicts ``to_dict()`` gives them as
    (``report.qber.upper == report.qber["upper"]``); ``abort_reason`` is an
    :class:`~qkd_circuits.AbortReason` (a ``str``), printed as its value.
    """

    exchanges: int
    detected: int
    sifted: int
    qber: QberSummary
    aborted: bool
    abort_reason: AbortReason | None
    final_key_bits: int
    timings_s: dict
    backend: str
    mode: str
    seed: int | None
    stage: str = "final"
    sample_bits: int = 0
    leaked_ec_bits: int = 0
    cascade: CascadeSummary | None = None
    verification: VerificationSummary | None = None
    key_length: KeyLengthSummary | None = None
    alice_key_sha256: str | None = None
    bob_key_sha256: str | None = None
    auth: RoundAuthSummary | None = None
    eve: EveSummary | None = None
    provenance: dict = field(default_factory=dict)
    pending: bool = False  # Alice holds the key pending Bob's decision (see report.auth)
    abort_detail: str | None = None  # why a small round gave no key, and how large one would
    decoy_key_length: object | None = None  # decoy rounds: the composable DecoyKeyLength (to_dict: its dict)
    mitm: dict | None = None  # ``qkd run --mitm``: what the man-in-the-middle achieved (see MitmResult)
    protocol: str = "bb84"  # the round's protocol (qkd_circuits.protocols): bb84, bbm92, six-state, e91
    chsh: dict | None = None  # e91 only (absent from to_dict() otherwise): S from the test rounds (see run_round)

    def to_dict(self) -> dict:
        """Plain dicts, lists and scalars (a copy: changing it leaves the report as it was)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "chsh" and value is None:
                continue  # only E91 rounds have the part: the other protocols' report shapes stay as pinned
            if isinstance(value, _ReportPart):
                value = value.to_dict()
            elif isinstance(value, AbortReason):
                value = value.value
            elif f.name == "decoy_key_length" and value is not None:
                value = value.to_dict()
            out[f.name] = copy.deepcopy(value)
        return out

    def raise_for_abort(self) -> None:
        """Raise the :class:`~qkd_circuits.ProtocolAborted` this round ended with, if any."""
        if not self.aborted:
            return
        if self.abort_reason is AbortReason.QBER_TOO_HIGH:
            q = self.qber
            raise QBERTooHigh(q.upper, q.threshold, q.estimate)
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


def _eve_summary(record: MeasurementRecord, sifted: np.ndarray) -> EveSummary | None:
    """How much of the sifted key Eve's own results got right (where she attacked)."""
    if not record.has_eve:
        return None
    attacked = sifted & record.eve_active
    # Eve's result is a guess of Alice's bit in Eve's basis; after basis reconciliation she
    # knows which of her guesses were in the right basis (Breidbart guesses count everywhere).
    right_basis = attacked & ((record.eve_bases == record.alice_bases) | (record.eve_bases == 2))
    correct = int((record.eve_results[right_basis] == record.alice_bits[right_basis]).sum())
    n_sifted = int(sifted.sum())
    return EveSummary(
        attack=record.provenance.models.get("eve"),
        attacked_fraction=float(attacked.sum() / n_sifted) if n_sifted else None,
        right_basis_fraction=float(right_basis.sum() / n_sifted) if n_sifted else None,
        guess_error_right_basis=float(1 - correct / right_basis.sum()) if right_basis.any() else None,
    )


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

    The protocol is the record's (``record.provenance.protocol``): without ``config`` the
    defaults of :class:`PostProcessingConfig` with that protocol and its
    :attr:`~qkd_circuits.protocols.Protocol.abort_qber`; a ``config`` naming another protocol
    is refused.

    Raises:
        KeyPoolExhausted: a pool cannot pay for this round's tags (checked before any work).
        ConfigurationError: a seeded record with a real pool, a config of another protocol than
            the record's, or inconsistent arguments.
        RecordError: this record was processed with these pools before.
        LinkHalted: a pool halted after repeated authentication failures.
    """
    config = _round_config(record, config)
    alice_pool, bob_pool, replenish_bits = _round_pools(alice_pool, bob_pool, alice_pki, bob_pki, round_number,
                                                        replenish_bits, pki_pool_bits)
    ends = _authenticated_ends(record, config, alice_pool, bob_pool, alice_pki, bob_pki, replenish_bits, attack)
    t0 = time.perf_counter()
    ob, failure = drive_authenticated(ends.bob, ends.bob_end)
    auth_seconds = max(time.perf_counter() - t0 - sum(ob.timings_s.values()), 0.0)
    if alice_pki is not None:
        alice_pool, bob_pool = _pools_seeded_by_pki(ends, record, alice_pool, bob_pool)
    timings = {**(timings_s or {}), **ob.timings_s, "authentication": auth_seconds}
    report = _report(record, config, ends, ob, failure, bob_pool, timings)
    pools = (alice_pool, bob_pool) if alice_pool is not None else None
    return BB84Result(report, record, ends.alice_end.released_key, ends.bob_end.released_key, pools)


def _round_config(record: MeasurementRecord, config: PostProcessingConfig | None) -> PostProcessingConfig:
    """The post-processing configuration of ``record``'s protocol (see :func:`postprocess`)."""
    from .protocols import get_protocol

    name = record.provenance.protocol
    if config is None:
        return PostProcessingConfig() if name == "bb84" else PostProcessingConfig(
            protocol=name, abort_qber=get_protocol(name).abort_qber)
    if config.protocol != name:
        raise ConfigurationError(f"the record is a {name} round but the post-processing configuration is for "
                                 f"{config.protocol}: give PostProcessingConfig(protocol={name!r}, ...)")
    return config


def _round_pools(alice_pool: AuthKeyPool | None, bob_pool: AuthKeyPool | None, alice_pki: PkiIdentity | None,
                 bob_pki: PkiIdentity | None, round_number: int | None, replenish_bits: int,
                 pki_pool_bits: int) -> tuple[AuthKeyPool | None, AuthKeyPool | None, int]:
    """Check :func:`postprocess`'s arguments; the round's pools (a demo PSK if none) and refill size."""
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
    return alice_pool, bob_pool, replenish_bits


@dataclass(frozen=True)
class _Ends:
    """The two parties of one in-process round and their authenticated ends."""

    alice: AliceParty
    bob: BobParty
    alice_end: AuthenticatedAlice
    bob_end: AuthenticatedBob


def _authenticated_ends(record: MeasurementRecord, config: PostProcessingConfig, alice_pool, bob_pool, alice_pki,
                        bob_pki, replenish_bits: int, attack) -> _Ends:
    """Admit each party's view to its pool, then build the parties and their ends (``attack`` between them)."""
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
    return _Ends(alice, bob, alice_end, bob_end)


def _pools_seeded_by_pki(ends: _Ends, record: MeasurementRecord, alice_pool, bob_pool) -> tuple:
    """After a PKI bootstrap that released both keys: the pools seeded from the round's key."""
    if ends.bob_end.released_key is None or not ends.alice_end.released:
        return alice_pool, bob_pool
    seeded = record.provenance.seed is not None
    return (AuthKeyPool(ends.alice_end.pki_seed, epoch=ends.alice_end.pki_epoch, bootstrap="pki", simulation=seeded),
            AuthKeyPool(ends.bob_end.pki_seed, epoch=ends.bob_end.pki_epoch, bootstrap="pki", simulation=seeded))


def _report(record: MeasurementRecord, config: PostProcessingConfig, ends: _Ends, ob: PartyOutcome,
            failure: str | None, bob_pool: AuthKeyPool | None, timings_s: dict) -> Report:
    """Assemble the round's :class:`Report` (Bob's outcome decides; Alice's fills in the study values)."""
    oa, alice_key, bob_key = ends.alice.outcome, ends.alice_end.released_key, ends.bob_end.released_key
    sifted = _sifted(record)
    true_errors = int((record.alice_bits[sifted] != record.bob_results[sifted]).sum())
    true_q = estimate_qber(true_errors, int(sifted.sum()), epsilon=config.qber_epsilon)
    aborted = bob_key is None  # Bob decides; also when the refill took the whole key
    p = record.provenance
    return Report(
        exchanges=len(record), detected=int(record.detected.sum()), sifted=ob.sifted_bits,
        qber=QberSummary.of(config.abort_qber, true_q.estimate if true_q.n else None, ob.qber,
                            _true_by_basis(record, sifted)),
        aborted=aborted, abort_reason=_abort_reason(ends, ob, failure) if aborted else None,
        final_key_bits=0 if aborted else len(bob_key), timings_s=timings_s,
        backend=p.backend, mode=p.mode, seed=p.seed,
        sample_bits=ob.ledger.sample_bits, leaked_ec_bits=ob.ledger.leak_ec, cascade=_cascade_summary(oa, ob),
        verification=VerificationSummary(**ob.verification) if ob.verification else None,
        key_length=KeyLengthSummary.of(ob.key_length) if ob.key_length else None,
        alice_key_sha256=alice_key.sha256() if alice_key else None,
        bob_key_sha256=bob_key.sha256() if bob_key else None,
        auth=_auth_summary(ends, failure, bob_pool), eve=_eve_summary(record, sifted), provenance=p.to_dict(),
        pending=bool(ends.alice_end.summary.pending),
        abort_detail=_abort_detail(record, config, ends, ob, failure) if aborted else None,
        decoy_key_length=ob.decoy_key_length, protocol=p.protocol,
    )


def _abort_detail(record: MeasurementRecord, config: PostProcessingConfig, ends: _Ends, ob: PartyOutcome,
                  failure: str | None) -> str | None:
    reason = _abort_reason(ends, ob, failure)
    per_pulse = ob.sifted_bits / len(record) if len(record) and ob.sifted_bits else None
    detail = explain_abort(config, reason, sifted=ob.sifted_bits, qber=ob.qber, sifted_per_pulse=per_pulse)
    p = record.provenance
    if reason is AbortReason.NO_KEY_LEFT_AFTER_REPLENISHMENT and ob.key_length is not None:
        refill = ends.bob_end.replenish_bits
        need = _delivery_needs(ob.qber.estimate if ob.qber is not None else 0.0, config, refill,
                               ob.sifted_bits / len(record) if len(record) else None)
        detail = (f"the round's {ob.key_length.length:,}-bit key went whole into the authentication pool, which takes "
                  f"the first {refill:,} bits of every key: {need}")
    if reason is AbortReason.QBER_TOO_HIGH and p.mode == "qrng" and not p.backend.startswith("aer"):
        # qrng draws the choices on the device with Hadamards and controlled rotations: on a device
        # their gate errors alone add percents of QBER (8.8% measured on fake:nairobi).
        detail = ((detail + "; ") if detail else "") + (
            f"in qrng mode the parties' random choices are drawn on {p.backend} with entangling gates, whose errors "
            "add to the QBER: try --mode prepared (one qubit per pulse, choices from this machine's CSPRNG)")
    return detail


def _delivery_needs(qber: float, config: PostProcessingConfig, refill_bits: int, sifted_per_pulse: float | None) -> str:
    """The smallest round that delivers a key after the pool refill, in sifted bits and pulses.

    The finite-key length at ``qber`` (the round's sample fraction and ε's, error correction at the
    design efficiency) must exceed the tag bits *and* the ``refill_bits`` the pool takes first:
    the protocol's :meth:`~qkd_circuits.protocols.Protocol.minimum_sifted_bits` with those as extra leakage.
    """
    from .postprocessing.protocol import DESIGN_F_EC, TAG_BITS
    from .protocols import get_protocol

    n = get_protocol(config.protocol).minimum_sifted_bits(
        min(qber, 0.499), sample_fraction=config.sample_fraction, f_ec=DESIGN_F_EC, extra_leak=TAG_BITS + refill_bits,
        eps_sec=config.eps_sec, eps_cor=config.eps_cor)
    if n is None:
        return f"at {qber:.2%} QBER no round size delivers a key"
    pulses = f" (about {math.ceil(n / sifted_per_pulse):,} pulses at this round's sifting rate)" \
        if sifted_per_pulse else ""
    return f"at {qber:.2%} QBER a round delivers a key from about {n:,} sifted bits{pulses}"


def _abort_reason(ends: _Ends, ob: PartyOutcome, failure: str | None) -> AbortReason | None:
    """Why the round gave Bob no key: the channel, a party's own abort, or a refill that took it all."""
    if failure:
        return AbortReason.AUTHENTICATION_FAILED
    reason = ob.abort_reason or ends.alice.outcome.abort_reason
    if reason:
        return AbortReason(reason)
    if ends.bob_end.summary.released and ends.bob_end.released_key is None:
        return AbortReason.NO_KEY_LEFT_AFTER_REPLENISHMENT
    return None


def _cascade_summary(oa: PartyOutcome, ob: PartyOutcome) -> CascadeSummary | None:
    """Bob's Cascade run, with its true error count and efficiency where the simulation knows them."""
    if not ob.cascade:
        return None
    extra = {}
    if oa.reconciled_key is not None and ob.key_before_reconciliation is not None \
            and oa.reconciled_key.size == ob.key_before_reconciliation.size:
        # f = leaked / (n·h(Q)) with Q the true error rate of the bits Cascade worked on.
        errors = int((oa.reconciled_key != ob.key_before_reconciliation).sum())
        q_key = errors / oa.reconciled_key.size
        extra["errors_before"] = errors
        if 0 < q_key < 0.5:
            extra["efficiency"] = ob.cascade["leaked_bits"] / (oa.reconciled_key.size * binary_entropy(q_key))
    return CascadeSummary(**ob.cascade, **extra)


def _auth_summary(ends: _Ends, failure: str | None, bob_pool: AuthKeyPool | None) -> RoundAuthSummary:
    """Bob's end's authentication summary, Alice's side of it, and Bob's pool after the round."""
    alice = ends.alice_end
    return RoundAuthSummary(
        **ends.bob_end.summary.to_dict(), alice_pending=alice.summary.pending,
        alice_settled=alice.summary.to_dict()["settled"], alice_released=alice.released,
        pool_bits_available=bob_pool.available_bits if bob_pool is not None else 0,
        pool_position=bob_pool.position if bob_pool is not None else 0, failure=failure,
        simulation_pool=bool(bob_pool is not None and bob_pool.simulation))


def classroom_report(record: MeasurementRecord, config: PostProcessingConfig | None = None, *,
                     timings_s: dict | None = None) -> Report:
    """A lesson's round (``qkd run --classroom``): sifting, then *every* sifted bit compared in public.

    A classroom shows what sifting keeps and what the error rate is; it does so by disclosing the
    whole sifted key, so no key is left, by design: the report is aborted with
    ``classroom_round`` and ``abort_detail`` says how large a round of this link would make a key
    (at the measured QBER, with the package's real sample and finite-key terms).  No
    reconciliation, no amplification, no authentication pool is touched.
    """
    from .analysis.finite_key import minimum_sifted_bits
    from .postprocessing.protocol import DESIGN_F_EC, TAG_BITS

    config = config or PostProcessingConfig()
    sifted = sift_mask(record.alice_bases, record.bob_bases, record.detected)
    n = int(sifted.sum())
    errors = int((record.alice_bits[sifted] != record.bob_results[sifted]).sum())
    measured = estimate_qber(errors, n, epsilon=config.qber_epsilon) if n else None
    if measured is None:
        detail = "no pulse was sifted: nothing to compare"
    else:
        need = minimum_sifted_bits(min(measured.estimate, 0.499), sample_fraction=config.sample_fraction,
                                   f_ec=DESIGN_F_EC, extra_leak=TAG_BITS, eps_sec=config.eps_sec, eps_cor=config.eps_cor)
        per_pulse = n / len(record)
        detail = (f"Alice and Bob compared all {n:,} sifted bits in public ({errors} differed, "
                  f"{measured.estimate:.2%}): nothing is left for a key. ") + (
            f"A real round discloses only a sample (sample_fraction={config.sample_fraction:g}); at this QBER its "
            f"key needs at least {need:,} sifted bits (about {math.ceil(need / per_pulse):,} pulses here), and "
            + _delivery_needs(measured.estimate, config, DEFAULT_REPLENISH_BITS, per_pulse).split(" QBER ", 1)[1]
            + f" once the first {DEFAULT_REPLENISH_BITS:,} bits have refilled the authentication pool"
            if need is not None
            else f"At {measured.estimate:.2%} QBER no round size gives a key: the channel is too noisy or someone "
                 "is listening")
    p = record.provenance
    return Report(
        exchanges=len(record), detected=int(record.detected.sum()), sifted=n,
        qber=QberSummary.of(config.abort_qber, measured.estimate if measured else None, measured),
        aborted=True, abort_reason=AbortReason.CLASSROOM_ROUND, final_key_bits=0, timings_s=dict(timings_s or {}),
        backend=p.backend, mode=p.mode, seed=p.seed, sample_bits=n, eve=_eve_summary(record, sifted),
        provenance=p.to_dict(), abort_detail=detail,
    )


def round_arguments(values: Mapping[str, Any]) -> dict:
    """:func:`run_bb84`'s keyword arguments ``mode``, ``backend``, ``channel``, ``detector``, ``eve``
    and ``config`` from round parameter values named as in :data:`qkd_circuits.params.PARAMETERS`.

    The one translation the command line (``qkd run``, ``alice``/``bob``) and a sweep's points
    share.  ``noise`` is a spec or a sequence of specs, each ``MODEL:P`` or several joined by
    ``+`` (``"none"``: none).  Raises :class:`~qkd_circuits.ConfigurationError` on a bad value.
    """
    from .quantum.models import Channel, Detector, parse_eve, parse_noise  # no qiskit in these

    noise = values["noise"]
    models = [part.strip() for item in ([noise] if isinstance(noise, str) else noise)
              for part in item.split("+") if part.strip() not in ("", "none")]
    channel_kw, detector_kw = parse_noise(models)
    return dict(
        mode=values["mode"], backend=values["backend"],
        channel=Channel(distance_km=values["distance_km"], alpha_db_per_km=values["alpha_db_per_km"], **channel_kw),
        detector=Detector(efficiency=values["detector_efficiency"], dark_count_probability=values["dark_count"],
                          **detector_kw),
        eve=parse_eve(values["eve"]),
        config=PostProcessingConfig(sample_fraction=values["sample_fraction"], abort_qber=values["abort_qber"],
                                    cascade=values["cascade"], eps_sec=values["eps_sec"], eps_cor=values["eps_cor"]),
    )


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


def run_round(exchanges: int = 100_000, *, protocol: str = "bb84", config: PostProcessingConfig | None = None,
              progress: Callable[[int, int], None] | None = None, alice_pool: AuthKeyPool | None = None,
              bob_pool: AuthKeyPool | None = None, round_number: int | None = None, attack=None,
              alice_pki: PkiIdentity | None = None, bob_pki: PkiIdentity | None = None,
              source: str | None = None, eve_arm: str | None = None, **exchange_options) -> BB84Result:
    """Run one round of ``protocol`` (``"bb84"``, ``"bbm92"``, ``"six-state"``, ``"e91"``): circuits, then
    the same two-party post-processing, authenticated channel and report as :func:`run_bb84`.

    ``protocol="bb84"`` is :func:`run_bb84` itself.  The others run
    :func:`~qkd_circuits.quantum.entangled.run_protocol_exchanges` (``backend``, ``channel``,
    ``detector``, ``eve``, ``seed``; BBM92 also ``source`` and ``eve_arm``), then
    :func:`postprocess`.  ``config``: default that of the protocol (its
    :attr:`~qkd_circuits.protocols.Protocol.abort_qber`: 11% for BB84 and BBM92, 12.6% for
    six-state); a config left at ``protocol="bb84"`` is taken for this protocol, keeping every
    other field as given.  ``mode`` may only be ``"prepared"`` (the parties' choices are inputs),
    ``lanes`` 1 and ``schedule`` ``"grouped"``; ``on_warning`` is accepted and has nothing to say.
    ``protocol="e91"``: :func:`~qkd_circuits.quantum.e91.run_e91` (``backend``, ``channel``,
    ``eve``, ``seed``, ``lanes``), the CHSH test first (abort ``chsh_not_violated`` at S_lower <= 2),
    then :func:`postprocess` of the key rounds; ``report.chsh`` holds S (see ``_run_e91_round``).
    """
    from .protocols import get_protocol

    proto = get_protocol(protocol)
    if proto.name == "bb84":
        if source is not None or eve_arm is not None:
            raise ConfigurationError("source and eve_arm place a BBM92 pair source; BB84 has none")
        return run_bb84(exchanges, config=config, progress=progress, alice_pool=alice_pool, bob_pool=bob_pool,
                        round_number=round_number, attack=attack, alice_pki=alice_pki, bob_pki=bob_pki,
                        **exchange_options)
    if proto.name == "e91":
        return _run_e91_round(exchanges, config=config, progress=progress, alice_pool=alice_pool, bob_pool=bob_pool,
                              round_number=round_number, attack=attack, alice_pki=alice_pki, bob_pki=bob_pki,
                              source=source, eve_arm=eve_arm, **exchange_options)
    from .quantum.entangled import run_protocol_exchanges  # the only route to qiskit from here

    wrong = {k: v for k, v, ok in (("mode", exchange_options.pop("mode", "prepared"), ("prepared",)),
                                   ("lanes", exchange_options.pop("lanes", None), (None, 1)),
                                   ("schedule", exchange_options.pop("schedule", "grouped"), ("grouped",)))
             if v not in ok}
    if wrong:
        raise ConfigurationError(f"the {proto.name} circuits run the parties' own choices, one lane, grouped "
                                 f"(mode='prepared', lanes=1, schedule='grouped'); got {wrong}")
    exchange_options.pop("on_warning", None)
    if config is None:
        config = PostProcessingConfig(protocol=proto.name, abort_qber=proto.abort_qber)
    elif config.protocol == "bb84":
        config = dataclasses.replace(config, protocol=proto.name)
    placement = {} if proto.name != "bbm92" else {"source": source or "middle", "eve_arm": eve_arm or "bob"}
    if proto.name != "bbm92" and (source is not None or eve_arm is not None):
        raise ConfigurationError(f"source and eve_arm place a BBM92 pair source; {proto.name} has none")
    t0 = time.perf_counter()
    record = run_protocol_exchanges(exchanges, protocol=proto.name, **placement, **exchange_options)
    if progress is not None:
        progress(exchanges, exchanges)
    return postprocess(record, config, alice_pool=alice_pool, bob_pool=bob_pool, round_number=round_number,
                       attack=attack, alice_pki=alice_pki, bob_pki=bob_pki,
                       timings_s={"quantum": time.perf_counter() - t0})


#: Failure probability of each one-sided CHSH bound of an E91 round (S_lower, S_upper; Hoeffding, ε/4 per correlator).
E91_CHSH_EPSILON = 1e-6


def _chsh_part(estimate) -> dict:
    """``report.chsh``: the test rounds' S with its bounds and the key rates beside it (public numbers only).

    ``disclosed_test_bits``: both parties announce their outcome on every test round (2 bits
    per round); those rounds are not key rounds (their settings differ), so no key bit is
    disclosed by it and nothing is subtracted from the key for it.
    """
    return {"s": estimate.s, "s_lower": estimate.s_lower, "s_upper": estimate.s_upper, "epsilon": estimate.epsilon,
            "test_rounds": estimate.test_rounds, "violation": estimate.violation,
            "di_rate": estimate.di_rate, "di_rate_lower": estimate.di_rate_lower, "bb84_rate": estimate.bb84_rate,
            "bb84_rate_lower": estimate.bb84_rate_lower, "key_rounds": estimate.key_rounds,
            "di_key_rounds": estimate.di_key_rounds, "disclosed_test_bits": 2 * estimate.test_rounds,
            "key_length_used": "device-dependent (TLGR 2012 on the key rounds); di_rate is reported, not used"}


def _run_e91_round(exchanges: int, *, config: PostProcessingConfig | None, progress, alice_pool, bob_pool,
                   round_number, attack, alice_pki, bob_pki, source, eve_arm, **exchange_options) -> BB84Result:
    """One E91 round (see :func:`run_round`): circuits, the CHSH test, then the post-processing of the key rounds.

    The test rounds' outcomes are announced and S is bounded first (:func:`~qkd_circuits.analysis.chsh.estimate_chsh`,
    ε = :data:`E91_CHSH_EPSILON`); with S_lower <= 2 the round aborts with ``chsh_not_violated``
    before any post-processing message, so it spends no pool bits.  Otherwise the key rounds
    (matching settings) go through the same sifting, estimation, Cascade, verification and
    amplification as BB84, over the authenticated channel, with BB84's finite-key length.
    """
    from .protocols import get_protocol

    if source is not None or eve_arm is not None:
        raise ConfigurationError("source and eve_arm place a BBM92 pair source; e91's source sits at Alice")
    wrong = {k: v for k, v, ok in (("mode", exchange_options.pop("mode", "prepared"), ("prepared",)),
                                   ("schedule", exchange_options.pop("schedule", "grouped"), ("grouped",)))
             if v not in ok}
    if wrong:
        raise ConfigurationError(f"the e91 circuits run the parties' own choices, grouped (mode='prepared', "
                                 f"schedule='grouped'); got {wrong}")
    exchange_options.pop("on_warning", None)
    detector = exchange_options.pop("detector", None)
    if detector is not None:
        from .quantum.models import Detector

        if detector != Detector():
            raise ConfigurationError("the e91 circuits model no detector (every pair is detected, fair sampling): "
                                     f"drop the detector settings, got {detector!r}")
    unknown = set(exchange_options) - {"backend", "channel", "eve", "seed", "lanes"}
    if unknown:
        raise ConfigurationError(f"the e91 circuits take backend, channel, eve, seed and lanes; got {sorted(unknown)} "
                                 "(no loss or detector model: every pair is detected, fair sampling)")
    proto = get_protocol("e91")
    if config is None:
        config = PostProcessingConfig(protocol=proto.name, abort_qber=proto.abort_qber)
    elif config.protocol == "bb84":
        config = dataclasses.replace(config, protocol=proto.name)
    from .quantum.e91 import run_e91_exchanges  # qiskit from here

    t0 = time.perf_counter()
    record, e91 = run_e91_exchanges(exchanges, **exchange_options)
    estimate = e91.estimate(epsilon=E91_CHSH_EPSILON)
    quantum_s = time.perf_counter() - t0
    if progress is not None:
        progress(exchanges, exchanges)
    chsh = _chsh_part(estimate)
    if estimate.violation:
        result = postprocess(record, config, alice_pool=alice_pool, bob_pool=bob_pool, round_number=round_number,
                             attack=attack, alice_pki=alice_pki, bob_pki=bob_pki, timings_s={"quantum": quantum_s})
        return dataclasses.replace(result, report=dataclasses.replace(result.report, chsh=chsh))
    sifted = _sifted(record)
    true_errors = int((record.alice_bits[sifted] != record.bob_results[sifted]).sum())
    true_q = estimate_qber(true_errors, int(sifted.sum()), epsilon=config.qber_epsilon)
    p = record.provenance
    report = Report(
        exchanges=len(record), detected=int(record.detected.sum()), sifted=int(sifted.sum()),
        qber=QberSummary.of(config.abort_qber, true_q.estimate if true_q.n else None, None,
                            _true_by_basis(record, sifted)),
        aborted=True, abort_reason=AbortReason.CHSH_NOT_VIOLATED, final_key_bits=0, timings_s={"quantum": quantum_s},
        backend=p.backend, mode=p.mode, seed=p.seed, eve=_eve_summary(record, sifted), provenance=p.to_dict(),
        abort_detail=(f"the {estimate.test_rounds:,} test rounds give S = {estimate.s:.3f}, S_lower = "
                      f"{estimate.s_lower:.3f} <= 2 at epsilon {estimate.epsilon:g}: no Bell violation at confidence, "
                      "so nothing certifies the pairs; the round stopped before any post-processing message"
                      + ("; the point estimate is above 2, so more test rounds may certify it" if estimate.s > 2 else "")),
        protocol=p.protocol, chsh=chsh)
    return BB84Result(report, record, None, None, None)


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
    alice_failure: AbortReason | None  # the reason each party's round ended without a key
    bob_failure: AbortReason | None
    report: Report | None = None  # the round's report, in the schema of every round (Bob's leg counts)

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
    t0 = time.perf_counter()
    link_ae = submit(exchanges, seed=seed, **exchange_options).result()  # Alice ↔ Eve (as Bob)
    link_eb = submit(exchanges, seed=None if seed is None else seed + 1, **exchange_options).result()  # Eve ↔ Bob
    quantum_s = time.perf_counter() - t0
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
        noticed = AbortReason.AUTHENTICATION_FAILED if failure else None
        responder_failure = noticed if not resp_end.summary.verified else None
        driver_failure = noticed if not drv_end.summary.verified else None
        resp_key, drv_key = resp_end.released_key, drv_end.released_key
        return resp_key, drv_key, responder_failure, driver_failure

    alice_key, eve_key_a, alice_failure, _ = leg(eve_as_bob, alice, eve_pool, alice_pool)
    eve_key_b, bob_key, _, bob_failure = leg(bob, eve_as_alice, bob_pool, eve_pool.copy())
    result = MitmResult(authenticated, alice_key, bob_key, eve_key_a, eve_key_b, alice_failure, bob_failure)
    timings = {"quantum": quantum_s, **bob.outcome.timings_s}
    return dataclasses.replace(result, report=_mitm_report(result, link_eb, config, bob.outcome, timings))


def _mitm_report(result: MitmResult, record: MeasurementRecord, config: PostProcessingConfig, ob: PartyOutcome,
                 timings_s: dict) -> Report:
    """A man-in-the-middle round's :class:`Report`: Bob's leg (Eve as Alice ↔ Bob) in the fields of every
    round, with ``mitm`` saying what Eve achieved.  Aborted unless both parties released a key."""
    alice_key, bob_key = result.alice_key, result.bob_key
    aborted = alice_key is None or bob_key is None
    reason = result.bob_failure or result.alice_failure or (AbortReason(ob.abort_reason) if ob.abort_reason else None)
    if aborted and reason is None:
        reason = AbortReason.NO_KEY_RELEASED
    sifted = sift_mask(record.alice_bases, record.bob_bases, record.detected)
    true_errors = int((record.alice_bits[sifted] != record.bob_results[sifted]).sum())
    true_q = estimate_qber(true_errors, int(sifted.sum()), epsilon=config.qber_epsilon)
    made = [k for k in (alice_key, bob_key) if k is not None]
    p = record.provenance
    return Report(
        exchanges=len(record), detected=int(record.detected.sum()), sifted=ob.sifted_bits,
        qber=QberSummary.of(config.abort_qber, true_q.estimate if true_q.n else None, ob.qber),
        aborted=aborted, abort_reason=reason if aborted else None,
        final_key_bits=0 if aborted else len(bob_key), timings_s=timings_s,
        backend=p.backend, mode=p.mode, seed=p.seed,
        sample_bits=ob.ledger.sample_bits, leaked_ec_bits=ob.ledger.leak_ec,
        key_length=KeyLengthSummary.of(ob.key_length) if ob.key_length else None,
        alice_key_sha256=None if aborted else alice_key.sha256(),
        bob_key_sha256=None if aborted else bob_key.sha256(),
        provenance=p.to_dict(),
        mitm={"authenticated": result.authenticated, "detected": result.detected,
              "alice_failure": result.alice_failure, "bob_failure": result.bob_failure,
              "key_shared_with": "eve" if made else None,
              "eve_holds_alice_key": bool(alice_key is not None and result.eve_key_with_alice is not None
                                          and result.eve_key_with_alice.matches(alice_key)),
              "eve_holds_bob_key": bool(bob_key is not None and result.eve_key_with_bob is not None
                                        and result.eve_key_with_bob.matches(bob_key))},
    )
