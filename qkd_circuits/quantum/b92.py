"""B92 (Bennett 1992) as circuits: two non-orthogonal states and conclusive results.

Alice sends |0> for bit 0 and |+> for bit 1; Bob measures Z or X at random.  A Z result 1 rules
out |0> (so the bit is 1), an X result − rules out |+> (so the bit is 0); his other results are
inconclusive and dropped.  Both conclusive events read **1** on the exchange circuit's detector
(``RY(−π/2·basis)`` then Z: − becomes 1), so Bob keeps ``result == 1`` and his bit is
``1 − basis``.

The quantum part is BB84's exchange circuit (:mod:`.circuits`, prepared mode): |0> and |+> are
BB84's bit-0 states of the Z and X bases, so B92's choices are bound as ``alice_theta =
π/2·bit`` (``alice_bits = 0``, ``alice_bases = `` B92 bit) and ``bob_theta = −π/2·basis``, and the
same channel noise, loss, dark counts, intercept-resend, backends and lanes run unchanged
through :func:`~.execution.run_exchanges`.  The expected figures (single photons, uniform
choices) are in :mod:`qkd_circuits.analysis.sarg04`: conclusive fraction 1/4, QBER p/(1 + p)
through a depolarizing channel of strength p, f/(2 + f) under intercept-resend on a fraction f.

**B92 and loss.**  Two pure states can be discriminated *unambiguously*: Eve identifies |0> or
|+> without error with probability 1 − |<0|+>| = 1 − 1/√2 ≈ 0.293 and otherwise learns that
she failed (Ivanovic 1987, Dieks 1988, Peres 1988).  Resending what she identified and blocking
the rest, she knows every bit Bob receives and causes no error; the parties see a transmittance
of 0.293, so any link whose transmittance is below that is insecure with single photons, and
far sooner with attenuated laser pulses, whose intensity Eve can also measure (Bennett,
PRL 68, 3121 (1992), who proposed a strong reference pulse against it; Dušek, Jahma &
Lütkenhaus, PRA 62, 022306 (2000), unambiguous discrimination attacks on weak coherent states).
:func:`run_b92_usd_attack` runs that attack as a circuit: the optimal USD measurement is a
unitary on the photon and one ancilla (Naimark's dilation, :func:`usd_unitary`).
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field

import numpy as np
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.circuit import Parameter
from qiskit.circuit.library import UnitaryGate

from ..exceptions import ConfigurationError
from ..records import MeasurementRecord
from .backends import Backend
from .execution import PartyChoices, draw_choices, run_exchanges, sample_circuit
from .models import Channel, Detector, Eavesdropper

__all__ = ["B92Record", "run_b92", "b92_from_record", "usd_unitary", "build_b92_usd_circuit", "run_b92_usd_attack"]


class _ConclusiveSifting:
    """What B92 and SARG04 records share: Bob keeps his *conclusive* results, and his bit is the
    basis he did not rule out (1 − his basis).  A record supplies ``alice_bits``, ``bob_bases``,
    ``detected`` and ``conclusive``."""

    @property
    def bob_bits(self) -> np.ndarray:
        """Bob's bit on a conclusive result: 1 − basis (Z → 1, X → 0)."""
        return (1 - self.bob_bases).astype(np.uint8)

    def sifted_keys(self) -> tuple[np.ndarray, np.ndarray]:
        """Alice's and Bob's sifted bits (``uint8``), in send order."""
        mask = self.conclusive
        return self.alice_bits[mask].copy(), self.bob_bits[mask]

    @property
    def sifted_fraction(self) -> float:
        """Conclusive results per detected pulse (1/4 on a noiseless channel)."""
        det = int(self.detected.sum())
        return float(self.conclusive.sum()) / det if det else 0.0

    @property
    def qber(self) -> float:
        """Error rate of the sifted bits (``nan`` when nothing was kept)."""
        a, b = self.sifted_keys()
        return float(np.mean(a != b)) if a.size else math.nan


@dataclass(frozen=True)
class B92Record(_ConclusiveSifting):
    """The outcome of ``n`` B92 pulses (``uint8`` 0/1 arrays and a ``bool`` mask, shape (n,)).

    Attributes:
        alice_bits: 0 sent |0>, 1 sent |+>.
        bob_bases: 0 measured Z, 1 measured X.
        bob_results: the detector's bit after Bob's rotation (1 = conclusive when detected).
        detected: Bob's detector clicked.
        exchange: the BB84-circuit :class:`~qkd_circuits.MeasurementRecord` underneath (its
            provenance and Eve's ground truth), or ``None`` for a circuit of this module.
        eve_known, eve_bits: an unambiguous-discrimination Eve's ground truth: where she
            identified the state, and the bit she read (else ``None``).
    """

    alice_bits: np.ndarray = field(repr=False)
    bob_bases: np.ndarray = field(repr=False)
    bob_results: np.ndarray = field(repr=False)
    detected: np.ndarray = field(repr=False)
    exchange: MeasurementRecord | None = field(default=None, repr=False)
    eve_known: np.ndarray | None = field(default=None, repr=False)
    eve_bits: np.ndarray | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # no bits in reprs
        return f"B92Record(n={len(self.alice_bits)}, detected={int(self.detected.sum())})"

    @property
    def conclusive(self) -> np.ndarray:
        """Bob's kept pulses: a click whose result is 1 (Z: not |0>; X: not |+>)."""
        return self.detected & (self.bob_results == 1)



def b92_from_record(record: MeasurementRecord) -> B92Record:
    """Read a BB84-circuit record run with B92 choices (``alice_bits`` all 0, the B92 bit as the basis)."""
    if np.any(record.alice_bits != 0):
        raise ConfigurationError("a B92 record sends bit-0 states only (|0> and |+>): alice_bits must be all 0")
    return B92Record(alice_bits=record.alice_bases.astype(np.uint8), bob_bases=record.bob_bases.astype(np.uint8),
                     bob_results=record.bob_results.astype(np.uint8), detected=np.asarray(record.detected, bool),
                     exchange=record)


def run_b92(exchanges: int, *, channel: Channel | None = None, detector: Detector | None = None,
            eve: Eavesdropper | None = None, seed: int | None = None, backend: str | Backend = "aer",
            lanes: int | None = None) -> B92Record:
    """Send ``exchanges`` B92 pulses through BB84's prepared-mode circuits (see the module docstring).

    Args mirror :func:`~.execution.run_exchanges`: the link, an eavesdropper
    (:class:`~.models.InterceptResend` or :class:`~.models.EntanglingProbe`), the seed (the
    parties' choices and the simulator; ``None``: :mod:`secrets` and a fresh simulator seed),
    the backend and the lanes.

    Examples:
        >>> r = run_b92(4000, seed=3)
        >>> abs(r.sifted_fraction - 0.25) < 0.03 and r.qber == 0.0
        True
    """
    draws = draw_choices(exchanges, seed=seed)
    choices = PartyChoices(alice_bits=np.zeros(exchanges, dtype=np.uint8), alice_bases=draws.alice_bits,
                           bob_bases=draws.bob_bases)
    record = run_exchanges(exchanges, mode="prepared", choices=choices, channel=channel, detector=detector,
                           eve=eve, seed=seed, backend=backend, lanes=lanes)
    return b92_from_record(record)


def usd_unitary(states) -> tuple[np.ndarray, int, float]:
    """The optimal unambiguous discrimination of ``states`` as a unitary (Naimark's dilation).

    Args:
        states: an (N, d) array of N linearly independent, equal-prior, cyclically symmetric
            pure states on ``log2(d)`` qubits (rows; qubit j is bit j of the index, Qiskit's order).

    Returns:
        ``(U, qubits, p)``: a unitary on ``qubits >= log2(d)`` qubits (the states' qubits first,
        ancillas in |0> above them) such that measuring every qubit after it gives index ``k < N``
        only for state ``k`` (probability ``p`` for each), and an index >= N when it fails.  ``p``
        is the least eigenvalue of the Gram matrix, the optimum for such states (Chefles &
        Barnett 1998).

    Raises:
        ConfigurationError: the states are linearly dependent (no unambiguous measurement exists),
            or not of a power-of-two dimension.
    """
    from scipy.linalg import null_space

    s = np.asarray(states, dtype=complex)
    if s.ndim != 2 or s.shape[1] < 2 or s.shape[1] & (s.shape[1] - 1):
        raise ConfigurationError("states must be an (N, 2^n) array of state vectors")
    n_states, dim = s.shape
    gram = s.conj() @ s.T  # G[j, k] = <ψ_j|ψ_k>
    lam, vecs = np.linalg.eigh(gram)
    p = float(lam[0])
    if p < 1e-9:
        raise ConfigurationError(f"the {n_states} states are linearly dependent (Gram rank "
                                 f"{int(np.sum(lam > 1e-9))}): no measurement tells them apart without error")
    rest = (gram - p * np.eye(n_states)) / (1.0 - p)  # Gram of the failure branches
    lam_r, w = np.linalg.eigh(rest)
    keep = lam_r > 1e-12
    chi = (np.sqrt(lam_r[keep])[:, None] * w[:, keep].conj().T)  # columns chi_k, chi^† chi = rest
    needed = n_states + chi.shape[0]
    qubits = max(int(math.ceil(math.log2(max(needed, dim)))), int(math.log2(dim)))
    big = 2 ** qubits
    out = np.zeros((big, n_states), dtype=complex)
    out[:n_states, :] = math.sqrt(p) * np.eye(n_states)
    out[n_states:needed, :] = math.sqrt(1.0 - p) * chi
    psi = np.zeros((big, n_states), dtype=complex)
    psi[:dim, :] = s.T  # the states, ancillas in |0>
    # V maps span(psi) onto span(out) with V psi_k = out_k (inner products agree: both Grams are G).
    basis_in, _ = np.linalg.qr(psi)
    image = out @ np.linalg.solve(psi.conj().T @ psi, psi.conj().T @ basis_in)
    unitary = np.hstack([image, null_space(image.conj().T)]) @ np.hstack([basis_in, null_space(basis_in.conj().T)]).conj().T
    if not np.allclose(unitary.conj().T @ unitary, np.eye(big), atol=1e-9):  # pragma: no cover - a construction bug
        raise ConfigurationError("the USD dilation is not unitary")
    return unitary, qubits, p


def _ry_state(theta: float, copies: int = 1) -> np.ndarray:
    v = np.array([math.cos(theta / 2), math.sin(theta / 2)])
    out = np.array([1.0])
    for _ in range(copies):
        out = np.kron(v, out)
    return out


def build_b92_usd_circuit() -> QuantumCircuit:
    """Alice's photon, Eve's optimal USD of {|0>, |+>} and her resent photon, measured by Bob.

    Parameters ``alice_theta`` (0 or π/2) and ``bob_theta`` (0 or −π/2).  Registers:
    ``eve_outcome`` (2 bits: index 0 = |0>, 1 = |+>, 2 = failed) and ``bob_result``.  Eve
    resends |0> or |+> as identified (``CRY(π/2)`` from the outcome's bit 0); on a failure she
    blocks the pulse, which the caller reads from ``eve_outcome``.
    """
    unitary, qubits, _ = usd_unitary(np.array([_ry_state(0.0), _ry_state(math.pi / 2)]))
    a_theta, b_theta = Parameter("alice_theta"), Parameter("bob_theta")
    photon = QuantumRegister(1, "photon")
    ancilla = QuantumRegister(qubits - 1, "eve_ancilla")
    resent = QuantumRegister(1, "resent")
    qc = QuantumCircuit(photon, ancilla, resent, ClassicalRegister(qubits, "eve_outcome"),
                        ClassicalRegister(1, "bob_result"), name="b92_usd_attack")
    qc.ry(a_theta, photon[0])
    qc.append(UnitaryGate(unitary, label="USD"), [photon[0], *ancilla])
    qc.cry(math.pi / 2, photon[0], resent[0])  # outcome 1 (|+>) sets bit 0 of the index
    qc.barrier()
    qc.ry(b_theta, resent[0])
    qc.measure([photon[0], *ancilla], qc.cregs[0])
    qc.measure(resent[0], qc.cregs[1])
    return qc


def _sample_grouped(circuit: QuantumCircuit, names: tuple[str, ...], table: np.ndarray, setting: np.ndarray, *,
                    seed: int | None, backend) -> dict[str, np.ndarray]:
    """Run one binding per row of ``table`` (values of the parameters ``names``); pulse i takes the
    next shot of binding ``setting[i]``.  Returns each register's bits per pulse, shape (n, size)."""
    params = {p.name: p for p in circuit.parameters}
    counts = np.bincount(setting, minlength=table.shape[0])
    shots = int(counts.max())
    values = {tuple(params[n] for n in names): table}
    data = sample_circuit(circuit, shots, backend=backend, seed=seed, parameter_values=values)
    order = np.argsort(setting, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(setting.size, dtype=np.int64)
    rank[order] = np.arange(setting.size) - starts[setting[order]]
    return {name: bits[setting, rank] for name, bits in data.items()}


def _choice_bits(n: int, rng: np.random.Generator | None) -> np.ndarray:
    if rng is None:
        return np.unpackbits(np.frombuffer(secrets.token_bytes((n + 7) // 8), dtype=np.uint8))[:n]
    return rng.integers(0, 2, size=n).astype(np.uint8)  # sim-rng: seeded simulation


def run_b92_usd_attack(exchanges: int, *, seed: int | None = None, backend: str | Backend = "aer") -> B92Record:
    """B92 pulses under Eve's unambiguous-discrimination attack (:func:`build_b92_usd_circuit`).

    Eve sits next to Alice and replaces the fibre by a lossless line: Bob detects exactly the
    pulses she identified (about 1 − 1/√2 of them) and sees no error, while Eve knows every bit
    he keeps (``eve_known``/``eve_bits``).
    """
    if isinstance(exchanges, bool) or not isinstance(exchanges, int) or exchanges < 1:
        raise ConfigurationError(f"exchanges must be a whole number >= 1, got {exchanges!r}")
    rng = np.random.default_rng([seed, 92]) if seed is not None else None  # sim-rng
    bits, bases = _choice_bits(exchanges, rng), _choice_bits(exchanges, rng)
    setting = (bits.astype(np.int64) << 1) | bases
    k = np.arange(4)
    table = np.stack([math.pi / 2 * (k >> 1), -math.pi / 2 * (k & 1)], axis=-1)
    data = _sample_grouped(build_b92_usd_circuit(), ("alice_theta", "bob_theta"), table, setting, seed=seed,
                           backend=backend)
    outcome = data["eve_outcome"].astype(np.int64) @ (1 << np.arange(data["eve_outcome"].shape[1]))
    known = outcome < 2
    return B92Record(alice_bits=bits, bob_bases=bases, bob_results=data["bob_result"][:, 0].astype(np.uint8),
                     detected=known, eve_known=known, eve_bits=np.where(known, outcome, 0).astype(np.uint8))
