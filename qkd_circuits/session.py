"""One BB84 round, end to end, and its report.

Today the round ends at sifting: the quantum exchange on a real circuit, the sifted key and its
QBER with an exact confidence bound, and an abort when that bound exceeds the threshold.  Error
correction, privacy amplification and the final key length arrive with the post-processing
issue; until then ``final_key_bits`` is ``None`` ("not computed"), never a made-up number.

The QBER here is computed over *all* sifted bits from the simulator's view of both parties (the
"raw exchange" statistics); the parties' own sampled estimate replaces it with post-processing.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from .exceptions import ConfigurationError, QBERTooHigh
from .postprocessing.estimation import QBEREstimate, estimate_qber
from .postprocessing.sifting import sift_mask
from .records import MeasurementRecord

__all__ = ["Report", "BB84Result", "run_bb84", "report_from_record"]

#: Shor–Preskill: 1 − 2h(Q) > 0 needs Q < 11.0% (PRL 85, 441 (2000)).
SHOR_PRESKILL_QBER = 0.110


@dataclass(frozen=True)
class Report:
    """The report of one round; ``to_dict()`` is what ``qkd run --json`` prints.

    Field names are a contract (scripts and notebooks read them): add, never rename.
    """

    exchanges: int
    detected: int
    sifted: int
    qber: dict
    aborted: bool
    abort_reason: str | None
    final_key_bits: int | None
    timings_s: dict
    backend: str
    mode: str
    seed: int | None
    stage: str = "sifted"
    eve: dict | None = None
    provenance: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def raise_for_abort(self) -> None:
        """Raise the :class:`~qkd_circuits.ProtocolAborted` this round ended with, if any."""
        if self.aborted:
            q = self.qber
            raise QBERTooHigh(q["upper"], q["threshold"], q["estimate"])


@dataclass(frozen=True)
class BB84Result:
    """A round's :class:`Report` and the :class:`MeasurementRecord` behind it."""

    report: Report
    record: MeasurementRecord


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


def report_from_record(record: MeasurementRecord, *, abort_qber: float = SHOR_PRESKILL_QBER,
                       epsilon: float = 1e-10, timings_s: dict | None = None) -> Report:
    """Sift ``record``, estimate the QBER and decide whether the round aborts."""
    if not 0.0 < abort_qber <= 0.5:
        raise ConfigurationError(f"abort_qber must be in (0, 0.5], got {abort_qber!r}")
    timings = dict(timings_s or {})
    t0 = time.perf_counter()
    sifted = sift_mask(record.alice_bases, record.bob_bases, record.detected)
    timings["sifting"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    errors = int((record.alice_bits[sifted] != record.bob_results[sifted]).sum())
    q: QBEREstimate = estimate_qber(errors, int(sifted.sum()), epsilon=epsilon)
    timings["estimation"] = time.perf_counter() - t0
    aborted = q.upper > abort_qber
    p = record.provenance
    return Report(
        exchanges=len(record), detected=int(record.detected.sum()), sifted=int(sifted.sum()),
        qber={**q.to_dict(), "threshold": abort_qber, "method": "all sifted bits (simulator view)"},
        aborted=aborted, abort_reason=QBERTooHigh.reason if aborted else None,
        final_key_bits=None, timings_s=timings, backend=p.backend, mode=p.mode, seed=p.seed,
        eve=_eve_summary(record, sifted), provenance=p.to_dict(),
    )


def run_bb84(exchanges: int = 10_000, *, abort_qber: float = SHOR_PRESKILL_QBER,
             epsilon: float = 1e-10, progress: Callable[[int, int], None] | None = None,
             **exchange_options) -> BB84Result:
    """Run one BB84 round: circuits on a backend, sifting, QBER with its bound.

    Args:
        exchanges: pulses Alice sends.
        abort_qber: abort when the QBER upper bound exceeds this (default: the Shor–Preskill
            11% limit for one-way post-processing).
        epsilon: failure probability of the QBER bound.
        progress: called as ``progress(done, total)`` after each job.
        **exchange_options: ``mode``, ``backend``, ``channel``, ``detector``, ``eve``,
            ``seed``, ``lanes``, ``schedule``, as for :func:`qkd_circuits.submit`.

    Returns:
        A :class:`BB84Result`; an aborted round has ``report.aborted`` set (it does not raise:
        call ``report.raise_for_abort()`` for that).
    """
    from .quantum.execution import submit  # the only route to qiskit from here

    t0 = time.perf_counter()
    record = submit(exchanges, **exchange_options).result(progress=progress)
    timings = {"quantum": time.perf_counter() - t0}
    report = report_from_record(record, abort_qber=abort_qber, epsilon=epsilon, timings_s=timings)
    return BB84Result(report=report, record=record)
