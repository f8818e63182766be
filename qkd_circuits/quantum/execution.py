"""Running BB84 exchanges on a backend and turning the samples into a :class:`MeasurementRecord`.

:func:`submit` builds the circuit, transpiles it for the backend, splits the exchanges into
chunks (one job each) and returns a :class:`PendingExchange` at once; its :meth:`~PendingExchange.
result` waits and assembles the record.  On IBM hardware the queue wait can be hours:
:meth:`PendingExchange.save` writes the job ids (and, in prepared mode, the parties' choices) to a
file and :meth:`PendingExchange.load` picks them up in another process.

How settings map onto executions in ``prepared`` mode (``schedule``):

``grouped`` (default)
    Each chunk is one pub of the template with one binding per distinct setting
    (Alice's bit, Alice's basis, Bob's basis: 8 in all); exchange *i* takes the next unused shot
    of the binding for its setting.  Every exchange is still one shot of the circuit its
    parties' choices select, so the statistics are exactly those of running the circuits one by
    one, but the pulses of one setting run back to back rather than in send order.
``sequential``
    One binding per shot (``lanes`` exchanges), in send order, one shot each: what the
    transmitter's time line looks like, e.g. to study drift on hardware.  Far slower on
    simulators (one simulator experiment per binding).
"""

from __future__ import annotations

import io
import json
import math
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..exceptions import BackendError, ConfigurationError, RecordError
from ..records import MeasurementRecord, Provenance
from ..secretfile import write_secret_file
from .backends import (DENSITY_MATRIX_MAX_QUBITS, SIMULATOR_SEED_BITS, Backend, draw_simulator_seed,
                       resolve_backend)
from .circuits import ExchangeTemplate, build_exchange_circuit
from .models import Channel, Detector, Eavesdropper, EntanglingProbe, InterceptResend

__all__ = ["PartyChoices", "PendingExchange", "draw_choices", "run_exchanges", "submit"]

SCHEDULES = ("grouped", "sequential")
HANDLE_FORMAT = "qkd_circuits.PendingExchange"
HANDLE_VERSION = 1
#: Exchanges per job: bounds memory and gives the progress bar something to count.
DEFAULT_CHUNK = 1 << 20
SEQUENTIAL_CHUNK = 4096
#: Largest circuit a fake device (simulated locally with its noise model) may have.
FAKE_MAX_QUBITS = 16
#: Aer's default lanes: the largest of these whose circuit Aer still runs fast (below).
AER_LANE_CHOICES = (8, 4, 2, 1)
#: Widest fast density-matrix circuit (4^n entries; 12 qubits measured 70x slower than 6).
AER_DENSITY_MATRIX_FAST_QUBITS = 10
#: Widest fast statevector circuit, used above DENSITY_MATRIX_MAX_QUBITS when there are no noise
#: instructions (24 qubits measured 6x slower than 16; Aer refuses more than 30).
AER_STATEVECTOR_FAST_QUBITS = 16


@dataclass(frozen=True)
class PartyChoices:
    """The parties' random choices in prepared mode (``uint8`` 0/1 arrays of length n).

    Drawn from :mod:`secrets` (a CSPRNG) unless a simulation seed is given.
    """

    alice_bits: np.ndarray
    alice_bases: np.ndarray
    bob_bases: np.ndarray

    def __repr__(self) -> str:
        return f"PartyChoices(n={len(self.alice_bits)})"


def _random_bits(n: int, rng: np.random.Generator | None) -> np.ndarray:
    if rng is None:
        raw = np.frombuffer(secrets.token_bytes((n + 7) // 8), dtype=np.uint8)
    else:
        raw = rng.integers(0, 256, size=(n + 7) // 8, dtype=np.uint8)  # sim-rng: seeded simulation
    return np.unpackbits(raw)[:n]  # uint8 0/1


def draw_choices(n: int, *, seed: int | None = None) -> PartyChoices:
    """Draw Alice's bits and bases and Bob's bases for ``n`` pulses.

    With ``seed=None`` the bits come from :mod:`secrets`; with a seed they come from a seeded
    numpy generator, for reproducible simulations only.
    """
    rng = None if seed is None else np.random.default_rng([seed, 0])
    return PartyChoices(_random_bits(n, rng), _random_bits(n, rng), _random_bits(n, rng))


def simulator_seed_bits(backend: Backend, seed: int | None) -> int | None:
    """What :attr:`~qkd_circuits.Provenance.simulator_seed_bits` says for a run on ``backend`` with ``seed``.

    ``None`` where the backend takes no simulator seed; 0 with a (public) user seed; otherwise
    the width of the fresh secret seeds, :data:`~qkd_circuits.quantum.backends.SIMULATOR_SEED_BITS`.
    """
    if not backend.takes_simulator_seed:
        return None
    return 0 if seed is not None else SIMULATOR_SEED_BITS


def _check_count(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigurationError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _qubits_per_lane(mode: str, channel: Channel, detector: Detector, eve) -> int:
    return build_exchange_circuit(mode, channel=channel, detector=detector, eve=eve).circuit.num_qubits


@dataclass
class _Chunk:
    start: int
    stop: int
    shots: int
    settings: np.ndarray | None  # grouped prepared mode: setting index per exchange


class PendingExchange:
    """Submitted BB84 jobs; :meth:`result` collects them into a :class:`MeasurementRecord`."""

    def __init__(self, *, backend: Backend, template: ExchangeTemplate, exchanges: int,
                 schedule: str, seed: int | None, models: dict, choices: PartyChoices | None,
                 chunks: list[_Chunk], jobs: list, circuit_info: dict,
                 simulator_seed_bits: int | None = None) -> None:
        self.backend = backend
        self.template = template
        self.exchanges = exchanges
        self.schedule = schedule
        self.seed = seed
        self.models = models
        self.choices = choices
        self.chunks = chunks
        self.jobs = jobs
        self.circuit_info = circuit_info
        self.simulator_seed_bits = simulator_seed_bits

    def __repr__(self) -> str:
        return (f"PendingExchange(exchanges={self.exchanges}, backend={self.backend.spec!r}, "
                f"jobs={len(self.jobs)})")

    @property
    def job_ids(self) -> tuple[str, ...]:
        return tuple(job.job_id() for job in self.jobs)

    def status(self) -> list[str]:
        """Each job's status as the provider reports it."""
        return [str(job.status()) for job in self.jobs]

    def result(self, *, progress: Callable[[int, int], None] | None = None) -> MeasurementRecord:
        """Wait for every job and assemble the record (pulses in send order)."""
        n = self.exchanges
        columns: dict[str, np.ndarray] = {}
        total_shots = 0
        for chunk, job in zip(self.chunks, self.jobs):
            try:
                pub = job.result()[0]
            except Exception as exc:  # providers raise their own types for failed jobs
                raise BackendError(f"job {job.job_id()} on {self.backend.spec} failed: {exc}") from None
            size = chunk.stop - chunk.start
            bindings = 8 if chunk.settings is not None else max(1, int(np.prod(pub.data.shape)))
            total_shots += chunk.shots * bindings
            for name in self.template.registers:
                bits = getattr(pub.data, name).to_bool_array(order="little")
                col = columns.setdefault(name, np.empty(n, dtype=bool))
                col[chunk.start:chunk.stop] = _unscramble(bits, chunk, size)
            if progress is not None:
                progress(chunk.stop, n)
        return self._record(columns, total_shots)

    def _record(self, columns: dict[str, np.ndarray], total_shots: int) -> MeasurementRecord:
        n = self.exchanges
        if self.template.mode == "qrng":
            alice_bits, alice_bases, bob_bases = (columns.pop(k) for k in ("alice_bit", "alice_basis", "bob_basis"))
        else:
            alice_bits, alice_bases, bob_bases = (
                self.choices.alice_bits, self.choices.alice_bases, self.choices.bob_bases)
        detected = columns.pop("arrived", np.ones(n, dtype=bool)) | columns.pop("dark", np.zeros(n, dtype=bool))
        eve = {}
        if "eve_result" in columns:
            fixed = self.template.eve_fixed_basis
            bases = columns.pop("eve_basis") if fixed is None else np.full(n, fixed)
            eve = {
                "eve_active": columns.pop("eve_active", np.ones(n, dtype=bool)),
                "eve_bases": bases,
                "eve_results": columns.pop("eve_result"),
            }
        provenance = Provenance.build(self.backend, mode=self.template.mode, schedule=self.schedule,
                                      lanes=self.template.lanes, shots=total_shots, job_ids=self.job_ids,
                                      seed=self.seed, models=self.models, circuit=self.circuit_info,
                                      simulator_seed_bits=self.simulator_seed_bits)
        return MeasurementRecord(
            alice_bits=alice_bits, alice_bases=alice_bases, bob_bases=bob_bases,
            bob_results=columns.pop("bob_result"), detected=detected, provenance=provenance, **eve,
        )

    def save(self, path: str | Path) -> Path:
        """Write a handle from which :meth:`load` can collect the jobs later (IBM only).

        In prepared mode the file holds Alice's and Bob's choices: it is written as a secret
        file (mode 0600, atomic, no symlink followed; an existing file is replaced).
        """
        if not self.backend.resumable:
            raise BackendError(
                f"jobs on {self.backend.spec!r} live in this process; call result() instead of "
                "saving a handle (only ibm:<name> jobs can be collected later)"
            )
        header = {
            "format": HANDLE_FORMAT, "version": HANDLE_VERSION, "backend": self.backend.spec,
            "mode": self.template.mode, "lanes": self.template.lanes, "exchanges": self.exchanges,
            "schedule": self.schedule, "seed": self.seed, "models": self.models,
            "job_ids": list(self.job_ids), "circuit": self.circuit_info,
            "chunks": [[c.start, c.stop, c.shots] for c in self.chunks],
            "simulator_seed_bits": self.simulator_seed_bits,
        }
        arrays = {}
        if self.choices is not None:
            arrays = {"alice_bits": self.choices.alice_bits, "alice_bases": self.choices.alice_bases,
                      "bob_bases": self.choices.bob_bases}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, header=np.array(json.dumps(header)), **arrays)
        with buffer.getbuffer() as data:
            return write_secret_file(path, data, overwrite=True)

    @classmethod
    def load(cls, path: str | Path, *, service: Any = None) -> PendingExchange:
        """Reopen a saved handle; ``service`` overrides the default ``QiskitRuntimeService``."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as npz:
                header = json.loads(str(npz["header"]))
                arrays = {k: npz[k] for k in npz.files if k != "header"}
        except FileNotFoundError:
            raise RecordError(f"no job handle at {path}") from None
        except Exception as exc:
            raise RecordError(f"{path} is not a readable job handle: {exc}") from None
        if header.get("format") != HANDLE_FORMAT or header.get("version") != HANDLE_VERSION:
            raise RecordError(f"{path} is not a version-{HANDLE_VERSION} qkd_circuits job handle")
        models = header["models"]
        channel, detector, eve = _models_from_dict(models)
        template = build_exchange_circuit(header["mode"], channel=channel, detector=detector,
                                          eve=eve, lanes=header["lanes"])
        choices = PartyChoices(**arrays) if arrays else None
        backend = resolve_backend(header["backend"], service=service)
        chunks = []
        for start, stop, shots in header["chunks"]:
            settings = _settings(choices, start, stop) if header["schedule"] == "grouped" and choices else None
            chunks.append(_Chunk(start, stop, shots, settings))
        jobs = [backend.job(job_id) for job_id in header["job_ids"]]
        return cls(backend=backend, template=template, exchanges=header["exchanges"],
                   schedule=header["schedule"], seed=header["seed"], models=models,
                   choices=choices, chunks=chunks, jobs=jobs, circuit_info=header["circuit"],
                   simulator_seed_bits=header.get("simulator_seed_bits"))


def _unscramble(bits: np.ndarray, chunk: _Chunk, size: int) -> np.ndarray:
    """Map a pub's (bindings..., shots, lanes) bits back to the chunk's exchanges in send order."""
    if chunk.settings is None:
        return bits.reshape(-1)[:size]
    flat = bits.reshape(8, -1)
    out = np.empty(size, dtype=bool)
    for k in range(8):
        idx = np.flatnonzero(chunk.settings == k)
        out[idx] = flat[k, : idx.size]
    return out


def _settings(choices: PartyChoices, start: int, stop: int) -> np.ndarray:
    s = slice(start, stop)
    return (4 * choices.alice_bits[s] + 2 * choices.alice_bases[s] + choices.bob_bases[s]).astype(np.int8)


def _thetas(bits: np.ndarray, a_bases: np.ndarray, b_bases: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """alice_theta = π·bit + π/2·basis, bob_theta = −π/2·basis (see circuits.py)."""
    return np.pi * bits + np.pi / 2 * a_bases, -np.pi / 2 * b_bases


def _models_dict(channel: Channel, detector: Detector, eve: Eavesdropper | None) -> dict:
    from dataclasses import asdict

    return {"channel": asdict(channel), "detector": asdict(detector),
            "eve": None if eve is None else eve.to_dict()}


def _models_from_dict(models: dict):
    eve = models.get("eve")
    if eve is not None:
        eve = dict(eve)
        kind = eve.pop("kind")
        eve = InterceptResend(**eve) if kind == "intercept-resend" else EntanglingProbe(**eve)
    return Channel(**models["channel"]), Detector(**models["detector"]), eve


def submit(
    exchanges: int,
    *,
    mode: str = "qrng",
    backend: str | Backend = "aer",
    channel: Channel | None = None,
    detector: Detector | None = None,
    eve: Eavesdropper | None = None,
    seed: int | None = None,
    lanes: int | str | None = None,
    schedule: str = "grouped",
    chunk: int | None = None,
    choices: PartyChoices | None = None,
) -> PendingExchange:
    """Build, transpile and submit ``exchanges`` BB84 pulses; returns without waiting.

    Args:
        exchanges: number of pulses Alice sends (>= 1).
        mode: ``"prepared"`` or ``"qrng"`` (see :mod:`.circuits`).
        backend: a spec string (``"aer"``, ``"fake:<name>"``, ``"ibm:<name>"``,
            ``"braket-local"``) or a resolved :class:`Backend`.
        channel, detector, eve: the link and the attacker; ``None`` for ideal / absent.
        seed: simulation seed for the parties' choices and the simulator; ``None`` draws the
            choices from :mod:`secrets`, and on ``aer``/``fake:`` backends a fresh 64-bit
            simulator seed per job from :mod:`secrets` too (never recorded; the record's
            ``provenance.simulator_seed_bits`` says 64; with a seed it says 0).
        lanes: exchanges side by side in one circuit; ``"device"`` fills the device (half its
            qubits, leaving room for routing).  Default: on ``aer`` the largest of 8, 4, 2, 1
            lanes whose circuit Aer simulates fast: at most 10 qubits (run as a density matrix,
            4^n entries), or 13 to 16 qubits without noise instructions (a statevector).  Wider
            circuits with noise instructions leave the density matrix for per-shot trajectories,
            thousands of times slower.  On every other backend 1: fake devices simulate every
            shot with the device's noise, and on hardware and Braket more lanes change what runs,
            so ask for them (or ``"device"``) explicitly.  Measured on 2 shared cores,
            qiskit-aer 0.18, median of 3 runs of 10^6 exchanges, exchanges/s, with
            ``python benchmarks/throughput.py --json --lanes 1,2,4,8,16 --cases
            noiseless,noisy-link --exchanges 1000000`` (noisy-link is what
            ``qkd run --noise depolarizing:0.02 --distance-km 25`` builds)::

                lanes                        1        2        4        8       16
                qrng noiseless (4 q/lane)  607k     363k     981k   (32 q: Aer refuses)
                qrng noisy-link (5 q/lane) 595k     821k      12    (40 q: Aer refuses)
                prepared noiseless (1 q)   625k   1,044k   1,489k   1,814k     630k
                prepared noisy-link (2 q)  495k     947k   1,940k      265  (32 q)

            and, 3x10^5 exchanges, prepared mode with an entangling probe (3 q/lane, noiseless):
            728k, 637k, 10k at 1, 2, 4 lanes (12 qubits as a density matrix); intercept-resend
            with a random basis (4 q/lane): 666k, 888k, 921k.  The rule picks 4, 2, 8, 4, 2
            and 4 lanes for these rows.  The ``sequential`` schedule keeps 1 lane by default:
            there every binding is a simulation of its own, so a wider circuit costs per shot
            (12,000 intercept-resend pulses took 111 s at the 4-lane default, 16 qubits).
        schedule: ``"grouped"`` or ``"sequential"`` (prepared mode; see the module docstring).
        chunk: exchanges per job (default 2^20; 4096 for the sequential schedule).
        choices: prepared mode only: use these choices instead of drawing them.
    """
    exchanges = _check_count("exchanges", exchanges)
    if seed is not None:
        seed = _check_count("seed", seed, minimum=0)
    if schedule not in SCHEDULES:
        raise ConfigurationError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    channel = channel or Channel()
    detector = detector or Detector()
    backend = resolve_backend(backend)
    if (channel.has_noise_instructions or detector.has_noise_instructions) and not backend.runs_noise_instructions:
        raise ConfigurationError(
            f"depolarizing, dephasing, bit-flip and readout noise are Aer noise instructions; "
            f"{backend.spec!r} cannot run them (its own device noise is the channel there). "
            "Use --backend aer, or keep only loss, dark counts and misalignment"
        )
    if lanes is None:
        lanes = 1 if schedule == "sequential" else _default_lanes(backend, mode, channel, detector, eve)
    elif lanes == "device":
        if backend.num_qubits is None:
            raise ConfigurationError(f"lanes='device' needs a device backend, not {backend.spec!r}")
        per_lane = _qubits_per_lane(mode, channel, detector, eve)
        lanes = max(1, backend.num_qubits // (2 * per_lane))
        if backend.kind == "fake":  # simulated here: keep the joint state small enough to run
            lanes = max(1, min(lanes, FAKE_MAX_QUBITS // per_lane))
    lanes = _check_count("lanes", lanes)
    if backend.kind == "fake" and lanes * _qubits_per_lane(mode, channel, detector, eve) > FAKE_MAX_QUBITS:
        raise ConfigurationError(
            f"{lanes} lanes need {lanes * _qubits_per_lane(mode, channel, detector, eve)} qubits; a fake device is "
            f"simulated on this machine as one joint state (memory exponential in the qubits), so at most "
            f"{FAKE_MAX_QUBITS} qubits run here: use fewer lanes, or lanes='device'")
    template = build_exchange_circuit(mode, channel=channel, detector=detector, eve=eve, lanes=lanes)
    circuit = backend.prepare(template.circuit)
    circuit_info = {"num_qubits": template.circuit.num_qubits, "depth": circuit.depth(),
                    "ops": {k: int(v) for k, v in circuit.count_ops().items()}}

    if mode == "prepared":
        if choices is None:
            choices = draw_choices(exchanges, seed=seed)
        elif len(choices.alice_bits) != exchanges:
            raise ConfigurationError(f"choices hold {len(choices.alice_bits)} pulses, not {exchanges}")
    elif choices is not None:
        raise ConfigurationError("choices are only used in prepared mode")

    if chunk is None:
        chunk = SEQUENTIAL_CHUNK * lanes if (mode, schedule) == ("prepared", "sequential") else DEFAULT_CHUNK
    chunk = _check_count("chunk", chunk)
    seeds = (np.random.SeedSequence(seed).generate_state(math.ceil(exchanges / chunk)).tolist()
             if seed is not None else None)
    seed_bits = simulator_seed_bits(backend, seed)  # what the record's provenance will say
    sampler = None if backend.takes_simulator_seed else backend.sampler(seed=None, num_qubits=circuit.num_qubits)
    chunks, jobs = [], []
    for i, start in enumerate(range(0, exchanges, chunk)):
        stop = min(start + chunk, exchanges)
        c, pub = _plan_chunk(template, circuit, choices, schedule, start, stop)
        if backend.takes_simulator_seed:  # one sampler per job: each job gets its own seed
            job_seed = int(seeds[i]) if seeds is not None else draw_simulator_seed()
            sampler = backend.sampler(seed=job_seed, num_qubits=circuit.num_qubits)  # the seed goes nowhere else
        try:
            jobs.append(sampler.run([pub], shots=c.shots))
        except Exception as exc:
            raise BackendError(f"{backend.spec} refused the job: {exc}") from None
        chunks.append(c)
    backend.close_batch()
    return PendingExchange(backend=backend, template=template, exchanges=exchanges,
                           schedule=schedule, seed=seed, models=_models_dict(channel, detector, eve),
                           choices=choices, chunks=chunks, jobs=jobs, circuit_info=circuit_info,
                           simulator_seed_bits=seed_bits)


def _default_lanes(backend: Backend, mode: str, channel: Channel, detector: Detector, eve) -> int:
    """``submit``'s lanes when none are given (see its docstring for the measurements)."""
    if backend.kind != "aer":
        return 1
    noisy = channel.has_noise_instructions or detector.has_noise_instructions
    per_lane = _qubits_per_lane(mode, channel, detector, eve)

    def fast(width: int) -> bool:
        if width <= DENSITY_MATRIX_MAX_QUBITS:  # Aer runs these as a density matrix
            return width <= AER_DENSITY_MATRIX_FAST_QUBITS
        return not noisy and width <= AER_STATEVECTOR_FAST_QUBITS

    return next((n for n in AER_LANE_CHOICES if fast(n * per_lane)), 1)


def _plan_chunk(template, circuit, choices, schedule, start, stop):
    lanes, size = template.lanes, stop - start
    if template.mode == "qrng":
        return _Chunk(start, stop, math.ceil(size / lanes), None), (circuit,)
    s = slice(start, stop)
    if schedule == "grouped":
        settings = _settings(choices, start, stop)
        counts = np.bincount(settings, minlength=8)
        k = np.arange(8)
        theta_a, theta_b = _thetas(k >> 2 & 1, k >> 1 & 1, k & 1)
        values = {tuple(template.alice_theta): np.repeat(theta_a[:, None], lanes, axis=1),
                  tuple(template.bob_theta): np.repeat(theta_b[:, None], lanes, axis=1)}
        shots = max(1, math.ceil(int(counts.max()) / lanes))
        return _Chunk(start, stop, shots, settings), (circuit, values)
    bindings = math.ceil(size / lanes)
    pad = bindings * lanes - size
    theta_a, theta_b = _thetas(choices.alice_bits[s], choices.alice_bases[s], choices.bob_bases[s])
    theta_a, theta_b = (np.pad(t, (0, pad)).reshape(bindings, lanes) for t in (theta_a, theta_b))
    values = {tuple(template.alice_theta): theta_a, tuple(template.bob_theta): theta_b}
    return _Chunk(start, stop, 1, None), (circuit, values)


def run_exchanges(exchanges: int, *, progress: Callable[[int, int], None] | None = None,
                  **kwargs) -> MeasurementRecord:
    """:func:`submit` and wait: returns the :class:`MeasurementRecord` (same arguments)."""
    return submit(exchanges, **kwargs).result(progress=progress)
