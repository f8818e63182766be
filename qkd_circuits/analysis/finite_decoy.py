"""Composable finite-key lengths of decoy-state BB84, from the counts of the round itself.

Two published analyses, each computed from the detections ``n_k`` and errors ``m_k`` per
intensity ``k`` in the key basis and in the test basis, with every ε term in an
:class:`EpsilonLedger`:

``lim2014``
    Lim, Curty, Walenta, Xu & Zbinden, "Concise security bounds for practical decoy-state
    quantum key distribution", PRA 89, 022307 (2014), arXiv:1311.7129.  One signal and two
    decoys, ``μ1 > μ2 + μ3``, ``μ2 > μ3 ≥ 0`` (μ3 may be the vacuum).  The key is extracted from
    the key-basis detections of *all* intensities; every test-basis bit is disclosed.  Eq. (1)::

        ℓ = ⌊ s_X0 + s_X1 − s_X1 h(φ_X) − λ_EC − 6 log2(21/ε_sec) − log2(2/ε_cor) ⌋

    with the Hoeffding-corrected counts ``n±_k = e^k/p_k (n_k ± sqrt(n/2 · ln(21/ε_sec)))``, the
    vacuum and single-photon lower bounds of Eqs. (2)–(3) (in both bases), the single-photon
    error bound of Eq. (4) on the test basis and the phase error of Eq. (5)::

        φ_X ≤ v_Z1/s_Z1 + γ(ε_sec, v_Z1/s_Z1, s_Z1, s_X1)

    The secrecy composes as Eq. (B4), ε_sec = 2[2α1 + α2 + α3] + ν + 10 ε1 + 2 ε2 = 21 ε.
``rusca2018``
    Rusca, Boaron, Grünenfelder, Martin & Zbinden, "Finite-key analysis for the 1-decoy state QKD
    protocol", APL 112, 171104 (2018), arXiv:1801.03443, Appendix A.  Two intensities
    ``μ1 > μ2`` and no vacuum.  The single-photon lower bound (A17) needs an *upper* bound on the
    vacuum detections, (A16), which uses the errors of one intensity in the *key* basis: the
    key-basis error counts are only known after error correction, so the protocol announces
    them then (Wiesemann et al., arXiv:2405.16578, discuss this ordering).  Eq. (A25)::

        ℓ = ⌊ s_X0 + s_X1 (1 − h(φ_X)) − λ_EC − 6 log2(19/ε_sec) − log2(2/ε_cor) ⌋

    with ε_sec = 2[α1 + 2α2 + α3] + ν + 6 ε1 + 4 ε2 = 19 ε (A24).  As printed, (A18) omits the
    ``e^k/p_k`` factor of the corrected counts; (A10) and Lim et al. need it, and it is used here.
    (A16) is applied with the weakest intensity μ2 (fixed in advance, not chosen from the data).

Naming follows Lim et al.: X is the key basis, Z the test basis (in this package's circuits
basis 0 and basis 1 respectively; the names are only labels).

The random-sampling term ``γ`` for the phase error comes in two versions, the ``sampling``
argument:

``"fung"``
    The published γ of both papers (from Fung, Ma & Chau, PRA 81, 012318 (2010)), which the
    authors describe as based on an *approximation* of the hypergeometric distribution;
    used to reproduce their figures.
``"serfling"``
    Serfling's inequality for sampling without replacement, as in the finite-key proof of
    Tomamichel, Lim, Gisin & Renner (arXiv:1103.4130, Supplementary Note 2): with c key and d test
    single-photon events, the phase error exceeds the test error by more than
    ``sqrt((c+d)/(c d) · (d+1)/d · ln(1/α)/2)`` with probability at most α.  A rigorous tail
    bound, at a small cost in key; the default of a protocol round.

Both papers bound the single-photon *sets* by their lower bounds s_X1, s_Z1 inside γ, as is
done here.  A fuller treatment (fixed-length protocols, acceptance tests, conditioning on
events) is in Wiesemann, Krause, Tupkary, Lütkenhaus, Rusca & Walenta, arXiv:2405.16578; it is not
implemented here.

Pure arithmetic on public numbers: counts may be floats (expected counts, for rate curves) or
integers (a round's counts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from ..exceptions import ConfigurationError
from .finite_key import binary_entropy, check_epsilon

__all__ = ["BasisCounts", "DecoyCounts", "EpsilonLedger", "EpsilonTerm", "DecoyKeyLength", "METHODS", "SAMPLINGS",
           "hoeffding_delta", "gamma_fung", "gamma_serfling", "lim2014", "rusca2018", "decoy_key_length",
           "tau", "terms_total"]

METHODS = ("lim2014", "rusca2018")
SAMPLINGS = ("serfling", "fung")


@dataclass(frozen=True)
class BasisCounts:
    """Detections and errors per intensity label in one basis (both parties' matched bases).

    ``errors`` may be ``None`` for the key basis before error correction (only Rusca's
    analysis needs them).
    """

    detections: Mapping[str, float]
    errors: Mapping[str, float] | None = None

    @property
    def n(self) -> float:
        return float(sum(self.detections.values()))

    @property
    def m(self) -> float:
        if self.errors is None:
            raise ConfigurationError("these counts hold no error numbers")
        return float(sum(self.errors.values()))

    def to_dict(self) -> dict:
        return {"detections": dict(self.detections), "errors": None if self.errors is None else dict(self.errors)}


@dataclass(frozen=True)
class DecoyCounts:
    """Everything a decoy analysis reads: intensities, their probabilities, counts in both bases.

    Attributes:
        intensities: mean photon number per label, e.g. ``{"signal": 0.5, "decoy": 0.1, "vacuum": 0.0}``.
        probabilities: Alice's probability of each label (summing to 1).
        key: counts in the key basis (X in Lim et al.): detections; errors after error correction.
        test: counts in the test basis (Z), errors included (every test bit is disclosed).
    """

    intensities: Mapping[str, float]
    probabilities: Mapping[str, float]
    key: BasisCounts
    test: BasisCounts

    def __post_init__(self) -> None:
        labels = set(self.intensities)
        if set(self.probabilities) != labels:
            raise ConfigurationError(f"probabilities name {sorted(self.probabilities)}, intensities {sorted(labels)}")
        for basis in (self.key, self.test):
            if set(basis.detections) != labels or (basis.errors is not None and set(basis.errors) != labels):
                raise ConfigurationError(f"counts must name every intensity {sorted(labels)}")
            for name, values in (("detections", basis.detections), ("errors", basis.errors or {})):
                for label, v in values.items():
                    if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0):
                        raise ConfigurationError(f"{name}[{label!r}] must be a finite count >= 0, got {v!r}")
            if basis.errors is not None and any(basis.errors[k] > basis.detections[k] for k in labels):
                raise ConfigurationError("more errors than detections for an intensity")
        total = sum(self.probabilities.values())
        if any(not (0 < p <= 1) for p in self.probabilities.values()) or abs(total - 1) > 1e-9:
            raise ConfigurationError(f"intensity probabilities must be in (0, 1] and sum to 1, got {dict(self.probabilities)}")
        if any(not (math.isfinite(mu) and 0 <= mu <= 10) for mu in self.intensities.values()):
            raise ConfigurationError(f"intensities must be mean photon numbers in [0, 10], got {dict(self.intensities)}")

    def ordered(self) -> list[str]:
        """Labels from the brightest intensity to the weakest (μ1, μ2, ...)."""
        return sorted(self.intensities, key=lambda k: -self.intensities[k])

    def to_dict(self) -> dict:
        return {"intensities": dict(self.intensities), "probabilities": dict(self.probabilities),
                "key": self.key.to_dict(), "test": self.test.to_dict()}


@dataclass(frozen=True)
class EpsilonTerm:
    """One failure probability of the proof: what it bounds, how often it enters ε_sec, its value."""

    name: str
    meaning: str
    multiplicity: int
    epsilon: float

    @property
    def contribution(self) -> float:
        return self.multiplicity * self.epsilon

    def to_dict(self) -> dict:
        return {"name": self.name, "meaning": self.meaning, "multiplicity": self.multiplicity,
                "epsilon": self.epsilon, "contribution": self.contribution}


@dataclass(frozen=True)
class EpsilonLedger:
    """The ε terms of a key length; :attr:`total` is what they add up to (≤ ε_sec)."""

    eps_sec: float
    eps_cor: float
    terms: tuple[EpsilonTerm, ...]
    source: str

    @property
    def total(self) -> float:
        return math.fsum(t.contribution for t in self.terms)

    def to_dict(self) -> dict:
        return {"eps_sec": self.eps_sec, "eps_cor": self.eps_cor, "total_secrecy": self.total, "source": self.source,
                "terms": [t.to_dict() for t in self.terms]}


@dataclass(frozen=True)
class DecoyKeyLength:
    """A decoy-state key length and every bound behind it (counts in bits/events).

    ``reason`` says why ``length`` is 0 when it is (``None`` otherwise).
    """

    length: int
    method: str
    sampling: str
    s_key_0: float
    s_key_1: float
    s_test_0: float
    s_test_1: float
    v_test_1: float
    phase_error: float
    phase_error_observed: float
    key_bits: float
    leak_ec: float
    verification_bits: float
    security_bits: float
    ledger: EpsilonLedger
    reason: str | None = None
    s_key_0_upper: float | None = None
    formula: str = ""

    @property
    def eps_sec(self) -> float:
        return self.ledger.eps_sec

    @property
    def eps_cor(self) -> float:
        return self.ledger.eps_cor

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "ledger"}
        return {**d, "eps_sec": self.eps_sec, "eps_cor": self.eps_cor, "ledger": self.ledger.to_dict()}


def hoeffding_delta(n: float, eps: float) -> float:
    """δ(n, ε) = sqrt(n/2 · ln(1/ε)), Hoeffding's deviation for n independent events."""
    return math.sqrt(max(n, 0.0) / 2.0 * math.log(1.0 / eps))


def gamma_fung(a: float, b: float, c: float, d: float) -> float:
    """Lim et al.'s γ(a, b, c, d) with ``a`` the failure probability of the bound (their α1, Eq. B2).

    ``sqrt((c+d)(1−b)b/(c d ln 2) · log2((c+d)/(c d (1−b) b) · 1/a²))``; 0 for b ∈ {0, 1}
    is not returned: there b is moved to the nearest value where the formula is defined, 1/(c+d).
    """
    if c <= 0 or d <= 0:
        return math.inf
    b = min(max(b, 1.0 / (c + d)), 1.0 - 1.0 / (c + d))
    inner = (c + d) / (c * d * (1.0 - b) * b) / a ** 2
    if inner <= 1.0:
        return 0.0
    return math.sqrt((c + d) * (1.0 - b) * b / (c * d * math.log(2)) * math.log2(inner))


def gamma_serfling(a: float, c: float, d: float) -> float:
    """Serfling's margin: the key-set error rate exceeds the test-set rate by more than this with
    probability at most ``a`` (c key, d test events, d the sample; TLGR's Supplementary Note 2)."""
    if c <= 0 or d <= 0:
        return math.inf
    return math.sqrt((c + d) / (c * d) * (d + 1.0) / d * math.log(1.0 / a) / 2.0)


def tau(n: int, intensities: Mapping[str, float], probabilities: Mapping[str, float]) -> float:
    """τ_n = Σ_k p_k e^−k k^n / n!, the probability that Alice sends n photons."""
    return math.fsum(probabilities[k] * math.exp(-mu) * mu ** n / math.factorial(n) for k, mu in intensities.items())


def _check(counts: DecoyCounts, leak_ec: float, eps_sec: float, eps_cor: float, sampling: str) -> tuple[float, float]:
    if not isinstance(counts, DecoyCounts):
        raise TypeError(f"counts must be DecoyCounts, got {type(counts).__name__}")
    if sampling not in SAMPLINGS:
        raise ConfigurationError(f"sampling must be one of {', '.join(SAMPLINGS)}; got {sampling!r}")
    if not (isinstance(leak_ec, (int, float)) and math.isfinite(leak_ec) and leak_ec >= 0):
        raise ConfigurationError(f"leak_ec must be a finite number of bits >= 0, got {leak_ec!r}")
    return check_epsilon("eps_sec", eps_sec), check_epsilon("eps_cor", eps_cor)


def _scaled(counts: Mapping[str, float], total: float, eps: float, intensities, probabilities, sign: int) -> dict:
    """e^k/p_k (n_k ± δ(total, ε)) for every k, floored at 0 (a count cannot be negative)."""
    delta = hoeffding_delta(total, eps)
    return {k: math.exp(intensities[k]) / probabilities[k] * max(counts[k] + sign * delta, 0.0) for k in counts}


def _vacuum_lower(lo: dict, hi: dict, mu2: str, mu3: str, mu: Mapping[str, float], t0: float) -> float:
    """Lim Eq. (2) / Rusca (A19): s_0 ≥ τ0 (μ2 n−_μ3 − μ3 n+_μ2)/(μ2 − μ3)."""
    a, b = mu[mu2], mu[mu3]
    return max(t0 * (a * lo[mu3] - b * hi[mu2]) / (a - b), 0.0)


def _finish(method, sampling, counts, s_x0, s_x1, s_z0, s_z1, v_z1, leak_ec, verification_bits, eps_sec, eps_cor,
            parts, alpha_phase, terms, formula, s_x0_upper=None) -> DecoyKeyLength:
    n_x = counts.key.n
    s_x0 = min(max(s_x0, 0.0), n_x)
    s_x1 = min(max(s_x1, 0.0), n_x)
    observed = min(v_z1 / s_z1, 0.5) if s_z1 > 0 else 0.5
    if s_x1 <= 0 or s_z1 <= 0:
        gamma = math.inf
    elif sampling == "fung":
        gamma = gamma_fung(alpha_phase, observed, s_z1, s_x1)
    else:
        gamma = gamma_serfling(alpha_phase, s_x1, s_z1)
    phase = min(observed + gamma, 0.5)
    verification = math.log2(2.0 / eps_cor) if verification_bits is None else float(verification_bits)
    security = parts * math.log2(float(terms_total(terms)) / eps_sec)
    raw = s_x0 + s_x1 * (1.0 - binary_entropy(phase)) - leak_ec - verification - security
    length = max(0, math.floor(raw))
    reason = None
    if length == 0:
        if s_x1 <= 0 or s_z1 <= 0:
            reason = "the decoy bounds certify no single-photon detections (too few counts, or an attack)"
        elif phase >= 0.5:
            reason = "the single-photon phase-error bound reaches 1/2"
        else:
            reason = (f"the certified entropy ({s_x0 + s_x1 * (1.0 - binary_entropy(phase)):.0f} bits) does not "
                      f"cover error correction ({leak_ec:.0f}), verification ({verification:.0f}) and the "
                      f"finite-size terms ({security:.0f} bits)")
    ledger = EpsilonLedger(eps_sec, eps_cor, tuple(terms), formula)
    return DecoyKeyLength(length, method, sampling, s_x0, s_x1, max(s_z0, 0.0), s_z1, v_z1, phase, observed, n_x,
                          float(leak_ec), verification, security, ledger, reason, s_x0_upper, formula)


def terms_total(terms) -> int:
    """How many equal parts ε_sec is split into (the 21 of Lim et al., the 19 of Rusca et al.)."""
    return sum(t.multiplicity for t in terms)


def lim2014(counts: DecoyCounts, *, leak_ec: float, eps_sec: float = 1e-10, eps_cor: float = 1e-15,
            verification_bits: float | None = None, sampling: str = "serfling") -> DecoyKeyLength:
    """Lim et al. 2014 (module docstring): three intensities μ1 > μ2 + μ3, μ2 > μ3 ≥ 0.

    Args:
        counts: the round's counts; the key basis needs only detections.
        leak_ec: λ_EC, the bits disclosed by error correction (parities, and anything else
            announced about the key).
        eps_sec, eps_cor: secrecy and correctness.
        verification_bits: bits the verification step disclosed; ``None`` uses the paper's
            ``log2(2/ε_cor)`` (the tag of a 2-universal hash of that length).
        sampling: ``"serfling"`` (rigorous, default) or ``"fung"`` (the paper's γ).

    Examples:
        >>> c = DecoyCounts({"s": 0.5, "d": 0.1, "v": 0.0}, {"s": 0.7, "d": 0.2, "v": 0.1},
        ...                 key=BasisCounts({"s": 3.0e6, "d": 1.8e5, "v": 200.0}),
        ...                 test=BasisCounts({"s": 3.0e6, "d": 1.8e5, "v": 200.0}, {"s": 3.0e4, "d": 2.0e3, "v": 100.0}))
        >>> kl = lim2014(c, leak_ec=250_000, sampling="fung")
        >>> kl.length > 0, round(kl.ledger.total / kl.eps_sec, 12), terms_total(kl.ledger.terms)
        (True, 1.0, 21)
    """
    eps_sec, eps_cor = _check(counts, leak_ec, eps_sec, eps_cor, sampling)
    labels = counts.ordered()
    if len(labels) != 3:
        raise ConfigurationError(f"lim2014 needs three intensities, got {len(labels)}: {labels}")
    mu = counts.intensities
    k1, k2, k3 = labels
    if not (mu[k1] > mu[k2] + mu[k3] and mu[k2] > mu[k3] >= 0):
        raise ConfigurationError(f"lim2014 needs μ1 > μ2 + μ3 and μ2 > μ3 >= 0, got {[mu[k] for k in labels]}")
    if counts.test.errors is None:
        raise ConfigurationError("lim2014 needs the test-basis error counts")
    e = eps_sec / 21.0
    p = counts.probabilities
    t0, t1 = tau(0, mu, p), tau(1, mu, p)

    def singles(basis: BasisCounts) -> tuple[float, float]:
        lo = _scaled(basis.detections, basis.n, e, mu, p, -1)
        hi = _scaled(basis.detections, basis.n, e, mu, p, +1)
        s0 = _vacuum_lower(lo, hi, k2, k3, mu, t0)
        a, b, c = mu[k1], mu[k2], mu[k3]
        s1 = t1 * a * (lo[k2] - hi[k3] - (b * b - c * c) / (a * a) * (hi[k1] - s0 / t0)) / (a * (b - c) - b * b + c * c)
        return s0, s1

    s_x0, s_x1 = singles(counts.key)
    s_z0, s_z1 = singles(counts.test)
    m_hi = _scaled(counts.test.errors, counts.test.m, e, mu, p, +1)
    m_lo = _scaled(counts.test.errors, counts.test.m, e, mu, p, -1)
    v_z1 = max(t1 * (m_hi[k2] - m_lo[k3]) / (mu[k2] - mu[k3]), 0.0)
    terms = [
        EpsilonTerm("alpha1", "phase-error estimate by random sampling (Eq. B2)", 4, e),
        EpsilonTerm("alpha2", "chain rule: single photons vs vacuum and multi-photon events", 2, e),
        EpsilonTerm("alpha3", "chain rule: vacuum vs multi-photon events", 2, e),
        EpsilonTerm("nu", "privacy amplification (leftover hash lemma)", 1, e),
        EpsilonTerm("eps1", "Hoeffding bounds on the detection counts (Eq. A1)", 10, e),
        EpsilonTerm("eps2", "Hoeffding bounds on the error counts (Eq. A2)", 2, e),
    ]
    return _finish("lim2014", sampling, counts, s_x0, s_x1, s_z0, s_z1, v_z1, leak_ec, verification_bits, eps_sec,
                   eps_cor, 6, e, terms, "Lim, Curty, Walenta, Xu & Zbinden, PRA 89, 022307 (2014), Eqs. (1)-(5), (B4)")


def rusca2018(counts: DecoyCounts, *, leak_ec: float, eps_sec: float = 1e-10, eps_cor: float = 1e-15,
              verification_bits: float | None = None, sampling: str = "serfling") -> DecoyKeyLength:
    """Rusca et al. 2018 (module docstring): two intensities μ1 > μ2, key-basis errors known.

    Arguments as for :func:`lim2014`; ``counts.key.errors`` (the key-basis errors per intensity,
    known after error correction) and ``counts.test.errors`` are both required.

    Examples:
        >>> c = DecoyCounts({"s": 0.5, "d": 0.15}, {"s": 0.8, "d": 0.2},
        ...                 key=BasisCounts({"s": 3.0e6, "d": 2.3e5}, {"s": 3.0e4, "d": 2.5e3}),
        ...                 test=BasisCounts({"s": 3.0e6, "d": 2.3e5}, {"s": 3.0e4, "d": 2.5e3}))
        >>> kl = rusca2018(c, leak_ec=250_000, sampling="fung")
        >>> kl.length > 0, terms_total(kl.ledger.terms), kl.s_key_0_upper > kl.s_key_0
        (True, 19, True)
    """
    eps_sec, eps_cor = _check(counts, leak_ec, eps_sec, eps_cor, sampling)
    labels = counts.ordered()
    if len(labels) != 2:
        raise ConfigurationError(f"rusca2018 needs two intensities, got {len(labels)}: {labels}")
    mu = counts.intensities
    k1, k2 = labels
    if not mu[k1] > mu[k2] > 0:
        raise ConfigurationError(f"rusca2018 needs μ1 > μ2 > 0, got {[mu[k] for k in labels]}")
    if counts.test.errors is None or counts.key.errors is None:
        raise ConfigurationError("rusca2018 needs the error counts of both bases (key-basis errors after "
                                 "error correction)")
    e = eps_sec / 19.0
    p = counts.probabilities
    t0, t1 = tau(0, mu, p), tau(1, mu, p)
    a, b = mu[k1], mu[k2]

    def bounds(basis: BasisCounts) -> tuple[float, float, float]:
        lo = _scaled(basis.detections, basis.n, e, mu, p, -1)
        hi = _scaled(basis.detections, basis.n, e, mu, p, +1)
        s0_low = _vacuum_lower(lo, hi, k1, k2, mu, t0)
        # (A16) with the weakest intensity: errors of vacuum events occur with probability 1/2.
        m_hi = math.exp(b) / p[k2] * (basis.errors[k2] + hoeffding_delta(basis.m, e))
        s0_up = min(2.0 * (t0 * m_hi + hoeffding_delta(basis.n, e)), basis.n)
        s1 = t1 * a / (b * (a - b)) * (lo[k2] - b * b / (a * a) * hi[k1] - (a * a - b * b) / (a * a) * s0_up / t0)
        return s0_low, s0_up, s1

    s_x0, s_x0_up, s_x1 = bounds(counts.key)
    s_z0, _, s_z1 = bounds(counts.test)
    m_hi = _scaled(counts.test.errors, counts.test.m, e, mu, p, +1)
    m_lo = _scaled(counts.test.errors, counts.test.m, e, mu, p, -1)
    v_z1 = max(t1 / (a - b) * (m_hi[k1] - m_lo[k2]), 0.0)
    terms = [
        EpsilonTerm("alpha1", "phase-error estimate by random sampling", 2, e),
        EpsilonTerm("alpha2", "chain rules of the smooth min-entropy", 4, e),
        EpsilonTerm("alpha3", "chain rule: vacuum vs multi-photon events", 2, e),
        EpsilonTerm("nu", "privacy amplification (leftover hash lemma)", 1, e),
        EpsilonTerm("eps1", "Hoeffding bounds on the detection counts (A2)", 6, e),
        EpsilonTerm("eps2", "Hoeffding bounds on the error counts (A4)", 4, e),
    ]
    return _finish("rusca2018", sampling, counts, s_x0, s_x1, s_z0, s_z1, v_z1, leak_ec, verification_bits, eps_sec,
                   eps_cor, 6, e, terms, "Rusca, Boaron, Grünenfelder, Martin & Zbinden, APL 112, 171104 (2018), "
                   "Eqs. (A16)-(A25)", s_x0_upper=s_x0_up)


def decoy_key_length(counts: DecoyCounts, method: str | None = None, **kwargs) -> DecoyKeyLength:
    """:func:`lim2014` for three intensities, :func:`rusca2018` for two (or the ``method`` named)."""
    if method is None:
        method = "lim2014" if len(counts.intensities) == 3 else "rusca2018"
    if method not in METHODS:
        raise ConfigurationError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    return (lim2014 if method == "lim2014" else rusca2018)(counts, **kwargs)
