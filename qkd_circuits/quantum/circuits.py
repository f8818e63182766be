"""BB84 exchanges as Qiskit circuits.

One circuit holds ``lanes`` independent exchanges side by side (lane = one pulse); each shot of
it is one run of every lane.  Every role has its own quantum and classical register, so a
result's ``data.<role>`` is that role's bits, one column per lane.

States and measurements on the signal qubit are RY rotations (native on every device after
transpilation)::

    Alice: RY(π·bit + π/2·basis)|0>  ->  |0>, |1>, |+>, -|->       (basis 0 = Z, 1 = X)
    Bob:   RY(−π/2·basis), then measure Z

Two modes, named for where the random choices come from:

``prepared``
    Alice's bits and bases and Bob's bases are *inputs*: two circuit parameters per lane,
    ``alice_theta[l] = π·bit + π/2·basis`` and ``bob_theta[l] = −π/2·basis``, bound from the
    parties' own random numbers (a CSPRNG, or a seeded generator in a simulation).  This is what
    a transmitter does and what runs on hardware.

``qrng``
    The choices are made *inside* the circuit: three ancillas per lane are put in |+> by a
    Hadamard and measured (the textbook quantum random number generator), and they drive the
    preparation and Bob's basis through controlled gates (the deferred-measurement principle:
    controlling on a qubit and measuring it afterwards is the same as measuring it first and
    controlling classically).  Because nothing in the circuit depends on a classical input,
    the simulator evolves it once and draws ``shots`` samples from the final state, which is
    why this mode runs at millions of exchanges per second.  On a simulator those random bits
    come from the simulator's pseudo-random generator, which is not a CSPRNG.

Eavesdroppers, loss and dark counts are circuit fragments in both modes; their random choices
come from ancillas (Eve's and nature's randomness are not the parties' to choose).  Channel
noise channels (depolarizing, dephasing, bit flip, readout flip) are Aer noise *instructions*
inserted on the signal qubit: they run on Aer only; on hardware the device's noise is the channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.circuit import ParameterVector

from ..exceptions import ConfigurationError
from .models import Channel, Detector, Eavesdropper, EntanglingProbe, InterceptResend

__all__ = ["ExchangeTemplate", "build_exchange_circuit", "MODES"]

MODES = ("prepared", "qrng")

#: Eve's basis codes in records: Z, X, and the Breidbart basis (between the two).
EVE_BASIS_Z, EVE_BASIS_X, EVE_BASIS_BREIDBART = 0, 1, 2


@dataclass(frozen=True)
class ExchangeTemplate:
    """A BB84 exchange circuit and what it measures.

    Attributes:
        circuit: the logical circuit (not transpiled), measuring into one classical register per
            role; ``registers`` lists them.
        mode: ``"prepared"`` or ``"qrng"``.
        lanes: exchanges per shot.
        alice_theta, bob_theta: the prepared mode's parameter vectors (``None`` in qrng mode).
        eve_fixed_basis: Eve's basis code when it is not drawn in the circuit (fixed or
            Breidbart intercept-resend), else ``None``.
    """

    circuit: QuantumCircuit
    mode: str
    lanes: int
    registers: tuple[str, ...]
    alice_theta: ParameterVector | None
    bob_theta: ParameterVector | None
    eve_fixed_basis: int | None


def _ry_for_probability(p: float) -> float:
    """Angle θ with RY(θ)|0> giving |1> with probability p."""
    return 2.0 * math.asin(math.sqrt(p))


def build_exchange_circuit(
    mode: str = "qrng",
    *,
    channel: Channel | None = None,
    detector: Detector | None = None,
    eve: Eavesdropper | None = None,
    lanes: int = 1,
) -> ExchangeTemplate:
    """Build the BB84 exchange circuit for ``lanes`` parallel pulses.

    Args:
        mode: ``"prepared"`` (choices bound as parameters) or ``"qrng"`` (choices from
            Hadamard-measured ancillas in the circuit).
        channel: the fibre and its noise; ``None`` is a perfect, lossless channel.
        detector: Bob's detector; ``None`` is a perfect detector.
        eve: an eavesdropper model, or ``None``.
        lanes: independent exchanges per shot (>= 1).

    Returns:
        An :class:`ExchangeTemplate`.

    Examples:
        >>> t = build_exchange_circuit("qrng", lanes=2)
        >>> t.registers
        ('alice_bit', 'alice_basis', 'bob_basis', 'bob_result')
        >>> t.circuit.num_qubits
        8
    """
    if mode not in MODES:
        raise ConfigurationError(f"mode must be one of {MODES}, got {mode!r}")
    if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
        raise ConfigurationError(f"lanes must be a whole number >= 1, got {lanes!r}")
    channel = channel or Channel()
    detector = detector or Detector()
    if eve is not None and not isinstance(eve, (InterceptResend, EntanglingProbe)):
        raise TypeError(f"eve must be InterceptResend or EntanglingProbe, got {type(eve)!r}")

    qc = QuantumCircuit(name=f"bb84_{mode}")
    roles: list[str] = []

    measured_from: dict[str, QuantumRegister] = {}

    def register(name: str, *, measured: bool = True, wire: str | None = None) -> QuantumRegister:
        # ``wire``: the quantum register's name where it differs from the classical one (the pulse
        # is drawn as "photon" and measured into "bob_result", Bob's bit).
        qreg = QuantumRegister(lanes, wire or name)
        qc.add_register(qreg)
        if measured:
            qc.add_register(ClassicalRegister(lanes, name))
            roles.append(name)
            measured_from[name] = qreg
        return qreg

    # Registers are declared in the order they are measured into records.
    alice_theta = bob_theta = None
    if mode == "qrng":
        a_bit, a_basis, b_basis = register("alice_bit"), register("alice_basis"), register("bob_basis")
    else:
        alice_theta = ParameterVector("alice_theta", lanes)
        bob_theta = ParameterVector("bob_theta", lanes)
    signal = register("bob_result", wire="photon")  # the pulse; Bob's measured bit is bob_result

    eve_fixed_basis = None
    if isinstance(eve, InterceptResend):
        e_flag = register("eve_active")
        e_basis = register("eve_basis") if eve.basis == "random" else None
        eve_fixed_basis = {"Z": EVE_BASIS_Z, "X": EVE_BASIS_X, "breidbart": EVE_BASIS_BREIDBART}.get(eve.basis)
        e_result = register("eve_result")
    elif isinstance(eve, EntanglingProbe):
        e_basis = register("eve_basis")
        e_result = register("eve_result")

    eta = channel.transmittance * detector.efficiency
    arrived = register("arrived") if eta < 1.0 else None
    if detector.dark_count_probability > 0:
        dark = register("dark")
        dark_bit = register("dark_bit", measured=False)

    for lane in range(lanes):
        q = signal[lane]
        # Alice prepares.
        if mode == "qrng":
            qc.h([a_bit[lane], a_basis[lane], b_basis[lane]])
            qc.cx(a_bit[lane], q)
            qc.cry(math.pi / 2, a_basis[lane], q)
        else:
            qc.ry(alice_theta[lane], q)

        # Eve sits next to Alice (the worst case for the parties).
        if isinstance(eve, InterceptResend):
            _intercept_resend(qc, eve, e_flag, e_basis, e_result, lane, q)
        elif isinstance(eve, EntanglingProbe):
            qc.h(e_basis[lane])
            qc.cry(-math.pi / 2, e_basis[lane], q)
            qc.crx(eve.theta, q, e_result[lane])
            qc.cry(math.pi / 2, e_basis[lane], q)
            # Helstrom measurement of {|0>, RX(θ)|0>}: rotate the axis perpendicular to their
            # bisector onto Z, so outcome 0 means "Alice sent 0" (in Eve's probe basis).
            qc.rx(math.pi / 2 - eve.theta / 2, e_result[lane])

        # The channel.
        if channel.misalignment > 0:
            qc.ry(_ry_for_probability(channel.misalignment), q)
        for op in _noise_instructions(channel):
            qc.append(op, [q])

        # Bob measures in his basis.  The barrier keeps the transpiler from merging Bob's rotation
        # into Alice's (RY(a)·RY(b) = RY(a+b)): on a device the pulse must exist between them.
        qc.barrier(q)
        if mode == "qrng":
            qc.cry(-math.pi / 2, b_basis[lane], q)
        else:
            qc.ry(bob_theta[lane], q)
        if detector.readout_error > 0:
            qc.append(_pauli("X", detector.readout_error), [q])

        # Detection: the photon arrives and clicks with probability η; a dark count clicks
        # with a uniformly random result (swap in a |+> ancilla right before the measurement).
        if arrived is not None:
            qc.ry(_ry_for_probability(eta), arrived[lane])
        if detector.dark_count_probability > 0:
            qc.ry(_ry_for_probability(detector.dark_count_probability), dark[lane])
            qc.h(dark_bit[lane])
            qc.cswap(dark[lane], q, dark_bit[lane])

    for name in roles:
        qc.measure(measured_from[name], qc.cregs[roles.index(name)])

    return ExchangeTemplate(
        circuit=qc,
        mode=mode,
        lanes=lanes,
        registers=tuple(roles),
        alice_theta=alice_theta,
        bob_theta=bob_theta,
        eve_fixed_basis=eve_fixed_basis,
    )


def _intercept_resend(qc, eve: InterceptResend, e_flag, e_basis, e_result, lane: int, q) -> None:
    """Eve's measure-and-resend of the pulse ``q`` in ``lane``: she acts with probability
    ``eve.fraction`` (the ``e_flag`` qubit), in her basis (``e_basis`` is a |+> qubit for a random
    basis, else ``None``), copying the result into ``e_result`` (a deferred measurement: copying
    collapses the pulse as measuring it would) and resending in the same basis.  Every protocol's
    circuits use this one fragment."""
    qc.ry(_ry_for_probability(eve.fraction), e_flag[lane])
    if e_basis is not None:
        qc.h(e_basis[lane])
    _into_eve_basis(qc, eve.basis, e_basis, lane, q, inverse=False)
    qc.ccx(e_flag[lane], q, e_result[lane])  # copy = measure (deferred), resend = collapse
    _into_eve_basis(qc, eve.basis, e_basis, lane, q, inverse=True)


def _into_eve_basis(qc, basis, e_basis, lane, q, *, inverse: bool) -> None:
    """Rotate the pulse into (``inverse=False``) or out of Eve's measurement basis."""
    sign = 1.0 if inverse else -1.0
    if basis == "random":
        qc.cry(sign * math.pi / 2, e_basis[lane], q)
    elif basis == "X":
        qc.ry(sign * math.pi / 2, q)
    elif basis == "breidbart":
        qc.ry(sign * math.pi / 4, q)


def _pauli(label: str, p: float):
    from qiskit_aer.noise import pauli_error

    return pauli_error([(label, p), ("I", 1.0 - p)]).to_instruction()


def _noise_instructions(channel: Channel) -> list:
    ops = []
    if channel.depolarizing > 0:
        from qiskit_aer.noise import depolarizing_error

        ops.append(depolarizing_error(channel.depolarizing, 1).to_instruction())
    if channel.dephasing > 0:
        ops.append(_pauli("Z", channel.dephasing))
    if channel.bit_flip > 0:
        ops.append(_pauli("X", channel.bit_flip))
    return ops
