"""MDI-QKD: the relay's announcements, Bob's flip rule, and the asymptotic key rate with decoys.

Measurement-device-independent QKD (Lo, Curty & Qi, Phys. Rev. Lett. 108, 130503 (2012),
"LCQ 2012" below): Alice and Bob each send a BB84 state to an untrusted relay, which performs
a Bell-state measurement (BSM) and announces its outcome.  The linear-optics relay (a 50:50
beam splitter, a polarising beam splitter on each output, four threshold detectors ``cH, cV,
dH, dV``) identifies two of the four Bell states and never the other two:

* ``cH & cV`` or ``dH & dV`` click (two orthogonal polarisations in one output): ``ψ+``;
* ``cH & dV`` or ``cV & dH`` click (orthogonal polarisations in different outputs): ``ψ−``;
* anything else (one click, two clicks with the same polarisation, three or four): a failure.

Bob's flip rule (LCQ 2012's): basis 0 (Z, rectilinear, ``H = 0``, ``V = 1``) a success means
the two bits differ, so Bob always flips; basis 1 (X, diagonal, ``+ = 0``, ``− = 1``) ``ψ+``
means equal bits and ``ψ−`` different ones, so Bob flips on ``ψ−`` only.  Pairs are kept when
the relay announces a success and the two bases match.

The key rate (LCQ 2012, asymptotic, infinitely many decoys, the key from the Z basis)::

    R = Q_11^Z [1 − h(e_11^X)] − Q_μσ^Z f h(E_μσ^Z)

per pulse pair, with Alice's signal intensity μ and Bob's σ, ``Q_11^Z = μ σ e^(−μ−σ) Y_11``
the gain of the pairs in which both sent one photon, ``e_11^X`` their phase error (the X-basis
error of single-photon pairs), and ``Q_μσ^Z, E_μσ^Z`` the signals' gain and error rate.  The
basis-sifting factor is left out, as in LCQ 2012's asymptotic formula (the key basis chosen
with a probability that tends to one); :func:`key_rate` takes ``sift`` to put it back.

The channel model (derived in this module, and each expression checked in ``tests/test_mdi.py``
against an independent numerical evaluation of the same linear optics): arm transmittances
``η_a = η_d 10^(−α L_a/10)``, ``η_b`` alike (``η_d`` the relay detectors' efficiency), every
one of the four detectors with dark-count probability ``p_d`` per pulse, and misalignment
``e_d``: with probability ``e_d`` Bob's pulse suffers a polarisation flip (Pauli Y) that flips
its value in both bases.  With that model::

    Y_11   = (1−p_d)² [η_a η_b/2 + (2η_a + 2η_b − 3η_a η_b) p_d + 4(1−η_a)(1−η_b) p_d²]
    e_11^X Y_11 = Y_11/2 − (1/2 − e_d)(1−p_d)² η_a η_b/2

and, for phase-randomised coherent pulses, ``λ_a = η_a μ``, ``λ_b = η_b σ``, ``μ' = λ_a + λ_b``,
``x = √(λ_a λ_b)/2``, ``y = (1−p_d) e^(−μ'/4)`` and ``I_0`` the modified Bessel function (the
relative phase of the two pulses averaged out)::

    Q^C = 2(1−p_d)² e^(−μ'/2) [1 − (1−p_d) e^(−λ_a/2)] [1 − (1−p_d) e^(−λ_b/2)]
    Q^E = 2 p_d (1−p_d)² e^(−μ'/2) [I_0(2x) − (1−p_d) e^(−μ'/2)]
    Q_μσ^Z = Q^C + Q^E,          E_μσ^Z Q_μσ^Z = e_d Q^C + (1 − e_d) Q^E
    Q_μσ^X = 2y² [1 + 2y² − 4y I_0(x) + I_0(2x)]
    E_μσ^X Q_μσ^X = Q_μσ^X/2 − (1/2 − e_d) 2y² [I_0(2x) − 1]

These are the expressions of LCQ 2012's simulation (its Methods / supplementary material) as
far as we can reconstruct them: the paper's text could not be re-read here, so what this module
claims is that they follow from the model above, which the tests verify; it does not claim an
equation number.

With a finite set of intensities, :func:`decoy_bounds` bounds ``Y_11`` and ``e_11`` by linear
programming over the photon-number yields (the tightest bounds the gains allow, asymptotically),
and :func:`decoy_key_rate` puts them in the rate: with LCQ 2012's parameters at 100 km and μ = 0.5
for both signals, intensities (0.5, 0.1, 0) give 1.35e-6 bits per pair, (0.5, 0.1, 0.01, 0)
4.84e-6, infinitely many decoys 4.86e-6 (``tests/test_mdi.py``, test_finite_decoys_approach_the_infinite_decoy_rate).

Pure numpy and scipy (the intensity optimisation and the decoy linear programmes): no circuits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from ..exceptions import ConfigurationError
from .finite_key import binary_entropy

__all__ = [
    "FAIL", "PSI_PLUS", "PSI_MINUS", "ANNOUNCEMENTS", "announce", "sift_mask", "bob_key_bits", "qber_by_basis",
    "output_mode_probabilities", "linear_optics_probabilities", "MdiLink", "MDI_PRESETS", "single_photon_yield",
    "single_photon_error_x", "gain_z", "gain_x", "phase_averaged_gain", "key_rate", "optimal_key_rate",
    "max_distance_km", "key_rate_curve", "DecoyBounds", "decoy_bounds", "model_gains", "decoy_key_rate",
]

#: The relay's announcement codes.
FAIL, PSI_PLUS, PSI_MINUS = 0, 1, 2
ANNOUNCEMENTS = ("fail", "psi+", "psi-")

_DETECTORS = ("cH", "cV", "dH", "dV")  # index 2·port + polarisation


def announce(clicks) -> np.ndarray:
    """The linear-optics relay's announcement from its four detectors' clicks.

    Args:
        clicks: a bool array ``(..., 4)``, the last axis ``cH, cV, dH, dV``.

    Returns:
        int8 codes, :data:`FAIL`, :data:`PSI_PLUS` or :data:`PSI_MINUS`, shape ``(...)``.

    Examples:
        >>> announce([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 0], [1, 1, 1, 0]]).tolist()
        [1, 2, 0, 0]
    """
    c = np.asarray(clicks, dtype=bool)
    if c.shape[-1:] != (4,):
        raise ConfigurationError(f"clicks needs a last axis of 4 detectors (cH, cV, dH, dV), got shape {c.shape}")
    two = c.sum(axis=-1) == 2
    plus = two & ((c[..., 0] & c[..., 1]) | (c[..., 2] & c[..., 3]))
    minus = two & ((c[..., 0] & c[..., 3]) | (c[..., 1] & c[..., 2]))
    return np.where(plus, PSI_PLUS, np.where(minus, PSI_MINUS, FAIL)).astype(np.int8)


def _check_codes(announcement) -> np.ndarray:
    a = np.asarray(announcement)
    if a.size and (not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() > 2):
        raise ConfigurationError("announcements are codes 0 (fail), 1 (psi+) and 2 (psi-)")
    return a


def sift_mask(alice_bases, bob_bases, announcement) -> np.ndarray:
    """Pairs kept: the relay announced ``ψ+`` or ``ψ−`` and the two bases match."""
    a = _check_codes(announcement)
    return (np.asarray(alice_bases) == np.asarray(bob_bases)) & (a != FAIL)


def bob_key_bits(bob_bits, bob_bases, announcement) -> np.ndarray:
    """Bob's bits after the MDI flip: Z basis, flip on every success; X basis, flip on ``ψ−``.

    Failed pairs keep Bob's bit (they are sifted out anyway).
    """
    a = _check_codes(announcement)
    bits = np.asarray(bob_bits).astype(bool)
    z = np.asarray(bob_bases) == 0
    flip = (z & (a != FAIL)) | (~z & (a == PSI_MINUS))
    return bits ^ flip


def qber_by_basis(alice_bits, alice_bases, bob_bits, bob_bases, announcement) -> dict[str, tuple[int, int]]:
    """``{"Z": (errors, sifted), "X": (errors, sifted)}`` after sifting and Bob's flip."""
    keep = sift_mask(alice_bases, bob_bases, announcement)
    wrong = np.asarray(alice_bits).astype(bool) != bob_key_bits(bob_bits, bob_bases, announcement)
    out = {}
    for name, basis in (("Z", 0), ("X", 1)):
        m = keep & (np.asarray(alice_bases) == basis)
        out[name] = (int((m & wrong).sum()), int(m.sum()))
    return out


def _two_photon_state(state) -> np.ndarray:
    if isinstance(state, tuple) and len(state) == 2:
        a, b = (np.asarray(s, dtype=complex) for s in state)
        if a.shape != (2,) or b.shape != (2,):
            raise ConfigurationError("each photon's polarisation is a vector of 2 amplitudes (H, V)")
        psi = np.kron(a, b)
    else:
        psi = np.asarray(state, dtype=complex)
    if psi.shape != (4,):
        raise ConfigurationError(f"the two-photon polarisation state needs 4 amplitudes, got shape {psi.shape}")
    norm = float(np.vdot(psi, psi).real)
    if not math.isclose(norm, 1.0, rel_tol=1e-9):
        raise ConfigurationError(f"the polarisation state must be normalised, got norm² {norm!r}")
    return psi


def output_mode_probabilities(state) -> np.ndarray:
    """Where the two photons leave the ideal linear-optics relay: ``P[m, n]`` (``m <= n``).

    Computed in second quantisation, independently of the circuit of
    :mod:`qkd_circuits.quantum.mdi`: the two-photon state ``Σ ψ_ij a_i† b_j† |0>`` (``i`` Alice's
    polarisation, ``j`` Bob's, ``H = 0``), the beam splitter ``a† → (c† + d†)/√2``,
    ``b† → (c† − d†)/√2``, then each output's polarising beam splitter.  With ``M`` the
    coefficients of ``m† n†`` (output modes ``m = 2·port + pol``: ``cH, cV, dH, dV``), photons
    in modes ``m ≠ n`` have probability ``|M_mn + M_nm|²`` and both in mode ``m`` ``2|M_mm|²``.

    Args:
        state: the polarisation state: a length-4 vector ``ψ_ij`` (index ``2i + j``), entangled or
            not, or a pair ``(alice, bob)`` of length-2 vectors.

    Returns:
        a 4×4 upper-triangular array of probabilities summing to 1.
    """
    psi = _two_photon_state(state)
    m = np.zeros((4, 4), dtype=complex)
    a_out = ((0, 1 / math.sqrt(2)), (1, 1 / math.sqrt(2)))    # a† → (c† + d†)/√2
    b_out = ((0, 1 / math.sqrt(2)), (1, -1 / math.sqrt(2)))   # b† → (c† − d†)/√2
    for i in range(2):
        for j in range(2):
            for pa, ca in a_out:
                for pb, cb in b_out:
                    m[2 * pa + i, 2 * pb + j] += psi[2 * i + j] * ca * cb
    p = np.zeros((4, 4))
    for x in range(4):
        for y in range(x, 4):
            p[x, y] = 2 * abs(m[x, x]) ** 2 if x == y else abs(m[x, y] + m[y, x]) ** 2
    return p


def linear_optics_probabilities(state) -> dict[str, float]:
    """Announcement probabilities of the ideal (lossless, noiseless) linear-optics relay for one
    photon from each side: :func:`output_mode_probabilities` read through :func:`announce`.

    Examples:
        >>> p = linear_optics_probabilities(([1, 0], [0, 1]))   # H from Alice, V from Bob
        >>> round(p["psi+"], 12), round(p["psi-"], 12)
        (0.5, 0.5)
    """
    p = output_mode_probabilities(state)
    out = {"fail": 0.0, "psi+": 0.0, "psi-": 0.0}
    for x in range(4):
        for y in range(x, 4):
            clicks = np.zeros(4, dtype=bool)
            clicks[[x, y]] = True
            out[ANNOUNCEMENTS[int(announce(clicks))]] += float(p[x, y])
    return out


# ---------------------------------------------------------------------------------------------
# The channel model and the key rate


@dataclass(frozen=True)
class MdiLink:
    """Parameters of an MDI link: two fibre arms into the relay's detectors.

    Args:
        alpha_db_per_km: fibre attenuation α of both arms.
        eta_detector: η_d, the efficiency of each relay detector.
        p_dark: p_d, the dark-count probability of each of the four detectors per pulse.
        e_d: misalignment: the probability that Bob's pulse has its polarisation flipped.
        f_ec: error-correction inefficiency f.
        name: a label.
    """

    alpha_db_per_km: float = 0.2
    eta_detector: float = 0.145
    p_dark: float = 3e-6
    e_d: float = 0.015
    f_ec: float = 1.16
    name: str = "custom"

    def __post_init__(self) -> None:
        for key in ("alpha_db_per_km", "eta_detector", "p_dark", "e_d", "f_ec"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ConfigurationError(f"{key} must be a finite number >= 0, got {v!r}")
        for key in ("eta_detector", "p_dark"):
            if getattr(self, key) > 1:
                raise ConfigurationError(f"{key} is a probability (<= 1), got {getattr(self, key)!r}")
        if self.e_d > 0.5:
            raise ConfigurationError(f"e_d must be in [0, 1/2], got {self.e_d!r}")
        if self.f_ec < 1:
            raise ConfigurationError(f"f_ec must be >= 1 (the Shannon limit), got {self.f_ec!r}")

    def transmittance(self, arm_km):
        """η = η_d 10^(−α L/10) of one arm of ``arm_km`` kilometres."""
        return self.eta_detector * 10.0 ** (-self.alpha_db_per_km * np.asarray(arm_km, dtype=float) / 10.0)

    def with_(self, **changes) -> MdiLink:
        changes = {k: v for k, v in changes.items() if v is not None}
        if changes and "name" not in changes and not self.name.endswith("(modified)"):
            changes["name"] = f"{self.name} (modified)"
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


#: The simulation parameters of LCQ 2012 as we recall them (taken there from the experiment of
#: Ursin et al. 2007): e_d 1.5%, p_d 3e-6, η_d 14.5%, f 1.16, α 0.2 dB/km.  Not re-read.
MDI_PRESETS: dict[str, MdiLink] = {
    "LCQ2012": MdiLink(alpha_db_per_km=0.2, eta_detector=0.145, p_dark=3e-6, e_d=0.015, f_ec=1.16, name="LCQ2012"),
}


def _prob(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0.0 <= value <= 1.0:
        raise ConfigurationError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def single_photon_yield(eta_a: float, eta_b: float, p_dark: float) -> float:
    """Y_11: the probability of a ψ± announcement when each side sends one photon (either basis).

    Derived by cases: both photons arrive (orthogonal polarisations, half the time, always give a
    valid pattern; parallel ones bunch and need one dark count in one of the two orthogonal
    detectors), one arrives (one dark count in an orthogonal detector), none (two dark counts in
    one of the four valid pairs); every other detector silent.
    """
    ea, eb, pd = _prob("eta_a", eta_a), _prob("eta_b", eta_b), _prob("p_dark", p_dark)
    return (1 - pd) ** 2 * (ea * eb / 2 + (2 * ea + 2 * eb - 3 * ea * eb) * pd + 4 * (1 - ea) * (1 - eb) * pd ** 2)


def single_photon_error_x(eta_a: float, eta_b: float, p_dark: float, e_d: float) -> float:
    """e_11^X: the X-basis error rate of single-photon pairs (1/2 for every event a dark count
    makes, ``e_d`` for the events of two arriving photons)."""
    ea, eb, pd, ed = (_prob(n, v) for n, v in (("eta_a", eta_a), ("eta_b", eta_b), ("p_dark", p_dark), ("e_d", e_d)))
    y11 = single_photon_yield(ea, eb, pd)
    return (y11 / 2 - (0.5 - ed) * (1 - pd) ** 2 * ea * eb / 2) / y11 if y11 > 0 else 0.5


def _check_pulses(mu, sigma, eta_a, eta_b, p_dark, e_d) -> None:
    for name, v in (("mu", mu), ("sigma", sigma)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not 0 <= v < math.inf:
            raise ConfigurationError(f"{name} must be a mean photon number >= 0, got {v!r}")
    for name, v in (("eta_a", eta_a), ("eta_b", eta_b), ("p_dark", p_dark), ("e_d", e_d)):
        _prob(name, v)


def gain_z(mu: float, sigma: float, eta_a: float, eta_b: float, p_dark: float, e_d: float) -> tuple[float, float]:
    """``(Q_μσ^Z, E_μσ^Z)``: the Z-basis gain and error rate of coherent pulses μ (Alice), σ (Bob)."""
    _check_pulses(mu, sigma, eta_a, eta_b, p_dark, e_d)
    la, lb = mu * eta_a, sigma * eta_b
    pd = p_dark
    mup = la + lb
    x = math.sqrt(la * lb) / 2
    qc = (2 * (1 - pd) ** 2 * math.exp(-mup / 2)
          * (1 - (1 - pd) * math.exp(-la / 2)) * (1 - (1 - pd) * math.exp(-lb / 2)))
    qe = 2 * pd * (1 - pd) ** 2 * math.exp(-mup / 2) * (float(np.i0(2 * x)) - (1 - pd) * math.exp(-mup / 2))
    q = qc + qe
    return q, ((e_d * qc + (1 - e_d) * qe) / q if q > 0 else 0.5)


def gain_x(mu: float, sigma: float, eta_a: float, eta_b: float, p_dark: float, e_d: float) -> tuple[float, float]:
    """``(Q_μσ^X, E_μσ^X)``: the X-basis gain and error rate of coherent pulses μ, σ."""
    _check_pulses(mu, sigma, eta_a, eta_b, p_dark, e_d)
    la, lb = mu * eta_a, sigma * eta_b
    x = math.sqrt(la * lb) / 2
    y = (1 - p_dark) * math.exp(-(la + lb) / 4)
    q = 2 * y ** 2 * (1 + 2 * y ** 2 - 4 * y * float(np.i0(x)) + float(np.i0(2 * x)))
    eq = q / 2 - (0.5 - e_d) * 2 * y ** 2 * (float(np.i0(2 * x)) - 1)
    return q, (eq / q if q > 0 else 0.5)


def phase_averaged_gain(basis: str, mu: float, sigma: float, eta_a: float, eta_b: float, p_dark: float,
                        e_d: float, *, points: int = 256) -> tuple[float, float]:
    """``(Q, E)`` of coherent pulses by direct evaluation of the linear optics, the reference for
    :func:`gain_z` and :func:`gain_x`.

    For a fixed relative phase φ each detector receives a coherent state, so the four detectors
    click independently, detector ``k`` with probability ``1 − (1−p_d) e^(−n_k)``; the gain is the
    probability of a ψ± pattern, averaged over the bits and over φ (trapezoid rule on ``points``
    phases: exact to rounding for these periodic, entire integrands), and Bob's polarisation flip
    enters as the mixture ``(1 − e_d)·aligned + e_d·flipped``.
    """
    if basis not in ("Z", "X"):
        raise ConfigurationError(f"basis must be 'Z' or 'X', got {basis!r}")
    _check_pulses(mu, sigma, eta_a, eta_b, p_dark, e_d)
    phi = 2 * np.pi * np.arange(points) / points
    la, lb = mu * eta_a, sigma * eta_b
    states = {"Z": (np.array([1, 0]), np.array([0, 1])), "X": (np.array([1, 1]) / math.sqrt(2),
                                                                np.array([1, -1]) / math.sqrt(2))}[basis]
    right = wrong = 0.0
    for a_bit in (0, 1):
        for b_bit in (0, 1):
            for flipped, weight in ((0, 1 - e_d), (1, e_d)):
                pa = states[a_bit]
                pb = states[b_bit ^ flipped]
                # amplitudes per output mode (2·port + pol), c = (a + b)/√2, d = (a − b)/√2
                alpha = math.sqrt(la) * pa[None, :]
                beta = math.sqrt(lb) * np.exp(1j * phi)[:, None] * pb[None, :]
                n = np.concatenate([np.abs(alpha + beta) ** 2 / 2, np.abs(alpha - beta) ** 2 / 2], axis=1)
                click = 1 - (1 - p_dark) * np.exp(-n)
                silent = 1 - click
                pattern = {}
                for pair in ((0, 1), (2, 3), (0, 3), (1, 2)):
                    others = [k for k in range(4) if k not in pair]
                    pattern[pair] = float(np.mean(click[:, pair[0]] * click[:, pair[1]]
                                                  * silent[:, others[0]] * silent[:, others[1]]))
                plus = pattern[(0, 1)] + pattern[(2, 3)]
                minus = pattern[(0, 3)] + pattern[(1, 2)]
                if basis == "Z":  # a success means "bits differ"
                    ok, bad = (plus + minus, 0.0) if a_bit != b_bit else (0.0, plus + minus)
                else:  # ψ+ means equal, ψ− different
                    ok, bad = (plus, minus) if a_bit == b_bit else (minus, plus)
                right += weight * ok / 4
                wrong += weight * bad / 4
    q = right + wrong
    return q, (wrong / q if q > 0 else 0.5)


def key_rate(distance_km: float, link: MdiLink = MDI_PRESETS["LCQ2012"], *, mu: float = 0.3,
             sigma: float | None = None, relay_fraction: float = 0.5, sift: float = 1.0) -> float:
    """The LCQ 2012 asymptotic rate per pulse pair with infinite decoys (clipped at 0).

    Args:
        distance_km: Alice–Bob fibre length.
        link: the :class:`MdiLink`.
        mu, sigma: Alice's and Bob's signal intensities (``sigma`` defaults to ``mu``).
        relay_fraction: the fraction of the distance on Alice's side (1/2: relay in the middle).
        sift: the basis-sifting factor (1: the asymptotic formula, 1/2: symmetric basis choice).
    """
    sigma = mu if sigma is None else sigma
    for name, v in (("mu", mu), ("sigma", sigma)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or not math.isfinite(v):
            raise ConfigurationError(f"{name} must be a positive number, got {v!r}")
    if isinstance(distance_km, bool) or not isinstance(distance_km, (int, float)) or not distance_km >= 0:
        raise ConfigurationError(f"distance_km must be a number >= 0, got {distance_km!r}")
    _prob("relay_fraction", relay_fraction)
    _prob("sift", sift)
    eta_a = float(link.transmittance(distance_km * relay_fraction))
    eta_b = float(link.transmittance(distance_km * (1 - relay_fraction)))
    y11 = single_photon_yield(eta_a, eta_b, link.p_dark)
    e11 = single_photon_error_x(eta_a, eta_b, link.p_dark, link.e_d)
    q11 = mu * sigma * math.exp(-mu - sigma) * y11
    q, e = gain_z(mu, sigma, eta_a, eta_b, link.p_dark, link.e_d)
    rate = q11 * (1 - float(binary_entropy(e11))) - q * link.f_ec * float(binary_entropy(e))
    return max(0.0, sift * rate)


def optimal_key_rate(distance_km: float, link: MdiLink = MDI_PRESETS["LCQ2012"], **kwargs) -> tuple[float, float]:
    """``(rate, μ)``: :func:`key_rate` maximised over a common signal intensity μ = σ."""
    from scipy.optimize import minimize_scalar

    grid = np.geomspace(1e-3, 2.0, 60)
    rates = [key_rate(distance_km, link, mu=float(m), **kwargs) for m in grid]
    i = int(np.argmax(rates))
    if rates[i] <= 0:
        return 0.0, float(grid[i])
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    res = minimize_scalar(lambda m: -key_rate(distance_km, link, mu=float(m), **kwargs), bounds=(lo, hi),
                          method="bounded", options={"xatol": 1e-6})
    return (float(-res.fun), float(res.x)) if -res.fun >= rates[i] else (float(rates[i]), float(grid[i]))


def max_distance_km(link: MdiLink = MDI_PRESETS["LCQ2012"], *, tolerance_km: float = 0.01, **kwargs) -> float:
    """The largest Alice–Bob distance with a positive optimal rate (bisection)."""
    lo, hi = 0.0, 50.0
    if optimal_key_rate(lo, link, **kwargs)[0] <= 0:
        return 0.0
    while optimal_key_rate(hi, link, **kwargs)[0] > 0:
        lo, hi = hi, hi * 2
        if hi > 5000:
            raise ConfigurationError("the rate stays positive beyond 5000 km: check the link parameters")
    while hi - lo > tolerance_km:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if optimal_key_rate(mid, link, **kwargs)[0] > 0 else (lo, mid)
    return lo


def key_rate_curve(distances_km, link: MdiLink = MDI_PRESETS["LCQ2012"], **kwargs) -> list[dict]:
    """``[{"distance_km", "rate", "mu"}, ...]``: :func:`optimal_key_rate` at each distance.

    With LCQ 2012's parameters (``MDI_PRESETS["LCQ2012"]``, relay in the middle)::

        distance (km)    0          50         100        150        200        230
        rate / pair      5.75e-4    5.30e-5    4.94e-6    4.15e-7    2.15e-8    3.6e-10
        best μ = σ       0.60       0.57       0.55       0.52       0.45       0.32

    and :func:`max_distance_km` 232.0 km (246.3 km without misalignment, 179.8 km with
    ``p_dark = 1e-5``).  Produced by ``python -c "from qkd_circuits.analysis import mdi;
    print(mdi.key_rate_curve([0, 50, 100, 150, 200, 230]), mdi.max_distance_km())"``.  We could not
    re-read LCQ 2012's figure to compare these with its curve.
    """
    out = []
    for d in distances_km:
        rate, mu = optimal_key_rate(float(d), link, **kwargs)
        out.append({"distance_km": float(d), "rate": rate, "mu": mu})
    return out


# ---------------------------------------------------------------------------------------------
# A finite number of decoys: linear-programming bounds on the single-photon yield and error


def _poisson(mu: float, n: np.ndarray) -> np.ndarray:
    if mu == 0:
        return (n == 0).astype(float)
    return np.exp(-mu + n * math.log(mu) - np.array([math.lgamma(k + 1.0) for k in n]))


@dataclass(frozen=True)
class DecoyBounds:
    """Bounds from a finite set of intensities: ``y11_lower`` (Y_11 in the basis the gains came
    from), ``e11_upper`` (its error rate, from the error gains), and the LP's photon cut-off."""

    y11_lower: float
    e11_upper: float
    cutoff: int

    def to_dict(self) -> dict:
        return asdict(self)


def decoy_bounds(intensities_alice, intensities_bob, gains, error_gains, *, cutoff: int = 8, pulses=None,
                 u_alpha: float = 0.0) -> DecoyBounds:
    """Y_11 from below and e_11 from above, given each intensity pair's gain and error gain.

    Each observed gain is a mixture of the photon-number yields:
    ``Q_ij = Σ_nm P_n(μ_i) P_m(σ_j) Y_nm`` with ``0 <= Y_nm <= 1`` (and ``E_ij Q_ij`` the same with
    ``(eY)_nm``).  Truncating the sums at ``n, m <= cutoff`` leaves a tail between 0 and its
    probability weight, so every ``Q_ij`` gives two linear constraints; linear programming
    (scipy's HiGHS) then minimises ``Y_11`` and maximises ``(eY)_11`` over every set of yields
    consistent with the data: ``e_11 <= max (eY)_11 / min Y_11``.  These are the tightest bounds
    the gains allow (asymptotically: no statistical fluctuation), valid for any channel and any
    relay, honest or not, as the decoy method requires; with gains computed from a model
    (:func:`model_gains`) they bracket the model's own ``Y_11`` and ``e_11``.

    Args:
        intensities_alice, intensities_bob: the mean photon numbers μ_i and σ_j.
        gains, error_gains: arrays ``(len(μ), len(σ))`` of ``Q_ij`` and ``E_ij Q_ij`` in one basis.
        cutoff: the largest photon number kept per pulse.
        pulses, u_alpha: for observed gains, the number of pulse pairs behind each ``Q_ij``
            (array of the same shape) and the standard deviations each observed value may be off:
            every constraint is widened to ``Q ± u_alpha·sd`` with ``sd = √(max(Q(1−Q), 1/N)/N)``
            (the Gaussian fluctuation of Ma et al. 2005's decoy analysis, not a composable
            finite-key treatment).  ``u_alpha = 0``: the values are exact.
    """
    from scipy.optimize import linprog

    mus, sigmas = np.asarray(intensities_alice, float), np.asarray(intensities_bob, float)
    q, eq = np.asarray(gains, float), np.asarray(error_gains, float)
    if q.shape != (mus.size, sigmas.size) or eq.shape != q.shape:
        raise ConfigurationError(
            f"gains and error_gains need shape {(mus.size, sigmas.size)}, got {q.shape}, {eq.shape}")
    if (np.any(mus < 0) or np.any(sigmas < 0) or np.any(q < 0) or np.any(q > 1) or np.any(eq < 0)
            or np.any(eq > q + 1e-15)):
        raise ConfigurationError("intensities must be >= 0, gains in [0, 1], error gains in [0, gain]")
    if isinstance(cutoff, bool) or not isinstance(cutoff, int) or cutoff < 1:
        raise ConfigurationError(f"cutoff must be a whole number >= 1, got {cutoff!r}")
    if isinstance(u_alpha, bool) or not isinstance(u_alpha, (int, float)) or not u_alpha >= 0:
        raise ConfigurationError(f"u_alpha must be a number >= 0, got {u_alpha!r}")
    if u_alpha > 0:
        if pulses is None:
            raise ConfigurationError("u_alpha > 0 needs pulses, the pulse pairs behind each gain")
        counts = np.asarray(pulses, float)
        if counts.shape != q.shape or np.any(counts < 1):
            raise ConfigurationError(f"pulses needs shape {q.shape} and at least one pulse pair per gain")

        def widen(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            sd = np.sqrt(np.maximum(v * (1 - v), 1.0 / counts) / counts)
            return np.maximum(0.0, v - u_alpha * sd), np.minimum(1.0, v + u_alpha * sd)
    else:
        def widen(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return v, v
    n = np.arange(cutoff + 1)
    rows, tails = [], []
    for i, mu in enumerate(mus):
        for j, sg in enumerate(sigmas):
            w = np.outer(_poisson(float(mu), n), _poisson(float(sg), n)).ravel()
            rows.append((i, j, w))
            tails.append(max(0.0, 1.0 - float(w.sum())))
    target = np.zeros((cutoff + 1) ** 2)
    target[(cutoff + 1) * 1 + 1] = 1.0

    def bound(values: np.ndarray, sense: float) -> float:
        low, high = widen(values)
        a_ub, b_ub = [], []
        for (i, j, w), tail in zip(rows, tails):
            scale = high[i, j] if high[i, j] > 0 else 1.0  # rows normalised by the observed value
            a_ub.append(w / scale)
            b_ub.append(high[i, j] / scale)
            a_ub.append(-w / scale)
            b_ub.append(-(low[i, j] - tail) / scale)
        res = linprog(sense * target, A_ub=np.array(a_ub), b_ub=np.array(b_ub), bounds=(0.0, 1.0), method="highs",
                      options={"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10})
        if res.status != 0:
            raise ConfigurationError(f"the gains admit no set of photon-number yields ({res.message}): "
                                     "are they from one source and one relay (and, if observed, is u_alpha enough)?")
        return float(sense * res.fun)

    y11 = max(0.0, bound(q, 1.0))
    ey11 = min(1.0, bound(eq, -1.0))
    return DecoyBounds(y11_lower=y11, e11_upper=min(0.5, ey11 / y11) if y11 > 0 else 0.5, cutoff=cutoff)


def model_gains(basis: str, intensities_alice, intensities_bob, distance_km: float,
                link: MdiLink = MDI_PRESETS["LCQ2012"], *,
                relay_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """``(Q_ij, E_ij Q_ij)`` of the channel model (:func:`gain_z` / :func:`gain_x`) for every
    pair of intensities: what a link would measure, asymptotically."""
    closed = {"Z": gain_z, "X": gain_x}.get(basis)
    if closed is None:
        raise ConfigurationError(f"basis must be 'Z' or 'X', got {basis!r}")
    eta_a = float(link.transmittance(distance_km * relay_fraction))
    eta_b = float(link.transmittance(distance_km * (1 - relay_fraction)))
    q = np.zeros((len(intensities_alice), len(intensities_bob)))
    eq = np.zeros_like(q)
    for i, mu in enumerate(intensities_alice):
        for j, sg in enumerate(intensities_bob):
            q[i, j], e = closed(float(mu), float(sg), eta_a, eta_b, link.p_dark, link.e_d)
            eq[i, j] = e * q[i, j]
    return q, eq


def decoy_key_rate(distance_km: float, link: MdiLink = MDI_PRESETS["LCQ2012"], *,
                   intensities=(0.5, 0.1, 0.0), cutoff: int = 8) -> float:
    """The LCQ 2012 rate with ``Y_11`` and ``e_11^X`` from :func:`decoy_bounds` on the model's
    gains (the same intensities for both sides, the first the signal), instead of their exact
    values: what a finite set of decoys costs, asymptotically."""
    ints = tuple(float(x) for x in intensities)
    if len(ints) < 2 or not ints[0] > 0:
        raise ConfigurationError("intensities needs the signal (> 0) first and at least one decoy")
    qz, eqz = model_gains("Z", ints, ints, distance_km, link)
    qx, eqx = model_gains("X", ints, ints, distance_km, link)
    z = decoy_bounds(ints, ints, qz, eqz, cutoff=cutoff)
    x = decoy_bounds(ints, ints, qx, eqx, cutoff=cutoff)
    mu = ints[0]
    q, e = qz[0, 0], eqz[0, 0] / qz[0, 0] if qz[0, 0] > 0 else 0.5
    rate = (mu * mu * math.exp(-2 * mu) * z.y11_lower * (1 - float(binary_entropy(x.e11_upper)))
            - q * link.f_ec * float(binary_entropy(e)))
    return max(0.0, rate)
