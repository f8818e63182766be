"""Physical models of the link: the quantum channel, Bob's detector and the eavesdroppers.

These are plain validated values; :mod:`qkd_circuits.quantum.circuits` turns them into circuit
fragments.  Probabilities are per pulse.  Expected statistics for a sifted key (random bases,
Z and X equally likely) are given by the ``expected_*`` helpers, with their sources, so tests and
notebooks compare simulation against theory in one place.

References:
  * depolarizing ρ → (1−p)ρ + p·I/2 (``qiskit_aer.noise.depolarizing_error(p, 1)``): QBER = p/2;
  * bit flip (X w.p. p) errs only in Z, phase flip (Z w.p. p) only in X: sifted QBER = p/2 each;
  * fibre transmittance η_ch = 10^(−α L / 10), total η = η_ch · η_det;
  * intercept-resend on a fraction f, any basis strategy in which Eve resends what she measured:
    QBER = f/4 (Bennett et al. 1992; the Breidbart basis gives the same error, more information).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, Union

from ..exceptions import ConfigurationError

__all__ = [
    "Channel",
    "Detector",
    "InterceptResend",
    "EntanglingProbe",
    "Eavesdropper",
    "parse_noise",
    "parse_eve",
]


def _probability(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise ConfigurationError(f"{name} must be a probability in [0, 1], got {value!r}")
    return value


def _non_negative(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be a non-negative number, got {value!r}") from None
    if not value >= 0.0 or math.isinf(value):
        raise ConfigurationError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


@dataclass(frozen=True)
class Channel:
    """The quantum channel from Alice to Bob (fibre and optics), per pulse.

    Args:
        depolarizing: p of ρ → (1−p)ρ + p·I/2.  Sifted QBER p/2.
        dephasing: probability of a Z (phase) flip.  Sifted QBER p/2 (errors in the X basis only).
        bit_flip: probability of an X flip.  Sifted QBER p/2 (errors in the Z basis only).
        misalignment: optical misalignment error e_det in both bases, applied as a coherent
            rotation RY(2·asin√e_det) of the polarisation (runs on hardware too).
        distance_km: fibre length L.
        alpha_db_per_km: fibre attenuation α (0.2 dB/km is standard telecom fibre at 1550 nm).
    """

    depolarizing: float = 0.0
    dephasing: float = 0.0
    bit_flip: float = 0.0
    misalignment: float = 0.0
    distance_km: float = 0.0
    alpha_db_per_km: float = 0.2

    def __post_init__(self) -> None:
        for name in ("depolarizing", "dephasing", "bit_flip", "misalignment"):
            object.__setattr__(self, name, _probability(name, getattr(self, name)))
        for name in ("distance_km", "alpha_db_per_km"):
            object.__setattr__(self, name, _non_negative(name, getattr(self, name)))

    @property
    def transmittance(self) -> float:
        """η_ch = 10^(−α L / 10)."""
        return 10.0 ** (-self.alpha_db_per_km * self.distance_km / 10.0)

    @property
    def has_noise_instructions(self) -> bool:
        """True when the channel needs Aer noise instructions (only Aer can run those)."""
        return any((self.depolarizing, self.dephasing, self.bit_flip))

    def expected_qber(self) -> float:
        """Sifted QBER of the channel alone, errors composed as independent flips per basis."""
        z_flip = _compose(self.depolarizing / 2, self.bit_flip, self.misalignment)
        x_flip = _compose(self.depolarizing / 2, self.dephasing, self.misalignment)
        return (z_flip + x_flip) / 2


def _compose(*flips: float) -> float:
    """Probability of an odd number of independent flips."""
    parity = 1.0
    for p in flips:
        parity *= 1.0 - 2.0 * p
    return (1.0 - parity) / 2.0


@dataclass(frozen=True)
class Detector:
    """Bob's detector.

    Args:
        efficiency: η_det, the probability that an arriving photon clicks.
        dark_count_probability: p_d, probability per pulse of a click with no photon.  A dark
            click gives a uniformly random result (also when a photon clicks at the same time:
            the double click is assigned at random, the squashing convention).
        readout_error: probability that the recorded result is flipped (symmetric).
    """

    efficiency: float = 1.0
    dark_count_probability: float = 0.0
    readout_error: float = 0.0

    def __post_init__(self) -> None:
        for name in ("efficiency", "dark_count_probability", "readout_error"):
            object.__setattr__(self, name, _probability(name, getattr(self, name)))

    @property
    def has_noise_instructions(self) -> bool:
        return self.readout_error > 0


@dataclass(frozen=True)
class InterceptResend:
    """Eve measures a fraction of the pulses and resends the state she found.

    Modelled without mid-circuit measurement: Eve rotates into her basis, copies the qubit onto
    her ancilla with a (controlled) CNOT, rotates back.  Tracing out the ancilla is exactly
    measure-and-resend (deferred measurement); measuring it gives her result.

    Args:
        fraction: f, the probability that a given pulse is intercepted.
        basis: ``"random"`` (Z or X, half each), ``"Z"``, ``"X"`` (fixed), or ``"breidbart"``
            (the basis halfway between Z and X on the Bloch circle: Eve guesses every bit right
            with probability cos²(π/8) ≈ 0.854 and learns no basis).
    """

    fraction: float = 1.0
    basis: Literal["random", "Z", "X", "breidbart"] = "random"
    kind = "intercept-resend"

    def __post_init__(self) -> None:
        object.__setattr__(self, "fraction", _probability("intercept fraction", self.fraction))
        if self.basis not in ("random", "Z", "X", "breidbart"):
            raise ConfigurationError(
                f"intercept-resend basis must be random, Z, X or breidbart, got {self.basis!r}"
            )

    def expected_qber(self) -> float:
        return self.fraction / 4.0

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class EntanglingProbe:
    """Eve entangles an ancilla with each pulse and measures it optimally after sifting.

    Eve picks a probe basis at random (Z or X), rotates the pulse into it, applies a controlled
    RX(θ) from the pulse onto her ancilla (θ = π·strength), and rotates back.  When her basis is
    Alice's, Bob's bit is undisturbed and Eve's ancilla holds |0> or RX(θ)|0>, which she tells
    apart with the Helstrom measurement; when it is the other basis, Bob sees an error with
    probability (1 − cos(θ/2))/2 and Eve learns nothing.  Hence on the sifted key:

        QBER = (1 − cos(θ/2)) / 4
        Eve's error on the half where her basis matched = (1 − sin(θ/2)) / 2  (Helstrom 1976)

    strength 0 is no attack; strength 1 (θ = π) is a full CNOT copy, i.e. intercept-resend
    with a random basis.  Between them Eve trades information against the errors she causes.
    """

    strength: float = 0.5
    kind = "probe"

    def __post_init__(self) -> None:
        object.__setattr__(self, "strength", _probability("probe strength", self.strength))

    @property
    def theta(self) -> float:
        return math.pi * self.strength

    def expected_qber(self) -> float:
        return (1.0 - math.cos(self.theta / 2)) / 4.0

    def expected_eve_error(self) -> float:
        """Eve's error rate on sifted bits where her probe basis matched Alice's."""
        return (1.0 - math.sin(self.theta / 2)) / 2.0

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}


Eavesdropper = Union[InterceptResend, EntanglingProbe]


def parse_noise(specs: list[str] | tuple[str, ...]) -> tuple[dict, dict]:
    """Parse ``--noise`` strings such as ``depolarizing:0.05`` into Channel/Detector kwargs.

    Returns ``(channel_kwargs, detector_kwargs)``.
    """
    channel_names = {"depolarizing", "dephasing", "bit_flip", "misalignment"}
    detector_names = {"readout": "readout_error"}
    channel: dict = {}
    detector: dict = {}
    for spec in specs:
        name, sep, value = spec.partition(":")
        name = name.strip().replace("-", "_")
        if not sep:
            raise ConfigurationError(
                f"noise spec {spec!r} needs a probability, e.g. 'depolarizing:0.05'"
            )
        if name in channel_names:
            channel[name] = _probability(name, value)
        elif name in detector_names:
            detector[detector_names[name]] = _probability(name, value)
        else:
            known = ", ".join(sorted(channel_names | set(detector_names)))
            raise ConfigurationError(f"unknown noise model {name!r}; known models: {known}")
    return channel, detector


def parse_eve(spec: str | None) -> Eavesdropper | None:
    """Parse ``--eve`` strings: ``intercept-resend:F[:random|Z|X|breidbart]`` or ``probe:S``."""
    if spec is None or spec in ("", "none"):
        return None
    kind, _, rest = spec.partition(":")
    parts = rest.split(":") if rest else []
    if kind == "intercept-resend":
        if not 1 <= len(parts) <= 2:
            raise ConfigurationError(
                f"eve spec {spec!r}: use intercept-resend:FRACTION[:random|Z|X|breidbart]"
            )
        basis = parts[1] if len(parts) == 2 else "random"
        return InterceptResend(fraction=_probability("intercept fraction", parts[0]), basis=basis)
    if kind == "probe":
        if len(parts) != 1:
            raise ConfigurationError(f"eve spec {spec!r}: use probe:STRENGTH with 0 <= S <= 1")
        return EntanglingProbe(strength=_probability("probe strength", parts[0]))
    raise ConfigurationError(
        f"unknown eavesdropper {kind!r}; use intercept-resend:F[:basis] or probe:S"
    )
