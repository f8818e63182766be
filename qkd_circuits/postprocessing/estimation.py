"""QBER estimates with exact binomial (Clopper–Pearson) confidence bounds.

Clopper & Pearson, Biometrika 26, 404 (1934): for ``k`` errors in ``n`` compared bits the
one-sided upper bound at failure probability ε is the p solving P[Bin(n, p) <= k] = ε, i.e. the
(1 − ε) quantile of Beta(k + 1, n − k).  The regularised incomplete beta function I_x(a, b) is
evaluated in log space with the continued fraction of Numerical Recipes §6.4 (modified Lentz),
so the bound stays exact for millions of bits and ε down to 1e-300.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..exceptions import ConfigurationError

__all__ = ["QBEREstimate", "estimate_qber", "clopper_pearson"]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for I_x(a, b) (Numerical Recipes eq. 6.4.5), modified Lentz."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def _log_betainc(a: float, b: float, x: float, *, upper: bool) -> float:
    """log of I_x(a, b) (``upper=False``) or of 1 − I_x(a, b) (``upper=True``)."""
    if x <= 0.0:
        return -math.inf if not upper else 0.0
    if x >= 1.0:
        return 0.0 if not upper else -math.inf
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        log_i = log_front + math.log(_betacf(a, b, x)) - math.log(a)
        return log_i if not upper else math.log(-math.expm1(log_i)) if log_i < 0 else -math.inf
    log_c = log_front + math.log(_betacf(b, a, 1.0 - x)) - math.log(b)  # = log(1 − I_x(a, b))
    return log_c if upper else math.log(-math.expm1(log_c)) if log_c < 0 else -math.inf


def clopper_pearson(k: int, n: int, epsilon: float) -> tuple[float, float]:
    """One-sided Clopper–Pearson bounds ``(lower, upper)``, each failing with probability ε.

    Examples:
        >>> lo, hi = clopper_pearson(0, 1000, 0.05)
        >>> round(hi, 6)  # the "rule of three": about 3/n
        0.002991
    """
    if not (isinstance(n, int) and isinstance(k, int) and 0 <= k <= n and n > 0):
        raise ConfigurationError(f"need whole numbers 0 <= k <= n with n > 0, got k={k!r}, n={n!r}")
    if not 0.0 < epsilon < 1.0:
        raise ConfigurationError(f"epsilon must be in (0, 1), got {epsilon!r}")
    log_eps = math.log(epsilon)

    def solve(f, target: float) -> float:
        """Bisection on [0, 1] for f(p) = target, f increasing in p."""
        lo, hi = 0.0, 1.0
        for _ in range(200):
            mid = (lo + hi) / 2
            if f(mid) < target:
                lo = mid
            else:
                hi = mid
            if hi - lo < 1e-15 * max(hi, 1e-300):
                break
        return (lo + hi) / 2

    # upper: log P[X <= k] = log(1 − I_p(k+1, n−k)) = log ε; it decreases in p, so negate.
    upper = 1.0 if k == n else solve(lambda p: -_log_betainc(k + 1, n - k, p, upper=True), -log_eps)
    # lower: log P[X >= k] = log I_p(k, n−k+1) = log ε; it increases in p.
    lower = 0.0 if k == 0 else solve(lambda p: _log_betainc(k, n - k + 1, p, upper=False), log_eps)
    return lower, upper


@dataclass(frozen=True)
class QBEREstimate:
    """A quantum bit error rate measured on ``n`` compared bits.

    Attributes:
        errors, n: disagreements and bits compared.
        estimate: errors / n.
        lower, upper: one-sided Clopper–Pearson bounds, each failing with probability ``epsilon``.
    """

    errors: int
    n: int
    estimate: float
    lower: float
    upper: float
    epsilon: float

    def to_dict(self) -> dict:
        return {"estimate": self.estimate, "upper": self.upper, "lower": self.lower,
                "errors": self.errors, "n": self.n, "epsilon": self.epsilon}


def estimate_qber(errors: int, n: int, *, epsilon: float = 1e-10) -> QBEREstimate:
    """QBER with its exact binomial bounds.  ``n == 0`` gives estimate NaN and upper bound 1."""
    errors, n = int(errors), int(n)
    if n == 0:
        return QBEREstimate(0, 0, math.nan, 0.0, 1.0, epsilon)
    lower, upper = clopper_pearson(errors, n, epsilon)
    return QBEREstimate(errors, n, errors / n, lower, upper, epsilon)
