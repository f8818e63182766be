"""Decoy-state BB84 rounds on weak coherent pulses: simulated points and whole sessions.

The analysis of the data (per-intensity statistics, single-photon bounds) lives in
:mod:`qkd_circuits.analysis.decoy` and is re-exported here; this module runs the rounds.

:func:`simulate_point` is one point of the rate-versus-distance plot from circuits, with a
bootstrap error bar; :func:`run_decoy_session` is a whole round: circuits, decoy analysis, then
the usual two-party post-processing on the signal pulses with the key length given by the
single-photon bounds (:func:`~qkd_circuits.analysis.finite_key.decoy_key_length`).

Simulation caveats: the photon numbers come from the simulator's source model (a seeded
generator when ``seed`` is set), and, as for every simulated key, whoever runs the simulator
knows the key.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .analysis.decoy import DecoyAnalysis, IntensityStats, analyse, intensity_statistics
from .analysis.keyrate import PRESETS, LinkParameters, key_rate
from .exceptions import AbortReason, ConfigurationError
from .params import DECOY_EXCHANGES, default
from .postprocessing.protocol import PostProcessingConfig

__all__ = ["IntensityStats", "DecoyAnalysis", "intensity_statistics", "analyse", "simulate_point",
           "run_decoy_session", "DecoySessionResult", "link_models"]


def link_models(distance_km: float, link: LinkParameters = PRESETS["GYS"]):
    """The circuit models (Channel, Detector) of a :class:`~qkd_circuits.analysis.keyrate.LinkParameters`.

    Fibre loss α·L, Bob's efficiency η_Bob, dark counts Y_0 and misalignment e_det, so that
    the circuits' expected gain and error are the analytic model's.
    """
    from .quantum.models import Channel, Detector

    return (Channel(distance_km=distance_km, alpha_db_per_km=link.alpha_db_per_km, misalignment=link.e_detector),
            Detector(efficiency=link.eta_bob, dark_count_probability=link.y0))


def simulate_point(distance_km: float, *, link: LinkParameters = PRESETS["GYS"], mu: float = default("mu"),
                   nu: float = default("nu"), pulses: int = 1_000_000, p_signal: float = default("p_signal"),
                   p_decoy: float = default("p_decoy"), method: str = default("decoy_method"), eve=None,
                   seed: int | None = None, bootstrap: int = 200, backend: str = "aer") -> dict:
    """One simulated point of the rate-versus-distance curve, beside the analytic value.

    Runs ``pulses`` weak coherent pulses through circuits over ``distance_km`` of the link,
    analyses them (asymptotic bounds, as the analytic curve) and returns a flat dict with the
    simulated ``rate`` and ``rate_sd``, the ``analytic`` rate at the same μ and ν, and the
    per-intensity gains and error rates.
    """
    from .quantum.wcp import WeakCoherentSource, run_wcp_exchanges

    channel, detector = link_models(distance_km, link)
    source = WeakCoherentSource.vacuum_weak(mu, nu, p_signal=p_signal, p_decoy=p_decoy)
    t0 = time.perf_counter()
    record = run_wcp_exchanges(pulses, source=source, channel=channel, detector=detector, eve=eve, seed=seed,
                               backend=backend)
    seconds = time.perf_counter() - t0
    a = analyse(record, method, link=link, u_alpha=0.0, bootstrap=bootstrap, seed=None if seed is None else seed + 1)
    analytic = key_rate(distance_km, method, link, mu=mu, nu=nu).rate
    return {"distance_km": float(distance_km), "method": method, "mu": mu, "nu": nu, "pulses": pulses,
            "seed": seed, "rate": a.rate, "rate_sd": a.rate_sd, "analytic": analytic,
            "y1": a.estimate.y1, "e1": a.estimate.e1,
            **{f"gain_{k}": v.gain for k, v in a.stats.items()}, **{f"qber_{k}": v.qber for k, v in a.stats.items()},
            "quantum_seconds": seconds, "eve": None if eve is None else eve.to_dict()}


@dataclass(frozen=True)
class DecoySessionResult:
    """A decoy-state round: the decoy analysis and the post-processing result on the signal pulses.

    ``bb84`` is ``None`` when the decoy check already failed (no single photons certified):
    the round aborts before any post-processing and consumes nothing from the pools.
    ``aborted``/``abort_reason`` cover both stages.
    """

    analysis: DecoyAnalysis
    bb84: object | None
    record: object = field(repr=False)
    decoy_abort_reason: AbortReason | None = None

    @property
    def aborted(self) -> bool:
        return self.decoy_abort_reason is not None or (self.bb84 is not None and self.bb84.report.aborted)

    @property
    def abort_reason(self) -> AbortReason | None:
        if self.decoy_abort_reason is not None:
            return self.decoy_abort_reason
        return self.bb84.report.abort_reason if self.bb84 is not None else None

    @property
    def alice_key(self):
        return None if self.bb84 is None else self.bb84.alice_key

    @property
    def bob_key(self):
        return None if self.bb84 is None else self.bb84.bob_key

    @property
    def eve_known_fraction(self) -> float:
        """Study only: the share of sifted signal bits Eve's kept photon revealed exactly."""
        r = self.record
        s = r.label_mask("signal") & r.sifted_mask()
        if not s.any() or not r.has_eve:
            return 0.0
        return float((r.eve_known[s] & (r.eve_results[s] == r.alice_bits[s])).mean())

    def to_dict(self) -> dict:
        report = self.bb84.report.to_dict() if self.bb84 is not None else None
        detail = NO_SINGLE_PHOTONS_DETAIL if self.decoy_abort_reason == NO_SINGLE_PHOTONS else None
        reason = None if self.abort_reason is None else str(self.abort_reason)
        return {"aborted": self.aborted, "abort_reason": reason, "abort_detail": detail,
                "decoy": self.analysis.to_dict(), "report": report,
                "pulses": len(self.record), "models": self.record.models,
                "eve_known_sifted_fraction": self.eve_known_fraction}


SESSION_METHODS = ("decoy-vacuum-weak", "gllp", "assume-single-photons")

#: The abort reason when the decoy bounds certify no single photons.
NO_SINGLE_PHOTONS = AbortReason.DECOY_CHECK_FAILED
NO_SINGLE_PHOTONS_DETAIL = ("the decoy bounds certify no single-photon detections: the data fit an attack that "
                            "knows every bit (e.g. photon-number splitting), or there are too few decoy and "
                            "vacuum counts for the fluctuation margin u_alpha (send more pulses)")


def run_decoy_session(pulses: int = DECOY_EXCHANGES, *, source=None, channel=None, detector=None, eve=None,
                      seed: int | None = None, method: str = default("decoy_method"), u_alpha: float = default("u_alpha"),
                      link: LinkParameters = PRESETS["GYS"], config: PostProcessingConfig | None = None,
                      backend: str = "aer", **postprocess_options) -> DecoySessionResult:
    """One decoy-state BB84 round: circuits, decoy analysis, post-processing of the signal pulses.

    Args:
        pulses: pulses Alice sends (all intensities).
        source: a :class:`~qkd_circuits.records.WeakCoherentSource` (default vacuum + weak,
            μ = 0.5, ν = 0.1).
        channel, detector: the link (see :func:`link_models` for the GYS one).
        eve: a :class:`~qkd_circuits.quantum.wcp.PhotonNumberSplitting` attack, or ``None``.
        seed: simulation seed (``None``: the parties' choices from :mod:`secrets`).
        method: ``"decoy-vacuum-weak"``; ``"gllp"`` ignores the decoys (no-decoy BB84, every
            multi-photon pulse counted as Eve's); ``"assume-single-photons"`` is the *insecure*
            textbook shortcut that treats every pulse as one photon (the TLGR formula on the
            QBER alone), kept to show what photon-number splitting does to it.
        u_alpha: standard deviations of statistical fluctuation in the single-photon bounds.
        link: supplies ``f_ec``/``q`` for the reported asymptotic rate.
        config: post-processing parameters; its ``single_photon`` is set from the analysis.
        **postprocess_options: passed to :func:`qkd_circuits.session.postprocess` (pools, PKI...).

    The round aborts with ``decoy_check_failed`` when the bounds leave no single photons (e.g.
    a photon-number-splitting attack caught by the decoys), before any post-processing.
    """
    from .quantum.wcp import WeakCoherentSource, run_wcp_exchanges
    from .session import postprocess

    if method not in SESSION_METHODS:
        raise ConfigurationError(f"method must be one of {', '.join(SESSION_METHODS)}; got {method!r}")
    source = source or WeakCoherentSource.vacuum_weak()
    t0 = time.perf_counter()
    record = run_wcp_exchanges(pulses, source=source, channel=channel, detector=detector, eve=eve, seed=seed,
                               backend=backend)
    quantum_s = time.perf_counter() - t0
    analysis = analyse(record, "decoy-vacuum-weak" if method == "decoy-vacuum-weak" else "gllp", link=link,
                       u_alpha=u_alpha)
    est = analysis.estimate
    config = config or PostProcessingConfig()
    if method == "assume-single-photons":
        config = replace(config, single_photon=None)
    elif not est.valid or est.q_mu <= 0:
        return DecoySessionResult(analysis, None, record, NO_SINGLE_PHOTONS)
    else:
        config = replace(config, single_photon=(min(1.0, est.q1 / est.q_mu), est.e1))
    m = record.label_mask("signal")
    signal = record.party_subset(m)  # the signal pulses, with the run's provenance
    bb84 = postprocess(signal, config, timings_s={"quantum": quantum_s}, **postprocess_options)
    return DecoySessionResult(analysis, bb84, record)
