"""One BB84 round, end to end, and its report.

The quantum exchange runs on a real circuit (:mod:`qkd_circuits.quantum`); then Alice and Bob,
as two parties that share only messages (:mod:`qkd_circuits.postprocessing.protocol`), sift,
estimate the QBER on a disclosed sample, reconcile with Cascade, verify with a universal hash
and amplify privacy with Toeplitz hashing to the finite-key length.  The report says what each
step disclosed and cost.

The messages travel over a plain in-memory call today; the authenticated channel comes with the
authentication issue.  A key made on a simulator is known to the simulator's operator.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from .exceptions import ProtocolAborted, QBERTooHigh
from .postprocessing.estimation import estimate_qber
from .postprocessing.keylength import binary_entropy
from .postprocessing.protocol import AliceParty, BobParty, FinalKey, PostProcessingConfig, drive
from .postprocessing.sifting import sift_mask
from .records import MeasurementRecord

__all__ = ["Report", "BB84Result", "run_bb84", "postprocess"]

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
    eve: dict | None = None
    provenance: dict = field(default_factory=dict)

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


def _random_sources(seed: int | None):
    """The parties' public random choices: CSPRNG, or seeded for a reproducible simulation."""
    if seed is None:
        return secrets.token_bytes, secrets.token_bytes
    return (np.random.default_rng([seed, 1]).bytes,  # sim-rng: seeded simulation only
            np.random.default_rng([seed, 2]).bytes)  # sim-rng


def postprocess(record: MeasurementRecord, config: PostProcessingConfig | None = None, *,
                timings_s: dict | None = None) -> BB84Result:
    """Run the two-party post-processing on ``record`` and build the report.

    Alice gets only ``record.alice_view()`` and Bob only ``record.bob_view()``; the simulator's
    view is used for the report's study fields (``qber.true_sifted``, efficiency, Eve).  With a
    seeded record the parties' public random choices are seeded too, so the whole round
    (final key included) is reproducible; unseeded, they come from :mod:`secrets`.
    """
    config = config or PostProcessingConfig()
    alice_random, bob_random = _random_sources(record.provenance.seed)
    alice = AliceParty(record.alice_view(), config, random_bytes=alice_random)
    bob = BobParty(record.bob_view(), config, random_bytes=bob_random)
    ob = drive(bob, alice.handle)
    oa = alice.outcome
    sifted = sift_mask(record.alice_bases, record.bob_bases, record.detected)
    true_errors = int((record.alice_bits[sifted] != record.bob_results[sifted]).sum())
    true_q = estimate_qber(true_errors, int(sifted.sum()), epsilon=config.qber_epsilon)
    qber = {"threshold": config.abort_qber, "method": "sampled (Clopper-Pearson)",
            "true_sifted": true_q.estimate if true_q.n else None}
    qber.update(ob.qber.to_dict() if ob.qber else {"estimate": None, "upper": None})
    cascade = dict(ob.cascade) if ob.cascade else None
    if cascade and oa.reconciled_key is not None and ob.key_before_reconciliation is not None:
        # f = leaked / (n·h(Q)) with Q the true error rate of the bits Cascade worked on.
        errors = int((oa.reconciled_key != ob.key_before_reconciliation).sum())
        q_key = errors / oa.reconciled_key.size
        cascade["errors_before"] = errors
        if 0 < q_key < 0.5:
            cascade["efficiency"] = cascade["leaked_bits"] / (oa.reconciled_key.size * binary_entropy(q_key))
    aborted = oa.aborted or ob.aborted
    p = record.provenance
    report = Report(
        exchanges=len(record), detected=int(record.detected.sum()), sifted=ob.sifted_bits, qber=qber,
        aborted=aborted, abort_reason=ob.abort_reason or oa.abort_reason,
        final_key_bits=0 if aborted or ob.key is None else len(ob.key),
        timings_s={**(timings_s or {}), **ob.timings_s}, backend=p.backend, mode=p.mode, seed=p.seed,
        sample_bits=ob.ledger.sample_bits, leaked_ec_bits=ob.ledger.leak_ec, cascade=cascade,
        verification=ob.verification, key_length=ob.key_length.to_dict() if ob.key_length else None,
        alice_key_sha256=oa.key.sha256() if oa.key else None, bob_key_sha256=ob.key.sha256() if ob.key else None,
        eve=_eve_summary(record, sifted), provenance=p.to_dict(),
    )
    return BB84Result(report, record, oa.key, ob.key)


def run_bb84(exchanges: int = 100_000, *, config: PostProcessingConfig | None = None,
             progress: Callable[[int, int], None] | None = None, **exchange_options) -> BB84Result:
    """Run one BB84 round: circuits on a backend, then the two-party post-processing.

    Args:
        exchanges: pulses Alice sends.
        config: the post-processing parameters (sample fraction, abort threshold, Cascade
            preset, ε's); defaults to :class:`PostProcessingConfig`'s.
        progress: called as ``progress(done, total)`` after each quantum job.
        **exchange_options: ``mode``, ``backend``, ``channel``, ``detector``, ``eve``,
            ``seed``, ``lanes``, ``schedule``, as for :func:`qkd_circuits.submit`.

    Returns:
        A :class:`BB84Result`.  An aborted round has ``report.aborted`` set and no keys; it does
        not raise (``report.raise_for_abort()`` does).
    """
    from .quantum.execution import submit  # the only route to qiskit from here

    t0 = time.perf_counter()
    record = submit(exchanges, **exchange_options).result(progress=progress)
    return postprocess(record, config, timings_s={"quantum": time.perf_counter() - t0})
