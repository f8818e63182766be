"""MDI-QKD's untrusted relay: the linear-optics Bell-state measurement as a circuit.

Alice and Bob each prepare a BB84 polarisation state (``H = |0>``, ``V = |1>``; basis 0 = Z,
basis 1 = X with ``+`` for bit 0 and ``−`` for bit 1) with ``RY(π·bit + π/2·basis)``, as in
:mod:`.circuits`, and send it to the relay.  The relay combines the two photons on a 50:50
beam splitter, splits each output by polarisation, and has a threshold detector on each of the
four modes ``cH, cV, dH, dV``; it announces ``ψ+``, ``ψ−`` or a failure from the clicks
(:func:`qkd_circuits.analysis.mdi.announce`).

**The circuit.** Two photons entering a beam splitter interfere (Hong-Ou-Mandel): that is a
property of identical bosons, which qubits are not.  The circuit therefore writes the photons in
*first quantisation*: photon ``k`` (``k = 0, 1``, a label with no physical meaning) is two
qubits, its polarisation ``pol[k]`` and its path ``path[k]`` (``0``: port ``a``/output ``c``,
``1``: port ``b``/output ``d``), and the two-photon state is the *symmetrised* one, which is what
makes the labels meaningless::

    pol[0]:  RY(alice_theta) ─[Alice's channel]─────────────X──────────────── M
    pol[1]:  RY(bob_theta)   ─[Bob's channel]───────────────X──────────────── M
    path[0]: H ──────────────────────────────■──────────────■───── H ──────── M
    path[1]: X ─────────────────────────────(+)──────────────────── H ──────── M

After the CNOT the paths are ``(|0 1> + |1 0>)/√2`` and the controlled SWAP puts Alice's
polarisation on whichever photon is in port ``a``: the state is
``(|a,α>|b,β> + |b,β>|a,α>)/√2``, the two-boson state ``a_α† b_β† |0>`` written over labelled
particles.  The beam splitter ``a → (c + d)/√2``, ``b → (c − d)/√2`` is a single-particle
unitary, the Hadamard on each path qubit, and the polarising beam splitters and detectors are
the measurement of ``pol`` and ``path`` in the computational basis; a photon in path ``p`` with
polarisation ``s`` lands in detector ``2p + s``.  Single-particle operations applied to every
label keep the state symmetric, and the probability of an unordered pair of modes in a
symmetric first-quantised state is the bosonic probability, so the measured patterns have the
linear-optics statistics exactly (bunching included: ``|HH>`` always leaves by one port).
Hence, for single photons and ideal detectors: ``ψ+`` and ``ψ−`` are each identified with
certainty, ``φ±`` always fail (both photons in one detector), so a uniformly random Bell state
is identified with probability 1/2; a BB84 pair ``(H, V)`` gives ``ψ+`` and ``ψ−`` a half each,
``(H, H)`` always fails, ``(+, +)`` gives ``ψ+`` half the time and ``(+, −)`` ``ψ−`` half the
time.  ``tests/test_mdi.py`` compares the circuit against a second-quantisation calculation
(:func:`qkd_circuits.analysis.mdi.output_mode_probabilities`).  The symmetrisation is the
bookkeeping of two photons arriving at the relay together, not an operation anyone performs.

**Loss and dark counts.** A lost photon never reaches the beam splitter, so loss is not a gate
on the two-photon circuit: each photon of a pair arrives with probability ``η`` of its arm
(``η = η_channel · η_detector``, one draw per photon, ``# sim-rng``: the fibre's physics, as the
photon numbers of :mod:`.wcp`), and a pair whose photons both arrive runs the circuit above,
one whose single photon arrives runs its one-photon version (``pol``, ``path`` with one qubit
each), none the empty one.  Each relay detector has its own dark count, an ancilla
``RY(2 asin √p_d)`` measured in ``dark``.

**Weak coherent pulses and decoys** (:func:`run_mdi_wcp_exchanges`).  A phase-randomised pulse is
a Poisson mixture of Fock states, and two independently randomised pulses a mixture of
``|n_a>|n_b>``; :func:`build_pulse_pair_circuit` writes ``n_a + n_b`` photons the same way, the
path qubits in the Dicke state (every arrangement of ``n_a`` photons in port ``a`` and ``n_b`` in
``b``), each photon's polarisation chosen by its path.  Checked in ``tests/test_mdi.py`` against
the Bessel-function gains of :mod:`qkd_circuits.analysis.mdi` (which were checked against a
direct phase average of the coherent-state optics): the multi-photon interference of the X basis
comes out right.  Cost: two qubits a photon; pairs bringing more than :data:`MAX_RELAY_PHOTONS`
photons are refused.

**Channel noise** (each arm's :class:`~.models.Channel`): misalignment as a rotation of that
photon's polarisation, and Aer's depolarizing / dephasing / bit-flip instructions on it (Aer
only), before the relay.

**Cheating relays** (the relay is Eve's).  :class:`RandomAnnouncer` never measures and announces
at random.  :class:`InterceptRelay` measures each photon in one basis (the deferred measurement
of :mod:`.circuits`: a CNOT onto a record qubit ``eve_result``, inside a rotation for X) on a
fraction of the pairs (ancilla ``attacked``) and announces a success from her results with the
honest success probability 1/2: basis Z, a success when her two results differ, ``ψ+``/``ψ−`` by
a coin; basis X, a success by a coin, ``ψ+`` for equal results, ``ψ−`` for different ones.  She
then knows Alice's Z bit of every attacked Z pair exactly, and the X basis (which she did not
measure) errs half the time on those pairs: an X QBER of ``f/2`` for a fraction ``f``, and
``h(f/2) >= f`` for every ``f`` in [0, 1], so privacy amplification from the phase error removes
at least what she learnt.  (The X-measuring relay is the mirror image: Z errs.)  It acts when
both photons arrive; a pair with a lost photon is measured honestly.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import asdict, dataclass

import numpy as np
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.circuit import Parameter

from ..analysis import mdi as _analysis
from ..analysis.mdi import FAIL, PSI_MINUS, PSI_PLUS
from ..exceptions import ConfigurationError
from ..records import MeasurementRecord, Provenance
from .backends import Backend, resolve_backend
from .circuits import _noise_instructions
from .execution import sample_circuit, simulator_seed_bits
from .models import Channel, Detector

__all__ = ["LinearOpticsRelay", "RandomAnnouncer", "InterceptRelay", "Relay", "BELL_SOURCES", "MdiRecord",
           "MAX_RELAY_PHOTONS", "build_relay_circuit", "build_pulse_pair_circuit", "relay_announcements",
           "run_mdi_exchanges", "run_mdi_wcp_exchanges"]

#: The most photons (both pulses together) one pulse pair may bring to the relay in
#: :func:`run_mdi_wcp_exchanges`: 2 qubits a photon, so 6 photons with dark counts are 16 qubits,
#: about 2.6 s per job (16 bindings) on this machine, and 8 photons 20 qubits, about 17 s.
MAX_RELAY_PHOTONS = 8

#: Entangled polarisation sources :func:`build_relay_circuit` can feed the relay (for testing the BSM).
BELL_SOURCES = ("psi+", "psi-", "phi+", "phi-")


def _ry_for_probability(p: float) -> float:
    return 2.0 * math.asin(math.sqrt(min(max(p, 0.0), 1.0)))


@dataclass(frozen=True)
class LinearOpticsRelay:
    """The honest relay: beam splitter, polarising beam splitters, four threshold detectors."""

    def to_dict(self) -> dict:
        return {"kind": "linear-optics"}


@dataclass(frozen=True)
class RandomAnnouncer:
    """A relay that measures nothing and announces ``ψ+`` / ``ψ−`` with these probabilities."""

    psi_plus: float = 0.25
    psi_minus: float = 0.25

    def __post_init__(self) -> None:
        for name in ("psi_plus", "psi_minus"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ConfigurationError(f"{name} must be a probability, got {v!r}")
        if self.psi_plus + self.psi_minus > 1.0 + 1e-12:
            raise ConfigurationError(f"psi_plus + psi_minus must be <= 1, got {self.psi_plus + self.psi_minus!r}")

    def to_dict(self) -> dict:
        return {"kind": "random-announcer", **asdict(self)}


@dataclass(frozen=True)
class InterceptRelay:
    """A relay that measures a ``fraction`` of the pairs photon by photon in ``basis`` and fakes
    the announcement from her results (see the module docstring)."""

    basis: str = "Z"
    fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.basis not in ("Z", "X"):
            raise ConfigurationError(f"basis must be 'Z' or 'X', got {self.basis!r}")
        v = self.fraction
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            raise ConfigurationError(f"fraction must be a probability, got {v!r}")

    def to_dict(self) -> dict:
        return {"kind": "intercept", **asdict(self)}


Relay = LinearOpticsRelay | RandomAnnouncer | InterceptRelay


def _check_relay(relay) -> Relay:
    relay = LinearOpticsRelay() if relay is None else relay
    if not isinstance(relay, (LinearOpticsRelay, RandomAnnouncer, InterceptRelay)):
        raise ConfigurationError(f"relay must be LinearOpticsRelay, RandomAnnouncer or InterceptRelay, "
                                 f"got {type(relay).__name__}")
    return relay


def build_relay_circuit(photons: tuple[int, int] = (1, 1), *, channel_alice: Channel | None = None,
                        channel_bob: Channel | None = None, detector: Detector | None = None,
                        relay: Relay | None = None, source: str = "bb84") -> QuantumCircuit:
    """The circuit of one pulse pair at the relay (see the module docstring).

    Args:
        photons: ``(Alice's, Bob's)`` photons that reach the relay, each 0 or 1.
        channel_alice, channel_bob: each arm's misalignment and noise (their loss is not a gate).
        detector: the relay's detectors (only ``dark_count_probability`` enters the circuit).
        relay: the relay (default :class:`LinearOpticsRelay`); a cheating one adds its registers.
        source: ``"bb84"`` (parameters ``alice_theta``, ``bob_theta``) or one of
            :data:`BELL_SOURCES`, an entangled polarisation pair (both photons, no parameters).

    Registers (measured): ``pol`` and ``path`` (one bit per photon), ``dark`` (4, with dark
    counts), and ``coin`` (:class:`RandomAnnouncer`: 2; :class:`InterceptRelay`: 1),
    ``attacked`` and ``eve_result`` (2) for :class:`InterceptRelay` with both photons.

    Examples:
        >>> qc = build_relay_circuit()
        >>> sorted(p.name for p in qc.parameters), [c.name for c in qc.cregs]
        (['alice_theta', 'bob_theta'], ['pol', 'path'])
        >>> [c.name for c in build_relay_circuit(relay=InterceptRelay()).cregs]
        ['pol', 'path', 'attacked', 'eve_result', 'coin']
    """
    if (not isinstance(photons, tuple) or len(photons) != 2
            or any(isinstance(n, bool) or n not in (0, 1) for n in photons)):
        raise ConfigurationError(f"photons must be a pair of 0/1 (Alice's, Bob's), got {photons!r}")
    if source != "bb84" and source not in BELL_SOURCES:
        raise ConfigurationError(f"source must be 'bb84' or one of {BELL_SOURCES}, got {source!r}")
    if source != "bb84" and photons != (1, 1):
        raise ConfigurationError("an entangled source needs both photons at the relay: photons=(1, 1)")
    relay = _check_relay(relay)
    detector = detector or Detector()
    channels = (channel_alice or Channel(), channel_bob or Channel())
    present = [k for k in (0, 1) if photons[k]]  # which sides' photons, in label order
    qc = QuantumCircuit(name=f"mdi_relay_{photons[0]}{photons[1]}")

    def reg(name: str, size: int) -> QuantumRegister:
        q = QuantumRegister(size, name)
        qc.add_register(q)
        qc.add_register(ClassicalRegister(size, name))
        return q

    n = len(present)
    pol = reg("pol", n) if n else None
    path = reg("path", n) if n else None
    dark = reg("dark", 4) if detector.dark_count_probability > 0 else None
    attack = isinstance(relay, InterceptRelay) and n == 2
    attacked = reg("attacked", 1) if attack else None
    eve_result = reg("eve_result", 2) if attack else None
    coin = reg("coin", 2 if isinstance(relay, RandomAnnouncer) else 1) if (
        isinstance(relay, RandomAnnouncer) or attack) else None

    # The sources.
    if source == "bb84":
        for label, side in enumerate(present):
            qc.ry(Parameter("alice_theta" if side == 0 else "bob_theta"), pol[label])
    else:
        qc.h(pol[0])
        qc.cx(pol[0], pol[1])
        if source.startswith("psi"):
            qc.x(pol[1])
        if source.endswith("-"):
            qc.z(pol[0])
    # The channels.
    for label, side in enumerate(present):
        if channels[side].misalignment > 0:
            qc.ry(_ry_for_probability(channels[side].misalignment), pol[label])
        for op in _noise_instructions(channels[side]):
            qc.append(op, [pol[label]])
    if n:
        qc.barrier()  # the photons exist between the sources and the relay
    # A cheating relay measures the photons one by one (deferred: copy onto eve_result).
    if attack:
        qc.ry(_ry_for_probability(relay.fraction), attacked[0])
        for k in range(2):
            if relay.basis == "X":
                qc.cry(-math.pi / 2, attacked[0], pol[k])
            qc.ccx(attacked[0], pol[k], eve_result[k])
            if relay.basis == "X":
                qc.cry(math.pi / 2, attacked[0], pol[k])
        qc.h(coin[0])
    if isinstance(relay, RandomAnnouncer):
        p_success = relay.psi_plus + relay.psi_minus
        qc.ry(_ry_for_probability(p_success), coin[0])
        qc.ry(_ry_for_probability(relay.psi_minus / p_success if p_success > 0 else 0.0), coin[1])
    # The photons enter the relay: the symmetrised two-photon state, then the beam splitter.
    if n == 2:
        qc.h(path[0])
        qc.x(path[1])
        qc.cx(path[0], path[1])
        qc.cswap(path[0], pol[0], pol[1])
    elif n == 1 and present[0] == 1:
        qc.x(path[0])  # Bob's photon enters by port b
    if n:
        qc.h(path)  # the 50:50 beam splitter
    if dark is not None:
        qc.ry(_ry_for_probability(detector.dark_count_probability), dark)
    for q, c in zip(qc.qregs, qc.cregs):
        qc.measure(q, c)
    return qc


def relay_announcements(data: dict[str, np.ndarray], relay: Relay | None = None) -> np.ndarray:
    """The relay's announcements from one circuit's registers (as :func:`.execution.sample_circuit`
    returns them): int8 codes of :mod:`qkd_circuits.analysis.mdi`, shape ``(bindings..., shots)``."""
    relay = _check_relay(relay)
    arrays = list(data.values())
    if not arrays:
        raise ConfigurationError("no registers to read the announcement from")
    shape = arrays[0].shape[:-1]
    if isinstance(relay, RandomAnnouncer):
        c = data["coin"]
        return np.where(c[..., 0], np.where(c[..., 1], PSI_MINUS, PSI_PLUS), FAIL).astype(np.int8)
    clicks = np.zeros(shape + (4,), dtype=bool)
    if "pol" in data:
        det = 2 * data["path"].astype(np.int64) + data["pol"].astype(np.int64)
        for k in range(det.shape[-1]):
            clicks |= det[..., k, None] == np.arange(4)
    if "dark" in data:
        clicks |= data["dark"]
    honest = _analysis.announce(clicks)
    if "attacked" not in data:
        return honest
    e, coin = data["eve_result"], data["coin"][..., 0]
    if relay.basis == "Z":
        fake = np.where(e[..., 0] != e[..., 1], np.where(coin, PSI_MINUS, PSI_PLUS), FAIL)
    else:
        fake = np.where(coin, np.where(e[..., 0] == e[..., 1], PSI_PLUS, PSI_MINUS), FAIL)
    return np.where(data["attacked"][..., 0], fake, honest).astype(np.int8)


@dataclass(frozen=True)
class MdiRecord:
    """What one MDI run measured, per pulse pair.

    Public after the run: the bases (announced), the relay's ``announcement``.  Private to each
    party: their bits.  Ground truth of the simulation: ``arrived`` (``(n, 2)``: which photons
    reached the relay; with weak coherent pulses ``photons``, ``(n, 2)``, how many of each pulse's
    photons did) and, for an :class:`InterceptRelay`, ``eve_attacked`` and ``eve_results``
    (her result for Alice's and for Bob's photon, in her basis).
    """

    alice_bits: np.ndarray
    alice_bases: np.ndarray
    bob_bits: np.ndarray
    bob_bases: np.ndarray
    announcement: np.ndarray
    arrived: np.ndarray
    models: dict
    shots: int
    eve_attacked: np.ndarray | None = None
    eve_results: np.ndarray | None = None
    job_count: int = 0
    photons: np.ndarray | None = None
    alice_intensity: np.ndarray | None = None
    bob_intensity: np.ndarray | None = None
    intensity_labels: tuple[str, ...] = ()
    provenance: Provenance | None = None

    def __repr__(self) -> str:  # no bits in reprs
        return f"MdiRecord(pairs={self.alice_bits.size}, relay={self.models.get('relay')!r})"

    @property
    def pairs(self) -> int:
        return int(self.alice_bits.size)

    def sifted_mask(self) -> np.ndarray:
        """Kept pairs: a ψ± announcement and matching bases."""
        return _analysis.sift_mask(self.alice_bases, self.bob_bases, self.announcement)

    def bob_key_bits(self) -> np.ndarray:
        """Bob's bits after the MDI flip (all pairs; sift with :meth:`sifted_mask`)."""
        return _analysis.bob_key_bits(self.bob_bits, self.bob_bases, self.announcement)

    def qber(self) -> dict[str, tuple[int, int]]:
        """``{"Z": (errors, sifted), "X": (errors, sifted)}``."""
        return _analysis.qber_by_basis(self.alice_bits, self.alice_bases, self.bob_bits, self.bob_bases,
                                       self.announcement)

    def announcement_rate(self, code: int) -> float:
        return float(np.mean(self.announcement == code))

    def to_measurement_record(self) -> MeasurementRecord:
        """The run as BB84's :class:`~qkd_circuits.MeasurementRecord`, for the unchanged post-processing.

        After the relay's announcement and Bob's flip, MDI-QKD with single photons is BB84 with
        the relay as Eve (LCQ 2012): ``detected`` is "the relay announced ψ±", ``bob_results``
        Bob's flipped bits, and sifting, estimation, Cascade, verification, amplification and
        the finite-key length (TLGR, single photons) apply as they are; the provenance's mode
        is ``"mdi"``.  Weak-coherent-pulse runs are refused: their key length needs the decoy
        bounds of :mod:`qkd_circuits.analysis.mdi`, which BB84's round does not apply.
        """
        if self.alice_intensity is not None or self.provenance is None:
            raise ConfigurationError("only single-photon MDI runs (run_mdi_exchanges) convert to a BB84 record; "
                                     "weak-coherent-pulse runs need the MDI decoy analysis")
        return MeasurementRecord(alice_bits=self.alice_bits, alice_bases=self.alice_bases,
                                 bob_bases=self.bob_bases, bob_results=self.bob_key_bits().astype(np.uint8),
                                 detected=self.announcement != FAIL, provenance=self.provenance)

    def intensity_mask(self, alice: str, bob: str) -> np.ndarray:
        """Pairs of a weak-coherent-pulse run in which Alice sent intensity ``alice`` and Bob ``bob``."""
        if self.alice_intensity is None:
            raise ConfigurationError("this record has no intensities (a single-photon run)")
        for label in (alice, bob):
            if label not in self.intensity_labels:
                raise ConfigurationError(f"unknown intensity {label!r}; the run's are {self.intensity_labels}")
        return ((self.alice_intensity == self.intensity_labels.index(alice))
                & (self.bob_intensity == self.intensity_labels.index(bob)))

    def gain_and_qber(self, basis: str, mask: np.ndarray | None = None) -> tuple[float, float]:
        """``(Q, E)`` of one basis over the pairs in ``mask`` (all by default): the fraction of the
        pairs in which both chose ``basis`` that the relay announced a success, and their error rate."""
        if basis not in ("Z", "X"):
            raise ConfigurationError(f"basis must be 'Z' or 'X', got {basis!r}")
        b = 0 if basis == "Z" else 1
        m = (self.alice_bases == b) & (self.bob_bases == b)
        if mask is not None:
            m &= mask
        kept = m & (self.announcement != FAIL)
        wrong = self.alice_bits.astype(bool) != self.bob_key_bits()
        n, k = int(m.sum()), int(kept.sum())
        return (k / n if n else 0.0), (int((kept & wrong).sum()) / k if k else 0.0)


def _bits(n: int, rng: np.random.Generator | None) -> np.ndarray:
    if rng is None:
        return np.unpackbits(np.frombuffer(secrets.token_bytes((n + 7) // 8), dtype=np.uint8))[:n]
    return rng.integers(0, 2, size=n).astype(np.uint8)  # sim-rng: the parties' choices, seeded


#: The 16 settings (Alice's bit and basis, Bob's bit and basis) as 4-bit indices, and their angles.
_SETTINGS = np.arange(16)
_THETA = {"alice_theta": np.pi * (_SETTINGS >> 3 & 1) + np.pi / 2 * (_SETTINGS >> 2 & 1),
          "bob_theta": np.pi * (_SETTINGS >> 1 & 1) + np.pi / 2 * (_SETTINGS & 1)}


def _setting_index(a_bits, a_bases, b_bits, b_bases) -> np.ndarray:
    return (a_bits.astype(np.int64) << 3 | a_bases.astype(np.int64) << 2
            | b_bits.astype(np.int64) << 1 | b_bases.astype(np.int64))


def _sample_by_setting(circuit: QuantumCircuit, idx: np.ndarray, setting: np.ndarray, *, backend, seed):
    """One job for the pulse pairs ``idx`` (one photon configuration): one binding per setting,
    each pair taking the next unused shot of its setting's binding.

    Returns ``(idx, data, pick, executions)``: ``idx`` in the order ``pick`` follows, the job's
    register bits, ``pick(bits)`` mapping a register's (bindings, shots, ...) bits to one row per
    pair of ``idx``, and the executions the job cost.
    """
    params = sorted(circuit.parameters, key=lambda p: p.name)
    idx = idx[np.argsort(setting[idx], kind="stable")]
    if params:
        counts = np.bincount(setting[idx], minlength=16)
        values = {tuple(params): np.stack([_THETA[p.name] for p in params], axis=-1)}
        shots = int(counts.max())
    else:
        values, shots = None, int(idx.size)
    data = sample_circuit(circuit, shots, backend=backend, seed=seed, parameter_values=values)
    if params:
        s_of = setting[idx]
        rank = np.arange(idx.size) - np.concatenate([[0], np.cumsum(counts)[:-1]])[s_of]
        return idx, data, (lambda bits: bits[s_of, rank]), shots * 16
    return idx, data, (lambda bits: bits[:idx.size]), shots


def run_mdi_exchanges(pairs: int, *, channel_alice: Channel | None = None, channel_bob: Channel | None = None,
                      detector: Detector | None = None, relay: Relay | None = None, seed: int | None = None,
                      backend: str | Backend = "aer") -> MdiRecord:
    """Send ``pairs`` single-photon pairs to the relay through circuits on a backend.

    Alice and Bob choose bits and bases uniformly (:mod:`secrets`, or a seeded generator when
    ``seed`` is given); each photon reaches the relay with its arm's ``η = η_channel·η_detector``
    (the fibre's randomness); pairs with the same photons present and the same setting take
    consecutive shots of one binding of :func:`build_relay_circuit`, run by
    :func:`.execution.sample_circuit`.

    Args:
        pairs: pulse pairs (>= 1).
        channel_alice, channel_bob: the two arms.
        detector: the relay's detectors (efficiency and dark counts; ``readout_error`` is not
            modelled here and is refused).
        relay: the relay, honest by default.
        seed: simulation seed (choices, loss, simulator); ``None`` for secret ones.
        backend: a backend spec; Aer noise instructions need ``"aer"``.  With them the circuits
            run as density matrices (:func:`.execution.sample_circuit`), without them as state
            vectors; an :class:`InterceptRelay` with dark counts and channel noise is a
            12-qubit density matrix, minutes per run.
    """
    if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1:
        raise ConfigurationError(f"pairs must be a whole number >= 1, got {pairs!r}")
    relay = _check_relay(relay)
    channels = (channel_alice or Channel(), channel_bob or Channel())
    detector = detector or Detector()
    if detector.readout_error > 0:
        raise ConfigurationError("the relay's detectors model efficiency and dark counts; readout_error is not "
                                 "supported in MDI runs")
    backend = resolve_backend(backend)
    noisy = any(c.has_noise_instructions for c in channels)  # Aer noise instructions: density matrices
    if noisy and not backend.runs_noise_instructions:
        raise ConfigurationError(f"depolarizing, dephasing and bit-flip noise are Aer noise instructions; "
                                 f"{backend.spec!r} cannot run them")
    choice_rng = np.random.default_rng([seed, 21]) if seed is not None else None  # sim-rng
    fibre_rng = np.random.default_rng([seed, 22] if seed is not None else None)  # sim-rng: the fibres' loss
    a_bits, a_bases, b_bits, b_bases = (_bits(pairs, choice_rng) for _ in range(4))
    etas = [c.transmittance * detector.efficiency for c in channels]
    arrived = np.stack([fibre_rng.random(pairs) < eta for eta in etas], axis=1)
    setting = _setting_index(a_bits, a_bases, b_bits, b_bases)
    announcement = np.zeros(pairs, dtype=np.int8)
    attack = isinstance(relay, InterceptRelay)
    eve_attacked = np.zeros(pairs, dtype=bool) if attack else None
    eve_results = np.zeros((pairs, 2), dtype=bool) if attack else None
    seeds = np.random.SeedSequence(seed).generate_state(4).tolist() if seed is not None else [None] * 4
    shots_total = jobs = 0
    for config in range(4):
        photons = (config >> 1 & 1, config & 1)
        idx = np.flatnonzero((arrived[:, 0] == photons[0]) & (arrived[:, 1] == photons[1]))
        if idx.size == 0:
            continue
        circuit = build_relay_circuit(photons, channel_alice=channels[0], channel_bob=channels[1],
                                      detector=detector, relay=relay)
        if circuit.num_qubits == 0:  # nothing reaches a detector and nothing clicks by itself
            continue
        idx, data, pick, executions = _sample_by_setting(circuit, idx, setting, backend=backend, seed=seeds[config])
        jobs += 1
        shots_total += executions
        announcement[idx] = pick(relay_announcements(data, relay))
        if "attacked" in data:
            eve_attacked[idx] = pick(data["attacked"])[:, 0]
            eve_results[idx] = pick(data["eve_result"])
    models = {"channel_alice": asdict(channels[0]), "channel_bob": asdict(channels[1]),
              "detector": asdict(detector), "relay": relay.to_dict(), "backend": backend.spec,
              "seed": seed}
    provenance = Provenance.build(backend, mode="mdi", schedule="grouped", lanes=1, shots=shots_total, seed=seed,
                                  models=models, simulator_seed_bits=simulator_seed_bits(backend, seed))
    return MdiRecord(alice_bits=a_bits, alice_bases=a_bases, bob_bits=b_bits, bob_bases=b_bases,
                     announcement=announcement, arrived=arrived, models=models, shots=shots_total,
                     eve_attacked=eve_attacked, eve_results=eve_results, job_count=jobs, provenance=provenance)


def build_pulse_pair_circuit(alice_photons: int, bob_photons: int, *, channel_alice: Channel | None = None,
                             channel_bob: Channel | None = None, detector: Detector | None = None) -> QuantumCircuit:
    """The honest relay's circuit for ``alice_photons`` photons from Alice's pulse and ``bob_photons``
    from Bob's (the Fock components of phase-randomised weak coherent pulses).

    The ``N = n_a + n_b`` photons in first quantisation, symmetrised as in the module docstring:
    the path qubits in the Dicke state of ``N`` qubits with ``n_b`` ones (every arrangement of
    ``n_a`` photons in port ``a`` and ``n_b`` in port ``b``, equally weighted: the symmetrisation of
    identical photons per port), prepared by ``StatePreparation``; each photon's polarisation
    ``RY(alice_theta)``, turned into ``RY(bob_theta)`` by a rotation controlled on its path qubit
    (each arm's misalignment folded into its angle); then the beam splitter (``H`` on every path
    qubit) and the measurement.  Depolarizing-type noise is not supported here (it would act on
    Alice's photons only, whose labels the symmetrisation has spread); misalignment is.

    Registers: ``pol``, ``path`` (one bit per photon) and ``dark`` (4, with dark counts).
    """
    for name, n in (("alice_photons", alice_photons), ("bob_photons", bob_photons)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigurationError(f"{name} must be a whole number >= 0, got {n!r}")
    channels = (channel_alice or Channel(), channel_bob or Channel())
    if any(c.has_noise_instructions for c in channels):
        raise ConfigurationError("weak-coherent MDI runs model loss, misalignment and dark counts; "
                                 "depolarizing/dephasing/bit-flip noise is not supported here")
    detector = detector or Detector()
    from qiskit.circuit.library import StatePreparation

    total = alice_photons + bob_photons
    qc = QuantumCircuit(name=f"mdi_pulses_{alice_photons}_{bob_photons}")

    def reg(name: str, size: int) -> QuantumRegister:
        q = QuantumRegister(size, name)
        qc.add_register(q)
        qc.add_register(ClassicalRegister(size, name))
        return q

    pol = reg("pol", total) if total else None
    path = reg("path", total) if total else None
    dark = reg("dark", 4) if detector.dark_count_probability > 0 else None
    if total:
        amplitudes = np.zeros(2 ** total)
        for index in range(2 ** total):
            if bin(index).count("1") == bob_photons:
                amplitudes[index] = 1.0
        amplitudes /= np.linalg.norm(amplitudes)
        qc.append(StatePreparation(amplitudes), path[:])
        m_a, m_b = (_ry_for_probability(c.misalignment) for c in channels)
        a_theta = Parameter("alice_theta") if alice_photons else None
        b_theta = Parameter("bob_theta") if bob_photons else None
        for k in range(total):
            if a_theta is not None and b_theta is not None:
                qc.ry(a_theta + m_a, pol[k])
                qc.cry(b_theta + m_b - a_theta - m_a, path[k], pol[k])
            elif a_theta is not None:
                qc.ry(a_theta + m_a, pol[k])
            else:
                qc.ry(b_theta + m_b, pol[k])
        qc.barrier()
        qc.h(path)  # the 50:50 beam splitter
    if dark is not None:
        qc.ry(_ry_for_probability(detector.dark_count_probability), dark)
    for q, c in zip(qc.qregs, qc.cregs):
        qc.measure(q, c)
    return qc


def _intensity_table(name: str, table) -> dict[str, float]:
    if not isinstance(table, dict) or not table:
        raise ConfigurationError(f"{name} must be a non-empty dict of label -> mean photon number")
    for label, mu in table.items():
        if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not 0 <= mu <= 10 or not math.isfinite(mu):
            raise ConfigurationError(f"{name}[{label!r}] must be a mean photon number in [0, 10], got {mu!r}")
    return {str(k): float(v) for k, v in table.items()}


def run_mdi_wcp_exchanges(pairs: int, *, intensities: dict[str, float] | None = None,
                          probabilities: dict[str, float] | None = None, channel_alice: Channel | None = None,
                          channel_bob: Channel | None = None, detector: Detector | None = None,
                          seed: int | None = None, backend: str | Backend = "aer") -> MdiRecord:
    """MDI with phase-randomised weak coherent pulses and decoys, through the honest relay's circuits.

    Alice and Bob each pick an intensity label per pulse (the same table for both, chosen
    independently), a bit and a basis; each pulse carries a Poisson number of photons
    (``# sim-rng``: the laser), each photon reaches the relay with its arm's ``η``; pulses with the
    same arriving photon numbers and setting share one binding of
    :func:`build_pulse_pair_circuit`.  The record's ``alice_intensity``/``bob_intensity`` index
    ``intensity_labels``; :meth:`MdiRecord.gain_and_qber` gives each intensity pair's gain and QBER.

    Args:
        intensities: label -> mean photon number (default signal 0.5, decoy 0.1, vacuum 0).
        probabilities: label -> probability (default uniform).
        Others as :func:`run_mdi_exchanges`.
    """
    if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1:
        raise ConfigurationError(f"pairs must be a whole number >= 1, got {pairs!r}")
    intensities = _intensity_table("intensities", intensities or {"signal": 0.5, "decoy": 0.1, "vacuum": 0.0})
    labels = tuple(intensities)
    probabilities = probabilities or {label: 1 / len(labels) for label in labels}
    if set(probabilities) != set(labels) or not math.isclose(sum(probabilities.values()), 1.0, abs_tol=1e-9) \
            or any(not 0 <= p <= 1 for p in probabilities.values()):
        raise ConfigurationError("probabilities must give each intensity label a probability, summing to 1")
    channels = (channel_alice or Channel(), channel_bob or Channel())
    detector = detector or Detector()
    if detector.readout_error > 0:
        raise ConfigurationError("the relay's detectors model efficiency and dark counts; readout_error is not "
                                 "supported in MDI runs")
    backend = resolve_backend(backend)
    choice_rng = np.random.default_rng([seed, 31]) if seed is not None else None  # sim-rng
    laser_rng = np.random.default_rng([seed, 32] if seed is not None else None)  # sim-rng: lasers and fibres
    cdf = np.cumsum([probabilities[label] for label in labels])

    def pick() -> np.ndarray:
        u = (np.frombuffer(secrets.token_bytes(8 * pairs), dtype=np.uint64) / float(2 ** 64) if choice_rng is None
             else choice_rng.random(pairs))  # sim-rng when seeded
        return np.minimum(np.searchsorted(cdf, u, side="right"), len(labels) - 1).astype(np.int8)

    a_int, b_int = pick(), pick()
    a_bits, a_bases, b_bits, b_bases = (_bits(pairs, choice_rng) for _ in range(4))
    mus = np.array([intensities[label] for label in labels])
    sent = np.stack([laser_rng.poisson(mus[a_int]), laser_rng.poisson(mus[b_int])], axis=1)
    etas = np.array([c.transmittance * detector.efficiency for c in channels])
    photons = laser_rng.binomial(sent, etas[None, :]).astype(np.int16)
    setting = _setting_index(a_bits, a_bases, b_bits, b_bases)
    announcement = np.zeros(pairs, dtype=np.int8)
    configs = sorted({(int(x), int(y)) for x, y in photons})
    if max(x + y for x, y in configs) > MAX_RELAY_PHOTONS:
        raise ConfigurationError(
            f"a pulse pair brought {max(x + y for x, y in configs)} photons to the relay, more than the "
            f"{MAX_RELAY_PHOTONS} (MAX_RELAY_PHOTONS) these circuits simulate in reasonable time: lower the "
            "intensities or the arms' transmittance")
    seeds = (np.random.SeedSequence(seed).generate_state(len(configs)).tolist() if seed is not None
             else [None] * len(configs))
    shots_total = jobs = 0
    for config, job_seed in zip(configs, seeds):
        idx = np.flatnonzero((photons[:, 0] == config[0]) & (photons[:, 1] == config[1]))
        circuit = build_pulse_pair_circuit(*config, channel_alice=channels[0], channel_bob=channels[1],
                                           detector=detector)
        if circuit.num_qubits == 0:
            continue
        idx, data, pick, executions = _sample_by_setting(circuit, idx, setting, backend=backend, seed=job_seed)
        jobs += 1
        shots_total += executions
        announcement[idx] = pick(relay_announcements(data))
    models = {"channel_alice": asdict(channels[0]), "channel_bob": asdict(channels[1]),
              "detector": asdict(detector), "relay": LinearOpticsRelay().to_dict(), "backend": backend.spec,
              "seed": seed, "intensities": intensities, "probabilities": dict(probabilities)}
    return MdiRecord(alice_bits=a_bits, alice_bases=a_bases, bob_bits=b_bits, bob_bases=b_bases,
                     announcement=announcement, arrived=photons > 0, models=models, shots=shots_total,
                     job_count=jobs, photons=photons, alice_intensity=a_int, bob_intensity=b_int,
                     intensity_labels=labels)
