"""E91 (Ekert 1991) with the CHSH test, as Qiskit circuits.

Each pulse is one Bell pair |Φ+> = (|00> + |11>)/√2 made at the source (H then CNOT; the source
sits at Alice), whose second qubit travels to Bob.  Alice and Bob each pick one of three
measurement angles per pulse (:data:`~qkd_circuits.analysis.chsh.ALICE_ANGLES` = {0, π/4, π/2},
:data:`~qkd_circuits.analysis.chsh.BOB_ANGLES` = {π/4, π/2, 3π/4}, Bloch angles in the X–Z
plane) and measure the observable cos θ·Z + sin θ·X, i.e. RY(−θ) then Z.  The convention, the
test and key pairs and the theory of S under noise and intercept-resend are in
:mod:`qkd_circuits.analysis.chsh`.

The choices are *inputs*, as in the prepared mode of :mod:`.circuits`: two circuit parameters per
lane, ``alice_theta[l] = −a`` and ``bob_theta[l] = −b``, bound from the parties' settings (drawn
from :mod:`secrets`, or from a seeded generator in a simulation).  A round runs as one pub of 9
bindings, one per setting pair (Alice's setting, Bob's setting), each pulse taking the next unused
shot and lane of its pair's binding (the ``grouped`` schedule of :mod:`.execution`): every pulse is
still one shot of the circuit its parties' settings select.

Bob's arm carries the channel and the eavesdropper (the source is at Alice):

* intercept-resend (:class:`~.models.InterceptResend`): Eve rotates Bob's qubit into her basis,
  copies it onto her ancilla with a (flag-controlled) CNOT and rotates back: measure and resend,
  by deferred measurement, as in :mod:`.circuits`;
* misalignment: a coherent RY(2·asin√e) on Bob's qubit (runs on hardware too);
* depolarizing, dephasing, bit flip: Aer noise instructions on Bob's qubit (Aer only: on a fake
  or real device the device's noise is the channel).

Loss and Bob's detector are not modelled here: every pair is detected (the fair-sampling
assumption; a device-independent claim with lossy detectors needs the detection loophole closed).

Executed with :func:`.execution.sample_circuit`.

Measured (seed 1, ε = 10^-6 per bound; 2 shared cores, qiskit-aer 0.18; S theory from
:func:`~qkd_circuits.analysis.chsh.predicted_statistics`), each line from
``python -c "from qkd_circuits.quantum.e91 import run_e91; from qkd_circuits.quantum.models import *;
print(run_e91(N, seed=1, backend=B, channel=Channel(...), eve=...).estimate())"``::

    backend        pulses  arm                        Ŝ [S_lower, S_upper]   theory   Q       r_DI   r_BB84
    aer            90,000  perfect                    2.818 [2.597, 3.038]   2.828   0.0%    0.964  1.000
    aer            90,000  depolarizing 0.1           2.548 [2.327, 2.769]   2.546   5.44%   0.201  0.390
    aer            90,000  intercept-resend f = 1     1.384 [1.164, 1.605]   1.414  24.78%   0      0
    aer            90,000  intercept-resend f = 2−√2  1.997 [1.777, 2.218]   2.000  14.91%   0      0
    fake:nairobi    9,000  the device's noise         2.312 [1.617, 3.008]     -     8.92%   0      0.133
    braket-local    9,000  perfect                    2.826 [2.131, 3.521]   2.828   0.0%    0.990  1.000
    braket-local    9,000  intercept-resend f = 1     1.404 [0.708, 2.099]   1.414  26.10%   0      0

(r at the point estimates, r_DI per round of the (π/2, π/2) pair with that pair's Q,
:data:`~qkd_circuits.analysis.chsh.DI_KEY_PAIR`; Q over both key pairs.  At (S_lower, Q_upper)
the perfect aer round keeps r_DI = 0.563.)  On
``fake:nairobi`` Ŝ and Q sit on the depolarizing line: V = 1 − 2Q = 0.82 gives 2√2·V = 2.32.
Default lanes (2 without Eve, 1 with her); throughput: :func:`run_e91`.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import asdict, dataclass, field

import numpy as np
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.circuit import ParameterVector

from ..analysis.chsh import (ALICE_ANGLES, ALICE_CODES, BOB_ANGLES, BOB_CODES, CHSH_TERMS, KEY_PAIRS,
                             CHSHEstimate, estimate_chsh)
from ..exceptions import ConfigurationError
from .backends import Backend, resolve_backend
from .circuits import EVE_BASIS_BREIDBART, EVE_BASIS_X, EVE_BASIS_Z, _intercept_resend, _noise_instructions, \
    _ry_for_probability
from .models import Channel, InterceptResend

__all__ = ["E91Choices", "E91Record", "E91Template", "PAIRS", "build_e91_circuit", "draw_e91_choices", "e91_measurement_record",
           "run_e91", "run_e91_exchanges"]

#: The 9 setting pairs (Alice's setting, Bob's setting) in binding order: pair k = 3·i + j.
PAIRS = tuple((i, j) for i in range(3) for j in range(3))
#: Widest circuit of the default lanes on Aer, and the lane counts tried (measured: :func:`run_e91`).
_AER_FAST_QUBITS = 4
_AER_LANE_CHOICES = (2, 1)


@dataclass(frozen=True)
class E91Template:
    """An E91 circuit of ``lanes`` pairs side by side and what it measures.

    Attributes:
        circuit: the logical circuit (not transpiled), one classical register per role.
        lanes: pairs per shot.
        registers: the classical registers, in measurement order (``alice_result``,
            ``bob_result``, then Eve's ``eve_active``, ``eve_basis`` (random basis only),
            ``eve_result`` when she runs).
        alice_theta, bob_theta: the parameter vectors (−angle per lane).
        eve_fixed_basis: Eve's basis code when it is not drawn in the circuit, else ``None``.
    """

    circuit: QuantumCircuit
    lanes: int
    registers: tuple[str, ...]
    alice_theta: ParameterVector
    bob_theta: ParameterVector
    eve_fixed_basis: int | None


def _check_channel(channel: Channel) -> Channel:
    if not isinstance(channel, Channel):
        raise TypeError(f"channel must be a Channel, got {type(channel)!r}")
    if channel.transmittance < 1.0:
        raise ConfigurationError("E91 here models no loss (every pair is detected): use distance_km=0; "
                                 "fibre loss and detectors are BB84's (run_exchanges) for now")
    return channel


def build_e91_circuit(*, channel: Channel | None = None, eve: InterceptResend | None = None,
                      lanes: int = 1) -> E91Template:
    """Build the E91 circuit for ``lanes`` Bell pairs.

    Args:
        channel: Bob's arm (misalignment, depolarizing, dephasing, bit flip; no loss); ``None``
            is a perfect arm.
        eve: an intercept-resend attacker on Bob's arm, or ``None``.
        lanes: pairs per shot (>= 1).

    Examples:
        >>> t = build_e91_circuit(lanes=2)
        >>> t.registers, t.circuit.num_qubits
        (('alice_result', 'bob_result'), 4)
    """
    if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
        raise ConfigurationError(f"lanes must be a whole number >= 1, got {lanes!r}")
    channel = _check_channel(channel or Channel())
    if eve is not None and not isinstance(eve, InterceptResend):
        raise TypeError(f"eve must be InterceptResend (the E91 attack modelled here), got {type(eve)!r}")

    qc = QuantumCircuit(name="e91")
    roles: list[str] = []
    measured_from: dict[str, QuantumRegister] = {}

    def register(name: str, wire: str | None = None) -> QuantumRegister:
        qreg = QuantumRegister(lanes, wire or name)
        qc.add_register(qreg)
        qc.add_register(ClassicalRegister(lanes, name))
        roles.append(name)
        measured_from[name] = qreg
        return qreg

    alice_theta = ParameterVector("alice_theta", lanes)
    bob_theta = ParameterVector("bob_theta", lanes)
    alice = register("alice_result", wire="alice_qubit")
    photon = register("bob_result", wire="photon")  # Bob's half of the pair

    eve_fixed_basis = e_flag = e_basis = e_result = None
    if eve is not None:
        e_flag = register("eve_active")
        e_basis = register("eve_basis") if eve.basis == "random" else None
        eve_fixed_basis = {"Z": EVE_BASIS_Z, "X": EVE_BASIS_X, "breidbart": EVE_BASIS_BREIDBART}.get(eve.basis)
        e_result = register("eve_result")

    for lane in range(lanes):
        q = photon[lane]
        # The source: |Φ+>.
        qc.h(alice[lane])
        qc.cx(alice[lane], q)
        # Eve on Bob's arm, next to the source.
        if eve is not None:
            _intercept_resend(qc, eve, e_flag, e_basis, e_result, lane, q)
        # The rest of Bob's arm.
        if channel.misalignment > 0:
            qc.ry(_ry_for_probability(channel.misalignment), q)
        for op in _noise_instructions(channel):
            qc.append(op, [q])
        # The barrier keeps the transpiler from merging the measurements into the source.
        qc.barrier([alice[lane], q])
        qc.ry(alice_theta[lane], alice[lane])
        qc.ry(bob_theta[lane], q)

    for index, name in enumerate(roles):
        qc.measure(measured_from[name], qc.cregs[index])
    return E91Template(circuit=qc, lanes=lanes, registers=tuple(roles), alice_theta=alice_theta,
                       bob_theta=bob_theta, eve_fixed_basis=eve_fixed_basis)


@dataclass(frozen=True)
class E91Choices:
    """Alice's and Bob's settings per pulse (``uint8`` arrays of 0, 1, 2; indices into the angles)."""

    alice_settings: np.ndarray
    bob_settings: np.ndarray

    def __post_init__(self) -> None:
        for name in ("alice_settings", "bob_settings"):
            arr = np.asarray(getattr(self, name))
            if arr.ndim != 1 or (arr.size and (not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0
                                               or arr.max() > 2)):
                raise ConfigurationError(f"{name} must be a one-dimensional array of settings 0, 1, 2")
            arr = arr.astype(np.uint8)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        if self.alice_settings.size != self.bob_settings.size:
            raise ConfigurationError(f"alice_settings has {self.alice_settings.size} pulses, bob_settings "
                                     f"{self.bob_settings.size}")

    def __repr__(self) -> str:
        return f"E91Choices(n={self.alice_settings.size})"


def _uniform_trits(n: int, rng: np.random.Generator | None) -> np.ndarray:
    """n settings uniform on {0, 1, 2}: bytes below 255 taken mod 3 (255 rejected, so unbiased)."""
    out = np.empty(0, dtype=np.uint8)
    while out.size < n:
        want = n - out.size
        size = want + want // 64 + 16
        if rng is None:
            raw = np.frombuffer(secrets.token_bytes(size), dtype=np.uint8)
        else:
            raw = rng.integers(0, 256, size=size, dtype=np.uint8)  # sim-rng: seeded simulation
        out = np.concatenate([out, (raw[raw < 255] % 3).astype(np.uint8)])
    return out[:n]


def draw_e91_choices(n: int, *, seed: int | None = None) -> E91Choices:
    """Draw both parties' settings for ``n`` pulses, uniformly and independently.

    With ``seed=None`` from :mod:`secrets`; with a seed from a seeded numpy generator, for
    reproducible simulations only.
    """
    n = _count("n", n)
    rng = None if seed is None else np.random.default_rng([_count("seed", seed, 0), 0])  # sim-rng
    return E91Choices(_uniform_trits(n, rng), _uniform_trits(n, rng))


def _count(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigurationError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


@dataclass(frozen=True, eq=False)
class E91Record:
    """What one E91 round measured, per pulse in send order (the simulator's omniscient view).

    ``alice_results`` and ``bob_results`` are the raw bits (0 ↦ +1, 1 ↦ −1); on the key rounds
    they are the key, so the repr shows none of them.  Eve's arrays are ``None`` without Eve.

    Attributes:
        backend: the backend spec; lanes: pairs per shot; executions: shots x bindings run;
        seed: the simulation seed (public) or ``None``; models: channel and Eve parameters.
    """

    alice_settings: np.ndarray
    bob_settings: np.ndarray
    alice_results: np.ndarray
    bob_results: np.ndarray
    backend: str
    lanes: int
    executions: int
    seed: int | None
    models: dict = field(default_factory=dict)
    eve_active: np.ndarray | None = None
    eve_bases: np.ndarray | None = None
    eve_results: np.ndarray | None = None

    def __repr__(self) -> str:
        return (f"E91Record(n={self.alice_settings.size}, backend={self.backend!r}, lanes={self.lanes}, "
                f"eve={self.eve_results is not None})")

    @property
    def n(self) -> int:
        return int(self.alice_settings.size)

    @property
    def alice_bases(self) -> np.ndarray:
        """Alice's settings as basis codes (indices into :data:`~qkd_circuits.analysis.chsh.ANGLES`)."""
        return np.asarray(ALICE_CODES, dtype=np.uint8)[self.alice_settings]

    @property
    def bob_bases(self) -> np.ndarray:
        """Bob's settings as basis codes: where they equal Alice's, the pulse is a key round."""
        return np.asarray(BOB_CODES, dtype=np.uint8)[self.bob_settings]

    def key_mask(self) -> np.ndarray:
        """Pulses of the key pairs (:data:`~qkd_circuits.analysis.chsh.KEY_PAIRS`)."""
        mask = np.zeros(self.n, dtype=bool)
        for i, j in KEY_PAIRS:
            mask |= (self.alice_settings == i) & (self.bob_settings == j)
        return mask

    def test_mask(self) -> np.ndarray:
        """Pulses of the four CHSH pairs."""
        mask = np.zeros(self.n, dtype=bool)
        for i, j, _ in CHSH_TERMS:
            mask |= (self.alice_settings == i) & (self.bob_settings == j)
        return mask

    def sifted_keys(self) -> tuple[np.ndarray, np.ndarray]:
        """Alice's and Bob's raw key bits (``uint8``) from the key rounds, in send order."""
        mask = self.key_mask()
        return self.alice_results[mask].astype(np.uint8), self.bob_results[mask].astype(np.uint8)

    def estimate(self, *, epsilon: float = 1e-6) -> CHSHEstimate:
        """:func:`~qkd_circuits.analysis.chsh.estimate_chsh` of this round."""
        return estimate_chsh(self.alice_settings, self.bob_settings, self.alice_results, self.bob_results,
                             epsilon=epsilon)


def _default_lanes(backend: Backend, per_lane: int) -> int:
    if backend.kind != "aer":
        return 1  # fake devices simulate every shot with the device noise; Braket runs what it is given
    return next((n for n in _AER_LANE_CHOICES if n * per_lane <= _AER_FAST_QUBITS), 1)


def run_e91(n: int, *, backend: str | Backend = "aer", channel: Channel | None = None,
            eve: InterceptResend | None = None, seed: int | None = None, lanes: int | None = None,
            choices: E91Choices | None = None) -> E91Record:
    """Run ``n`` E91 pulses on ``backend`` and return the :class:`E91Record`.

    Args:
        n: pulses (Bell pairs), >= 1.
        backend: ``"aer"``, ``"fake:<name>"``, ``"braket-local"``, ... or a resolved :class:`Backend`.
        channel, eve: Bob's arm and the attacker (see :func:`build_e91_circuit`).
        seed: simulation seed for the settings and the simulator; ``None`` draws the settings from
            :mod:`secrets` and a fresh secret simulator seed (:func:`.execution.sample_circuit`).
        lanes: pairs per shot; default on ``aer`` 2 without Eve (4 qubits) and 1 with her, 1
            elsewhere.  Each of the 9 bindings is one simulation, then Aer only samples, so wider
            circuits buy little and cost much.  Pulses/s, median of 3 runs on 2 cores shared with
            other jobs (load average about 5, so a lower bound), with ``run_e91(N, seed=s,
            lanes=L, ...)``::

                lanes                          1          2          4
                90,000 perfect               523k       548k       126k
                90,000 depolarizing 0.1      591k       532k        73k
                90,000 intercept-resend      462k        36k     (20 q)
                900,000 perfect              687k     1,073k       626k
                900,000 depolarizing 0.1     647k     1,096k       427k
                900,000 intercept-resend     523k       198k     (20 q)

            (8 lanes with depolarizing noise, 16 qubits, ran 418 pulses/s: past 12 qubits Aer
            leaves the density matrix for per-shot trajectories.)
        choices: the parties' settings instead of drawing them (``n`` pulses).

    Raises:
        ConfigurationError: bad counts, noise instructions on a backend that cannot run them,
            choices of the wrong length.
        BackendError: the backend refused or failed the job.
    """
    from .execution import sample_circuit

    n = _count("n", n)
    if seed is not None:
        seed = _count("seed", seed, 0)
    channel = _check_channel(channel or Channel())
    backend = resolve_backend(backend)
    if channel.has_noise_instructions and not backend.runs_noise_instructions:
        raise ConfigurationError(
            f"depolarizing, dephasing and bit-flip noise are Aer noise instructions; {backend.spec!r} cannot run "
            "them (its own device noise is the channel there): use backend 'aer', or keep only misalignment")
    per_lane = build_e91_circuit(channel=channel, eve=eve).circuit.num_qubits
    lanes = _default_lanes(backend, per_lane) if lanes is None else _count("lanes", lanes)
    if choices is None:
        choices = draw_e91_choices(n, seed=seed)
    elif not isinstance(choices, E91Choices):
        raise TypeError(f"choices must be E91Choices, got {type(choices)!r}")
    elif choices.alice_settings.size != n:
        raise ConfigurationError(f"choices hold {choices.alice_settings.size} pulses, not {n}")

    template = build_e91_circuit(channel=channel, eve=eve, lanes=lanes)
    pair = 3 * choices.alice_settings.astype(np.int64) + choices.bob_settings
    counts = np.bincount(pair, minlength=9)
    shots = max(1, math.ceil(int(counts.max()) / lanes))
    a_theta = -np.array([ALICE_ANGLES[i] for i, _ in PAIRS])
    b_theta = -np.array([BOB_ANGLES[j] for _, j in PAIRS])
    values = {tuple(template.alice_theta): np.repeat(a_theta[:, None], lanes, axis=1),
              tuple(template.bob_theta): np.repeat(b_theta[:, None], lanes, axis=1)}
    bits = sample_circuit(template.circuit, shots, backend=backend, seed=seed, parameter_values=values)

    columns = {}
    for name in template.registers:
        flat = bits[name].reshape(9, -1)  # (binding, shot x lane): the pulses of one pair, in order
        col = np.empty(n, dtype=bool)
        for k in range(9):
            idx = np.flatnonzero(pair == k)
            col[idx] = flat[k, : idx.size]
        col.setflags(write=False)
        columns[name] = col
    eve_arrays = {}
    if eve is not None:
        bases = (columns["eve_basis"].astype(np.uint8) if template.eve_fixed_basis is None
                 else np.full(n, template.eve_fixed_basis, dtype=np.uint8))
        bases.setflags(write=False)
        eve_arrays = {"eve_active": columns["eve_active"], "eve_bases": bases,
                      "eve_results": columns["eve_result"]}
    models = {"channel": asdict(channel), "eve": None if eve is None else eve.to_dict()}
    return E91Record(alice_settings=choices.alice_settings, bob_settings=choices.bob_settings,
                     alice_results=columns["alice_result"], bob_results=columns["bob_result"],
                     backend=backend.spec, lanes=lanes, executions=9 * shots, seed=seed, models=models,
                     **eve_arrays)


def e91_measurement_record(record: E91Record, backend: str | Backend, *, circuit: dict | None = None) -> "MeasurementRecord":
    """The :class:`~qkd_circuits.records.MeasurementRecord` of an E91 round, for the post-processing.

    Basis codes are each party's setting index 0-2 (the record's codes stop at 2), and the
    ``e91`` protocol's :meth:`~qkd_circuits.protocols.E91Protocol.sift` keeps the key pairs only;
    ``alice_bits`` are Alice's outcomes (the key side), every pair is detected (fair sampling,
    as in :func:`run_e91`), provenance ``protocol="e91"``; ``circuit``: the executed circuit's
    size for the provenance.
    """
    from ..records import MeasurementRecord, Provenance
    from .execution import simulator_seed_bits

    backend = resolve_backend(backend)
    provenance = Provenance.build(backend, mode="prepared", schedule="grouped", lanes=record.lanes,
                                  shots=record.executions, seed=record.seed, models=record.models,
                                  simulator_seed_bits=simulator_seed_bits(backend, record.seed),
                                  circuit=circuit, protocol="e91")
    eve = {}
    if record.eve_results is not None:
        eve = {"eve_active": record.eve_active, "eve_bases": record.eve_bases.astype(np.int8),
               "eve_results": record.eve_results}
    return MeasurementRecord(alice_bits=record.alice_results, alice_bases=record.alice_settings,
                             bob_bases=record.bob_settings, bob_results=record.bob_results,
                             detected=np.ones(record.n, dtype=bool), provenance=provenance, **eve)


def run_e91_exchanges(n: int, *, backend: str | Backend = "aer", channel: Channel | None = None,
                      eve: InterceptResend | None = None, seed: int | None = None,
                      lanes: int | None = None) -> tuple["MeasurementRecord", E91Record]:
    """:func:`run_e91`, then :func:`e91_measurement_record`: the round's record and the E91 view of it."""
    backend = resolve_backend(backend)
    e91 = run_e91(n, backend=backend, channel=channel, eve=eve, seed=seed, lanes=lanes)
    template = build_e91_circuit(channel=_check_channel(channel or Channel()), eve=eve, lanes=e91.lanes)
    circuit = {"num_qubits": template.circuit.num_qubits,
               "ops": {k: int(v) for k, v in template.circuit.count_ops().items()}}
    return e91_measurement_record(e91, backend, circuit=circuit), e91
