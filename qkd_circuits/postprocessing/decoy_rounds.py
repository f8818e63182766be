"""The decoy-state part of a round: what the parties agree on, and the counts they exchange.

A decoy-state round on weak coherent pulses (efficient BB84 in the sense of Lim et al. 2014):
basis 0 (X) makes the key from the pulses of *every* intensity, basis 1 (Z) tests it.  After
sifting, in this order (each step a message of the authenticated protocol,
:mod:`qkd_circuits.hazmat.messages`):

1. Alice announces the intensity code of every sifted pulse (``IntensityReply``); Bob checks
   there is one per sifted pulse and that every code names an agreed intensity.
2. Bob discloses his bits of every sifted test-basis pulse and Alice hers (``TestBitsRequest`` /
   ``TestBitsReply``).  Both now hold the same detections per intensity in both bases and the
   test-basis errors per intensity; the test errors bound the QBER (the abort test) and, through
   the decoy bounds, the single-photon phase error.  A round whose bounds certify no single
   photons stops here (``decoy_check_failed``), before error correction discloses anything.
3. Error correction and verification on the key-basis bits, as in any round.
4. One decoy only (Rusca et al. 2018): the upper bound on vacuum detections needs the key-basis
   errors per intensity, which exist only once Bob's key is corrected; Bob announces them after
   verification (``KeyErrorsRequest``), and the announcement is counted as disclosed
   (``⌈log2(n_k + 1)⌉`` bits per intensity, the ``statistics`` entry of the leakage ledger).
5. Both compute ℓ with :func:`~qkd_circuits.analysis.finite_decoy.decoy_key_length` from these
   counts and the ledger's leak, and amplify.

Neither party ever sees the other's view: Bob learns the intensities only from Alice's message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..analysis.finite_decoy import METHODS, SAMPLINGS, BasisCounts, DecoyCounts
from ..exceptions import ConfigurationError

__all__ = ["DecoyProtocol", "KEY_BASIS", "TEST_BASIS", "count_bits"]

#: The basis whose sifted pulses make the key (Lim et al.'s X) and the one that tests it (Z).
KEY_BASIS, TEST_BASIS = 0, 1


def count_bits(detections: int) -> int:
    """Bits an announced count in 0..detections can carry: ⌈log2(detections + 1)⌉."""
    return math.ceil(math.log2(detections + 1)) if detections > 0 else 0


@dataclass(frozen=True)
class DecoyProtocol:
    """The public decoy parameters both parties agree on before the round.

    Attributes:
        labels: the intensity names, in code order (the record's ``source.labels``).
        intensities: mean photon number per label (same order).
        probabilities: Alice's probability of each label (same order, summing to 1).
        method: ``"lim2014"`` (three intensities, two decoys) or ``"rusca2018"`` (two, one decoy).
        sampling: the phase-error sampling bound, ``"serfling"`` (rigorous, default) or ``"fung"``.
    """

    labels: tuple[str, ...]
    intensities: tuple[float, ...]
    probabilities: tuple[float, ...]
    method: str = "lim2014"
    sampling: str = "serfling"

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "intensities", tuple(float(x) for x in self.intensities))
        object.__setattr__(self, "probabilities", tuple(float(x) for x in self.probabilities))
        if not (len(self.labels) == len(self.intensities) == len(self.probabilities)) or len(set(self.labels)) != len(self.labels):
            raise ConfigurationError("decoy labels, intensities and probabilities must be of one length, labels unique")
        if self.method not in METHODS:
            raise ConfigurationError(f"decoy method must be one of {', '.join(METHODS)}; got {self.method!r}")
        if self.sampling not in SAMPLINGS:
            raise ConfigurationError(f"decoy sampling must be one of {', '.join(SAMPLINGS)}; got {self.sampling!r}")
        want = 3 if self.method == "lim2014" else 2
        if len(self.labels) != want:
            raise ConfigurationError(f"{self.method} needs {want} intensities, the source has {len(self.labels)}")
        mu = sorted(self.intensities, reverse=True)
        if self.method == "lim2014" and not (mu[0] > mu[1] + mu[2] and mu[1] > mu[2] >= 0):
            raise ConfigurationError(f"lim2014 needs μ1 > μ2 + μ3 and μ2 > μ3 >= 0, got {mu}")
        if self.method == "rusca2018" and not mu[0] > mu[1] > 0:
            raise ConfigurationError(f"rusca2018 needs μ1 > μ2 > 0, got {mu}")
        # The rest (ranges, probabilities summing to 1) is checked by DecoyCounts.
        self.counts(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool))

    @classmethod
    def from_source(cls, source, method: str | None = None, sampling: str = "serfling") -> DecoyProtocol:
        """The protocol of a :class:`~qkd_circuits.records.WeakCoherentSource` (method by its size)."""
        labels = source.labels
        if method is None:
            method = "lim2014" if len(labels) == 3 else "rusca2018"
        return cls(labels, tuple(source.intensities[k] for k in labels), tuple(source.probabilities[k] for k in labels),
                   method, sampling)

    def check_codes(self, codes: np.ndarray) -> None:
        """Raise :class:`ValueError` unless every code names an agreed intensity."""
        if codes.size and int(codes.max()) >= len(self.labels):
            raise ValueError(f"intensity code {int(codes.max())} names no agreed intensity (0..{len(self.labels) - 1})")

    def _per_label(self, codes: np.ndarray, mask: np.ndarray | None = None) -> dict:
        sel = codes if mask is None else codes[mask]
        n = np.bincount(sel.astype(np.int64), minlength=len(self.labels))
        return {label: int(n[i]) for i, label in enumerate(self.labels)}

    def counts(self, key_codes: np.ndarray, test_codes: np.ndarray, test_errors: np.ndarray,
               key_errors: np.ndarray | None = None) -> DecoyCounts:
        """The round's :class:`~qkd_circuits.analysis.finite_decoy.DecoyCounts`.

        ``key_codes``/``test_codes`` are the intensity codes of the sifted key-basis and test-basis
        pulses, ``test_errors`` a mask over the test pulses; ``key_errors`` (per code, announced
        after verification) when known.
        """
        key_errs = None if key_errors is None else {label: int(key_errors[i]) for i, label in enumerate(self.labels)}
        return DecoyCounts(dict(zip(self.labels, self.intensities)), dict(zip(self.labels, self.probabilities)),
                           key=BasisCounts(self._per_label(key_codes), key_errs),
                           test=BasisCounts(self._per_label(test_codes), self._per_label(test_codes, test_errors)))

    def to_dict(self) -> dict:
        return {"labels": list(self.labels), "intensities": list(self.intensities),
                "probabilities": list(self.probabilities), "method": self.method, "sampling": self.sampling}
