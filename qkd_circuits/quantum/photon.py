"""One BB84 photon, step by step, as a circuit and its state vector (for teaching).

:func:`one_photon` builds the single-qubit circuit the exchange circuits run per lane (the same
rotations as :mod:`qkd_circuits.quantum.circuits`: Alice ``RY(π·bit + π/2·basis)``, Bob
``RY(−π/2·basis)`` then a Z measurement; Eve's intercept-resend rotates into her basis, measures
and prepares what she saw) and returns one :class:`PhotonStep` per stage, each with the circuit so
far and the :class:`~qiskit.quantum_info.Statevector` of the photon after it.  Eve's measurement
is a real collapse: her outcome is drawn from the Born probabilities (with ``seed`` for a
reproducible lesson) and the state after her step is the one she resends.

Bases may be written ``"+"``/``"Z"``/``0`` (rectilinear) or ``"x"``/``"X"``/``1`` (diagonal); Eve
may also use ``"B"``/``"breidbart"`` (halfway between the two, the basis that maximises her guess
of the bit over both of Alice's bases).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.quantum_info import Statevector

from ..exceptions import ConfigurationError

__all__ = ["PhotonStep", "one_photon", "parse_basis"]

_BASES = {"+": 0, "z": 0, 0: 0, "x": 1, 1: 1}
_EVE_BASES = {**_BASES, "b": 2, "breidbart": 2, 2: 2}
_NAMES = ("+ (Z, rectilinear)", "x (X, diagonal)", "B (Breidbart)")
_EVE_ANGLE = (0.0, math.pi / 2, math.pi / 4)  # RY angle taking Eve's basis onto Z


@dataclass(frozen=True)
class PhotonStep:
    """One stage of :func:`one_photon`.

    Attributes:
        title: what happens (``"Alice prepares"``, ``"Eve measures and resends"``...).
        circuit: the circuit from the start up to this step (a new object per step).
        state: the photon's state after the step (after Eve's collapse and resend for hers).
        explanation: one or two sentences, with the numbers of this photon.
        probabilities: ``(P(0), P(1))`` of a Z measurement of ``state`` (what Bob's detector
            reads after his rotation; for the earlier steps, what a Z measurement would read).
        outcome: the bit measured at this step (Eve's result on her step), else ``None``.
        outcome_probabilities: on Eve's step, the Born probabilities ``(P(0), P(1))`` of her
            result in her basis (before the collapse); else ``None``.
    """

    title: str
    circuit: QuantumCircuit
    state: Statevector
    explanation: str
    probabilities: tuple[float, float]
    outcome: int | None = None
    outcome_probabilities: tuple[float, float] | None = None

    def bloch_vector(self) -> tuple[float, float, float]:
        """The state's Bloch vector ``(⟨X⟩, ⟨Y⟩, ⟨Z⟩)``, each rounded to 12 decimals."""
        a, b = self.state.data
        x = 2 * (np.conj(a) * b).real
        y = 2 * (np.conj(a) * b).imag
        z = abs(a) ** 2 - abs(b) ** 2
        return tuple(round(float(v), 12) + 0.0 for v in (x, y, z))


def parse_basis(basis, *, who: str = "basis", eve: bool = False) -> int:
    """The basis code (0 Z, 1 X, 2 Breidbart for Eve) of ``basis``; ConfigurationError otherwise."""
    table = _EVE_BASES if eve else _BASES
    key = basis.lower() if isinstance(basis, str) else basis
    if isinstance(basis, bool) or key not in table:
        allowed = "'+', 'x', 'B'" if eve else "'+' or 'x'"
        raise ConfigurationError(f"{who} must be {allowed} (or 'Z'/'X', 0/1), got {basis!r}")
    return table[key]


def _probabilities(state: Statevector) -> tuple[float, float]:
    p = state.probabilities()
    return round(float(p[0]), 12) + 0.0, round(float(p[1]), 12) + 0.0


def _fmt(p: float) -> str:
    return f"{p:.0%}" if abs(p * 100 - round(p * 100)) < 1e-9 else f"{p:.1%}"


def one_photon(bit: int, basis, bob_basis, *, eve_basis=None, seed: int | None = None,
               eve_outcome: int | None = None) -> list[PhotonStep]:
    """Alice sends ``bit`` in ``basis``, Bob measures in ``bob_basis``; Eve, if ``eve_basis`` is
    given, intercepts and resends in hers.  Returns the steps in order: Alice prepares, (Eve
    measures and resends,) Bob rotates into his basis, Bob measures.

    Args:
        bit: Alice's bit, 0 or 1.
        basis, bob_basis: ``"+"`` or ``"x"`` (or ``"Z"``/``"X"``, 0/1).
        eve_basis: ``None`` (no Eve), or Eve's basis: ``"+"``, ``"x"`` or ``"B"`` (Breidbart).
        seed: seeds the draw of Eve's outcome (``None``: a fresh draw each call).  Bob's outcome
            is not drawn: his step gives the probabilities.
        eve_outcome: Eve's result, 0 or 1, chosen instead of drawn: to follow one branch of her
            measurement (weigh it with that step's ``outcome_probabilities``).  A result of
            probability 0 is refused.

    Raises:
        ConfigurationError: a bit other than 0/1, an unknown basis, or an ``eve_outcome`` without
            Eve, other than 0/1, or impossible.

    Examples:
        >>> steps = one_photon(1, "x", "x")
        >>> [s.title for s in steps]
        ['Alice prepares', 'Bob rotates into his basis', 'Bob measures']
        >>> steps[-1].probabilities
        (0.0, 1.0)
    """
    if isinstance(bit, bool) or bit not in (0, 1):
        raise ConfigurationError(f"Alice's bit must be 0 or 1, got {bit!r}")
    a = parse_basis(basis, who="Alice's basis")
    b = parse_basis(bob_basis, who="Bob's basis")
    e = None if eve_basis is None else parse_basis(eve_basis, who="Eve's basis", eve=True)
    if eve_outcome is not None and (e is None or isinstance(eve_outcome, bool) or eve_outcome not in (0, 1)):
        raise ConfigurationError(f"eve_outcome must be 0 or 1 and needs an eve_basis, got {eve_outcome!r}"
                                 + ("" if e is not None else " without Eve"))

    photon = QuantumRegister(1, "photon")
    qc = QuantumCircuit(photon, name="one_photon")
    steps: list[PhotonStep] = []

    def step(title: str, state: Statevector, explanation: str, outcome: int | None = None,
             outcome_probabilities: tuple[float, float] | None = None) -> None:
        steps.append(PhotonStep(title, qc.copy(), state, explanation, _probabilities(state), outcome,
                                outcome_probabilities))

    qc.ry(math.pi * bit + math.pi / 2 * a, 0)
    state = Statevector(qc)
    kets = {(0, 0): "|0⟩", (1, 0): "|1⟩", (0, 1): "|+⟩", (1, 1): "|−⟩ (up to a global sign)"}
    step("Alice prepares", state,
         f"Alice encodes bit {bit} in basis {_NAMES[a]}: RY({bit}·π + {a}·π/2)|0⟩ = {kets[bit, a]}.")

    if e is not None:
        eve_bit = ClassicalRegister(1, "eve_bit")
        qc.add_register(eve_bit)
        angle = _EVE_ANGLE[e]
        if angle:
            qc.ry(-angle, 0)
        rotated = state.evolve(_ry(-angle))
        p0, p1 = _probabilities(rotated)
        if eve_outcome is None:
            rng = np.random.default_rng(seed)  # sim-rng: Eve's Born-rule outcome, for the lesson
            outcome = int(rng.random() < p1)
        elif (p0, p1)[eve_outcome] == 0.0:
            raise ConfigurationError(f"Eve cannot get {eve_outcome} here: in her basis its probability is 0")
        else:
            outcome = eve_outcome
        qc.measure(0, eve_bit[0])
        qc.reset(0)
        qc.ry(math.pi * outcome + angle, 0)
        state = Statevector.from_label(str(outcome)).evolve(_ry(angle))
        if e == a:
            why = "her basis is Alice's, so she reads Alice's bit for certain and resends the very state Alice sent"
        elif e == 2:
            why = "the Breidbart basis lies between Alice's two, so she reads the bit right about 85% of the time"
        else:
            why = "her basis is not Alice's: her result is a coin toss and the state she resends is not Alice's"
        step("Eve measures and resends", state,
             f"Eve measures in basis {_NAMES[e]}: P(0) = {_fmt(p0)}, P(1) = {_fmt(p1)}; she got {outcome} and "
             f"resends it in her basis ({why}).", outcome, (p0, p1))

    bob_bit = ClassicalRegister(1, "bob_bit")
    qc.add_register(bob_bit)
    qc.barrier(0)
    if b:
        qc.ry(-math.pi / 2, 0)
    state = state.evolve(_ry(-math.pi / 2 * b))
    step("Bob rotates into his basis", state,
         f"Bob measures in basis {_NAMES[b]}: " + ("he rotates by RY(−π/2) so that his basis lies on Z." if b else
                                                   "his basis is already Z, so there is nothing to rotate."))

    qc.measure(0, bob_bit[0])
    p0, p1 = _probabilities(state)
    if a != b:
        verdict = "his basis is not Alice's: sifting drops this pulse whatever he reads"
    elif p1 in (0.0, 1.0) and round(p1) == bit:
        verdict = f"same basis as Alice: he reads her bit {bit} for certain and the pulse is kept"
    else:
        verdict = (f"same basis as Alice, so the pulse is kept, but he reads her bit {bit} only with probability "
                   f"{_fmt((p0, p1)[bit])}: Eve's resend shows up as errors")
    step("Bob measures", state, f"Bob's detector reads 0 with P = {_fmt(p0)} and 1 with P = {_fmt(p1)}; {verdict}.")
    return steps


def _ry(theta: float) -> QuantumCircuit:
    qc = QuantumCircuit(1)
    qc.ry(theta, 0)
    return qc
