"""How many secret bits a round may output: finite-key and asymptotic bounds.

Finite key (Tomamichel, Lim, Gisin, Renner, "Tight finite-key analysis for quantum
cryptography", Nat. Commun. 3, 634 (2012); arXiv:1103.4130): with n bits kept for the key and k
sampled for parameter estimation, a protocol that aborts when the sampled error rate exceeds
Q_tol is ε_sec-secret and ε_cor-correct if

    ℓ ≤ n·[q − h(Q_tol + μ)] − leak_EC − log2( 2 / (ε_sec² · ε_cor) ),
    μ = sqrt( (n + k)/(n·k) · (k + 1)/k · ln(4/ε_sec) ),

with q = 1 for ideal BB84 (the preparation quality; 1 for perfectly complementary bases).

Which constant, and why ln(4/ε_sec): the proof (arXiv:1103.4130, Supplementary Note 1, Theorem 2
with Lemma 3 of Note 2) allows any ε, ε̃ > 0 with 2ε + ε̃ ≤ ε_sec, costs 2·log2(1/(2ε̃)) bits in
the leftover hash lemma and puts ln(1/ε) inside μ.  Taking ε = ε_sec/4 and ε̃ = ε_sec/2 gives
exactly the two terms above: log2(2/(ε_sec² ε_cor)) and ln(4/ε_sec).  The arXiv main text prints
ln(4/ε_sec); versions of the formula with ln(2/ε_sec) circulate (this module used it before), and
they do not follow from the proof with this security term, so the conservative ln(4/ε_sec) is
implemented.  The difference is at most ~0.4 points of ℓ/N.

Asymptotic (Shor & Preskill, PRL 85, 441 (2000)): r = 1 − 2h(Q) per sifted bit, and with an
error-correction inefficiency f (leak = f·n·h(Q)): r = 1 − h(Q) − f·h(Q).  Zero at Q ≈ 11.0%.

The ε parameters (ε_sec, ε_cor, and the QBER bound's ε in the protocol) must lie in
(0, :data:`EPSILON_MAX`] = (0, 1/2]; :func:`check_epsilon` raises
:class:`~qkd_circuits.ConfigurationError` otherwise (also for NaN and ±inf).  Why 1/2:

* ε = 0 is a division by zero in both logarithms; ε < 0 or NaN has no meaning.
* The arithmetic of the TLGR terms alone would run further: ln(4/ε_sec) inside μ is positive
  only for ε_sec < 4 (at 4 the statistical margin μ vanishes, past it μ is the square root of a
  negative number), and log2(2/(ε_sec² ε_cor)) is positive only for ε_sec²·ε_cor < 2.  Both
  terms shrink as ε grows, so the length grows with ε (more risk, more key) — which is why
  ε_sec = 2.0 "gave" a longer key than 0.5.  But ε_sec and ε_cor are a trace distance and a
  failure probability: at ε ≥ 1 the statement is vacuous whatever length the formula prints.
* The QBER bound's ε (Clopper–Pearson, :mod:`.estimation`) is the binding one: its "upper"
  bound is the p with P[Bin(k, p) ≤ errors] = ε, and it lies above the point estimate
  errors/k for every sample only while ε ≤ 1/2 (at p = errors/k the binomial's median is
  the count itself, so P ≥ 1/2).  With ε = 0.6 and 7 errors in 100 the "upper" bound is
  6.99% < 7%: the key length would be computed from an error rate below the one measured.
* One bound for all three keeps the rule easy to state; no meaningful security claim uses an
  ε anywhere near 1/2 (deployments use 1e-9 … 1e-15), so nothing legitimate is refused.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from ..exceptions import ConfigurationError

__all__ = ["binary_entropy", "check_epsilon", "decoy_key_length", "EPSILON_MAX", "finite_key_length",
           "shor_preskill_rate", "KeyLength", "variable_key_length", "optimal_sample_size", "optimal_length_at",
           "minimum_sifted_bits",
           "TOLERANCE_STEP", "TOLERANCE_VALUES"]

#: The public grid of tolerances a variable-length round may pick from: 0.1%, 0.2%, ..., 50%.
TOLERANCE_STEP = 0.001
TOLERANCE_VALUES = 500

#: The largest ε (ε_sec, ε_cor, the QBER bound's ε) accepted; see the module docstring for why.
EPSILON_MAX = 0.5


def check_epsilon(name: str, value: float) -> float:
    """``value`` as a float if it is a valid ε, i.e. in (0, :data:`EPSILON_MAX`].

    Raises:
        ConfigurationError: outside (0, 0.5], NaN or infinite; the message names ``name``, the
            value and the range.
        TypeError: not a real number (``bool`` included).

    Examples:
        >>> check_epsilon("eps_sec", 1e-10)
        1e-10
        >>> check_epsilon("eps_sec", 1.5)
        Traceback (most recent call last):
        ...
        qkd_circuits.exceptions.ConfigurationError: eps_sec must be in (0, 0.5], got 1.5
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not 0.0 < value <= EPSILON_MAX:  # False for NaN; inf fails the upper bound
        raise ConfigurationError(f"{name} must be in (0, {EPSILON_MAX:g}], got {value!r}")
    return value


def binary_entropy(x):
    """h(x) = −x log2 x − (1−x) log2(1−x); h(0) = 0, and h(x) = 1 for x >= 1/2 here.

    The bound is used for error rates: past 1/2 nothing is secret, so h is not mirrored.  A
    scalar gives a ``float``; an array gives an array of the same shape (vectorised).

    >>> binary_entropy(0.11) > 0.49, binary_entropy(0.7), binary_entropy([0.0, 0.5]).tolist()
    (True, 1.0, [0.0, 1.0])
    """
    if np.ndim(x) == 0:
        x = float(x)
        if x <= 0.0:
            return 0.0
        if x >= 0.5:
            return 1.0
        return -x * math.log2(x) - (1 - x) * math.log2(1 - x)
    x = np.asarray(x, dtype=float)
    inner = np.clip(x, 1e-300, 0.5)
    h = -(inner * np.log2(inner) + (1.0 - inner) * np.log2(1.0 - inner))
    return np.where(x <= 0.0, 0.0, np.where(x >= 0.5, 1.0, h))


@dataclass(frozen=True)
class KeyLength:
    """The finite-key length and every term that went into it (bits)."""

    length: int
    n: int
    k: int
    qber_tolerance: float
    mu: float
    leak_ec: int
    eps_sec: float
    eps_cor: float
    privacy_term: float  # n·h(Q_tol + μ)
    security_term: float  # log2(2/(ε_sec² ε_cor))
    tolerance_rule: str = "fixed in advance"
    formula: str = "Tomamichel-Lim-Gisin-Renner 2012, Eq. (2) with ln(4/eps_sec) (arXiv:1103.4130)"
    single_photon_fraction: float | None = None  # decoy rounds: κ, the certified single-photon share

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def finite_key_length(n: int, k: int, qber_tolerance: float, leak_ec: int, *,
                      eps_sec: float = 1e-10, eps_cor: float = 1e-15) -> KeyLength:
    """The TLGR 2012 key length (see the module docstring); ``length`` is 0 when nothing is left.

    ``eps_sec`` and ``eps_cor`` must be in (0, 0.5] (:func:`check_epsilon`; the module docstring
    says why); anything else raises :class:`~qkd_circuits.ConfigurationError`.

    Examples:
        >>> kl = finite_key_length(10**6, 10**5, 0.02, 150_000)
        >>> round(kl.mu, 5), kl.length
        (0.01639, 624408)
    """
    if n < 1 or k < 1:
        raise ConfigurationError(f"need n >= 1 key bits and k >= 1 sample bits, got n={n}, k={k}")
    eps_sec, eps_cor = check_epsilon("eps_sec", eps_sec), check_epsilon("eps_cor", eps_cor)
    if not 0.0 <= qber_tolerance <= 1.0:
        raise ConfigurationError(f"qber_tolerance must be in [0, 1], got {qber_tolerance}")
    mu = math.sqrt((n + k) / (n * k) * (k + 1) / k * math.log(4 / eps_sec))
    privacy = n * binary_entropy(qber_tolerance + mu)
    security = math.log2(2 / (eps_sec ** 2 * eps_cor))
    length = max(0, math.floor(n - privacy - leak_ec - security))
    return KeyLength(length, n, k, qber_tolerance, mu, int(leak_ec), eps_sec, eps_cor, privacy, security)


def decoy_key_length(n: int, k: int, single_photon_fraction: float, e1_upper: float, leak_ec: int, *,
                     eps_sec: float = 1e-10, eps_cor: float = 1e-15) -> KeyLength:
    """The key length of weak-coherent-pulse BB84 from single-photon bounds (GLLP).

    Only the single-photon share of the key is private (Gottesman, Lo, Lütkenhaus & Preskill
    2004): ``ℓ = n κ [1 − h(e_1)] − leak_EC − log2(2/(ε_sec² ε_cor))``, with ``κ = Q_1/Q_μ`` a
    lower bound on the fraction of the n key bits that came from single-photon pulses and
    ``e_1`` an upper bound on their error (phase-error) rate, both from the decoy analysis
    (:func:`qkd_circuits.analysis.keyrate.decoy_estimate`; their statistical fluctuation is in those
    bounds, as in Ma et al. 2005's fluctuation analysis).  This is the asymptotic GLLP formula applied to finite
    counts with fluctuation-corrected bounds; it is not a composable finite-key proof such as
    Lim, Curty, Walenta, Xu & Zbinden, PRA 89, 022307 (2014).  ``eps_sec`` and ``eps_cor`` must
    be in (0, 0.5], as for :func:`finite_key_length`.

    Examples:
        >>> decoy_key_length(100_000, 10_000, 0.6, 0.04, 25_000).length
        20345
    """
    if n < 1:
        raise ConfigurationError(f"need n >= 1 key bits, got n={n}")
    if not 0.0 <= single_photon_fraction <= 1.0:
        raise ConfigurationError(f"single_photon_fraction must be in [0, 1], got {single_photon_fraction}")
    if not 0.0 <= e1_upper <= 0.5:
        raise ConfigurationError(f"e1_upper must be in [0, 0.5], got {e1_upper}")
    eps_sec, eps_cor = check_epsilon("eps_sec", eps_sec), check_epsilon("eps_cor", eps_cor)
    private = n * single_photon_fraction * (1.0 - binary_entropy(e1_upper))
    security = math.log2(2 / (eps_sec ** 2 * eps_cor))
    length = max(0, math.floor(private - leak_ec - security))
    # qber_tolerance holds e_1 (the phase-error bound) and mu is 0: the statistical margin is
    # already inside the decoy bounds.
    return KeyLength(length, n, k, e1_upper, 0.0, int(leak_ec), eps_sec, eps_cor, n - private,
                     security, "single-photon bounds from the decoy analysis",
                     "GLLP with decoy bounds (Gottesman et al. 2004; Ma et al. 2005)", single_photon_fraction)


def shor_preskill_rate(qber: float, f: float = 1.0) -> float:
    """Asymptotic secret fraction per sifted bit, 1 − h(Q) − f·h(Q) (0 when negative)."""
    return max(0.0, 1.0 - (1.0 + f) * binary_entropy(qber))


def variable_key_length(n: int, k: int, sampled_qber: float, leak_ec: int, *,
                        eps_sec: float = 1e-10, eps_cor: float = 1e-15) -> KeyLength:
    """The key length when Q_tol is chosen from the data, kept ε_sec-secret by a union bound.

    Q_tol is the sampled QBER rounded *up* to the public grid {0.1%, 0.2%, …, 50%}
    (:data:`TOLERANCE_VALUES` values).  Each grid value j defines a fixed-length TLGR protocol
    that passes its test whenever j is chosen, so the distance of the combined protocol from an
    ideal key is at most Σ_j Pr[pass_j]·d_j ≤ Σ_j ε_j; running each with ε_sec / 500 makes the
    whole round ε_sec-secret.  The price: ln(4/ε_sec) in μ grows by ln 500, and 2·log2(500) ≈ 18
    bits more in the security term (about 1.5% of the key at n = 10^6, Q = 2%).  ``eps_sec`` and
    ``eps_cor`` (the round's, before the division) must be in (0, 0.5].
    """
    if not 0.0 <= sampled_qber <= 0.5:
        raise ConfigurationError(f"sampled_qber must be in [0, 0.5], got {sampled_qber}")
    # Checked here, before the division, so the message names the caller's value.
    eps_sec, eps_cor = check_epsilon("eps_sec", eps_sec), check_epsilon("eps_cor", eps_cor)
    steps = max(1, math.ceil(round(sampled_qber / TOLERANCE_STEP, 9)))
    q_tol = min(steps, TOLERANCE_VALUES) * TOLERANCE_STEP
    kl = finite_key_length(n, k, q_tol, leak_ec, eps_sec=eps_sec / TOLERANCE_VALUES, eps_cor=eps_cor)
    return KeyLength(**{**kl.__dict__, "tolerance_rule":
                        f"sampled QBER rounded up to a {TOLERANCE_STEP:g} grid; eps_sec/{TOLERANCE_VALUES} each"})


def _round_length(sifted: int, k: int, qber: float, f_ec: float, extra_leak: int, eps_sec: float,
                  eps_cor: float) -> KeyLength:
    n = sifted - k
    leak = math.ceil(f_ec * n * binary_entropy(qber)) + extra_leak
    return variable_key_length(n, k, qber, leak, eps_sec=eps_sec, eps_cor=eps_cor)


def _check_design(sifted: int | None, qber: float, f_ec: float) -> None:
    if sifted is not None and (isinstance(sifted, bool) or not isinstance(sifted, numbers.Integral) or sifted < 2):
        raise ConfigurationError(f"sifted must be a whole number >= 2, got {sifted!r}")
    if not (isinstance(qber, numbers.Real) and 0.0 <= qber < 0.5):
        raise ConfigurationError(f"qber must be in [0, 0.5), got {qber!r}")
    if not (isinstance(f_ec, numbers.Real) and math.isfinite(f_ec) and f_ec >= 1.0):
        raise ConfigurationError(f"f_ec must be finite and >= 1, got {f_ec!r}")


def optimal_sample_size(sifted: int, qber: float, *, f_ec: float = 1.2, extra_leak: int = 128,
                        eps_sec: float = 1e-10, eps_cor: float = 1e-15) -> tuple[int, KeyLength]:
    """The sample size k that gives the longest key from ``sifted`` bits at an expected QBER.

    The round discloses a random sample of k of its sifted bits, reconciles the other n = sifted −
    k with leak_EC = ⌈f_ec·n·h(Q)⌉ + ``extra_leak`` (the 128-bit verification tag by default)
    and applies :func:`variable_key_length`.  A small sample leaves more key bits but a wider
    statistical margin μ; the best k balances the two (for BB84 with biased bases this is the
    choice of the test-basis probability, Tomamichel et al. 2012's p_x).  Choose k from a
    *design* QBER fixed before the round, never from the round's own data.

    Returns:
        ``(k, key_length)`` at the best k (``key_length.length`` may be 0: no k gives a key).

    Examples:
        >>> k, kl = optimal_sample_size(10_000, 0.025)
        >>> 1_000 < k < 4_000 and kl.length > optimal_length_at(10_000, 1_000, 0.025)
        True
    """
    _check_design(sifted, qber, f_ec)
    candidates = np.unique(np.geomspace(1, sifted - 1, 160).astype(np.int64))
    lengths = [_round_length(sifted, int(k), qber, f_ec, extra_leak, eps_sec, eps_cor).length for k in candidates]
    i = int(np.argmax(lengths))
    lo, hi = int(candidates[max(i - 1, 0)]), int(candidates[min(i + 1, candidates.size - 1)])
    best_k, best = int(candidates[i]), _round_length(sifted, int(candidates[i]), qber, f_ec, extra_leak, eps_sec, eps_cor)
    for k in np.unique(np.linspace(lo, hi, 64).astype(np.int64)):
        kl = _round_length(sifted, int(k), qber, f_ec, extra_leak, eps_sec, eps_cor)
        if kl.length > best.length:
            best_k, best = int(k), kl
    return best_k, best


def optimal_length_at(sifted: int, k: int, qber: float, *, f_ec: float = 1.2, extra_leak: int = 128,
                      eps_sec: float = 1e-10, eps_cor: float = 1e-15) -> int:
    """The key length of :func:`optimal_sample_size`'s model at a given sample size ``k``."""
    _check_design(sifted, qber, f_ec)
    if not 1 <= k < sifted:
        raise ConfigurationError(f"need 1 <= k < sifted, got k={k}, sifted={sifted}")
    return _round_length(sifted, k, qber, f_ec, extra_leak, eps_sec, eps_cor).length


def minimum_sifted_bits(qber: float, *, sample_fraction: float | None = None, f_ec: float = 1.2,
                        extra_leak: int = 128, eps_sec: float = 1e-10, eps_cor: float = 1e-15) -> int | None:
    """The fewest sifted bits that give a key of at least one bit at QBER ``qber``.

    ``sample_fraction`` is the share sampled (``None``: the optimal sample of
    :func:`optimal_sample_size` at each size).  ``None`` is returned when no size up to 2^40 bits
    gives a key (the QBER is past what f_ec allows).  Leak model as in :func:`optimal_sample_size`.

    Examples:
        >>> minimum_sifted_bits(0.0) < minimum_sifted_bits(0.0, sample_fraction=0.1) < 10_000
        True
        >>> minimum_sifted_bits(0.2) is None
        True
    """
    _check_design(None, qber, f_ec)
    if sample_fraction is not None and not 0.0 < sample_fraction < 1.0:
        raise ConfigurationError(f"sample_fraction must be in (0, 1), got {sample_fraction!r}")

    def gives_key(n: int) -> bool:
        if sample_fraction is None:
            return optimal_sample_size(n, qber, f_ec=f_ec, extra_leak=extra_leak, eps_sec=eps_sec,
                                       eps_cor=eps_cor)[1].length > 0
        k = min(n - 1, max(1, math.ceil(sample_fraction * n)))
        return _round_length(n, k, qber, f_ec, extra_leak, eps_sec, eps_cor).length > 0

    hi = 1 << 40
    if not gives_key(hi):
        return None
    lo = 2
    while hi - lo > max(1, lo // 1000):  # to 0.1%: the answer is a guide, not a threshold
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if gives_key(mid) else (mid, hi)
    return hi
