"""SARG04 (Scarani, Acín, Ribordy & Gisin 2004) as circuits: BB84's states, another sifting.

Alice sends one of BB84's four states ``RY(π·value + π/2·basis)|0>``; **her bit is the basis**
(Z → 0, X → 1).  Bob measures Z or X at random, exactly as in BB84, so the quantum part is
BB84's exchange circuit (:func:`~.execution.run_exchanges`, prepared mode) or its weak-coherent
pulse circuit (:func:`~.wcp.run_wcp_exchanges`) unchanged.  After Bob's click Alice announces
a pair {Z state, X state} that holds hers: her own state and, in the other basis, a state of a
random value ``w`` (:func:`draw_pairs`).  Bob's result is conclusive when it is orthogonal to the
pair's state in his basis — that state was not sent — and then his bit is the other basis,
``1 − basis``.  :func:`sarg04_from_record` applies this sifting to any BB84-state record, so
SARG04 runs on every backend, channel and eavesdropper BB84 does.  Expected: conclusive
fraction 1/4, QBER ``p/(1 + p)`` through depolarizing p (``2e/(1 + 2e)`` where BB84 sees e),
``f/(2 + f)`` under intercept-resend (:mod:`qkd_circuits.analysis.sarg04`).

**Where SARG04's advantage shows: the photon-number-splitting attack.**  In BB84 a photon kept
from a two-photon pulse gives Eve the bit once the basis is announced.  In SARG04 the
announcement names two *non-orthogonal* states (overlap 1/√2), and no measurement tells them
apart with certainty: the best error-free one (unambiguous discrimination) succeeds with
probability ``1 − 2^(−k/2)`` on k stored photons — 0.293 for the one photon of a two-photon
pulse (:func:`run_stored_photon_attack`).  Before the announcement, two photons of the four
states are linearly dependent (Gram rank 3), so no measurement identifies the state of a
two-photon pulse without error at all (:func:`build_four_state_usd_circuit` refuses); three
photons are linearly independent and the optimal unambiguous measurement succeeds half the time
(:func:`run_four_state_usd`): the unambiguous PNS attack on SARG04 needs three photons, which is
why its best mean photon number scales as √η instead of η
(:func:`~qkd_circuits.analysis.sarg04.optimal_pns_mu`).  Each of these measurements is a
circuit: Naimark's dilation of the optimal POVM (:func:`~.b92.usd_unitary`) as a unitary gate on
the stored photons and ancillas, run on a backend like every other circuit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.circuit import Parameter
from qiskit.circuit.library import UnitaryGate

from ..exceptions import ConfigurationError
from ..records import MeasurementRecord
from .b92 import _ConclusiveSifting, _choice_bits, _ry_state, _sample_grouped, usd_unitary
from .backends import Backend
from .execution import draw_choices, run_exchanges
from .models import Channel, Detector, Eavesdropper

__all__ = ["Sarg04Record", "draw_pairs", "sarg04_from_record", "run_sarg04", "build_stored_photon_circuit",
           "run_stored_photon_attack", "StoredPhotonAttack", "build_four_state_usd_circuit", "run_four_state_usd",
           "FourStateUsd"]


@dataclass(frozen=True)
class Sarg04Record(_ConclusiveSifting):
    """The outcome of ``n`` SARG04 pulses (``uint8`` 0/1 arrays and a ``bool`` mask, shape (n,)).

    Attributes:
        alice_bases, alice_values: Alice's state ``RY(π·value + π/2·basis)|0>``; her bit is the basis.
        pair_values: the value of the announced pair's state in the *other* basis than hers.
        bob_bases, bob_results, detected: Bob's basis, result and click.
        exchange: the BB84-state record underneath (provenance, Eve's ground truth, photons).
    """

    alice_bases: np.ndarray = field(repr=False)
    alice_values: np.ndarray = field(repr=False)
    pair_values: np.ndarray = field(repr=False)
    bob_bases: np.ndarray = field(repr=False)
    bob_results: np.ndarray = field(repr=False)
    detected: np.ndarray = field(repr=False)
    exchange: MeasurementRecord | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # no bits in reprs
        return f"Sarg04Record(n={len(self.alice_bases)}, detected={int(self.detected.sum())})"

    @property
    def alice_bits(self) -> np.ndarray:
        return self.alice_bases

    @property
    def announced_value(self) -> np.ndarray:
        """The value of the pair's state in Bob's basis (his result must differ from it)."""
        return np.where(self.bob_bases == self.alice_bases, self.alice_values, self.pair_values).astype(np.uint8)

    @property
    def conclusive(self) -> np.ndarray:
        return self.detected & (self.bob_results != self.announced_value)



def draw_pairs(n: int, *, seed: int | None = None) -> np.ndarray:
    """Alice's ``n`` random pair choices (the other-basis state's value), from :mod:`secrets` unless seeded."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigurationError(f"n must be a whole number >= 0, got {n!r}")
    return _choice_bits(n, np.random.default_rng([seed, 4]) if seed is not None else None)  # sim-rng when seeded


def sarg04_from_record(record: MeasurementRecord, pair_values: np.ndarray) -> Sarg04Record:
    """SARG04's sifting of a BB84-state record (``alice_bits`` are the states' values)."""
    pairs = np.asarray(pair_values)
    if pairs.shape != (len(record),) or not np.isin(pairs, (0, 1)).all():
        raise ConfigurationError(f"pair_values must be {len(record)} bits 0/1, one per pulse")
    if np.any(record.alice_bases > 1) or np.any(record.bob_bases > 1):
        raise ConfigurationError("SARG04 uses the Z and X bases only")
    return Sarg04Record(alice_bases=record.alice_bases.astype(np.uint8), alice_values=record.alice_bits.astype(np.uint8),
                        pair_values=pairs.astype(np.uint8), bob_bases=record.bob_bases.astype(np.uint8),
                        bob_results=record.bob_results.astype(np.uint8), detected=np.asarray(record.detected, bool),
                        exchange=record)


def run_sarg04(exchanges: int, *, channel: Channel | None = None, detector: Detector | None = None,
               eve: Eavesdropper | None = None, seed: int | None = None, backend: str | Backend = "aer",
               lanes: int | None = None) -> Sarg04Record:
    """``exchanges`` SARG04 pulses: BB84's prepared circuits, then the pair announcement and sifting.

    Examples:
        >>> r = run_sarg04(4000, seed=2)
        >>> abs(r.sifted_fraction - 0.25) < 0.03 and r.qber == 0.0
        True
    """
    choices = draw_choices(exchanges, seed=seed)
    record = run_exchanges(exchanges, mode="prepared", choices=choices, channel=channel, detector=detector,
                           eve=eve, seed=seed, backend=backend, lanes=lanes)
    return sarg04_from_record(record, draw_pairs(exchanges, seed=seed))


# --- Eve's measurements ------------------------------------------------------------------------

def _pair_frame(values_z: np.ndarray, values_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rotation taking a pair {RY(π·vz)|0>, RY(π/2 + π·vx)|0>} onto {RY(−π/4)|0>, RY(π/4)|0>}.

    Returns ``(eve_theta, flip)``: after ``RY(eve_theta)`` on each photon the pair's Z state is at
    ``−π/4`` when ``flip`` is 0 and at ``+π/4`` when it is 1 (``vz XOR vx``).
    """
    flip = (values_z ^ values_x).astype(np.uint8)
    delta = np.where(flip == 1, -math.pi / 2, math.pi / 2)  # X state minus Z state, reduced to ±π/2
    return -(math.pi * values_z + delta / 2), flip


def build_stored_photon_circuit(stored: int) -> QuantumCircuit:
    """Eve's ``stored`` photons of a SARG04 pulse and, after the pair announcement, her optimal USD.

    Parameters ``alice_theta`` (Alice's state, on every photon) and ``eve_theta`` (the pair's
    frame, from the announcement: :func:`_pair_frame`).  Register ``eve_outcome``: index 0 names
    the state at −π/4 of the rotated pair, 1 the one at +π/4, >= 2 a failure.
    """
    if isinstance(stored, bool) or not isinstance(stored, int) or stored < 1:
        raise ConfigurationError(f"stored must be a whole number of photons >= 1, got {stored!r}")
    pair = np.array([_ry_state(-math.pi / 4, stored), _ry_state(math.pi / 4, stored)])
    unitary, qubits, _ = usd_unitary(pair)
    a_theta, e_theta = Parameter("alice_theta"), Parameter("eve_theta")
    photons = QuantumRegister(stored, "photon")
    regs = [photons] + ([QuantumRegister(qubits - stored, "eve_ancilla")] if qubits > stored else [])
    qc = QuantumCircuit(*regs, ClassicalRegister(qubits, "eve_outcome"), name=f"sarg04_stored_{stored}")
    qc.ry(a_theta, photons)
    qc.barrier()  # the photons wait in Eve's memory until the announcement
    qc.ry(e_theta, photons)
    qc.append(UnitaryGate(unitary, label="USD pair"), list(qc.qubits))
    qc.measure(list(qc.qubits), qc.cregs[0])
    return qc


@dataclass(frozen=True)
class StoredPhotonAttack:
    """What Eve learnt from her stored photons: per pulse, whether USD succeeded and the bit it gave."""

    stored: int
    alice_bits: np.ndarray = field(repr=False)
    eve_known: np.ndarray = field(repr=False)
    eve_bits: np.ndarray = field(repr=False)

    @property
    def known_fraction(self) -> float:
        """Pulses whose bit Eve identified (``1 − 2^(−stored/2)`` expected)."""
        return float(self.eve_known.mean())

    @property
    def errors(self) -> int:
        """Identified bits that are wrong (0 for an unambiguous measurement)."""
        return int(np.sum(self.eve_known & (self.eve_bits != self.alice_bits)))


def run_stored_photon_attack(pulses: int, *, stored: int = 1, seed: int | None = None,
                             backend: str | Backend = "aer") -> StoredPhotonAttack:
    """``pulses`` SARG04 pulses from which Eve stored ``stored`` photons, measured after the announcement.

    ``stored=1`` is the PNS attack on a two-photon pulse (one photon kept, one forwarded to Bob);
    ``stored=2`` is Eve keeping both photons (Bob gets nothing).
    """
    if isinstance(pulses, bool) or not isinstance(pulses, int) or pulses < 1:
        raise ConfigurationError(f"pulses must be a whole number >= 1, got {pulses!r}")
    rng = np.random.default_rng([seed, 40]) if seed is not None else None  # sim-rng
    bases, values, other = (_choice_bits(pulses, rng) for _ in range(3))
    vz = np.where(bases == 0, values, other)
    vx = np.where(bases == 1, values, other)
    setting = (bases.astype(np.int64) << 2) | (values.astype(np.int64) << 1) | other
    k = np.arange(8)
    kb, kv, ko = k >> 2 & 1, k >> 1 & 1, k & 1
    e_theta, flip_k = _pair_frame(np.where(kb == 0, kv, ko), np.where(kb == 1, kv, ko))
    table = np.stack([math.pi * kv + math.pi / 2 * kb, e_theta], axis=-1)
    data = _sample_grouped(build_stored_photon_circuit(stored), ("alice_theta", "eve_theta"), table, setting,
                           seed=seed, backend=backend)
    outcome = data["eve_outcome"].astype(np.int64) @ (1 << np.arange(data["eve_outcome"].shape[1]))
    known = outcome < 2
    flip = (vz ^ vx).astype(np.int64)
    bits = np.where(known, outcome ^ flip, 0).astype(np.uint8)  # outcome 0 is the Z state (bit 0) unless flipped
    return StoredPhotonAttack(stored=stored, alice_bits=bases, eve_known=known, eve_bits=bits)


def build_four_state_usd_circuit(photons: int) -> QuantumCircuit:
    """The optimal unambiguous discrimination of the four states on ``photons`` copies (before any announcement).

    Parameter ``alice_theta``; register ``eve_outcome``: index ``k < 4`` names the state
    ``RY(kπ/2)|0>`` (basis ``k & 1``, value ``k >> 1``), >= 4 a failure.

    Raises:
        ConfigurationError: for one or two photons, whose four states are linearly dependent.
    """
    if isinstance(photons, bool) or not isinstance(photons, int) or photons < 1:
        raise ConfigurationError(f"photons must be a whole number >= 1, got {photons!r}")
    states = np.array([_ry_state(k * math.pi / 2, photons) for k in range(4)])
    unitary, qubits, _ = usd_unitary(states)
    a_theta = Parameter("alice_theta")
    photon = QuantumRegister(photons, "photon")
    regs = [photon] + ([QuantumRegister(qubits - photons, "eve_ancilla")] if qubits > photons else [])
    qc = QuantumCircuit(*regs, ClassicalRegister(qubits, "eve_outcome"), name=f"sarg04_usd4_{photons}")
    qc.ry(a_theta, photon)
    qc.barrier()
    qc.append(UnitaryGate(unitary, label="USD 4 states"), list(qc.qubits))
    qc.measure(list(qc.qubits), qc.cregs[0])
    return qc


@dataclass(frozen=True)
class FourStateUsd:
    """Eve's unambiguous measurement of ``photons``-photon pulses: which she identified, and as what."""

    photons: int
    alice_states: np.ndarray = field(repr=False)
    eve_known: np.ndarray = field(repr=False)
    eve_states: np.ndarray = field(repr=False)

    @property
    def known_fraction(self) -> float:
        return float(self.eve_known.mean())

    @property
    def errors(self) -> int:
        return int(np.sum(self.eve_known & (self.eve_states != self.alice_states)))


def run_four_state_usd(pulses: int, *, photons: int = 3, seed: int | None = None,
                       backend: str | Backend = "aer") -> FourStateUsd:
    """Eve's unambiguous measurement (:func:`build_four_state_usd_circuit`) of ``pulses`` random pulses."""
    if isinstance(pulses, bool) or not isinstance(pulses, int) or pulses < 1:
        raise ConfigurationError(f"pulses must be a whole number >= 1, got {pulses!r}")
    circuit = build_four_state_usd_circuit(photons)
    rng = np.random.default_rng([seed, 43]) if seed is not None else None  # sim-rng
    states = (_choice_bits(pulses, rng).astype(np.int64) << 1) | _choice_bits(pulses, rng)
    table = (np.arange(4) * math.pi / 2)[:, None]
    data = _sample_grouped(circuit, ("alice_theta",), table, states, seed=seed, backend=backend)
    outcome = data["eve_outcome"].astype(np.int64) @ (1 << np.arange(data["eve_outcome"].shape[1]))
    known = outcome < 4
    return FourStateUsd(photons=photons, alice_states=states.astype(np.uint8), eve_known=known,
                        eve_states=np.where(known, outcome, 0).astype(np.uint8))
