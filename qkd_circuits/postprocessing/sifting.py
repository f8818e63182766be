"""Sifting: keep the pulses Bob detected and measured in Alice's basis.

:func:`sift_mask` computes the mask from both views at once (the simulator's view, for studies
and reports); the parties themselves sift through messages in
:mod:`qkd_circuits.postprocessing.protocol`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sift_mask"]


def sift_mask(alice_bases: np.ndarray, bob_bases: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """Bool mask, shape (n,): Bob clicked and the bases agree.

    Args:
        alice_bases, bob_bases: bool arrays, shape (n,), 0 = Z, 1 = X.
        detected: bool array, shape (n,).
    """
    alice_bases, bob_bases, detected = (np.asarray(a, dtype=bool) for a in (alice_bases, bob_bases, detected))
    if not alice_bases.shape == bob_bases.shape == detected.shape or alice_bases.ndim != 1:
        raise ValueError(
            f"bases and detection flags must be 1-D arrays of one length, got shapes "
            f"{alice_bases.shape}, {bob_bases.shape}, {detected.shape}"
        )
    return detected & (alice_bases == bob_bases)
