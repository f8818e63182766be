"""Sifting: keep the pulses Bob detected and measured in Alice's basis.

:func:`sift_mask` is the one sifting rule of the package: records
(:meth:`~qkd_circuits.MeasurementRecord.sifted_mask`, which weak-coherent-pulse records share),
the session's simulator-side statistics and the studies all call it.  It computes the mask from
both views at once (the simulator's view); the parties themselves sift through messages in
:mod:`qkd_circuits.postprocessing.protocol`.

Bit convention (as everywhere at layer boundaries): bases are ``uint8`` 0/1 arrays (``bool`` is
accepted), ``detected`` and the returned mask are ``bool``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sift_mask"]


def sift_mask(alice_bases: np.ndarray, bob_bases: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """``bool`` mask, shape (n,): Bob clicked and the bases agree.

    Args:
        alice_bases, bob_bases: ``uint8`` (or ``bool``) 0/1 arrays, shape (n,), 0 = Z, 1 = X.
        detected: ``bool`` mask, shape (n,).

    Examples:
        >>> sift_mask(np.array([0, 1, 1, 0], np.uint8), np.array([0, 0, 1, 0], np.uint8),
        ...           np.array([True, True, True, False]))
        array([ True, False,  True, False])
    """
    alice_bases, bob_bases, detected = (np.asarray(a, dtype=bool) for a in (alice_bases, bob_bases, detected))
    if not alice_bases.shape == bob_bases.shape == detected.shape or alice_bases.ndim != 1:
        raise ValueError(
            f"bases and detection flags must be 1-D arrays of one length, got shapes "
            f"{alice_bases.shape}, {bob_bases.shape}, {detected.shape}"
        )
    return detected & (alice_bases == bob_bases)
