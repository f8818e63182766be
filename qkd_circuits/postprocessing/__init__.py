"""Classical post-processing as two sans-I/O parties: sifting (the rule itself is
:func:`qkd_circuits.records.sift_mask`), QBER estimation, Cascade,
verification and privacy amplification (:mod:`~qkd_circuits.postprocessing.protocol`), with
the leakage ledger, and the decoy-state round's messages and counts
(:mod:`~qkd_circuits.postprocessing.decoy_rounds`).  Pure numpy, no qiskit.  The sharp primitives it is built from live in
:mod:`qkd_circuits.hazmat`; the key-length formulas in :mod:`qkd_circuits.analysis`."""

from . import decoy_rounds, estimation, ledger, protocol

__all__ = ["decoy_rounds", "estimation", "ledger", "protocol"]
