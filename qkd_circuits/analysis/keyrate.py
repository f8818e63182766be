"""Secret key rate of BB84 with weak coherent pulses against fibre distance.

The asymptotic rate per pulse (GLLP, as written by Lo, Ma & Chen 2005 and Ma, Qi, Zhao & Lo
2005; equation numbers are not cited here because the papers' texts could not be re-read)::

    R >= q { -Q_mu f(E_mu) h(E_mu) + Q_1 [1 - h(e_1)] }

with ``q = 1/2`` (BB84 sifting), ``Q_mu``/``E_mu`` the gain and error rate of the signal
intensity ``mu``, and ``Q_1 = Y_1 mu e^-mu``/``e_1`` the gain and error rate of its
single-photon part.  Three ways to bound the single-photon part, the ``method`` names used by
``qkd keyrate``:

``gllp``
    No decoys (Gottesman, Lo, Lütkenhaus & Preskill 2004): every multi-photon pulse is assumed
    to be Eve's, ``Q_1 >= Q_mu - P_multi`` with ``P_multi = 1 - (1 + mu) e^-mu`` and
    ``e_1 <= E_mu Q_mu / Q_1``.  The best ``mu`` is of order the transmittance, so the rate
    falls as eta^2.
``decoy-infinite``
    Infinitely many decoys measure ``Y_1`` and ``e_1`` exactly: ``Y_1 = Y_0 + eta`` and
    ``e_1 Y_1 = e_0 Y_0 + e_det eta`` for this channel model (Lo, Ma & Chen 2005).
``decoy-vacuum-weak``
    Vacuum plus one weak decoy ``nu`` (Ma et al. 2005, the vacuum + weak decoy bounds)::

        Y_1 >= mu / (mu nu - nu^2) (Q_nu e^nu - Q_mu e^mu nu^2/mu^2 - (mu^2 - nu^2)/mu^2 Y_0)
        e_1 <= (E_nu Q_nu e^nu - e_0 Y_0) / (Y_1 nu)

The channel model behind the analytic curves (Ma et al. 2005): overall transmittance
``eta = eta_Bob 10^(-alpha L / 10)``, each photon independently lost, threshold detectors::

    Q_mu = Y_0 + 1 - e^(-eta mu)
    E_mu Q_mu = e_0 Y_0 + e_det (1 - e^(-eta mu))           (e_0 = 1/2)

:func:`decoy_estimate` applies the same bounds to *observed* gains and error rates (from a
simulated or real session), optionally with the finite-size fluctuation of Ma et al. 2005,
statistical-fluctuation section: a count ``N Q`` is replaced by its ``u_alpha``-standard-deviation bound.

The published GYS parameter set (Gobby, Yuan & Shields, Appl. Phys. Lett. 84, 3762 (2004), as
used by Lo, Ma & Chen and by Ma et al.) is the preset ``"GYS"``.

Examples:
    >>> from qkd_circuits.analysis.keyrate import max_distance_km, PRESETS
    >>> round(max_distance_km("decoy-infinite", PRESETS["GYS"]))
    142
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..exceptions import ConfigurationError
from ..params import default
from .finite_key import binary_entropy

__all__ = [
    "LinkParameters", "PRESETS", "METHODS", "KeyRatePoint", "KeyRateCurve", "DecoyEstimate",
    "gain", "error_gain", "key_rate", "key_rate_curve", "max_distance_km", "decoy_estimate",
    "rate_from_estimate", "shor_preskill_threshold", "poisson", "reach_km",
]

METHODS = ("gllp", "decoy-vacuum-weak", "decoy-infinite")


def poisson(mu: float, n):
    """P(n photons) of a phase-randomised coherent state of mean photon number ``mu``."""
    n = np.asarray(n)
    return np.exp(-mu + n * math.log(mu) - np.vectorize(math.lgamma)(n + 1.0)) if mu > 0 else (n == 0) * 1.0


@dataclass(frozen=True)
class LinkParameters:
    """Source, fibre and detector parameters of a link.

    Args:
        alpha_db_per_km: fibre attenuation α.
        eta_bob: Bob's transmittance times detector efficiency η_Bob.
        y0: background (dark-count) yield Y_0 per pulse.
        e_detector: probability a photon hits the wrong detector (misalignment) e_det.
        f_ec: error-correction inefficiency f(E) (leak = f·h(E) per bit).
        q: sifting factor (1/2 for BB84 with uniform bases).
        name: a label.
        afterpulse: afterpulse probability p_ap of Bob's detectors (a detection causes a further,
            random click with this probability).  Only the finite-key link model of
            :mod:`~qkd_circuits.analysis.finite_rate` uses it (Lim et al. 2014, Sec. IV); the
            asymptotic formulas of this module ignore it, as Ma et al. 2005 do.
    """

    alpha_db_per_km: float = 0.21
    eta_bob: float = 0.045
    y0: float = 1.7e-6
    e_detector: float = 0.033
    f_ec: float = 1.22
    q: float = 0.5
    name: str = "custom"
    afterpulse: float = 0.0

    def __post_init__(self) -> None:
        for key in ("alpha_db_per_km", "eta_bob", "y0", "e_detector", "f_ec", "q", "afterpulse"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ConfigurationError(f"{key} must be a finite number >= 0, got {value!r}")
        for key in ("eta_bob", "y0", "e_detector", "q", "afterpulse"):
            if getattr(self, key) > 1:
                raise ConfigurationError(f"{key} is a probability (<= 1), got {getattr(self, key)!r}")
        if self.f_ec < 1:
            raise ConfigurationError(f"f_ec must be >= 1 (the Shannon limit), got {self.f_ec!r}")

    def transmittance(self, distance_km):
        """η = η_Bob · 10^(−α L / 10): the probability that one photon is detected."""
        return self.eta_bob * 10.0 ** (-self.alpha_db_per_km * np.asarray(distance_km, dtype=float) / 10.0)

    def with_(self, **changes) -> LinkParameters:
        """A copy with some parameters changed (``None`` values are ignored); its name says so."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if changes and "name" not in changes and not self.name.endswith("(modified)"):
            changes["name"] = f"{self.name} (modified)"
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


#: Named parameter sets.
#:
#: GYS: Gobby, Yuan & Shields, APL 84, 3762 (2004) — 122 km of fibre at 1550 nm; the parameters
#: as used by Lo, Ma & Chen (2005) and Ma, Qi, Zhao & Lo, PRA 72, 012326 (2005).
#:
#: Lim2014: the "dedicated fibre" simulation of Lim, Curty, Walenta, Xu & Zbinden, PRA 89,
#: 022307 (2014), Sec. IV / Fig. 1: η_Bob = 0.10, dark-count probability 6e-7 per detector (two
#: detectors, so Y_0 = 2 p_dc = 1.2e-6), afterpulse probability 0.04, α = 0.2 dB/km,
#: misalignment e_mis = 0.005, error-correction inefficiency f_EC = 1.16.  (Sifting ``q`` is the
#: uniform-basis 1/2 of the asymptotic formulas; the finite-key curves choose the bases' bias.)
#:
#: No "Rusca2018" set: the simulation parameters of Rusca et al., APL 112, 171104 (2018) could not
#: be confirmed from a readable copy of the paper, so none is guessed.
PRESETS = {
    "GYS": LinkParameters(alpha_db_per_km=0.21, eta_bob=0.045, y0=1.7e-6, e_detector=0.033, f_ec=1.22, q=0.5,
                          name="GYS"),
    "Lim2014": LinkParameters(alpha_db_per_km=0.2, eta_bob=0.10, y0=1.2e-6, e_detector=0.005, f_ec=1.16, q=0.5,
                              name="Lim2014", afterpulse=0.04),
}


def gain(mu, eta, link: LinkParameters):
    """Expected gain Q_μ = Y_0 + 1 − e^(−ημ) (Ma et al. 2005)."""
    return link.y0 + 1.0 - np.exp(-np.asarray(eta) * mu)


def error_gain(mu, eta, link: LinkParameters):
    """Expected erroneous-click probability E_μ·Q_μ = e_0 Y_0 + e_det (1 − e^(−ημ))."""
    return 0.5 * link.y0 + link.e_detector * (1.0 - np.exp(-np.asarray(eta) * mu))


@dataclass(frozen=True)
class DecoyEstimate:
    """Single-photon bounds from gains and error rates (observed or expected).

    ``y1``/``e1`` are the lower bound on the single-photon yield and the upper bound on its error
    rate; ``q1 = y1 μ e^−μ``.  ``valid`` is False when the bounds leave no single photons (a
    negative yield bound, e_1 >= 1/2): the data are compatible with an attack that knows every
    bit, and no key can be made.
    """

    method: str
    mu: float
    q_mu: float
    e_mu: float
    y1: float
    e1: float
    nu: float | None = None
    q_nu: float | None = None
    e_nu: float | None = None
    y0: float | None = None

    @property
    def q1(self) -> float:
        return self.y1 * self.mu * math.exp(-self.mu)

    @property
    def valid(self) -> bool:
        return self.y1 > 0 and 0 <= self.e1 < 0.5

    def to_dict(self) -> dict:
        return {**asdict(self), "q1": self.q1, "valid": self.valid}


def _vacuum_weak(mu, nu, q_mu, q_nu, eq_nu, y0):
    """Ma et al. 2005 (vacuum + weak decoy): Y_1^L and e_1^U from vacuum + weak decoy data."""
    y1 = mu / (mu * nu - nu * nu) * (q_nu * np.exp(nu) - q_mu * np.exp(mu) * nu * nu / (mu * mu)
                                      - (mu * mu - nu * nu) / (mu * mu) * y0)
    with np.errstate(divide="ignore", invalid="ignore"):
        e1 = np.where(y1 > 0, (eq_nu * np.exp(nu) - 0.5 * y0) / (y1 * nu), 0.5)
    return y1, np.clip(e1, 0.0, 0.5)


def _gllp(mu, q_mu, eq_mu):
    """GLLP without decoys: all multi-photon pulses tagged."""
    p_multi = 1.0 - (1.0 + mu) * np.exp(-mu)
    q1 = q_mu - p_multi
    with np.errstate(divide="ignore", invalid="ignore"):
        e1 = np.where(q1 > 0, eq_mu / q1, 0.5)
        y1 = q1 / (mu * np.exp(-mu))
    return y1, np.clip(e1, 0.0, 0.5)


def rate_from_estimate(est: DecoyEstimate, link: LinkParameters) -> float:
    """The GLLP rate per pulse, q{−Q_μ f h(E_μ) + Q_1[1 − h(e_1)]}, floored at 0."""
    if not est.valid:
        return 0.0
    r = link.q * (-est.q_mu * link.f_ec * float(binary_entropy(est.e_mu)) + est.q1 * (1.0 - float(binary_entropy(est.e1))))
    return max(0.0, r)


def _rate_vector(method, mu, eta, link, nu):
    """Rates for an array of μ at one η (vectorised over μ)."""
    mu = np.asarray(mu, dtype=float)
    q_mu = gain(mu, eta, link)
    eq_mu = error_gain(mu, eta, link)
    e_mu = eq_mu / q_mu
    if method == "decoy-infinite":
        y1 = link.y0 + eta + 0.0 * mu
        e1 = (0.5 * link.y0 + link.e_detector * eta) / y1
    elif method == "decoy-vacuum-weak":
        q_nu = gain(nu, eta, link)
        y1, e1 = _vacuum_weak(mu, nu, q_mu, q_nu, error_gain(nu, eta, link), link.y0)
        y1 = np.where(mu > nu, y1, -1.0)
    elif method == "gllp":
        y1, e1 = _gllp(mu, q_mu, eq_mu)
    else:
        raise ConfigurationError(f"method must be one of {METHODS}, got {method!r}")
    q1 = y1 * mu * np.exp(-mu)
    r = link.q * (-q_mu * link.f_ec * binary_entropy(e_mu) + q1 * (1.0 - binary_entropy(e1)))
    return np.where((y1 > 0) & (e1 < 0.5), r, -np.inf), q_mu, e_mu, y1, e1


@dataclass(frozen=True)
class KeyRatePoint:
    """The rate at one distance, with the μ (and ν) it was computed at."""

    distance_km: float
    rate: float
    mu: float
    nu: float | None
    eta: float
    gain: float
    qber: float
    y1: float
    e1: float

    def to_dict(self) -> dict:
        return asdict(self)


def _optimal_mu(method, eta, link, nu):
    """Maximise the rate over μ: a log grid, then golden-section refinement."""
    lo = max(nu * 1.0001, 1e-7) if method == "decoy-vacuum-weak" else 1e-7
    grid = np.geomspace(lo, 1.5, 400)
    r = _rate_vector(method, grid, eta, link, nu)[0]
    i = int(np.argmax(r))
    if not np.isfinite(r[i]):
        return grid[i], -np.inf
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    g = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        c, d = b - g * (b - a), a + g * (b - a)
        if _rate_vector(method, c, eta, link, nu)[0] > _rate_vector(method, d, eta, link, nu)[0]:
            b = d
        else:
            a = c
    best = (a + b) / 2
    return best, float(_rate_vector(method, best, eta, link, nu)[0])


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ConfigurationError(f"method must be one of {', '.join(METHODS)}; got {method!r}")


def _check_intensities(method, mu, nu) -> None:
    if mu is not None and not (isinstance(mu, (int, float)) and 0 < mu <= 10):
        raise ConfigurationError(f"mu must be a mean photon number in (0, 10], got {mu!r}")
    if method == "decoy-vacuum-weak":
        if not (isinstance(nu, (int, float)) and 0 < nu < 1):
            raise ConfigurationError(f"nu (the weak decoy) must be in (0, 1), got {nu!r}")
        if mu is not None and mu <= nu:
            raise ConfigurationError(f"the signal mu={mu} must be brighter than the decoy nu={nu}")


def key_rate(distance_km: float, method: str = "decoy-vacuum-weak", link: LinkParameters = PRESETS["GYS"], *,
             mu: float | None = None, nu: float = default("nu")) -> KeyRatePoint:
    """The asymptotic secret key rate (bits per pulse) at one distance.

    Args:
        distance_km: fibre length.
        method: ``"gllp"``, ``"decoy-vacuum-weak"`` or ``"decoy-infinite"``.
        link: the link parameters (default GYS).
        mu: the signal intensity; ``None`` optimises it for the best rate.
        nu: the weak decoy's intensity (vacuum + weak method only).

    Returns:
        A :class:`KeyRatePoint`; ``rate`` is 0 where no key can be made.

    Examples:
        >>> p = key_rate(50, "decoy-infinite")
        >>> 1e-4 < p.rate < 1e-3 and 0.4 < p.mu < 0.7
        True
    """
    _check_method(method)
    _check_intensities(method, mu, nu)
    if not (isinstance(distance_km, (int, float)) and math.isfinite(distance_km) and distance_km >= 0):
        raise ConfigurationError(f"distance_km must be a finite number >= 0, got {distance_km!r}")
    eta = float(link.transmittance(distance_km))
    if mu is None:
        mu, rate = _optimal_mu(method, eta, link, nu)
    else:
        rate = float(_rate_vector(method, mu, eta, link, nu)[0])
    r, q_mu, e_mu, y1, e1 = (float(np.asarray(v).reshape(-1)[0]) for v in _rate_vector(method, mu, eta, link, nu))
    return KeyRatePoint(distance_km=float(distance_km), rate=max(rate, 0.0), mu=float(mu),
                        nu=nu if method == "decoy-vacuum-weak" else None, eta=eta, gain=q_mu, qber=e_mu, y1=y1, e1=e1)


def max_distance_km(method: str = "decoy-vacuum-weak", link: LinkParameters = PRESETS["GYS"], *,
                    mu: float | None = None, nu: float = default("nu"), tolerance_km: float = 0.01) -> float:
    """The longest fibre with a positive rate (μ optimised at each distance unless given)."""
    _check_method(method)
    _check_intensities(method, mu, nu)

    return reach_km(lambda L: key_rate(L, method, link, mu=mu, nu=nu).rate > 0, tolerance_km=tolerance_km)


def reach_km(positive, *, tolerance_km: float, first_km: float = 50.0, cap_km: float = 1e5) -> float:
    """The longest distance where ``positive(L)`` holds, assuming it holds on [0, reach) only.

    Doubles from ``first_km`` until ``positive`` fails, then bisects to ``tolerance_km``; 0 when it
    fails at 0, ``inf`` past ``cap_km``.  Used by the asymptotic and the finite-key reaches.
    """
    if not positive(0.0):
        return 0.0
    lo, hi = 0.0, first_km
    while positive(hi):
        lo, hi = hi, hi * 2
        if hi > cap_km:
            return math.inf
    while hi - lo > tolerance_km:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if positive(mid) else (lo, mid)
    return lo


@dataclass(frozen=True)
class KeyRateCurve:
    """Rate against distance for one method; ``to_dict()`` is what ``qkd keyrate --json`` prints."""

    method: str
    link: LinkParameters
    points: tuple[KeyRatePoint, ...]
    max_distance_km: float
    mu: float | None = None
    nu: float | None = None
    simulated: tuple = field(default=())

    def to_dict(self) -> dict:
        return {"method": self.method, "link": self.link.to_dict(), "mu": self.mu, "nu": self.nu,
                "max_distance_km": self.max_distance_km,
                "points": [p.to_dict() for p in self.points],
                "simulated": [dict(s) for s in self.simulated]}


def key_rate_curve(distances_km, method: str = "decoy-vacuum-weak", link: LinkParameters = PRESETS["GYS"], *,
                   mu: float | None = None, nu: float = default("nu")) -> KeyRateCurve:
    """:func:`key_rate` at each distance, and the maximum distance."""
    distances = [float(d) for d in distances_km]
    if not distances:
        raise ConfigurationError("give at least one distance")
    points = tuple(key_rate(d, method, link, mu=mu, nu=nu) for d in distances)
    return KeyRateCurve(method=method, link=link, points=points,
                        max_distance_km=max_distance_km(method, link, mu=mu, nu=nu), mu=mu,
                        nu=nu if method == "decoy-vacuum-weak" else None)


def _lower(count_rate: float, n: int, u: float) -> float:
    """Ma et al. 2005, statistical fluctuations: Q^L = Q (1 − u/√(N Q)), i.e. the count minus u standard deviations."""
    if n <= 0 or u == 0:
        return count_rate
    return max(count_rate - u * math.sqrt(max(count_rate, 0.0) / n), 0.0)


def _upper(count_rate: float, n: int, u: float) -> float:
    if n <= 0 or u == 0:
        return count_rate
    return count_rate + u * math.sqrt(max(count_rate, 0.0) / n)


def decoy_estimate(method: str, *, mu: float, q_mu: float, e_mu: float, nu: float | None = None,
                   q_nu: float | None = None, e_nu: float | None = None, q_vacuum: float | None = None,
                   pulses: dict | None = None, u_alpha: float = 0.0) -> DecoyEstimate:
    """Single-photon bounds from observed gains Q and error rates E.

    Args:
        method: ``"gllp"`` (signal data only) or ``"decoy-vacuum-weak"`` (needs the ν and vacuum
            data; the vacuum gain is the background yield Y_0).
        mu, nu: the intensities.
        q_mu, e_mu, q_nu, e_nu, q_vacuum: observed gains and error rates.
        pulses: pulses sent per intensity, ``{"signal": N_mu, "decoy": N_nu, "vacuum": N_0}``;
            with ``u_alpha > 0`` each rate is moved ``u_alpha`` standard deviations the
            pessimistic way (Ma et al. 2005's fluctuation analysis): Q_ν and Y_0 down (for Y_1), E_νQ_ν and
            Y_0 up (for e_1)... each to the side that loosens the bound.
        u_alpha: standard deviations for the finite-size bounds (0: asymptotic).

    Examples:
        >>> gys = PRESETS["GYS"]; eta = float(gys.transmittance(40))
        >>> q = lambda m: float(gain(m, eta, gys)); e = lambda m: float(error_gain(m, eta, gys) / gain(m, eta, gys))
        >>> est = decoy_estimate("decoy-vacuum-weak", mu=0.5, q_mu=q(0.5), e_mu=e(0.5), nu=0.1, q_nu=q(0.1),
        ...                      e_nu=e(0.1), q_vacuum=gys.y0)
        >>> est.valid and abs(est.y1 / (eta + gys.y0) - 1) < 0.05
        True
    """
    if method not in ("gllp", "decoy-vacuum-weak"):
        raise ConfigurationError(f"decoy_estimate method must be 'gllp' or 'decoy-vacuum-weak', got {method!r}")
    _check_intensities(method, mu, nu)
    pulses = pulses or {}
    n_mu = int(pulses.get("signal", 0))
    if method == "gllp":
        q = _lower(q_mu, n_mu, u_alpha)
        eq = _upper(q_mu * e_mu, n_mu, u_alpha)
        y1, e1 = _gllp(mu, q, eq)
        return DecoyEstimate(method, mu, q_mu, e_mu, float(y1), float(e1))
    if None in (q_nu, e_nu, q_vacuum):
        raise ConfigurationError("the vacuum + weak decoy method needs q_nu, e_nu and q_vacuum")
    n_nu, n_0 = int(pulses.get("decoy", 0)), int(pulses.get("vacuum", 0))
    # Y_1^L grows with Q_ν and falls with Q_μ and Y_0: take Q_ν low, Q_μ and Y_0 high.
    y1, _ = _vacuum_weak(mu, nu, _upper(q_mu, n_mu, u_alpha), _lower(q_nu, n_nu, u_alpha), 0.0,
                         _upper(q_vacuum, n_0, u_alpha))
    y1 = float(y1)
    # e_1^U grows with E_νQ_ν and falls with Y_0: take E_νQ_ν high and Y_0 low.
    eq_nu = _upper(e_nu * q_nu, n_nu, u_alpha)
    y0_low = _lower(q_vacuum, n_0, u_alpha)
    e1 = float(min(max((eq_nu * math.exp(nu) - 0.5 * y0_low) / (y1 * nu), 0.0), 0.5)) if y1 > 0 else 0.5
    return DecoyEstimate(method, mu, q_mu, e_mu, y1, e1, nu=nu, q_nu=q_nu, e_nu=e_nu, y0=q_vacuum)


def shor_preskill_threshold(f_ec: float = 1.0) -> float:
    """The QBER where 1 − h(Q) − f·h(Q) reaches 0 (≈ 11.0% for f = 1; Shor & Preskill 2000)."""
    if not (isinstance(f_ec, (int, float)) and f_ec >= 1):
        raise ConfigurationError(f"f_ec must be >= 1, got {f_ec!r}")
    lo, hi = 1e-9, 0.5
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 1 - (1 + f_ec) * float(binary_entropy(mid)) > 0 else (lo, mid)
    return lo
