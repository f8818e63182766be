"""Analysis: the formulas behind key lengths and key rates, as pure functions of public numbers.

- :mod:`~qkd_circuits.analysis.finite_key`: the finite-key length of one round (TLGR, with the
  decoy-state single-photon variant), the binary entropy, the ε checks;
- :mod:`~qkd_circuits.analysis.keyrate`: the asymptotic rate of BB84 with weak coherent pulses
  against fibre distance (GLLP, vacuum + weak decoy, infinite decoys) and the decoy bounds;
- :mod:`~qkd_circuits.analysis.decoy`: the decoy bounds applied to a record's per-intensity counts;
- :mod:`~qkd_circuits.analysis.finite_decoy`: composable finite-key lengths of decoy-state BB84
  (Lim et al. 2014, Rusca et al. 2018) from a round's counts, with their ε ledger.

This layer imports only numpy (and :mod:`qkd_circuits.params` for the defaults): no circuits,
no parties, no I/O.
"""

from . import decoy, finite_decoy, finite_key, keyrate

__all__ = ["decoy", "finite_decoy", "finite_key", "keyrate"]
