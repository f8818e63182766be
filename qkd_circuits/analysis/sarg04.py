"""B92 and SARG04 beside BB84: sifting, error rates, unambiguous discrimination and the PNS rate.

Pure numpy.  The circuits that these formulas are checked against live in
:mod:`qkd_circuits.quantum.b92` and :mod:`qkd_circuits.quantum.sarg04`.

Sifting and error rates (single photons, uniform choices)
---------------------------------------------------------
B92 (Bennett, PRL 68, 3121 (1992)): Alice sends |0> (bit 0) or |+> (bit 1); Bob measures Z or X
at random and keeps only the conclusive results, Z → 1 (the state was not |0>: bit 1) and
X → − (it was not |+>: bit 0).  Noiseless, a result is conclusive with probability 1/2 · 1/2 =
**1/4**.

SARG04 (Scarani, Acín, Ribordy & Gisin, PRL 92, 057901 (2004)): BB84's four states, the bit in
the *basis* of Alice's state (Z → 0, X → 1).  After Bob's click Alice announces a pair
{|z>, |x>} of non-orthogonal states (one Z state, one X state) that holds hers; Bob's result is
conclusive when it is orthogonal to the pair's state in his basis, and then names the other
state's basis.  Noiseless, Bob's basis differs from Alice's half the time and then his result
excludes the pair's other state half the time: **1/4** again.

Depolarizing channel ρ → (1 − p)ρ + p·I/2 (visibility V = 1 − p), per detected photon:

* BB84: QBER ``p/2`` (sifted fraction 1/2);
* B92 and SARG04: an error needs a "wrong" outcome in the basis where a noiseless photon is
  never conclusive (probability 1/2 · p/2), a correct bit the other basis (1/2 · 1/2, noise or
  not), so ``QBER = (p/4) / (1/4 + p/4) = p/(1 + p) = (1 − V)/(2 − V)``, and the conclusive
  fraction grows to ``(1 + p)/4``.  For the channel that gives BB84 the QBER ``e = p/2``,
  SARG04's is ``2e/(1 + 2e) > e`` (:func:`sarg04_qber_from_bb84`): about twice BB84's when e
  is small.

Intercept-resend on a fraction ``f`` (Eve measures Z or X at random and resends what she saw):
BB84 ``f/4``; B92 and SARG04 ``f/(2 + f)`` (``1/3`` at f = 1): Eve's wrong basis (half the time)
leaves Bob's correct conclusive rate at 1/4 but adds errors at rate 1/8 · f.

Unambiguous state discrimination (USD)
--------------------------------------
For linearly independent states with equal priors and a cyclic symmetry (the four BB84 states,
copied n times, up to phases), the optimal USD success probability is the smallest eigenvalue
of their Gram matrix (Chefles & Barnett, Phys. Lett. A 250, 223 (1998)); for two states of
overlap c it is ``1 − |c|`` (Ivanovic 1987, Dieks 1988, Peres 1988).  Linearly dependent states
cannot be discriminated unambiguously at all (Chefles, Phys. Lett. A 239, 339 (1998)).  Hence:

* one photon of the four states: rank 2; **two** photons: rank 3 of 4 — no USD, success 0;
  **three** photons: success 1/2 (:func:`four_state_usd_probability`).  Eve needs three photons
  to learn a SARG04 pulse's state without error before the announcement, where BB84's PNS
  needs two (one kept, the basis announced later).
* After the SARG04 announcement, k stored photons of the pair (overlap 1/√2 per photon) are
  identified with probability ``1 − 2^(−k/2)`` (:func:`pair_usd_probability`): 0.293 for the one
  photon Eve keeps of a two-photon pulse; never the certainty that BB84's basis announcement
  gives her.

The PNS rate (:func:`pns_rate`)
-------------------------------
The rate per pulse against a stated photon-number-splitting family, loss-only link (no errors,
no dark counts; Bob's detector efficiency folded into η; Eve's line is lossless and she must
reproduce Bob's click probability ``Q = 1 − e^(−ημ)``):

* ``bb84``: Eve keeps one photon of every multi-photon pulse and forwards the rest (Brassard,
  Lütkenhaus, Mor & Sanders, PRL 85, 1330 (2000)); she knows every such bit, so
  ``R = 1/2 · (Q − min(Q, P_{n>=2}))`` — which is exactly the GLLP rate of
  :mod:`~qkd_circuits.analysis.keyrate` at zero error (``method="gllp"``, ``y0 = e_det = 0``).
  For η → 0 the best μ is η and ``R → η²/4``.
* ``sarg04``: on n >= 3 photons Eve performs the four-state USD (success ``u_n``) and resends
  the identified state (she knows the bit); on two-photon pulses she keeps one photon, forwards
  the other and, after the announcement, identifies her photon with probability
  ``1 − 1/√2``; single photons she forwards untouched.  She uses the pulses in that order until
  Bob's click probability is met, so ``K = min(Q, A) + (1 − 1/√2) · min(max(Q − A, 0), P_2)``
  with ``A = Σ_{n>=3} P_n u_n`` bits known, and ``R = 1/4 · (Q − K)``.  For η → 0 the best μ is
  ``√(2η/u_3) = 2√η`` and ``R → η^(3/2) / (6 √u_3) = (√2/6) η^(3/2)``.

This is the scaling that Scarani et al. 2004's three-photon argument leads to (μ_opt ∝ √η and
R ∝ η^(3/2), against BB84's η and η²), and the kind of attack-family rate that Branciard,
Gisin, Kraus & Scarani, PRA 72, 032301 (2005), optimise further in their part on attenuated
lasers.  **It is a rate against this attack family, an upper bound on what an unconditional
proof certifies, not a security proof**: the unconditional SARG04 bounds with one- and
two-photon contributions (Tamaki & Lo, PRA 73, 010302(R) (2006); Fung, Tamaki & Lo, PRA 73,
012337 (2006): one-way thresholds 10.95% for single photons, 2.71% for two-photon pulses) need
phase-error relations that could not be re-derived here, so they are not implemented.

Examples:
    >>> round(sarg04_qber_from_bb84(0.05), 4)
    0.0909
    >>> [round(four_state_usd_probability(n), 3) for n in (1, 2, 3)]
    [0.0, 0.0, 0.5]
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..exceptions import ConfigurationError

__all__ = [
    "PROTOCOLS", "PnsRatePoint", "sifted_fraction", "qber_depolarizing", "qber_intercept_resend",
    "sarg04_qber_from_bb84", "usd_probability", "four_state_usd_probability", "pair_usd_probability",
    "four_state_gram", "pns_known_fraction", "pns_rate", "optimal_pns_mu",
]

#: The protocols these functions know.
PROTOCOLS = ("bb84", "b92", "sarg04")

_N_MAX = 60  # photon numbers summed in the Poisson tails (μ <= 5 leaves < 1e-30 beyond)


def _protocol(name: str) -> str:
    if name not in PROTOCOLS:
        raise ConfigurationError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {name!r}")
    return name


def _probability(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigurationError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def sifted_fraction(protocol: str, depolarizing: float = 0.0) -> float:
    """Fraction of detected single photons kept after sifting: 1/2 (BB84), (1 + p)/4 (B92, SARG04)."""
    p = _probability("depolarizing", depolarizing)
    return 0.5 if _protocol(protocol) == "bb84" else (1.0 + p) / 4.0


def qber_depolarizing(protocol: str, p: float) -> float:
    """Sifted QBER through ρ → (1 − p)ρ + p·I/2: p/2 (BB84), p/(1 + p) (B92, SARG04)."""
    p = _probability("p", p)
    return p / 2.0 if _protocol(protocol) == "bb84" else p / (1.0 + p)


def sarg04_qber_from_bb84(e: float) -> float:
    """SARG04's QBER on the depolarizing channel where BB84's is ``e`` (<= 1/2): 2e/(1 + 2e)."""
    e = _probability("e", e)
    if e > 0.5:
        raise ConfigurationError(f"a depolarizing channel gives BB84 a QBER <= 1/2, got {e!r}")
    return 2.0 * e / (1.0 + 2.0 * e)


def qber_intercept_resend(protocol: str, fraction: float = 1.0) -> float:
    """Sifted QBER when Eve measures a ``fraction`` in a random Z/X basis and resends: f/4 or f/(2 + f)."""
    f = _probability("fraction", fraction)
    return f / 4.0 if _protocol(protocol) == "bb84" else f / (2.0 + f)


def usd_probability(gram) -> float:
    """Optimal equal-prior USD success of cyclically symmetric states: the Gram matrix's least eigenvalue.

    (Chefles & Barnett 1998.)  0 when the states are linearly dependent (rounding below 1e-12
    is taken as 0).  For two states of overlap c this is 1 − |c|.
    """
    g = np.asarray(gram)
    if g.ndim != 2 or g.shape[0] != g.shape[1] or not np.allclose(g, g.conj().T, atol=1e-12):
        raise ConfigurationError("usd_probability needs a square Hermitian Gram matrix")
    lam = float(np.linalg.eigvalsh(g)[0])
    return 0.0 if lam < 1e-12 else lam


def four_state_gram(copies: int) -> np.ndarray:
    """Gram matrix of the four BB84 states RY(kπ/2)|0> (k = 0..3), each copied ``copies`` times."""
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise ConfigurationError(f"copies must be a whole number >= 1, got {copies!r}")
    k = np.arange(4)
    overlap = np.cos((k[None, :] - k[:, None]) * math.pi / 4)  # <ψ_j|ψ_k> = cos((k − j)π/4)
    return overlap ** copies


def four_state_usd_probability(copies: int) -> float:
    """USD success for the four BB84/SARG04 states on ``copies`` photons: 0, 0, 1/2, 1/2, 3/4, ..."""
    return usd_probability(four_state_gram(copies))


def pair_usd_probability(copies: int) -> float:
    """USD success for a SARG04 pair (overlap 1/√2 per photon) on ``copies`` photons: 1 − 2^(−k/2)."""
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 0:
        raise ConfigurationError(f"copies must be a whole number >= 0, got {copies!r}")
    return 1.0 - 2.0 ** (-copies / 2.0)


def _poisson(mu: float) -> np.ndarray:
    n = np.arange(_N_MAX + 1)
    return np.exp(-mu + n * math.log(mu) - np.array([math.lgamma(k + 1.0) for k in n]))


_FOUR_STATE_USD = np.array([0.0] + [four_state_usd_probability(n) for n in range(1, _N_MAX + 1)])


def _check_link(mu, eta) -> tuple[float, float]:
    if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not 0.0 < mu <= 5.0:
        raise ConfigurationError(f"mu must be a mean photon number in (0, 5], got {mu!r}")
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 < eta <= 1.0:
        raise ConfigurationError(f"eta must be a transmittance in (0, 1], got {eta!r}")
    return float(mu), float(eta)


def pns_known_fraction(protocol: str, mu: float, eta: float) -> float:
    """The fraction of Bob's clicks whose bit Eve knows under the module's PNS family (B92 not modelled)."""
    if _protocol(protocol) == "b92":
        raise ConfigurationError("the PNS family is stated for bb84 and sarg04; B92's loss attack is "
                                 "unambiguous discrimination of each photon (see quantum.b92)")
    mu, eta = _check_link(mu, eta)
    p = _poisson(mu)
    q = -math.expm1(-eta * mu)
    if protocol == "bb84":
        known = min(q, 1.0 - p[0] - p[1])
    else:
        a = float(np.sum(p * _FOUR_STATE_USD))  # n >= 3: u_n > 0 only there
        known = min(q, a) + pair_usd_probability(1) * min(max(q - a, 0.0), p[2])
    return known / q


@dataclass(frozen=True)
class PnsRatePoint:
    """One protocol's PNS rate at (μ, η): ``rate`` per pulse, Bob's ``gain`` and Eve's known fraction."""

    protocol: str
    mu: float
    eta: float
    gain: float
    known_fraction: float
    rate: float

    def to_dict(self) -> dict:
        return asdict(self)


def pns_rate(protocol: str, mu: float, eta: float) -> PnsRatePoint:
    """The secret bits per pulse against the module's PNS family (see the module docstring).

    Examples:
        >>> b, s = pns_rate("bb84", 0.1, 1e-2), pns_rate("sarg04", 0.1, 1e-2)
        >>> b.rate == 0.0 < s.rate   # at μ = 0.1, η = 0.01 the multi-photon pulses already cover BB84's clicks
        True
    """
    kappa = pns_known_fraction(protocol, mu, eta)
    q = -math.expm1(-float(eta) * float(mu))
    sift = sifted_fraction(protocol)
    return PnsRatePoint(protocol=protocol, mu=float(mu), eta=float(eta), gain=q, known_fraction=kappa,
                        rate=max(0.0, sift * q * (1.0 - kappa)))


def optimal_pns_mu(protocol: str, eta: float) -> PnsRatePoint:
    """The μ in (0, 5] that maximises :func:`pns_rate` at transmittance ``eta`` (log grid + golden section)."""
    _check_link(0.5, eta)
    grid = np.geomspace(1e-6, 5.0, 600)
    rates = np.array([pns_rate(protocol, float(m), eta).rate for m in grid])
    i = int(np.argmax(rates))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    g = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(80):
        c, d = b - g * (b - a), a + g * (b - a)
        if pns_rate(protocol, float(c), eta).rate > pns_rate(protocol, float(d), eta).rate:
            b = d
        else:
            a = c
    return pns_rate(protocol, float((a + b) / 2.0), eta)
