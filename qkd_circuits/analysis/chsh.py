"""E91 with the CHSH test: S from the test rounds with a confidence bound, and the key rates from S.

Convention (Ekert 1991 settings, written as Bloch-sphere angles in the X–Z plane):

* the source emits |Φ+> = (|00> + |11>)/√2 (not the singlet);
* a measurement at angle θ is the observable A(θ) = cos θ·Z + sin θ·X (outcome 0 ↦ +1, 1 ↦ −1);
  in the circuits it is RY(−θ) followed by a Z measurement.  For a photon's polarisation the
  analyser stands at θ/2;
* Alice picks a ∈ :data:`ALICE_ANGLES` = {0, π/4, π/2}, Bob b ∈ :data:`BOB_ANGLES` =
  {π/4, π/2, 3π/4}, each uniformly and independently per pulse;
* on |Φ+>, E(a, b) = <A(a) ⊗ A(b)> = cos(a − b) (a singlet would give −cos(a − b));
* test rounds: a ∈ {a₁, a₃}, b ∈ {b₁, b₃} (4 of the 9 setting pairs),
  S = E(a₁, b₁) − E(a₁, b₃) + E(a₃, b₁) + E(a₃, b₃) = 2√2 on |Φ+> (:data:`CHSH_TERMS`);
* key rounds: the two pairs with equal angles, (a₂, b₁) = (π/4, π/4) and (a₃, b₂) = (π/2, π/2)
  (:data:`KEY_PAIRS`): perfectly correlated bits on |Φ+>, so Bob's bit is Alice's;
* the other 3 pairs are discarded (as in Ekert's paper).

What noise and an eavesdropper do (derivations; tests/test_e91.py checks the circuits against them):

Depolarizing on Bob's arm
    Qiskit's ``depolarizing_error(λ, 1)`` is ρ → (1 − λ)ρ + λ·I/2.  Bob's Z and X expectations shrink
    by V = 1 − λ (the visibility), so E(a, b) = V·cos(a − b), S = 2√2·V and the key rounds' QBER is
    Q = (1 − V)/2 = λ/2.  Written with the probability p of a uniformly random Pauli error (X, Y, Z
    each p/3; p = 3λ/4) the same line is V = 1 − 4p/3, S = 2√2(1 − 4p/3).  Noise on both arms
    multiplies the visibilities.  S ≤ 2 (no violation) for V ≤ 1/√2, i.e. Q ≥ (1 − 1/√2)/2 ≈ 14.6%.

Other noise on Bob's arm
    A coherent misalignment RY(φ), e = sin²(φ/2), gives E = cos(a − b ± φ): S = 2√2(1 − 2e), Q = e
    (V = 1 − 2e, the same line).  A Pauli channel scales Bob's Z by η_Z and X by η_X, so
    S = √2(η_Z + η_X): dephasing q (η_X = 1 − 2q) and bit flip q (η_Z = 1 − 2q) each give
    S = 2√2(1 − q), but the key pairs differ: the (π/4, π/4) pair errs with q/2 under either, the
    (π/2, π/2) pair (both measure X) with q under dephasing and never under a bit flip, so
    Q = 3q/4 and q/4.  :func:`predicted_statistics` computes every combination exactly.

Intercept-resend on Bob's arm
    Eve measures Bob's qubit along an axis at angle e in the X–Z plane and resends the eigenstate
    she found.  |Φ+> = (|e+ e+> + |e− e−>)/√2 for every real rotation, so her result is Alice's
    too and E(a, b) = cos(a − e)·cos(b − e) = [cos(a − b) + cos(a + b − 2e)]/2.  In S the second
    terms cancel for every e, so S = √2 exactly: Z, X, the Breidbart axis (π/4) and a random
    choice of Z or X all give √2 < 2.  On a fraction f of the pulses, S = √2(2 − f), which
    reaches the classical bound 2 at f = 2 − √2 ≈ 0.586.  Key rounds: Q = [1 − cos(2a − 2e)]/4
    for the pair at angle a, so a random Z/X Eve causes 25% on both key pairs (as in BB84), a
    Z-only Eve 25% on (π/4, π/4) and 50% on (π/2, π/2).

Key rates (asymptotic, per key round)
    Device-independent, collective attacks (Acín, Brunner, Gisin, Massar, Pironio & Scarani,
    PRL 98, 230501, 2007): r_DI = 1 − h(Q) − h((1 + √((S/2)² − 1))/2), which is 1 at S = 2√2, Q = 0
    and 0 (clipped) at S = 2.  The bound holds for a key bit that is the outcome of one of the
    key side's two CHSH measurements, so here it covers only the (a₃, b₂) = (π/2, π/2) rounds
    (:data:`DI_KEY_PAIR`; Alice's a₃ is a CHSH setting, with Alice's bits as the key) and Q is
    theirs.  The (a₂, b₁) rounds would qualify with Bob's bits as the key (b₁ is his CHSH setting;
    reverse reconciliation), which the BB84 post-processing does not do, so :func:`estimate_chsh`
    does not count them for r_DI.  Beside it the device-dependent (BB84-type, one-way,
    Shor–Preskill) rate r_DD = 1 − 2h(Q) over both key pairs.  On the depolarizing line
    (S = 2√2(1 − 2Q)) r_DI vanishes at Q ≈ 7.1% (7.149%, :func:`di_threshold_qber`) against r_DD's 11.0%.

Confidence bounds (:func:`estimate_chsh`)
    Rounds are taken as independent and identically distributed (the collective-attack setting of
    the rate above), settings chosen independently of the devices.  Given the n_ij test rounds of
    setting pair (i, j), each product x·y ∈ {−1, +1}, so Hoeffding's inequality gives
    P[Ê_ij − E_ij ≥ t] ≤ exp(−n_ij t²/2).  With ε/4 for each of the four correlators (a union
    bound), S ≥ Ŝ − Σ_ij √(2 ln(4/ε)/n_ij) except with probability ε (and likewise the upper
    bound).  The key rounds' error rate gets a one-sided Clopper–Pearson upper bound at ε.  The
    rate at (S_lower, Q_upper) is the asymptotic formula at pessimistic parameters: *not* a
    composable finite-key device-independent bound (that needs entropy accumulation, Arnon-Friedman
    et al. 2018), which this module does not claim.

This module is numpy and scipy only (layer 1): it takes settings and outcomes as arrays.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..exceptions import ConfigurationError
from .finite_key import binary_entropy

__all__ = [
    "ALICE_ANGLES", "ALICE_CODES", "ANGLES", "BOB_ANGLES", "BOB_CODES", "CHSH_TERMS", "CLASSICAL_BOUND", "CHSHEstimate",
    "DI_KEY_PAIR", "KEY_PAIRS", "TSIRELSON_BOUND",
    "bb84_key_rate", "chsh_value", "correlator", "di_key_rate", "di_privacy_cost", "di_threshold_qber", "estimate_chsh",
    "hoeffding_radius", "intercept_resend_chsh", "intercept_resend_correlator", "intercept_resend_qber",
    "key_qber", "predicted_statistics", "Prediction", "visibility_from_depolarizing", "visibility_from_misalignment",
    "visibility_from_pauli_probability",
]

#: Alice's measurement angles a₁, a₂, a₃ (Bloch sphere, X–Z plane); setting index 0, 1, 2.
ALICE_ANGLES = (0.0, math.pi / 4, math.pi / 2)
#: Bob's measurement angles b₁, b₂, b₃; setting index 0, 1, 2.
BOB_ANGLES = (math.pi / 4, math.pi / 2, 3 * math.pi / 4)
#: Every measurement angle of either party; a *basis code* is an index into it.
ANGLES = (0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4)
#: Alice's settings 0, 1, 2 as basis codes, and Bob's: the key rounds are exactly the pulses whose
#: two codes agree (BB84's sifting rule, ``alice_bases == bob_bases``).
ALICE_CODES = (0, 1, 2)
BOB_CODES = (1, 2, 3)
#: (Alice's setting, Bob's setting, sign) of each correlator in S.
CHSH_TERMS = ((0, 0, +1), (0, 2, -1), (2, 0, +1), (2, 2, +1))
#: (Alice's setting, Bob's setting) of the key rounds: equal angles π/4 and π/2.
KEY_PAIRS = ((1, 0), (2, 1))
#: The key pair the device-independent rate covers: Alice's key setting a₃ is one of her CHSH settings.
DI_KEY_PAIR = (2, 1)
#: Largest |S| of any quantum state (Tsirelson 1980): 2√2.
TSIRELSON_BOUND = 2.0 * math.sqrt(2.0)
#: Largest |S| of local hidden variables (Clauser, Horne, Shimony & Holt 1969).
CLASSICAL_BOUND = 2.0


def _check_probability(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= value <= 1.0:  # False for NaN
        raise ConfigurationError(f"{name} must be in [0, 1], got {value!r}")
    return value


def _check_epsilon(epsilon) -> float:
    try:
        epsilon = float(epsilon)
    except (TypeError, ValueError):
        raise ConfigurationError(f"epsilon must be a number in (0, 1), got {epsilon!r}") from None
    if not 0.0 < epsilon < 1.0:
        raise ConfigurationError(f"epsilon must be in (0, 1), got {epsilon!r}")
    return epsilon


def visibility_from_depolarizing(lam: float) -> float:
    """V = 1 − λ for Qiskit's ``depolarizing_error(λ, 1)`` (ρ → (1 − λ)ρ + λ·I/2) on one arm."""
    return 1.0 - _check_probability("depolarizing", lam)


def visibility_from_pauli_probability(p: float) -> float:
    """V = 1 − 4p/3 for a uniformly random Pauli error (X, Y, Z each p/3) on one arm; p <= 3/4."""
    p = _check_probability("Pauli error probability", p)
    if p > 0.75:
        raise ConfigurationError(f"a depolarizing Pauli error probability is at most 3/4, got {p!r}")
    return 1.0 - 4.0 * p / 3.0


def visibility_from_misalignment(e: float) -> float:
    """V = 1 − 2e for a coherent misalignment RY(φ) of Bob's qubit with e = sin²(φ/2).

    The rotation turns E(a, b) into cos(a − b + φ); the sine terms cancel in S, so
    S = 2√2·cos φ = 2√2(1 − 2e) and the key rounds' Q = (1 − cos φ)/2 = e: the depolarizing line.
    """
    return 1.0 - 2.0 * _check_probability("misalignment", e)


def correlator(a: float, b: float, visibility: float = 1.0) -> float:
    """E(a, b) = V·cos(a − b): |Φ+> seen through a visibility V (depolarizing noise)."""
    return _check_probability("visibility", visibility) * math.cos(a - b)


def chsh_value(visibility: float = 1.0) -> float:
    """S = Σ ± E over :data:`CHSH_TERMS` at the E91 angles: 2√2·V."""
    return sum(sign * correlator(ALICE_ANGLES[i], BOB_ANGLES[j], visibility) for i, j, sign in CHSH_TERMS)


def key_qber(visibility: float = 1.0) -> float:
    """Q = (1 − V)/2 on the key rounds (equal angles, E = V)."""
    return (1.0 - _check_probability("visibility", visibility)) / 2.0


def intercept_resend_correlator(a: float, b: float, eve_angle: float) -> float:
    """E(a, b) = cos(a − e)·cos(b − e) after Eve measures Bob's qubit along angle e and resends."""
    return math.cos(a - eve_angle) * math.cos(b - eve_angle)


def _eve_angles(basis: str) -> tuple[float, ...]:
    angles = {"Z": (0.0,), "X": (math.pi / 2,), "breidbart": (math.pi / 4,), "random": (0.0, math.pi / 2)}
    if basis not in angles:
        raise ConfigurationError(f"intercept-resend basis must be random, Z, X or breidbart, got {basis!r}")
    return angles[basis]


def intercept_resend_chsh(fraction: float = 1.0, basis: str = "random", visibility: float = 1.0) -> float:
    """S when Eve intercepts a fraction f of Bob's qubits in ``basis`` and the arm then has visibility V.

    S = V·[(1 − f)·2√2 + f·S_Eve], S_Eve computed from :func:`intercept_resend_correlator` (√2 for
    every basis in the X–Z plane, so S = V·√2·(2 − f)).
    """
    f = _check_probability("intercept fraction", fraction)
    v = _check_probability("visibility", visibility)
    angles = _eve_angles(basis)
    s_eve = sum(sign * intercept_resend_correlator(ALICE_ANGLES[i], BOB_ANGLES[j], e)
                for e in angles for i, j, sign in CHSH_TERMS) / len(angles)
    return v * ((1.0 - f) * chsh_value() + f * s_eve)


def intercept_resend_qber(fraction: float = 1.0, basis: str = "random", visibility: float = 1.0) -> float:
    """Q of the key rounds (both pairs equally likely) under intercept-resend, then visibility V."""
    f = _check_probability("intercept fraction", fraction)
    v = _check_probability("visibility", visibility)
    angles = _eve_angles(basis)
    correlations = []
    for i, j in KEY_PAIRS:
        a, b = ALICE_ANGLES[i], BOB_ANGLES[j]
        e_eve = sum(intercept_resend_correlator(a, b, e) for e in angles) / len(angles)
        correlations.append(v * ((1.0 - f) * math.cos(a - b) + f * e_eve))
    return float(np.mean([(1.0 - c) / 2.0 for c in correlations]))


@dataclass(frozen=True)
class Prediction:
    """Exact E91 statistics of a model (:func:`predicted_statistics`).

    Attributes:
        correlators: E(a_i, b_j) for the 3x3 setting pairs.
        s: S from :data:`CHSH_TERMS`.
        key_qbers: Q of each key pair in :data:`KEY_PAIRS`; qber: their mean (the pairs are
            equally likely).
    """

    correlators: tuple
    s: float
    key_qbers: tuple
    qber: float


_I2 = np.eye(2)
_X = np.array([[0.0, 1.0], [1.0, 0.0]])
_Y = np.array([[0.0, -1j], [1j, 0.0]])
_Z = np.diag([1.0, -1.0])


def _observable(theta: float) -> np.ndarray:
    return math.cos(theta) * _Z + math.sin(theta) * _X


def _on_bob(op: np.ndarray) -> np.ndarray:
    return np.kron(_I2, op)


def predicted_statistics(*, depolarizing: float = 0.0, dephasing: float = 0.0, bit_flip: float = 0.0,
                         misalignment: float = 0.0, eve_fraction: float = 0.0,
                         eve_basis: str = "random") -> Prediction:
    """The exact correlators, S and key QBER of |Φ+> with Bob's arm as the circuits build it.

    A 4x4 density matrix (Alice's qubit first) goes through, in the circuit's order: Eve's
    measure-and-resend on a fraction ``eve_fraction`` (projectors on her axis, averaged over Z and
    X for ``"random"``), the misalignment rotation RY(2·asin√e), then depolarizing
    (ρ → (1 − λ)ρ + λ·Tr_B ρ ⊗ I/2), dephasing (Z w.p. q) and bit flip (X w.p. q) on Bob's qubit;
    then E(a, b) = Tr[ρ A(a) ⊗ A(b)].  Independent of the closed forms above, which it checks.
    """
    lam = _check_probability("depolarizing", depolarizing)
    q_z = _check_probability("dephasing", dephasing)
    q_x = _check_probability("bit_flip", bit_flip)
    e_m = _check_probability("misalignment", misalignment)
    f = _check_probability("intercept fraction", eve_fraction)
    phi_plus = np.array([1.0, 0.0, 0.0, 1.0]) / math.sqrt(2.0)
    rho = np.outer(phi_plus, phi_plus).astype(complex)
    if f > 0:
        resent = np.zeros_like(rho)
        angles = _eve_angles(eve_basis)
        for e in angles:
            for sign in (+1.0, -1.0):
                proj = _on_bob((_I2 + sign * _observable(e)) / 2.0)
                resent += proj @ rho @ proj / len(angles)
        rho = (1.0 - f) * rho + f * resent
    if e_m > 0:
        half = math.asin(math.sqrt(e_m))  # RY(φ) with φ = 2·asin√e: cos(φ/2), sin(φ/2)
        ry = np.array([[math.cos(half), -math.sin(half)], [math.sin(half), math.cos(half)]])
        u = _on_bob(ry)
        rho = u @ rho @ u.T
    if lam > 0:
        paulis = [_on_bob(p) for p in (_X, _Y, _Z)]
        rho = (1.0 - 0.75 * lam) * rho + (lam / 4.0) * sum(p @ rho @ p.conj().T for p in paulis)
    if q_z > 0:
        rho = (1.0 - q_z) * rho + q_z * _on_bob(_Z) @ rho @ _on_bob(_Z)
    if q_x > 0:
        rho = (1.0 - q_x) * rho + q_x * _on_bob(_X) @ rho @ _on_bob(_X)
    corr = tuple(tuple(float(np.real(np.trace(rho @ np.kron(_observable(a), _observable(b))))) for b in BOB_ANGLES)
                 for a in ALICE_ANGLES)
    s = float(sum(sign * corr[i][j] for i, j, sign in CHSH_TERMS))
    key_qbers = tuple((1.0 - corr[i][j]) / 2.0 for i, j in KEY_PAIRS)
    return Prediction(correlators=corr, s=s, key_qbers=key_qbers, qber=float(np.mean(key_qbers)))


def _h_mirrored(x: float) -> float:
    """h(x) on [0, 1], symmetric about 1/2 (finite_key.binary_entropy is capped at 1 past 1/2)."""
    return binary_entropy(min(x, 1.0 - x))


def di_key_rate(s: float, qber: float) -> float:
    """Acín et al. 2007 (collective attacks): r = 1 − h(Q) − h((1 + √((S/2)² − 1))/2), clipped at 0.

    ``s`` is a CHSH value; its sign is a relabelling of outcomes, so |S| is used.  |S| <= 2 gives
    0 (no violation, no key).  |S| above 2√2 cannot come from a quantum state, only from a
    statistical fluctuation of an estimate; the bound is taken at 2√2 there (where its Eve term is
    0).  Values outside the algebraic range [−4, 4] are refused.
    """
    try:
        s = float(s)
    except (TypeError, ValueError):
        raise ConfigurationError(f"S must be a number in [-4, 4], got {s!r}") from None
    if not -4.0 <= s <= 4.0:  # False for NaN
        raise ConfigurationError(f"S must be in [-4, 4] (the algebraic range of CHSH), got {s!r}")
    q = _check_probability("QBER", qber)
    s = min(abs(s), TSIRELSON_BOUND)
    if s <= CLASSICAL_BOUND:
        return 0.0
    eve = _h_mirrored((1.0 + math.sqrt((s / 2.0) ** 2 - 1.0)) / 2.0)
    return max(0.0, 1.0 - binary_entropy(q) - eve)


def di_privacy_cost(s: float) -> float:
    """Eve's information per key bit in the DI bound, h((1 + √((S/2)² − 1))/2): 1 at |S| <= 2, 0 at 2√2.

    What privacy amplification removes per key bit (error correction adds h(Q)): the term a
    protocol seam's key length takes from S where BB84's takes h(Q) from the phase-error rate.
    Same range rules as :func:`di_key_rate`.
    """
    return 1.0 - di_key_rate(s, 0.0)


def bb84_key_rate(qber: float) -> float:
    """The device-dependent (BB84-type, one-way, Shor–Preskill) rate 1 − 2h(Q), clipped at 0."""
    return max(0.0, 1.0 - 2.0 * binary_entropy(_check_probability("QBER", qber)))


def di_threshold_qber() -> float:
    """The QBER at which :func:`di_key_rate` vanishes on the depolarizing line S = 2√2(1 − 2Q) (≈ 7.1%)."""
    from scipy.optimize import brentq

    def rate(q: float) -> float:
        s = TSIRELSON_BOUND * (1.0 - 2.0 * q)
        return 1.0 - binary_entropy(q) - _h_mirrored((1.0 + math.sqrt(max((s / 2.0) ** 2 - 1.0, 0.0))) / 2.0)

    return float(brentq(rate, 1e-6, (1.0 - 1.0 / math.sqrt(2.0)) / 2.0 - 1e-9, xtol=1e-12))


def hoeffding_radius(n: int, epsilon: float) -> float:
    """t with P[Ê − E >= t] <= ε for the mean Ê of n independent ±1 products: √(2 ln(1/ε)/n)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigurationError(f"n must be a whole number >= 1, got {n!r}")
    return math.sqrt(2.0 * math.log(1.0 / _check_epsilon(epsilon)) / int(n))


def _clopper_pearson_upper(k: int, n: int, epsilon: float) -> float:
    from scipy.stats import beta

    return 1.0 if k >= n else float(beta.ppf(1.0 - epsilon, k + 1, n - k))


@dataclass(frozen=True)
class CHSHEstimate:
    """What the test and key rounds of one E91 round say (public numbers only; no key bits).

    Attributes:
        counts: rounds per setting pair, a 3x3 list (Alice's setting, Bob's setting).
        correlators: Ê per setting pair (3x3, ``nan`` where a pair had no rounds).
        s: Ŝ from the four test correlators.
        s_lower, s_upper: one-sided bounds on S, each failing with probability ``epsilon``.
        epsilon: the failure probability of each bound.
        test_rounds, key_rounds: how many rounds of each kind.
        key_errors: key rounds where Bob's bit differs from Alice's.
        qber: key_errors / key_rounds; qber_upper: its Clopper–Pearson upper bound at ``epsilon``.
        di_key_rounds, di_key_errors, di_qber, di_qber_upper: the same for the rounds of
            :data:`DI_KEY_PAIR` alone.
        di_rate: :func:`di_key_rate` at (Ŝ, Q̂_DI), per round of :data:`DI_KEY_PAIR`;
            di_rate_lower: at (S_lower, Q_DI upper).
        bb84_rate: :func:`bb84_key_rate` at Q̂; bb84_rate_lower: at Q_upper.
        violation: whether S_lower > 2 (a Bell violation at confidence 1 − ε).
    """

    counts: list
    correlators: list
    s: float
    s_lower: float
    s_upper: float
    epsilon: float
    test_rounds: int
    key_rounds: int
    key_errors: int
    qber: float
    qber_upper: float
    di_key_rounds: int
    di_key_errors: int
    di_qber: float
    di_qber_upper: float
    di_rate: float
    di_rate_lower: float
    bb84_rate: float
    bb84_rate_lower: float
    violation: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _settings_array(name: str, values) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ConfigurationError(f"{name} must be a one-dimensional array, got shape {arr.shape}")
    if arr.size and (not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() > 2):
        raise ConfigurationError(f"{name} must hold setting indices 0, 1, 2")
    return arr.astype(np.int8)


def _outcome_array(name: str, values) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ConfigurationError(f"{name} must be a one-dimensional array, got shape {arr.shape}")
    if arr.size and not (arr.dtype == bool or (np.issubdtype(arr.dtype, np.integer) and set(np.unique(arr)) <= {0, 1})):
        raise ConfigurationError(f"{name} must hold bits (0/1 or bool)")
    return arr.astype(bool)


def estimate_chsh(alice_settings, bob_settings, alice_results, bob_results, *, epsilon: float = 1e-6) -> CHSHEstimate:
    """Ŝ with its Hoeffding bounds, and the key rounds' QBER, from one round's settings and outcomes.

    Args:
        alice_settings, bob_settings: setting indices 0, 1, 2 per pulse (into :data:`ALICE_ANGLES`
            and :data:`BOB_ANGLES`).
        alice_results, bob_results: the measured bits per pulse (0 ↦ +1, 1 ↦ −1).
        epsilon: failure probability of each one-sided bound (split ε/4 per correlator for S).

    Raises:
        ConfigurationError: arrays of different lengths or bad values, a test pair or the DI key
            pair without a round, or a bad ε.
    """
    epsilon = _check_epsilon(epsilon)
    a = _settings_array("alice_settings", alice_settings)
    b = _settings_array("bob_settings", bob_settings)
    x = _outcome_array("alice_results", alice_results)
    y = _outcome_array("bob_results", bob_results)
    if not a.size == b.size == x.size == y.size:
        raise ConfigurationError(f"settings and results must have one entry per pulse, got lengths "
                                 f"{a.size}, {b.size}, {x.size}, {y.size}")
    product = np.where(x == y, 1.0, -1.0)
    counts = np.zeros((3, 3), dtype=np.int64)
    sums = np.zeros((3, 3))
    np.add.at(counts, (a, b), 1)
    np.add.at(sums, (a, b), product)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    missing = [(i, j) for i, j, _ in CHSH_TERMS if counts[i, j] == 0]
    if missing:
        raise ConfigurationError(f"test setting pairs {missing} (Alice, Bob) have no rounds: S needs all four; "
                                 "send more pulses")
    s = float(sum(sign * corr[i, j] for i, j, sign in CHSH_TERMS))
    radius = sum(hoeffding_radius(int(counts[i, j]), epsilon / 4.0) for i, j, _ in CHSH_TERMS)
    key = np.zeros(a.size, dtype=bool)
    for i, j in KEY_PAIRS:
        key |= (a == i) & (b == j)
    key_rounds = int(key.sum())
    if key_rounds == 0:
        raise ConfigurationError("no key rounds (matching settings): the QBER is undefined; send more pulses")
    key_errors = int((x[key] != y[key]).sum())
    qber = key_errors / key_rounds
    qber_upper = _clopper_pearson_upper(key_errors, key_rounds, epsilon)
    di = (a == DI_KEY_PAIR[0]) & (b == DI_KEY_PAIR[1])
    di_rounds = int(di.sum())
    if di_rounds == 0:
        raise ConfigurationError(f"no rounds of the DI key pair {DI_KEY_PAIR} (Alice, Bob); send more pulses")
    di_errors = int((x[di] != y[di]).sum())
    di_qber, di_qber_upper = di_errors / di_rounds, _clopper_pearson_upper(di_errors, di_rounds, epsilon)
    s_lower, s_upper = s - radius, s + radius
    return CHSHEstimate(
        counts=counts.tolist(), correlators=corr.tolist(), s=s, s_lower=s_lower, s_upper=s_upper,
        epsilon=epsilon, test_rounds=int(sum(counts[i, j] for i, j, _ in CHSH_TERMS)), key_rounds=key_rounds,
        key_errors=key_errors, qber=qber, qber_upper=qber_upper, di_key_rounds=di_rounds, di_key_errors=di_errors,
        di_qber=di_qber, di_qber_upper=di_qber_upper,
        di_rate=di_key_rate(max(-4.0, min(4.0, s)), di_qber),
        di_rate_lower=di_key_rate(max(-4.0, min(4.0, s_lower)), di_qber_upper) if s_lower > 0 else 0.0,
        bb84_rate=bb84_key_rate(qber), bb84_rate_lower=bb84_key_rate(qber_upper),
        violation=bool(s_lower > CLASSICAL_BOUND),
    )
