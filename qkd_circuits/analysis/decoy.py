"""Decoy-state analysis of weak-coherent-pulse data: per-intensity statistics, single-photon bounds.

After the quantum phase Alice announces every pulse's intensity label; the parties sift each
intensity separately.  The decoy and vacuum pulses are for estimation only: their sifted bits
are all disclosed, giving ``Q_ν, E_ν`` and ``Q_0 = Y_0``.  The signal pulses make the key; their
gain ``Q_μ`` is public (Bob announces which pulses clicked) and their error rate ``E_μ`` is known
after error correction.  From these :func:`analyse` bounds the single-photon yield and error
(:func:`qkd_circuits.analysis.keyrate.decoy_estimate`), and the rate per pulse follows from GLLP.

Pure numpy on a record's public counts: no circuits, no post-processing.  The rounds that use
it are in :mod:`qkd_circuits.decoy`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from ..exceptions import ConfigurationError
from .keyrate import PRESETS, DecoyEstimate, LinkParameters, decoy_estimate, rate_from_estimate

__all__ = ["IntensityStats", "DecoyAnalysis", "intensity_statistics", "analyse"]


@dataclass(frozen=True)
class IntensityStats:
    """Counts of one intensity: pulses sent, clicks, sifted bits and errors among them."""

    label: str
    mu: float
    pulses: int
    clicks: int
    sifted: int
    errors: int

    @property
    def gain(self) -> float:
        return self.clicks / self.pulses if self.pulses else 0.0

    @property
    def qber(self) -> float:
        return self.errors / self.sifted if self.sifted else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "gain": self.gain, "qber": self.qber}


def intensity_statistics(record) -> dict[str, IntensityStats]:
    """Per-intensity counts of a weak-coherent-pulse record (:class:`~qkd_circuits.records.WcpRecord`,
    or any :class:`~qkd_circuits.MeasurementRecord` with intensity labels)."""
    sifted = record.sifted_mask()
    wrong = record.bob_results != record.alice_bits
    out = {}
    for label in record.source.labels:
        m = record.label_mask(label)
        s = m & sifted
        out[label] = IntensityStats(label, float(record.source.intensities[label]), int(m.sum()),
                                    int((m & record.detected).sum()), int(s.sum()), int((s & wrong).sum()))
    return out


def _estimate(stats: dict, method: str, u_alpha: float) -> DecoyEstimate:
    sig = stats["signal"]
    if method == "gllp":
        return decoy_estimate("gllp", mu=sig.mu, q_mu=sig.gain, e_mu=sig.qber,
                              pulses={"signal": sig.pulses}, u_alpha=u_alpha)
    if "decoy" not in stats or "vacuum" not in stats:
        raise ConfigurationError("the vacuum + weak decoy method needs 'decoy' and 'vacuum' intensities in the source")
    dec, vac = stats["decoy"], stats["vacuum"]
    return decoy_estimate("decoy-vacuum-weak", mu=sig.mu, q_mu=sig.gain, e_mu=sig.qber, nu=dec.mu, q_nu=dec.gain,
                          e_nu=dec.qber, q_vacuum=vac.gain,
                          pulses={"signal": sig.pulses, "decoy": dec.pulses, "vacuum": vac.pulses}, u_alpha=u_alpha)


@dataclass(frozen=True)
class DecoyAnalysis:
    """The decoy analysis of one run.

    ``rate`` is the GLLP rate in bits per signal pulse computed from the observed counts;
    ``rate_sd`` its standard deviation from a parametric bootstrap of those counts (binomial
    resampling of clicks and errors per intensity), ``None`` when not requested.
    """

    method: str
    stats: dict
    estimate: DecoyEstimate
    rate: float
    rate_sd: float | None
    u_alpha: float

    def to_dict(self) -> dict:
        return {"method": self.method, "u_alpha": self.u_alpha, "rate": self.rate, "rate_sd": self.rate_sd,
                "estimate": self.estimate.to_dict(),
                "intensities": {k: v.to_dict() for k, v in self.stats.items()}}


def analyse(record, method: str = "decoy-vacuum-weak", *, link: LinkParameters = PRESETS["GYS"],
            u_alpha: float = 0.0, bootstrap: int = 0, seed: int | None = None) -> DecoyAnalysis:
    """Single-photon bounds and the GLLP rate from a weak-coherent-pulse record.

    Args:
        record: a :class:`~qkd_circuits.records.WcpRecord`.
        method: ``"decoy-vacuum-weak"`` or ``"gllp"`` (ignore the decoys).
        link: supplies the error-correction inefficiency ``f_ec`` and the sifting factor ``q``
            of the rate formula (the physical parameters come from the data).
        u_alpha: standard deviations of statistical fluctuation in the bounds; the default 0 is
            the asymptotic analysis (a round's margin, the ``u_alpha`` round parameter, is what
            :func:`~qkd_circuits.decoy.run_decoy_session` passes).
        bootstrap: resamples for the error bar (0: none).
        seed: the bootstrap's generator seed (statistics, not the protocol).
    """
    if method not in ("decoy-vacuum-weak", "gllp"):
        raise ConfigurationError(f"method must be 'decoy-vacuum-weak' or 'gllp', got {method!r}")
    stats = intensity_statistics(record)
    est = _estimate(stats, method, u_alpha)
    rate = rate_from_estimate(est, link)
    sd = None
    if bootstrap:
        rng = np.random.default_rng(seed)  # sim-rng: bootstrap resampling of public counts
        rates = []
        for _ in range(bootstrap):
            re = {}
            for label, s in stats.items():
                clicks = int(rng.binomial(s.pulses, s.gain)) if s.pulses else 0
                sifted = int(rng.binomial(clicks, s.sifted / s.clicks)) if s.clicks else 0
                errors = int(rng.binomial(sifted, s.qber)) if sifted else 0
                re[label] = replace(s, clicks=clicks, sifted=sifted, errors=errors)
            rates.append(rate_from_estimate(_estimate(re, method, u_alpha), link))
        sd = float(np.std(rates, ddof=1))
    return DecoyAnalysis(method, stats, est, rate, sd, u_alpha)
