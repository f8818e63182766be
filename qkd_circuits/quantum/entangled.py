"""BBM92 (Bell pairs) and six-state exchanges as circuits, run into a :class:`MeasurementRecord`.

The protocol seam's quantum side for the protocols other than BB84 (:mod:`qkd_circuits.protocols`).
Both run in the ``grouped`` way of :mod:`.execution`: one pub with one parameter binding per
distinct setting of the parties' choices, exchange *i* taking the next unused shot of its
setting's binding (:func:`~.execution.sample_circuit`; one lane per circuit in this increment).

BBM92 (Bennett, Brassard & Mermin 1992)::

    source:  H(a), CX(a, b)                     -> |Φ+> = (|00> + |11>)/√2
    arms:    Eve (intercept-resend) on one arm, the channel's noise on each arm that is a channel
    Alice:   RY(−π/2·basis_a) on a, measure     (basis 0 = Z, 1 = X)
    Bob:     RY(−π/2·basis_b) on b, measure

|Φ+> gives equal results in Z·Z and in X·X, so the sifted bits agree unless noise or Eve acts.
The source sits at Alice (only Bob's arm is a channel), at Bob (only Alice's arm is) or in the
middle (both arms are): there the link's noise is split over the two arms so that the pair sees
the whole link's noise (depolarizing p: each arm 1 − √(1 − p), as (1 − p_arm)² = 1 − p; a
Z or X flip p: each arm (1 − √(1 − 2p))/2; misalignment: half the rotation on each arm, in
opposite senses, since (RY(−θ/2) ⊗ RY(θ/2))|Φ+> = (I ⊗ RY(θ))|Φ+>).  Hence the sifted QBER is the
link's wherever the source is: p/2 for depolarizing p, f/4 for intercept-resend on a fraction f
(any of its bases), 1/2 − (1 − p)(1 − f/2)/2 for both.

Six-state (Bruß 1998)::

    Alice:   RY(θ) then RZ(φ) on |0>:  Z: θ = π·bit, φ = 0;  X: θ = π/2, φ = π·bit;
             Y: θ = π/2, φ = π/2 + π·bit      -> |0>, |1>, |+>, |−>, |+i>, |−i>
    Bob:     RZ(−φ_b) then RY(−θ_b) with (θ_b, φ_b) = (0, 0) Z, (π/2, 0) X, (π/2, π/2) Y; measure

Sifted QBER: p/2 for depolarizing p (every basis), f/3 for intercept-resend on a fraction f in Z/X
(a Y pulse measured in Z or X and resent is wrong half the time in Y: (1/4 + 1/4 + 1/2)/3).
The channel's misalignment is a rotation about Y, which leaves the Y states alone: its QBER is
2e/3 here, not e.

Loss and Bob's detector (``Detector``: efficiency, dark counts, readout flips) are BB84's circuit
fragments: an ``arrived`` flag clicks with probability η = transmittance × efficiency, a dark
count swaps a random bit in (whether or not the photon arrived), and Bob's clicks are
``detected``: a fraction 1 − (1 − η)(1 − p_d) clicks, with a sifted QBER of (p_d/2) / that from
dark counts alone.  In BBM92 the fibre is Bob's arm
with the source at Alice; with the source in the middle or at Bob, Alice's photon would cross
fibre too and she would have to announce her own clicks, which the post-processing's messages
cannot carry yet: a lossy link is refused there (Bob's detector efficiency and dark counts are
still modelled).  Readout flips act on both parties' detectors in BBM92.

What this increment does not model: the entangling probe, and more than one lane per circuit.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import numpy as np
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.circuit import Parameter

from ..exceptions import ConfigurationError
from ..protocols import get_protocol
from ..records import MeasurementRecord, Provenance
from .backends import Backend, resolve_backend
from .circuits import EVE_BASIS_BREIDBART, EVE_BASIS_X, EVE_BASIS_Z, _intercept_resend, _noise_instructions, _pauli
from .circuits import _ry_for_probability
from .execution import _check_count, _models_dict, sample_circuit, simulator_seed_bits
from .models import Channel, Detector, Eavesdropper, InterceptResend

__all__ = ["ARMS", "EntangledTemplate", "SOURCES", "build_bbm92_circuit", "build_six_state_circuit",
           "run_protocol_exchanges"]

#: Where the BBM92 pair source sits.
SOURCES = ("alice", "middle", "bob")
#: The two arms of a pair (the half each party measures).
ARMS = ("alice", "bob")


@dataclass(frozen=True)
class EntangledTemplate:
    """A protocol's exchange circuit (one lane), its parameters and what it measures.

    Attributes:
        circuit: the logical circuit (not transpiled).
        protocol: ``"bbm92"`` or ``"six-state"``.
        registers: the classical registers, in measurement order.
        parameters: the circuit's parameters, in the order of each binding's values.
        eve_fixed_basis: Eve's basis code when not drawn in the circuit, else ``None``.
        source, eve_arm: BBM92's source position and the arm Eve sits on (``None`` for six-state).
    """

    circuit: QuantumCircuit
    protocol: str
    registers: tuple[str, ...]
    parameters: tuple[Parameter, ...]
    eve_fixed_basis: int | None
    source: str | None = None
    eve_arm: str | None = None


def _check_models(protocol: str, channel: Channel, detector: Detector, eve: Eavesdropper | None) -> None:
    if eve is not None and not isinstance(eve, InterceptResend):
        raise ConfigurationError(f"the {protocol} circuits model intercept-resend only, not {eve.kind}")


def _register(qc: QuantumCircuit, measured: dict, name: str, wire: str | None = None) -> QuantumRegister:
    """A one-qubit register ``wire`` (default ``name``) measured into the classical register ``name``."""
    q, c = QuantumRegister(1, wire or name), ClassicalRegister(1, name)
    qc.add_register(q)
    qc.add_register(c)
    measured[name] = (q, c)
    return q


def _eve_registers(qc: QuantumCircuit, eve: InterceptResend | None, measured: dict):
    if eve is None:
        return None, None, None, None

    def reg(name: str):
        return _register(qc, measured, name)

    flag = reg("eve_active")
    basis = reg("eve_basis") if eve.basis == "random" else None
    result = reg("eve_result")
    fixed = {"Z": EVE_BASIS_Z, "X": EVE_BASIS_X, "breidbart": EVE_BASIS_BREIDBART}.get(eve.basis)
    return flag, basis, result, fixed


def _intercept(qc: QuantumCircuit, eve: InterceptResend, flag, basis, result, q) -> None:
    """Eve's measure-and-resend on qubit ``q`` (deferred measurement, as in :mod:`.circuits`)."""
    _intercept_resend(qc, eve, flag, basis, result, 0, q)


def _detection(qc: QuantumCircuit, measured: dict, q, eta: float, detector: Detector) -> None:
    """Bob's detector, as in :mod:`.circuits`: the photon arrives and clicks with probability η
    (the ``arrived`` flag); a dark count clicks with a uniformly random result (a |+> ancilla
    swapped in right before the measurement)."""
    if eta < 1.0:
        qc.ry(_ry_for_probability(eta), _register(qc, measured, "arrived")[0])
    if detector.dark_count_probability > 0:
        dark = _register(qc, measured, "dark")[0]
        dark_bit = QuantumRegister(1, "dark_bit")
        qc.add_register(dark_bit)
        qc.ry(_ry_for_probability(detector.dark_count_probability), dark)
        qc.h(dark_bit[0])
        qc.cswap(dark, q, dark_bit[0])


def _arm_channel(channel: Channel, arms: int) -> Channel:
    """The noise one of ``arms`` channel arms carries so that together they make ``channel``."""
    if arms == 1:
        return channel

    def flip(p: float) -> float:
        return (1.0 - math.sqrt(max(0.0, 1.0 - 2.0 * p))) / 2.0

    return Channel(depolarizing=1.0 - math.sqrt(1.0 - channel.depolarizing), dephasing=flip(channel.dephasing),
                   bit_flip=flip(channel.bit_flip), misalignment=0.0)


def build_bbm92_circuit(*, channel: Channel | None = None, detector: Detector | None = None,
                        eve: Eavesdropper | None = None, source: str = "middle",
                        eve_arm: str = "bob") -> EntangledTemplate:
    """The BBM92 exchange circuit (module docstring).

    Args:
        channel: the link's noise (depolarizing, dephasing, bit flip, misalignment) and its loss
            (only with the source at Alice: module docstring).
        detector: Bob's detector (efficiency, dark counts); ``readout_error`` flips both parties' results.
        eve: an :class:`InterceptResend` or ``None``.
        source: ``"alice"``, ``"middle"`` or ``"bob"``: where the pair source sits.
        eve_arm: the arm Eve attacks; it must be a channel (not the source's own side).
    """
    channel, detector = channel or Channel(), detector or Detector()
    _check_models("bbm92", channel, detector, eve)
    if source not in SOURCES:
        raise ConfigurationError(f"source must be one of {SOURCES}, got {source!r}")
    if eve_arm not in ARMS:
        raise ConfigurationError(f"eve_arm must be one of {ARMS}, got {eve_arm!r}")
    channel_arms = {"alice": ("bob",), "bob": ("alice",), "middle": ARMS}[source]
    if "alice" in channel_arms and channel.transmittance < 1.0:
        raise ConfigurationError(
            f"with the source {'in the middle' if source == 'middle' else 'at bob'} Alice's photon crosses {channel.distance_km:g} km of fibre, so she would "
            "have to announce her own clicks, a message the post-processing has not got yet: put the source at "
            "alice for a lossy link (distance 0 for the others)")
    if eve is not None and eve_arm not in channel_arms:
        raise ConfigurationError(f"with the source at {source}, {eve_arm}'s photon never leaves the source's lab: "
                                 f"Eve can attack {' or '.join(channel_arms)}'s arm")
    qc = QuantumCircuit(name="bbm92")
    measured: dict = {}
    qubits = {arm: _register(qc, measured, f"{arm}_result", f"{arm}_photon")[0] for arm in ARMS}
    flag, e_basis, e_result, fixed = _eve_registers(qc, eve, measured)
    theta = {arm: Parameter(f"{arm}_theta") for arm in ARMS}

    qc.h(qubits["alice"])
    qc.cx(qubits["alice"], qubits["bob"])
    per_arm = _arm_channel(channel, len(channel_arms))
    for arm in channel_arms:
        q = qubits[arm]
        if eve is not None and arm == eve_arm:  # Eve sits next to the source (the worst case)
            _intercept(qc, eve, flag, e_basis, e_result, q)
        if channel.misalignment > 0:
            angle = _ry_for_probability(channel.misalignment)
            if len(channel_arms) == 2:
                angle = angle / 2 if arm == "bob" else -angle / 2
            qc.ry(angle, q)
        for op in _noise_instructions(per_arm):
            qc.append(op, [q])
    qc.barrier()
    for arm in ARMS:
        qc.ry(theta[arm], qubits[arm])
        if detector.readout_error > 0:
            qc.append(_pauli("X", detector.readout_error), [qubits[arm]])
    _detection(qc, measured, qubits["bob"], channel.transmittance * detector.efficiency, detector)
    for q, c in measured.values():
        qc.measure(q, c)
    return EntangledTemplate(qc, "bbm92", tuple(measured), (theta["alice"], theta["bob"]), fixed, source, eve_arm)


def build_six_state_circuit(*, channel: Channel | None = None, detector: Detector | None = None,
                            eve: Eavesdropper | None = None) -> EntangledTemplate:
    """The six-state exchange circuit (module docstring): Alice prepares, Eve may intercept, the
    channel's noise acts, Bob measures in Z, X or Y."""
    channel, detector = channel or Channel(), detector or Detector()
    _check_models("six-state", channel, detector, eve)
    qc = QuantumCircuit(name="six_state")
    measured: dict = {}
    q = _register(qc, measured, "bob_result", "photon")
    flag, e_basis, e_result, fixed = _eve_registers(qc, eve, measured)
    params = tuple(Parameter(name) for name in ("alice_theta", "alice_phi", "bob_phi", "bob_theta"))
    a_theta, a_phi, b_phi, b_theta = params
    qc.ry(a_theta, q[0])
    qc.rz(a_phi, q[0])
    if eve is not None:
        _intercept(qc, eve, flag, e_basis, e_result, q[0])
    if channel.misalignment > 0:
        qc.ry(_ry_for_probability(channel.misalignment), q[0])
    for op in _noise_instructions(channel):
        qc.append(op, [q[0]])
    qc.barrier(q)
    qc.rz(b_phi, q[0])
    qc.ry(b_theta, q[0])
    if detector.readout_error > 0:
        qc.append(_pauli("X", detector.readout_error), [q[0]])
    _detection(qc, measured, q[0], channel.transmittance * detector.efficiency, detector)
    for qreg, creg in measured.values():
        qc.measure(qreg, creg)
    return EntangledTemplate(qc, "six-state", tuple(measured), params, fixed)


def _uniform(n: int, k: int, rng: np.random.Generator | None) -> np.ndarray:
    """``n`` values uniform in {0, ..., k−1} (uint8): from :mod:`secrets` by rejection, or seeded."""
    if rng is not None:
        return rng.integers(0, k, size=n, dtype=np.uint8)  # sim-rng: seeded simulation
    limit = 256 - 256 % k
    out = np.empty(0, dtype=np.uint8)
    while out.size < n:
        raw = np.frombuffer(secrets.token_bytes(max(16, 2 * (n - out.size))), dtype=np.uint8)
        out = np.concatenate([out, raw[raw < limit] % k])
    return out[:n].astype(np.uint8)


#: Six-state's preparation angles (θ, φ) per (basis, bit) and Bob's (θ_b, φ_b) per basis.
_SIX_PREP = {(0, 0): (0.0, 0.0), (0, 1): (math.pi, 0.0), (1, 0): (math.pi / 2, 0.0), (1, 1): (math.pi / 2, math.pi),
             (2, 0): (math.pi / 2, math.pi / 2), (2, 1): (math.pi / 2, 3 * math.pi / 2)}
_SIX_MEAS = {0: (0.0, 0.0), 1: (math.pi / 2, 0.0), 2: (math.pi / 2, math.pi / 2)}


def _settings(protocol: str, choices: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each pulse's setting index and each setting's parameter values (one row per binding)."""
    if protocol == "bbm92":
        settings = 2 * choices["alice_bases"].astype(np.int16) + choices["bob_bases"]
        values = np.array([[-math.pi / 2 * (k >> 1), -math.pi / 2 * (k & 1)] for k in range(4)])
        return settings, values
    settings = 9 * choices["alice_bits"].astype(np.int16) + 3 * choices["alice_bases"] + choices["bob_bases"]
    rows = []
    for k in range(18):
        bit, a_basis, b_basis = k // 9, (k // 3) % 3, k % 3
        theta, phi = _SIX_PREP[(a_basis, bit)]
        b_theta, b_phi = _SIX_MEAS[b_basis]
        rows.append([theta, phi, -b_phi, -b_theta])
    return settings, np.array(rows)


def run_protocol_exchanges(exchanges: int, *, protocol: str = "bbm92", backend: str | Backend = "aer",
                           channel: Channel | None = None, detector: Detector | None = None,
                           eve: Eavesdropper | None = None, seed: int | None = None, source: str = "middle",
                           eve_arm: str = "bob") -> MeasurementRecord:
    """Run ``exchanges`` pulses (pairs) of ``protocol`` and return the record.

    Args:
        exchanges: pulses (BBM92: pairs) to run (>= 1).
        protocol: ``"bbm92"`` or ``"six-state"`` (BB84 runs through :func:`~.execution.submit`).
        backend, channel, detector, eve: as for :func:`~.execution.submit` (module docstring for
            what these circuits model).
        seed: simulation seed: the parties' choices from a seeded generator and the simulator
            seed derived from it; ``None`` draws the choices from :mod:`secrets` and a fresh 64-bit
            secret simulator seed.
        source, eve_arm: BBM92 only (:func:`build_bbm92_circuit`).

    The record's ``alice_bits`` are Alice's prepared bits (six-state) or her measurement results
    (BBM92); ``provenance.protocol`` names the protocol.
    """
    proto = get_protocol(protocol)
    if proto.name not in ("bbm92", "six-state"):
        raise ConfigurationError(f"run_protocol_exchanges runs bbm92 and six-state; {proto.name} runs through submit")
    exchanges = _check_count("exchanges", exchanges)
    if seed is not None:
        seed = _check_count("seed", seed, minimum=0)
    channel, detector = channel or Channel(), detector or Detector()
    backend = resolve_backend(backend)
    if (channel.has_noise_instructions or detector.has_noise_instructions) and not backend.runs_noise_instructions:
        raise ConfigurationError(f"depolarizing, dephasing, bit-flip and readout noise are Aer noise instructions; "
                                 f"{backend.spec!r} cannot run them: use --backend aer")
    if proto.name == "bbm92":
        template = build_bbm92_circuit(channel=channel, detector=detector, eve=eve, source=source, eve_arm=eve_arm)
    else:
        if (source, eve_arm) != ("middle", "bob"):
            raise ConfigurationError("source and eve_arm place a BBM92 pair source; six-state has none")
        template = build_six_state_circuit(channel=channel, detector=detector, eve=eve)
    rng = None if seed is None else np.random.default_rng([seed, 0])
    k = len(proto.bases)
    choices = {"alice_bases": _uniform(exchanges, k, rng), "bob_bases": _uniform(exchanges, k, rng)}
    if proto.name == "six-state":
        choices["alice_bits"] = _uniform(exchanges, 2, rng)
    settings, values = _settings(proto.name, choices)
    counts = np.bincount(settings, minlength=len(values))
    shots = max(1, int(counts.max()))
    if backend.max_shots is not None and shots * len(values) > backend.max_shots:
        raise ConfigurationError(f"{exchanges:,} exchanges need {shots * len(values):,} executions in one job, more "
                                 f"than {backend.name}'s {backend.max_shots:,}: run fewer per round")
    sim_seed = None if seed is None else int(np.random.SeedSequence(seed).generate_state(1)[0])
    bits = sample_circuit(template.circuit, shots, backend=backend, seed=sim_seed,
                          parameter_values={template.parameters: values})
    columns = {}
    for name in template.registers:
        flat = bits[name].reshape(len(values), shots)
        col = np.empty(exchanges, dtype=bool)
        for s in range(len(values)):
            idx = np.flatnonzero(settings == s)
            col[idx] = flat[s, :idx.size]
        columns[name] = col
    eve_arrays = {}
    if eve is not None:
        fixed = template.eve_fixed_basis
        eve_arrays = {"eve_active": columns["eve_active"],
                      "eve_bases": columns["eve_basis"].astype(np.int8) if fixed is None else np.full(exchanges, fixed),
                      "eve_results": columns["eve_result"]}
    models = _models_dict(channel, detector, eve)
    if proto.name == "bbm92":
        models["source"] = {"position": source, "eve_arm": eve_arm if eve is not None else None}
    provenance = Provenance.build(backend, mode="prepared", schedule="grouped", lanes=1, shots=shots * len(values),
                                  seed=seed, models=models, simulator_seed_bits=simulator_seed_bits(backend, seed),
                                  circuit={"num_qubits": template.circuit.num_qubits,
                                           "ops": {k: int(v) for k, v in template.circuit.count_ops().items()}},
                                  protocol=proto.name)
    alice_bits = columns["alice_result"] if proto.name == "bbm92" else choices["alice_bits"]
    detected = columns.get("arrived", np.ones(exchanges, dtype=bool)) | columns.get("dark", np.zeros(exchanges, bool))
    return MeasurementRecord(alice_bits=alice_bits, alice_bases=choices["alice_bases"], bob_bases=choices["bob_bases"],
                             bob_results=columns["bob_result"], detected=detected,
                             provenance=provenance, **eve_arrays)
