"""Finite-key secret key rates against fibre distance, from the expected counts of a link.

The composable key lengths of :mod:`~qkd_circuits.analysis.finite_decoy` (and, for an ideal
single-photon source, the TLGR length of :mod:`~qkd_circuits.analysis.finite_key`) applied to
the counts a link is *expected* to produce, with the protocol's free parameters optimised at
each distance: what a paper's "key rate vs distance for block size n" figure shows.

Link model (Lim, Curty, Walenta, Xu & Zbinden, PRA 89, 022307 (2014), Sec. IV, the "dedicated
fibre" simulation).  Alice sends intensity ``k`` with probability ``p_k`` and both parties pick
the key basis X with probability ``q_key`` (the test basis Z otherwise).  Per pulse::

    D_k = 1 − (1 − Y_0) exp(−η k)                  a detection (Y_0 = 2 p_dc: two detectors)
    R_k = D_k (1 + p_ap)                           a counted click, afterpulses included
    e_k = Y_0/2 + e_det (1 − exp(−η k)) + p_ap D_k / 2    an erroneous click

with ``η = η_Bob 10^(−α L/10)`` (:meth:`LinkParameters.transmittance`).  Lim et al. print the
*channel* transmittance η_ch = 10^(−α L/10) in the misalignment term.  Here the *system*
transmittance η = η_ch η_Bob is used (``misalignment="system"``, the default): the misalignment
error is a photon that is detected, but in the wrong detector, so it cannot be more likely than a
detection; with η_ch the term would be 1/η_Bob times larger than the photon detections it
mislabels (a QBER near e_det/η_Bob = 5% instead of 0.5% for the Lim2014 preset), and for links
with e_det > η_Bob errors would outnumber clicks.  ``misalignment="channel"`` reproduces the
printed form, to compare.  With ``p_ap = 0`` the model is Ma et al.'s (:func:`keyrate.gain`,
:func:`keyrate.error_gain`) up to the dark-count/photon coincidence ``Y_0 (1 − e^(−ηk))``.

Over ``N`` pulses, the key basis holds ``N q² p_k R_k`` detections and ``N q² p_k e_k`` errors
of intensity ``k``; the test basis the same with ``(1 − q)²`` (:func:`expected_counts`).  Error
correction leaks ``λ_EC = f_EC h(E_X) n_X`` bits.  A block is fixed either by its post-processing
size ``n_X`` (``n_key``; Lim et al.'s Fig. 1 curves) or by the pulses sent ``N`` (``pulses``).

Methods (:data:`METHODS`):

``"lim2014"``
    Two decoys (:func:`finite_decoy.lim2014`); free parameters q_key, p_1, p_2, μ1, μ2, with the
    weakest intensity μ3 fixed (``mu_weak``, 2e-4 as in Lim et al., or 0 for the vacuum).
``"rusca2018"``
    One decoy (:func:`finite_decoy.rusca2018`); free parameters q_key, p_1, μ1, μ2.
``"bb84-single-photon"``
    An ideal single-photon source on the same link (one photon per pulse: detection
    ``1 − (1 − Y_0)(1 − η)``), with the TLGR length (:func:`finite_key.finite_key_length`,
    tolerance fixed in advance at the expected QBER) and the sample size k optimised.

The optimiser (:func:`finite_key_rate`) starts from a scrambled Sobol set of points of the
parameter box (fixed seed), keeps the best few and refines each with bounded Nelder–Mead.  Where
no key is made the rate is flat zero; the search maximises the key length *before* it is
floored at 0 (negative where the finite-size terms win), so it climbs towards the region that
makes a key instead of wandering on a plateau.  Lim et al.'s security parameter
``ε_sec = κ ℓ`` (``kappa``, e.g. 1e-15 per bit) is solved as a fixed point; otherwise
``eps_sec`` is fixed.

These are expected-count curves: a simulated round's key is known to whoever runs the simulator,
and a curve says what a link *could* give, not that a key is secret.  Pure arithmetic (numpy,
scipy), no I/O.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy.optimize import minimize
from scipy.stats import qmc

from ..exceptions import ConfigurationError
from . import finite_decoy as fd
from .finite_key import KeyLength, binary_entropy, check_epsilon, finite_key_length
from .keyrate import PRESETS, LinkParameters, reach_km

__all__ = ["METHODS", "MISALIGNMENT", "FiniteRatePoint", "FiniteRateCurve", "link_probabilities",
           "expected_counts", "finite_key_rate", "finite_key_rate_curve", "max_finite_distance_km",
           "asymptotic_rate"]

METHODS = ("bb84-single-photon", "lim2014", "rusca2018")
MISALIGNMENT = ("system", "channel")

_DEFAULT_EPS_SEC = 1e-10
_SOBOL_POINTS = 64
_REFINED = 3


# --------------------------------------------------------------------------------------- link model

def _check_distance(distance_km) -> float:
    if isinstance(distance_km, bool) or not isinstance(distance_km, numbers.Real) or not math.isfinite(distance_km) \
            or distance_km < 0:
        raise ConfigurationError(f"distance_km must be a finite number >= 0, got {distance_km!r}")
    return float(distance_km)


def _check_misalignment(misalignment: str) -> None:
    if misalignment not in MISALIGNMENT:
        raise ConfigurationError(f"misalignment must be one of {', '.join(MISALIGNMENT)}; got {misalignment!r}")


def _check_link(link) -> None:
    if not isinstance(link, LinkParameters):
        raise TypeError(f"link must be LinkParameters, got {type(link).__name__}")


def link_probabilities(link: LinkParameters, distance_km: float, mu, *, misalignment: str = "system"):
    """``(D_k, R_k, e_k)`` per pulse of intensity ``mu`` (scalar or array), the module's model.

    Examples:
        >>> d, r, e = link_probabilities(PRESETS["Lim2014"], 50.0, 0.5)
        >>> round(float(r / d), 6), 0.004 < float(e / r) < 0.03
        (1.04, True)
    """
    _check_link(link)
    _check_misalignment(misalignment)
    distance_km = _check_distance(distance_km)
    mu = np.asarray(mu, dtype=float)
    eta = float(link.transmittance(distance_km))
    eta_mis = eta if misalignment == "system" else eta / link.eta_bob if link.eta_bob > 0 else 0.0
    d = 1.0 - (1.0 - link.y0) * np.exp(-eta * mu)
    r = d * (1.0 + link.afterpulse)
    e = 0.5 * link.y0 + link.e_detector * (1.0 - np.exp(-eta_mis * mu)) + 0.5 * link.afterpulse * d
    return d, r, np.minimum(e, r)


def _block(n_key, pulses) -> tuple[str, float]:
    if (n_key is None) == (pulses is None):
        raise ConfigurationError("give exactly one of n_key (the key-basis block size n_X) and pulses (N sent)")
    name, value = ("n_key", n_key) if n_key is not None else ("pulses", pulses)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 1:
        raise ConfigurationError(f"{name} must be a finite number >= 1, got {value!r}")
    return name, float(value)


def _counts(link, distance_km, intensities, probabilities, q_key, block, misalignment):
    """The expected DecoyCounts and the pulses N behind them."""
    if not (isinstance(q_key, numbers.Real) and 0.0 < q_key < 1.0):
        raise ConfigurationError(f"q_key (the key-basis probability) must be in (0, 1), got {q_key!r}")
    labels = list(intensities)
    if set(probabilities) != set(labels):
        raise ConfigurationError(f"probabilities name {sorted(probabilities)}, intensities {sorted(labels)}")
    mus = np.array([float(intensities[k]) for k in labels])
    ps = np.array([float(probabilities[k]) for k in labels])
    _, r, e = link_probabilities(link, distance_km, mus, misalignment=misalignment)
    kind, value = block
    per_pulse_key = q_key * q_key * float(np.dot(ps, r))
    if kind == "n_key":
        if per_pulse_key <= 0:
            raise ConfigurationError("this link detects nothing: no number of pulses fills a key block")
        n = value / per_pulse_key
    else:
        n = value
    kx, mx = n * q_key * q_key * ps * r, n * q_key * q_key * ps * e
    kz, mz = n * (1 - q_key) ** 2 * ps * r, n * (1 - q_key) ** 2 * ps * e
    counts = fd.DecoyCounts(dict(intensities), dict(probabilities),
                            key=fd.BasisCounts(dict(zip(labels, kx.tolist())), dict(zip(labels, mx.tolist()))),
                            test=fd.BasisCounts(dict(zip(labels, kz.tolist())), dict(zip(labels, mz.tolist()))))
    return counts, n


def expected_counts(link: LinkParameters, distance_km: float, *, intensities: Mapping[str, float],
                    probabilities: Mapping[str, float], q_key: float, n_key: float | None = None,
                    pulses: float | None = None, misalignment: str = "system") -> fd.DecoyCounts:
    """The counts a block is expected to hold (floats), in both bases, errors included.

    Exactly one of ``n_key`` (the key-basis detections n_X of the block) and ``pulses`` (N sent).

    Examples:
        >>> c = expected_counts(PRESETS["GYS"], 25.0, intensities={"s": 0.5, "d": 0.1, "v": 0.0},
        ...                     probabilities={"s": 0.7, "d": 0.2, "v": 0.1}, q_key=0.5, pulses=1e8)
        >>> round(c.key.n / c.test.n, 9), 0.03 < c.test.m / c.test.n < 0.05
        (1.0, True)
    """
    _check_link(link)
    return _counts(link, _check_distance(distance_km), intensities, probabilities, q_key, _block(n_key, pulses),
                   misalignment)[0]


# ---------------------------------------------------------------------------------------- results

@dataclass(frozen=True)
class FiniteRatePoint:
    """The finite-key rate at one distance and the protocol parameters it was reached with.

    ``rate`` is bits per pulse sent (``length / pulses``); ``n_key`` the key-basis detections of
    the block (expected).  For ``bb84-single-photon`` ``intensities``/``probabilities`` are
    empty and ``sample`` is the TLGR sample size k; ``key_length`` is the
    :class:`~qkd_circuits.analysis.finite_decoy.DecoyKeyLength` of a decoy method (its ledger adds
    up to ``eps_sec``) or the :class:`~qkd_circuits.analysis.finite_key.KeyLength` of TLGR.
    """

    distance_km: float
    method: str
    rate: float
    length: int
    pulses: float
    n_key: float
    q_key: float
    intensities: Mapping[str, float]
    probabilities: Mapping[str, float]
    eps_sec: float
    eps_cor: float
    sampling: str | None
    misalignment: str
    key_length: object
    sample: float | None = None
    optimised: bool = True

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "key_length"}
        d["intensities"], d["probabilities"] = dict(self.intensities), dict(self.probabilities)
        d["key_length"] = self.key_length.to_dict()
        return d


@dataclass(frozen=True)
class FiniteRateCurve:
    """:func:`finite_key_rate` at each distance, for one method and one block size."""

    method: str
    link: LinkParameters
    n_key: float | None
    pulses: float | None
    points: tuple[FiniteRatePoint, ...]
    max_distance_km: float | None
    settings: Mapping[str, object]

    def to_dict(self) -> dict:
        return {"method": self.method, "link": self.link.to_dict(), "n_key": self.n_key, "pulses": self.pulses,
                "max_distance_km": self.max_distance_km, "settings": dict(self.settings),
                "points": [p.to_dict() for p in self.points]}


# ------------------------------------------------------------------------------------ evaluation

def _raw(kl: fd.DecoyKeyLength) -> float:
    """The decoy key length before flooring (negative when the finite-size terms win)."""
    return (kl.s_key_0 + kl.s_key_1 * (1.0 - binary_entropy(kl.phase_error)) - kl.leak_ec - kl.verification_bits
            - kl.security_bits)


def _leak(link, counts) -> float:
    n_x = counts.key.n
    return link.f_ec * binary_entropy(counts.key.m / n_x) * n_x if n_x > 0 else 0.0


def _decoy_length(method, link, distance, mus, ps, q, block, eps_sec, eps_cor, sampling, misalignment):
    counts, n = _counts(link, distance, mus, ps, q, block, misalignment)
    kl = fd.decoy_key_length(counts, method, leak_ec=_leak(link, counts), eps_sec=eps_sec, eps_cor=eps_cor,
                             sampling=sampling)
    return kl, n, counts


def _decode(method: str, u, mu_weak: float):
    """Unit-cube coordinates -> (q_key, intensities, probabilities); every point is admissible."""
    u = np.clip(np.asarray(u, dtype=float), 0.0, 1.0)
    q = 0.01 + 0.989 * u[0]
    if method == "lim2014":
        p1 = 0.02 + 0.96 * u[1]
        p2 = (1.0 - p1) * (0.02 + 0.96 * u[2])
        m1 = max(0.05, 2.5 * mu_weak) + 1.15 * u[3]
        m2 = mu_weak + (0.01 + 0.98 * u[4]) * (m1 - 2.0 * mu_weak)
        return q, {"mu1": m1, "mu2": m2, "mu3": mu_weak}, {"mu1": p1, "mu2": p2, "mu3": 1.0 - p1 - p2}
    p1 = 0.02 + 0.96 * u[1]
    m1 = 0.05 + 1.15 * u[2]
    m2 = m1 * (0.01 + 0.98 * u[3])
    return q, {"mu1": m1, "mu2": m2}, {"mu1": p1, "mu2": 1.0 - p1}


def _encode(method: str, q, mus, ps, mu_weak):
    """The inverse of :func:`_decode` for a previous point's parameters (a warm start)."""
    u0 = (q - 0.01) / 0.989
    if method == "lim2014":
        k1, k2, k3 = sorted(mus, key=lambda k: -mus[k])
        p1, p2 = ps[k1], ps[k2]
        m1 = mus[k1]
        u = [u0, (p1 - 0.02) / 0.96, (p2 / (1 - p1) - 0.02) / 0.96, (m1 - max(0.05, 2.5 * mu_weak)) / 1.15,
             ((mus[k2] - mu_weak) / max(m1 - 2 * mu_weak, 1e-12) - 0.01) / 0.98]
    else:
        k1, k2 = sorted(mus, key=lambda k: -mus[k])
        u = [u0, (ps[k1] - 0.02) / 0.96, (mus[k1] - 0.05) / 1.15, (mus[k2] / mus[k1] - 0.01) / 0.98]
    return np.clip(np.array(u, dtype=float), 0.0, 1.0)


def _security(eps_sec, kappa):
    if kappa is not None:
        if eps_sec is not None:
            raise ConfigurationError("give eps_sec (fixed) or kappa (eps_sec = kappa * length), not both")
        if isinstance(kappa, bool) or not isinstance(kappa, numbers.Real) or not (0 < kappa < 1):
            raise ConfigurationError(f"kappa (secrecy per key bit) must be in (0, 1), got {kappa!r}")
        return None, float(kappa)
    return check_epsilon("eps_sec", _DEFAULT_EPS_SEC if eps_sec is None else eps_sec), None


def _fixed_point(evaluate, kappa: float, eps0: float):
    """Solve ε_sec = κ ℓ(ε_sec): iterate until the length stops changing."""
    eps = min(max(eps0, 1e-300), 0.5)
    result = evaluate(eps)
    for _ in range(40):
        length = result[0].length
        new = min(kappa * max(length, 1), 0.5)
        if new == eps:
            break
        eps = new
        result = evaluate(eps)
        if result[0].length == length:
            break
    return eps, result


def _bb84(link, distance, block, eps_sec, eps_cor, misalignment):
    """TLGR on a single-photon source: the best sample size k (or basis bias) for the block."""
    eta = float(link.transmittance(distance))
    eta_mis = eta if misalignment == "system" else (eta / link.eta_bob if link.eta_bob > 0 else 0.0)
    d = 1.0 - (1.0 - link.y0) * (1.0 - eta)
    r = d * (1.0 + link.afterpulse)
    e = min(0.5 * link.y0 + link.e_detector * min(eta_mis, 1.0) + 0.5 * link.afterpulse * d, r)
    qber = e / r if r > 0 else 0.5
    kind, value = block

    def at(n, k):
        n, k = max(int(n), 1), max(int(k), 1)
        leak = math.ceil(link.f_ec * n * binary_entropy(qber))
        kl = finite_key_length(n, k, min(qber, 1.0), leak, eps_sec=eps_sec, eps_cor=eps_cor)
        pulses = value if kind == "pulses" else (math.sqrt(n) + math.sqrt(k)) ** 2 / r
        return kl, pulses, k

    if kind == "n_key":
        n = max(int(round(value)), 1)
        grid = np.unique(np.geomspace(1, max(100 * n, 10), 240).astype(np.int64))
        cand = [at(n, k) for k in grid]
    else:
        grid = np.linspace(0.01, 0.995, 240)
        cand = [at(value * p * p * r, value * (1 - p) ** 2 * r) for p in grid]
    scores = [c[0].length / c[1] for c in cand]
    i = int(np.argmax(scores))
    best = cand[i]
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    for x in np.linspace(lo, hi, 41):
        c = at(n, x) if kind == "n_key" else at(value * x * x * r, value * (1 - x) ** 2 * r)
        if c[0].length / c[1] > best[0].length / best[1]:
            best = c
    kl, pulses, k = best
    return kl, pulses, k, qber, r


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ConfigurationError(f"method must be one of {', '.join(METHODS)}; got {method!r}")


def finite_key_rate(distance_km: float, method: str = "lim2014", link: LinkParameters = PRESETS["Lim2014"], *,
                    n_key: float | None = None, pulses: float | None = None, eps_sec: float | None = None,
                    kappa: float | None = None, eps_cor: float = 1e-15, sampling: str = "serfling",
                    mu_weak: float = 2e-4, misalignment: str = "system", intensities: Mapping[str, float] | None = None,
                    probabilities: Mapping[str, float] | None = None, q_key: float | None = None,
                    start: FiniteRatePoint | None = None) -> FiniteRatePoint:
    """The finite-key rate at one distance, the protocol parameters optimised (or given).

    Args:
        distance_km: fibre length.
        method: one of :data:`METHODS`.
        link: the link (default: Lim et al.'s dedicated fibre, preset ``"Lim2014"``).
        n_key, pulses: the block, as key-basis detections n_X or as pulses sent N (exactly one).
        eps_sec: a fixed secrecy (default 1e-10), or
        kappa: secrecy per key bit, ε_sec = κ ℓ solved as a fixed point (Lim et al. use 1e-15).
        eps_cor: correctness.
        sampling: the decoy analyses' phase-error sampling bound, ``"serfling"`` or ``"fung"``.
        mu_weak: Lim's fixed weakest intensity μ3 (``lim2014`` only; 0 = vacuum).
        misalignment: ``"system"`` or ``"channel"`` transmittance in the misalignment term.
        intensities, probabilities, q_key: give all three to evaluate these parameters
            instead of optimising them (decoy methods).
        start: a previous point whose parameters seed the search (curves pass their neighbour).

    Examples:
        >>> p = finite_key_rate(50.0, "lim2014", n_key=1e9, kappa=1e-15, sampling="fung")
        >>> 1e-4 < p.rate < 1e-3 and p.q_key > 0.8 and p.key_length.ledger.total <= p.eps_sec * (1 + 1e-9)
        True
    """
    _check_method(method)
    _check_link(link)
    _check_misalignment(misalignment)
    distance = _check_distance(distance_km)
    block = _block(n_key, pulses)
    eps_fixed, kappa = _security(eps_sec, kappa)
    eps_cor = check_epsilon("eps_cor", eps_cor)
    if sampling not in fd.SAMPLINGS:
        raise ConfigurationError(f"sampling must be one of {', '.join(fd.SAMPLINGS)}; got {sampling!r}")
    n_ref = block[1] if block[0] == "n_key" else block[1] * 1e-3

    if method == "bb84-single-photon":
        if intensities is not None or probabilities is not None or q_key is not None:
            raise ConfigurationError("bb84-single-photon has no intensities to give: it optimises the sample size")

        def run(eps):
            return _bb84(link, distance, block, eps, eps_cor, misalignment)

        if kappa is None:
            eps, res = eps_fixed, run(eps_fixed)
        else:
            eps, res = _fixed_point(run, kappa, kappa * max(0.1 * n_ref, 1.0))
        kl, n_pulses, k, _, _ = res
        return FiniteRatePoint(distance, method, kl.length / n_pulses, kl.length, float(n_pulses), float(kl.n),
                               math.sqrt(kl.n) / (math.sqrt(kl.n) + math.sqrt(kl.k)), {}, {}, eps, eps_cor, None, misalignment, kl, float(k))

    if not (isinstance(mu_weak, numbers.Real) and 0.0 <= mu_weak < 0.02):
        raise ConfigurationError(f"mu_weak (the fixed weakest intensity) must be in [0, 0.02), got {mu_weak!r}")
    given = [x is not None for x in (intensities, probabilities, q_key)]
    if any(given) and not all(given):
        raise ConfigurationError("give intensities, probabilities and q_key together (or none, to optimise)")

    def evaluate(q, mus, ps, eps):
        return _decoy_length(method, link, distance, mus, ps, q, block, eps, eps_cor, sampling, misalignment)

    if all(given):
        if kappa is None:
            eps, (kl, n, counts) = eps_fixed, evaluate(q_key, intensities, probabilities, eps_fixed)
        else:
            eps, (kl, n, counts) = _fixed_point(lambda e: evaluate(q_key, intensities, probabilities, e), kappa,
                                                kappa * max(0.1 * n_ref, 1.0))
        return FiniteRatePoint(distance, method, kl.length / n, kl.length, n, counts.key.n, float(q_key),
                               dict(intensities), dict(probabilities), eps, eps_cor, sampling, misalignment, kl,
                               optimised=False)

    eps = eps_fixed if kappa is None else min(kappa * max(0.1 * n_ref, 1.0), 0.5)
    dim = 5 if method == "lim2014" else 4
    starts = []
    if start is not None and start.method == method and start.intensities:
        starts.append(_encode(method, start.q_key, start.intensities, start.probabilities, mu_weak))
    best_u = _search(method, evaluate, dim, mu_weak, eps, starts)
    if kappa is not None:
        q, mus, ps = _decode(method, best_u, mu_weak)
        eps, _ = _fixed_point(lambda e: evaluate(q, mus, ps, e), kappa, eps)
        best_u = _search(method, evaluate, dim, mu_weak, eps, [best_u], sobol=False)
        q, mus, ps = _decode(method, best_u, mu_weak)
        eps, (kl, n, counts) = _fixed_point(lambda e: evaluate(q, mus, ps, e), kappa, eps)
    else:
        q, mus, ps = _decode(method, best_u, mu_weak)
        kl, n, counts = evaluate(q, mus, ps, eps)
    return FiniteRatePoint(distance, method, kl.length / n, kl.length, n, counts.key.n, q, mus, ps, eps, eps_cor,
                           sampling, misalignment, kl)


def _search(method, evaluate, dim, mu_weak, eps, starts, *, sobol: bool = True):
    """Best unit-cube point: Sobol starts (and warm ones), then bounded Nelder–Mead on the best few."""
    def score(u):
        q, mus, ps = _decode(method, u, mu_weak)
        kl, n, counts = evaluate(q, mus, ps, eps)
        raw = _raw(kl)
        # A key's rate per pulse where there is one; below, the (negative) length per key bit:
        # continuous at 0, and it still points towards the parameters that make a key.
        return raw / n if raw >= 0 else raw / max(counts.key.n, 1.0)

    points = [np.asarray(s, dtype=float) for s in starts]
    if sobol:
        points += list(qmc.Sobol(dim, scramble=True, seed=2014).random(_SOBOL_POINTS))
    scored = sorted(((score(u), i) for i, u in enumerate(points)), reverse=True)
    best_u, best_v = points[scored[0][1]], scored[0][0]
    for _, i in scored[:_REFINED]:
        r = minimize(lambda u: -score(u), points[i], method="Nelder-Mead", bounds=[(0.0, 1.0)] * dim,
                     options={"xatol": 1e-4, "fatol": 1e-12, "maxiter": 120 * dim, "initial_simplex": _simplex(points[i])})
        if -r.fun > best_v:
            best_u, best_v = np.clip(r.x, 0.0, 1.0), -r.fun
    return best_u


def _simplex(u0):
    """A starting simplex of steps 0.08 inside the unit cube (away from the walls)."""
    u0 = np.clip(np.asarray(u0, dtype=float), 0.0, 1.0)
    simplex = [u0]
    for j in range(u0.size):
        v = u0.copy()
        v[j] = v[j] + 0.08 if v[j] + 0.08 <= 1.0 else v[j] - 0.08
        simplex.append(v)
    return np.array(simplex)


def finite_key_rate_curve(distances_km, method: str = "lim2014", link: LinkParameters = PRESETS["Lim2014"], *,
                          n_key: float | None = None, pulses: float | None = None, max_distance: bool = True,
                          **kwargs) -> FiniteRateCurve:
    """:func:`finite_key_rate` at each distance (each point warm-started from its neighbour).

    ``kwargs`` go to :func:`finite_key_rate`; ``max_distance`` also finds the reach
    (:func:`max_finite_distance_km`), a bisection of ~15 optimisations.
    """
    distances = [_check_distance(d) for d in distances_km]
    if not distances:
        raise ConfigurationError("give at least one distance")
    points, previous = [], None
    for d in distances:
        p = finite_key_rate(d, method, link, n_key=n_key, pulses=pulses, start=previous, **kwargs)
        points.append(p)
        previous = p if p.length > 0 else previous
    reach = max_finite_distance_km(method, link, n_key=n_key, pulses=pulses, **kwargs) if max_distance else None
    settings = {k: v for k, v in kwargs.items() if k not in ("start",)}
    settings.setdefault("eps_sec", None if kwargs.get("kappa") is not None else _DEFAULT_EPS_SEC)
    return FiniteRateCurve(method, link, None if n_key is None else float(n_key),
                           None if pulses is None else float(pulses), tuple(points), reach, settings)


def max_finite_distance_km(method: str = "lim2014", link: LinkParameters = PRESETS["Lim2014"], *,
                           n_key: float | None = None, pulses: float | None = None, tolerance_km: float = 0.5,
                           **kwargs) -> float:
    """The longest fibre with a positive finite-key rate (parameters optimised at each length).

    A bisection; each probe is warm-started from the longest distance found positive so far.
    """
    _block(n_key, pulses)
    if not (isinstance(tolerance_km, numbers.Real) and tolerance_km > 0):
        raise ConfigurationError(f"tolerance_km must be > 0, got {tolerance_km!r}")
    best: list[FiniteRatePoint | None] = [None]

    def positive(L: float) -> bool:
        p = finite_key_rate(L, method, link, n_key=n_key, pulses=pulses, start=best[0], **kwargs)
        if p.length > 0:
            best[0] = p
            return True
        return False

    return reach_km(positive, tolerance_km=tolerance_km, cap_km=1e4)


def asymptotic_rate(link: LinkParameters, distance_km: float, *, q_key: float = 1.0,
                    misalignment: str = "system") -> float:
    """The infinite-key, infinite-decoy rate per pulse of this module's model (bits/pulse).

    One intensity μ (optimised), both bases' probability ``q_key`` for the key basis (the limit
    1 by default), the vacuum and single-photon yields known exactly::

        R = q_key² max_μ [ e^−μ Y_0' + μ e^−μ Y_1 (1 − h(e_1)) − f_EC R_μ h(e_μ / R_μ) ]

    with ``Y_0' = (1 + p_ap) Y_0``, ``Y_1 = (1 + p_ap)(1 − (1 − Y_0)(1 − η))`` and
    ``e_1 Y_1 = Y_0/2 + e_det η + p_ap (1 − (1 − Y_0)(1 − η))/2``.  Every finite-key rate of
    this module's decoy methods lies below it (their bounds are looser, and mixing intensities
    cannot beat the best single one: h is concave).
    """
    _check_link(link)
    _check_misalignment(misalignment)
    distance = _check_distance(distance_km)
    if not (isinstance(q_key, numbers.Real) and 0.0 < q_key <= 1.0):
        raise ConfigurationError(f"q_key must be in (0, 1], got {q_key!r}")
    eta = float(link.transmittance(distance))
    eta_mis = eta if misalignment == "system" else (eta / link.eta_bob if link.eta_bob > 0 else 0.0)
    mu = np.geomspace(1e-4, 1.5, 3000)
    _, r_mu, e_mu = link_probabilities(link, distance, mu, misalignment=misalignment)
    d1 = 1.0 - (1.0 - link.y0) * (1.0 - eta)
    y1 = (1.0 + link.afterpulse) * d1
    e1 = min((0.5 * link.y0 + link.e_detector * min(eta_mis, 1.0) + 0.5 * link.afterpulse * d1) / y1, 0.5) \
        if y1 > 0 else 0.5
    rate = (np.exp(-mu) * (1.0 + link.afterpulse) * link.y0 + mu * np.exp(-mu) * y1 * (1.0 - binary_entropy(e1))
            - link.f_ec * r_mu * binary_entropy(e_mu / r_mu))
    return max(0.0, q_key * q_key * float(rate.max()))
