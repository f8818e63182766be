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
from .postprocessing.decoy_rounds import DecoyProtocol
from .postprocessing.protocol import PostProcessingConfig

__all__ = ["IntensityStats", "DecoyAnalysis", "intensity_statistics", "analyse", "simulate_point",
           "run_decoy_session", "DecoySessionResult", "link_models", "one_decoy_source", "COMPOSABLE_METHODS"]


def link_models(distance_km: float, link: LinkParameters = PRESETS["GYS"]):
    """The circuit models (Channel, Detector) of a :class:`~qkd_circuits.analysis.keyrate.LinkParameters`.

    Fibre loss α·L, Bob's efficiency η_Bob, dark counts Y_0 and misalignment e_det, so that
    the circuits' expected gain and error are the analytic model's.  The circuits have no
    afterpulsing: a link with ``afterpulse > 0`` is refused rather than silently simulated
    without it (use ``link.with_(afterpulse=0.0)``, and say so).
    """
    from .quantum.models import Channel, Detector

    if getattr(link, "afterpulse", 0.0):
        raise ConfigurationError(f"the circuits do not model afterpulsing; link {link.name!r} has afterpulse="
                                 f"{link.afterpulse} (use link.with_(afterpulse=0.0) to simulate it without)")

    return (Channel(distance_km=distance_km, alpha_db_per_km=link.alpha_db_per_km, misalignment=link.e_detector),
            Detector(efficiency=link.eta_bob, dark_count_probability=link.y0))


def simulate_point(distance_km: float, *, link: LinkParameters = PRESETS["GYS"], mu: float = default("mu"),
                   nu: float = default("nu"), pulses: int = 1_000_000, p_signal: float = default("p_signal"),
                   p_decoy: float = default("p_decoy"), method: str = "decoy-vacuum-weak", eve=None,
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
    method: str = "decoy-vacuum-weak"

    @property
    def key_length(self):
        """The composable :class:`~qkd_circuits.analysis.finite_decoy.DecoyKeyLength` of the round
        (``None`` for the estimate methods, or when the round stopped before the bound)."""
        return None if self.bb84 is None else self.bb84.report.decoy_key_length

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
        detail = NO_SINGLE_PHOTONS_DETAIL if self.abort_reason == NO_SINGLE_PHOTONS else None
        if detail is None and self.bb84 is not None:
            detail = self.bb84.report.abort_detail
        reason = None if self.abort_reason is None else str(self.abort_reason)
        return {"aborted": self.aborted, "abort_reason": reason, "abort_detail": detail, "method": self.method,
                "composable": self.method in COMPOSABLE_METHODS,
                "decoy": self.analysis.to_dict(), "report": report,
                "pulses": len(self.record), "models": self.record.models,
                "eve_known_sifted_fraction": self.eve_known_fraction}


#: The composable finite-key analyses (the key length bounds the round's own counts).
COMPOSABLE_METHODS = ("lim2014", "rusca2018")
SESSION_METHODS = COMPOSABLE_METHODS + ("decoy-vacuum-weak", "gllp", "assume-single-photons")

#: The abort reason when the decoy bounds certify no single photons.
NO_SINGLE_PHOTONS = AbortReason.DECOY_CHECK_FAILED
NO_SINGLE_PHOTONS_DETAIL = ("the decoy bounds certify no single-photon detections: the data fit an attack that "
                            "knows every bit (e.g. photon-number splitting), or there are too few decoy and "
                            "vacuum counts for the fluctuation margin u_alpha (send more pulses)")


def one_decoy_source(mu: float = default("mu"), nu: float = default("nu"), *,
                     p_signal: float = default("p_signal")):
    """Signal μ and one weak decoy ν, no vacuum (Rusca et al. 2018), picked with odds p_signal : 1 − p_signal."""
    from .quantum.wcp import WeakCoherentSource

    if not 0 < nu < mu:
        raise ConfigurationError(f"one decoy needs 0 < nu < mu, got mu={mu}, nu={nu}")
    if not 0 < p_signal < 1:
        raise ConfigurationError(f"p_signal must be in (0, 1) with one decoy, got {p_signal}")
    return WeakCoherentSource({"signal": mu, "decoy": nu}, {"signal": p_signal, "decoy": 1.0 - p_signal})


def run_decoy_session(pulses: int = DECOY_EXCHANGES, *, source=None, channel=None, detector=None, eve=None,
                      seed: int | None = None, method: str = default("decoy_method"), u_alpha: float = default("u_alpha"),
                      link: LinkParameters = PRESETS["GYS"], config: PostProcessingConfig | None = None,
                      backend: str = "aer", sampling: str = "serfling", key_basis_probability: float = 0.5,
                      **postprocess_options) -> DecoySessionResult:
    """One decoy-state BB84 round: circuits, then the two parties' post-processing.

    Args:
        pulses: pulses Alice sends (all intensities).
        source: a :class:`~qkd_circuits.records.WeakCoherentSource` (default: vacuum + weak, μ =
            0.5, ν = 0.1, for ``rusca2018`` :func:`one_decoy_source`).
        channel, detector: the link (see :func:`link_models` for the GYS one).
        eve: a :class:`~qkd_circuits.quantum.wcp.PhotonNumberSplitting` attack, or ``None``.
        seed: simulation seed (``None``: the parties' choices from :mod:`secrets`).
        method: how the key length is bounded.

            * ``"lim2014"`` (default, three intensities) and ``"rusca2018"`` (two): the composable
              finite-key bounds of :mod:`qkd_circuits.analysis.finite_decoy`, computed by both
              parties from the counts they exchange as messages
              (:mod:`qkd_circuits.postprocessing.decoy_rounds`); the key comes from the key basis
              of every intensity, every test-basis bit is disclosed.
            * ``"decoy-vacuum-weak"``: the earlier *estimate* — GLLP's asymptotic formula with
              Gaussian ``u_alpha``-σ margins on the signal pulses; not composable, kept to compare.
            * ``"gllp"``: the same estimate without decoys (every multi-photon pulse counted as Eve's).
            * ``"assume-single-photons"``: the *insecure* textbook shortcut that treats every pulse
              as one photon, kept to show what photon-number splitting does to it.
        u_alpha: the estimate methods' margin (standard deviations); unused by the composable ones.
        link: supplies ``f_ec``/``q`` for the reported asymptotic rate.
        config: post-processing parameters (ε_sec, ε_cor, Cascade...); the method sets its
            ``decoy`` or ``single_photon``.
        sampling: the composable methods' phase-error sampling bound (``"serfling"`` or ``"fung"``).
        key_basis_probability: each party's probability of the key basis (0.5: symmetric BB84;
            more spends fewer pulses on the test basis, as Lim et al.'s optimised protocol does;
            :func:`qkd_circuits.analysis.finite_rate.finite_key_rate` reports the best value).
            The estimate methods assume symmetric bases and refuse anything else.
        **postprocess_options: passed to :func:`qkd_circuits.session.postprocess` (pools, PKI...).

    The round aborts with ``decoy_check_failed`` when the bounds leave no single photons (e.g.
    a photon-number-splitting attack caught by the decoys), before error correction.
    ``result.analysis`` is the asymptotic decoy analysis of the whole record (a study value).
    """
    from .quantum.wcp import WeakCoherentSource, run_wcp_exchanges
    from .session import postprocess

    if method not in SESSION_METHODS:
        raise ConfigurationError(f"method must be one of {', '.join(SESSION_METHODS)}; got {method!r}")
    if source is None:
        source = one_decoy_source() if method == "rusca2018" else WeakCoherentSource.vacuum_weak()
    config = config or PostProcessingConfig()
    decoy = DecoyProtocol.from_source(source, method, sampling) if method in COMPOSABLE_METHODS else None
    if decoy is None and key_basis_probability != 0.5:
        raise ConfigurationError(f"method {method!r} assumes symmetric bases; key_basis_probability must be 0.5 "
                                 "(biased bases need a composable method: lim2014 or rusca2018)")
    t0 = time.perf_counter()
    record = run_wcp_exchanges(pulses, source=source, channel=channel, detector=detector, eve=eve, seed=seed,
                               backend=backend, key_basis_probability=key_basis_probability)
    quantum_s = time.perf_counter() - t0
    has_decoys = {"decoy", "vacuum"} <= set(source.labels)
    analysis = analyse(record, "decoy-vacuum-weak" if has_decoys and method != "gllp" else "gllp", link=link,
                       u_alpha=u_alpha)
    if decoy is not None:
        config = replace(config, single_photon=None, decoy=decoy)
        bb84 = postprocess(record, config, timings_s={"quantum": quantum_s}, **postprocess_options)
        return DecoySessionResult(analysis, bb84, record, method=method)
    est = analysis.estimate
    if method == "assume-single-photons":
        config = replace(config, single_photon=None, decoy=None)
    elif not est.valid or est.q_mu <= 0:
        return DecoySessionResult(analysis, None, record, NO_SINGLE_PHOTONS, method=method)
    else:
        config = replace(config, single_photon=(min(1.0, est.q1 / est.q_mu), est.e1), decoy=None)
    m = record.label_mask("signal")
    signal = record.party_subset(m)  # the signal pulses, with the run's provenance
    bb84 = postprocess(signal, config, timings_s={"quantum": quantum_s}, **postprocess_options)
    return DecoySessionResult(analysis, bb84, record, method=method)
