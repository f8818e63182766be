"""Running BB84 exchanges on a backend and turning the samples into a :class:`MeasurementRecord`.

:func:`submit` builds the circuit, transpiles it for the backend, splits the exchanges into
chunks (one job each, below the backend's ``max_shots``) and returns a :class:`PendingExchange` at
once; its :meth:`~PendingExchange.result` waits and assembles the record.  :func:`plan_submission`
does all of it but sending (the plan, a usage estimate from :mod:`.usage`, warnings).  On IBM
hardware the queue wait can be hours: :meth:`PendingExchange.save` writes a *job handle* with the
job ids, the parties' choices (prepared mode) and the post-processing settings, and
:meth:`PendingExchange.load` picks them up in another process (``qkd submit`` / ``qkd collect``).
Jobs that run in this process (``aer``, ``fake:``, ``braket-local``) cannot be looked up by id
later; ``save(path, samples=True)`` keeps their samples (every pub's bit arrays) in the handle
instead, so any later process collects them the same way.

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
from .backends import (DENSITY_MATRIX_MAX_QUBITS, SIMULATOR_SEED_BITS, Backend, ExecutionOptions,
                       draw_simulator_seed, resolve_backend)
from .circuits import ExchangeTemplate, build_exchange_circuit
from .models import Channel, Detector, Eavesdropper, EntanglingProbe, InterceptResend

__all__ = ["PartyChoices", "PendingExchange", "StoredJob", "SubmissionPlan", "draw_choices", "plan_submission",
           "run_exchanges", "sample_circuit", "submit"]

SCHEDULES = ("grouped", "sequential")
HANDLE_FORMAT = "qkd_circuits.PendingExchange"
HANDLE_VERSION = 2
#: Handle versions :meth:`PendingExchange.load` reads (1: job ids and choices; 2 adds the
#: post-processing configuration, the plan, the execution options and, for local jobs, samples).
HANDLE_VERSIONS_READ = (1, 2)
#: The post-processing settings a handle carries (``qkd submit`` takes them; ``qkd collect`` uses them).
POSTPROCESSING_FIELDS = ("sample_fraction", "abort_qber", "cascade", "eps_sec", "eps_cor")
#: Job statuses after which a job no longer runs (IBM Runtime and Braket spellings).
FINAL_STATUSES = ("DONE", "COMPLETED", "CANCELLED", "ERROR", "FAILED")
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
    bindings: int = 1  # parameter bindings of the chunk's pub (8 grouped, one per shot sequential)

    @property
    def executions(self) -> int:
        """Circuit executions of the chunk's pub: shots x parameter bindings."""
        return self.shots * self.bindings


class StoredJob:
    """A finished local job whose samples were read back from a job handle.

    Answers what :class:`PendingExchange` asks of a provider's job (``job_id``, ``status``,
    ``result``, ``cancel``), so a record is assembled from a handle by the same code as from live
    jobs.  ``result()`` gives one pub result holding the stored bit arrays.
    """

    def __init__(self, job_id: str, registers: dict | list[dict]) -> None:
        self._job_id = job_id
        self._pubs = [registers] if isinstance(registers, dict) else list(registers)  # name -> BitArray, per pub

    def __repr__(self) -> str:
        return f"StoredJob({self._job_id!r})"

    def job_id(self) -> str:
        return self._job_id

    def status(self) -> str:
        return "DONE"

    def done(self) -> bool:
        return True

    def result(self):
        from qiskit.primitives.containers import DataBin, SamplerPubResult

        return [SamplerPubResult(DataBin(**pub, shape=next(iter(pub.values())).shape)) for pub in self._pubs]

    def cancel(self):
        raise BackendError(f"job {self._job_id} ran in the submitting process and has finished (its samples "
                           "are in the handle): there is nothing to cancel; collect it instead")


class PendingExchange:
    """Submitted BB84 jobs; :meth:`result` collects them into a :class:`MeasurementRecord`.

    ``postprocessing`` is the post-processing configuration a handle carries (the fields of
    :data:`POSTPROCESSING_FIELDS`) or ``None``; ``plan`` the public summary of the submission
    (:meth:`SubmissionPlan.summary`).
    """

    def __init__(self, *, backend: Backend, template: ExchangeTemplate, exchanges: int,
                 schedule: str, seed: int | None, models: dict, choices: PartyChoices | None,
                 chunks: list[_Chunk], jobs: list, circuit_info: dict,
                 simulator_seed_bits: int | None = None, postprocessing: dict | None = None,
                 plan: dict | None = None, calibration: dict | None = None) -> None:
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
        self.postprocessing = postprocessing
        self.plan = plan or {}
        self.calibration = calibration  # readout calibration: {"qubits", "shots", "job"} or None

    def __repr__(self) -> str:
        return (f"PendingExchange(exchanges={self.exchanges}, backend={self.backend.spec!r}, "
                f"jobs={len(self.jobs)})")

    @property
    def job_ids(self) -> tuple[str, ...]:
        return tuple(job.job_id() for job in self.jobs)

    def lane_of_pulse(self) -> np.ndarray:
        """Which lane (circuit slot, so which physical qubit) each pulse ran in."""
        lanes = self.template.lanes
        out = np.empty(self.exchanges, dtype=np.int32)
        for c in self.chunks:
            if c.settings is None:  # qrng and sequential: the pub's bits in send order, lanes fastest
                out[c.start:c.stop] = np.arange(c.stop - c.start) % lanes
            else:  # grouped: the j-th pulse of a setting is shot j // lanes, lane j % lanes
                for k in range(8):
                    idx = np.flatnonzero(c.settings == k)
                    out[c.start + idx] = np.arange(idx.size) % lanes
        return out

    def readout_mitigation(self, record: MeasurementRecord) -> dict | None:
        """The readout-mitigated QBER of ``record`` (a study figure, :mod:`.mitigation`), or ``None``
        when no calibration was submitted."""
        if self.calibration is None:
            return None
        from .mitigation import confusion, mitigated_qber

        job = self.calibration["job"]
        try:
            pubs = list(job.result())
        except Exception as exc:
            raise BackendError(f"calibration job {job.job_id()} on {self.backend.spec} failed: {exc}") from None
        e0, e1 = confusion(pubs)
        return {"qubits": list(self.calibration["qubits"]), "calibration_shots": self.calibration["shots"],
                "calibration_job_id": job.job_id(), **mitigated_qber(record, self.lane_of_pulse(), e0, e1)}

    @property
    def stored(self) -> bool:
        """Whether the jobs' samples came from a handle (local jobs, finished at submission)."""
        return bool(self.jobs) and all(isinstance(job, StoredJob) for job in self.jobs)

    def status(self) -> list[str]:
        """Each job's status as the provider reports it (``"DONE"`` for samples kept in a handle)."""
        out = []
        for job in self.jobs:
            try:
                status = job.status()
                out.append(str(getattr(status, "name", status)))
            except Exception as exc:  # providers raise their own types for network problems
                raise BackendError(f"could not get the status of job {job.job_id()} on {self.backend.spec}: "
                                   f"{exc}") from None
        return out

    def cancel(self) -> list[str]:
        """Cancel every job still queued or running (IBM jobs, Braket tasks); returns their statuses after.

        Raises:
            BackendError: the jobs ran in the submitting process (nothing to cancel), or the
                provider refused.
        """
        if self.stored or not self.backend.resumable:
            raise BackendError(
                f"the jobs of this handle ran on {self.backend.spec!r} in the submitting process and have "
                "finished (their samples are in the handle): there is nothing to cancel; collect them instead")
        for job, status in zip(self.jobs, self.status()):
            if status.upper() in FINAL_STATUSES:
                continue
            try:
                job.cancel()
            except Exception as exc:
                raise BackendError(f"{self.backend.spec} refused to cancel job {job.job_id()}: {exc}") from None
        return self.status()

    def _pub_results(self):
        for chunk, job in zip(self.chunks, self.jobs):
            try:
                pub = job.result()[0]
            except Exception as exc:  # providers raise their own types for failed jobs
                raise BackendError(f"job {job.job_id()} on {self.backend.spec} failed: {exc}") from None
            yield chunk, pub

    def result(self, *, progress: Callable[[int, int], None] | None = None) -> MeasurementRecord:
        """Wait for every job and assemble the record (pulses in send order)."""
        n = self.exchanges
        columns: dict[str, np.ndarray] = {}
        total_shots = 0
        for chunk, pub in self._pub_results():
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

    def save(self, path: str | Path, *, postprocessing: Any = None, samples: bool = False) -> Path:
        """Write a job handle from which :meth:`load` collects the jobs later, in another process.

        Args:
            path: the handle file (an ``.npz`` archive: a JSON header and arrays).
            postprocessing: the round's post-processing configuration (a
                :class:`~qkd_circuits.PostProcessingConfig` or a dict of
                :data:`POSTPROCESSING_FIELDS`), kept so that ``qkd collect`` needs no options.
            samples: wait for the jobs and keep their samples (every pub's bit arrays) in the
                handle.  Jobs that run in this process (``aer``, ``fake:``, ``braket-local``)
                need it to be collected elsewhere; without it only ``ibm:``/``braket:`` jobs,
                looked up again by id, can be saved.

        The file holds Alice's and Bob's choices (prepared mode) or, with ``samples``, every raw
        bit: it is written as a secret file (mode 0600, atomic, no symlink followed; an existing
        file is replaced).  Handles are written as version 2; :meth:`load` reads versions 1 and 2.
        """
        if not samples and not self.backend.resumable:
            raise BackendError(
                f"jobs on {self.backend.spec!r} live in this process; call result() instead of saving a "
                "handle, or save(path, samples=True) to keep their samples in it (as qkd submit does): "
                "only ibm:<name> and braket:<device> jobs can be looked up again by id"
            )
        header = {
            "format": HANDLE_FORMAT, "version": HANDLE_VERSION, "backend": self.backend.spec,
            "mode": self.template.mode, "lanes": self.template.lanes, "exchanges": self.exchanges,
            "schedule": self.schedule, "seed": self.seed, "models": self.models,
            "job_ids": list(self.job_ids), "circuit": self.circuit_info,
            "chunks": [[c.start, c.stop, c.shots] for c in self.chunks],
            "simulator_seed_bits": self.simulator_seed_bits,
            "backend_info": self.backend.public_info(), "execution": self.backend.options.to_dict(),
            "postprocessing": _postprocessing_dict(postprocessing), "plan": self.plan,
            "jobs": [{"job_id": job_id, "exchanges": c.stop - c.start, "shots": c.shots, "bindings": c.bindings,
                      "executions": c.executions} for job_id, c in zip(self.job_ids, self.chunks)],
            "samples": bool(samples), "sample_bits": {},
            "calibration": None if self.calibration is None else {
                "qubits": list(self.calibration["qubits"]), "shots": self.calibration["shots"],
                "job_id": self.calibration["job"].job_id()},
        }
        arrays = {}
        if self.choices is not None:
            arrays = {"alice_bits": self.choices.alice_bits, "alice_bases": self.choices.alice_bases,
                      "bob_bases": self.choices.bob_bases}
        if samples:
            for i, (_, pub) in enumerate(self._pub_results()):
                for name in self.template.registers:
                    bit_array = getattr(pub.data, name)
                    arrays[f"sample_{i}_{name}"] = bit_array.array
                    header["sample_bits"][name] = int(bit_array.num_bits)
            if self.calibration is not None:
                for k, pub in enumerate(self.calibration["job"].result()):
                    arrays[f"calibration_{k}"] = pub.data.cal.array
        buffer = io.BytesIO()
        np.savez_compressed(buffer, header=np.array(json.dumps(header)), **arrays)
        with buffer.getbuffer() as data:
            return write_secret_file(path, data, overwrite=True)

    @classmethod
    def load(cls, path: str | Path, *, service: Any = None) -> PendingExchange:
        """Reopen a saved handle (version 1 or 2); ``service`` overrides the default ``QiskitRuntimeService``.

        A handle with samples needs no service and no device: its jobs come back as
        :class:`StoredJob`.  Otherwise the backend is resolved and every job looked up by id.

        Raises:
            RecordError: no file, not a job handle, an unknown version, or inconsistent contents.
            BackendError: the service could not be reached or a job id is unknown to it.
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as npz:
                header = json.loads(str(npz["header"]))
                arrays = {k: npz[k] for k in npz.files if k != "header"}
        except FileNotFoundError:
            raise RecordError(f"no job handle at {path}") from None
        except IsADirectoryError:
            raise RecordError(f"{path} is a folder, not a job handle") from None
        except Exception as exc:
            raise RecordError(f"{path} is not a readable job handle: {exc}") from None
        if not isinstance(header, dict) or header.get("format") != HANDLE_FORMAT:
            raise RecordError(f"{path} is not a qkd_circuits job handle")
        if header.get("version") not in HANDLE_VERSIONS_READ:
            raise RecordError(f"{path} is a version-{header.get('version')} job handle; this version of "
                              f"qkd_circuits reads versions {', '.join(map(str, HANDLE_VERSIONS_READ))}")
        try:
            return cls._from_header(path, header, arrays, service)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise RecordError(f"{path} is a damaged job handle: {type(exc).__name__}: {exc}") from None

    @classmethod
    def _from_header(cls, path: Path, header: dict, arrays: dict, service: Any) -> PendingExchange:
        models = header["models"]
        channel, detector, eve = _models_from_dict(models)
        template = build_exchange_circuit(header["mode"], channel=channel, detector=detector,
                                          eve=eve, lanes=header["lanes"])
        choice_names = ("alice_bits", "alice_bases", "bob_bases")
        choices = PartyChoices(**{k: arrays[k] for k in choice_names}) if "alice_bits" in arrays else None
        if choices is not None and any(len(getattr(choices, k)) != header["exchanges"] for k in choice_names):
            raise RecordError(f"{path}: the parties' choices do not hold {header['exchanges']} pulses")
        if (choices is None) != (header["mode"] == "qrng"):
            raise RecordError(f"{path}: a {header['mode']}-mode handle {'with' if choices else 'without'} choices")
        chunks = []
        for start, stop, shots in header["chunks"]:
            settings = _settings(choices, start, stop) if header["schedule"] == "grouped" and choices else None
            chunks.append(_Chunk(start, stop, shots, settings,
                                 _bindings(template, header["schedule"], settings, stop - start)))
        if header.get("samples"):
            backend = _stored_backend(header["backend_info"], header.get("execution") or {})
            jobs = []
            for i, (job_id, chunk) in enumerate(zip(header["job_ids"], chunks, strict=True)):
                registers = {name: _bit_array(arrays[f"sample_{i}_{name}"], header["sample_bits"][name], chunk, path)
                             for name in template.registers}
                jobs.append(StoredJob(job_id, registers))
            calibration = header.get("calibration")
            if calibration:
                from qiskit.primitives.containers import BitArray

                calibration = dict(calibration, job=StoredJob(calibration["job_id"], [
                    {"cal": BitArray(arrays[f"calibration_{k}"], len(calibration["qubits"]))} for k in (0, 1)]))
        else:
            instance = (header.get("backend_info") or {}).get("instance")
            backend = resolve_backend(header["backend"], service=service,
                                      **({"instance": instance} if instance else {}))
            circuit = backend.prepare(template.circuit) if backend.kind == "braket" else None
            jobs = [backend.job(job_id, **({} if circuit is None else {
                        "pubs": [_pub_for(template, circuit, choices, header["schedule"], chunk)],
                        "shots": chunk.shots}))
                    for job_id, chunk in zip(header["job_ids"], chunks, strict=True)]
            calibration = header.get("calibration")
            if calibration:
                calibration = dict(calibration, job=backend.job(calibration["job_id"]))
        if len(jobs) != len(chunks):
            raise RecordError(f"{path}: {len(jobs)} job ids for {len(chunks)} chunks")
        return cls(backend=backend, template=template, exchanges=header["exchanges"],
                   schedule=header["schedule"], seed=header["seed"], models=models,
                   choices=choices, chunks=chunks, jobs=jobs, circuit_info=header["circuit"],
                   simulator_seed_bits=header.get("simulator_seed_bits"),
                   postprocessing=header.get("postprocessing"), plan=header.get("plan"),
                   calibration=calibration or None)


def _bindings(template: ExchangeTemplate, schedule: str, settings: np.ndarray | None, size: int) -> int:
    """Parameter bindings of a chunk's pub: 8 grouped, one per shot sequential, none in qrng mode."""
    if template.mode == "qrng":
        return 1
    if settings is not None:
        return 8
    return math.ceil(size / template.lanes)


def _bit_array(array: np.ndarray, num_bits: int, chunk: _Chunk, path: Path):
    """A stored register's ``BitArray``, checked against the chunk it belongs to."""
    from qiskit.primitives.containers import BitArray

    if array.dtype != np.uint8 or array.ndim < 2:
        raise RecordError(f"{path}: a stored sample array is not packed bits")
    bits = BitArray(array, int(num_bits))
    if bits.num_shots != chunk.shots or int(np.prod(bits.shape, dtype=np.int64)) != chunk.bindings:
        raise RecordError(f"{path}: stored samples of {bits.num_shots} shots x {bits.shape} bindings do not "
                          f"match their job ({chunk.shots} shots x {chunk.bindings} bindings)")
    return bits


def _stored_backend(info: dict, execution: dict) -> Backend:
    """The backend a handle's samples came from, without its device (labels the record only)."""
    return Backend(info["spec"], info["kind"], info["name"], info["num_qubits"], bool(info["runs_noise_instructions"]),
                   False, max_shots=info.get("max_shots"), options=ExecutionOptions(**execution),
                   instance=info.get("instance"))


def _postprocessing_dict(config: Any) -> dict | None:
    """The :data:`POSTPROCESSING_FIELDS` of a post-processing configuration, for a handle."""
    if config is None:
        return None
    if isinstance(config, dict):
        unknown = sorted(set(config) - set(POSTPROCESSING_FIELDS))
        if unknown:
            raise ConfigurationError(f"a job handle keeps the post-processing fields {', '.join(POSTPROCESSING_FIELDS)}; "
                                     f"not {unknown}")
        return dict(config)
    from dataclasses import fields

    default = type(config)()
    others = [f.name for f in fields(config)
              if f.name not in POSTPROCESSING_FIELDS and getattr(config, f.name) != getattr(default, f.name)]
    if others:
        raise ConfigurationError(f"a job handle keeps only {', '.join(POSTPROCESSING_FIELDS)} of the post-processing "
                                 f"configuration; {', '.join(others)} differ from their defaults")
    return {name: getattr(config, name) for name in POSTPROCESSING_FIELDS}


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
    on_warning: Callable[[str], None] | None = None,
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
            thousands of times slower.  On ``ibm:`` what the device holds (as ``"device"``: half
            the qubits left after ``exclude_worst_qubits``, over the qubits per lane).  On every
            other backend 1: fake devices simulate every shot with the device's noise (16 lanes
            of ``fake:brisbane`` ran 20 ms per execution against under 0.1 ms at 8 lanes; see
            :mod:`.usage`), and on Braket more lanes change what runs, so ask for them (or
            ``"device"``) explicitly.  Measured on 2 shared cores,
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
        on_warning: called with each of the plan's warnings (:attr:`SubmissionPlan.warnings`,
            e.g. a fake-device run expected to take minutes) before anything is sent; the
            command line prints them on stderr.
    """
    plan = plan_submission(exchanges, mode=mode, backend=backend, channel=channel, detector=detector, eve=eve,
                           seed=seed, lanes=lanes, schedule=schedule, chunk=chunk, choices=choices)
    if on_warning is not None:
        for warning in plan.warnings:
            on_warning(warning)
    return plan.submit()


class SubmissionPlan:
    """What :func:`submit` will send, worked out before anything is sent (``qkd submit --dry-run``).

    Holds the transpiled circuit, the parties' choices (prepared mode: secret), the chunks (one
    job each, split below the backend's ``max_shots``), a usage estimate and any warnings.
    :meth:`summary` is the public part (no choices, no seeds); :meth:`submit` sends the jobs, once.
    """

    def __init__(self, *, backend: Backend, template: ExchangeTemplate, circuit, circuit_info: dict, exchanges: int,
                 schedule: str, seed: int | None, models: dict, choices: PartyChoices | None, chunks: list[_Chunk],
                 simulator_seed_bits: int | None, calibration: dict | None = None) -> None:
        from .usage import plan_warnings, usage_estimate

        self.backend, self.template, self.circuit, self.circuit_info = backend, template, circuit, circuit_info
        self.exchanges, self.schedule, self.seed, self.models = exchanges, schedule, seed, models
        self.choices, self.chunks, self.simulator_seed_bits = choices, chunks, simulator_seed_bits
        self.calibration = calibration  # {"qubits", "shots", "circuits"}: the readout calibration job
        executions = [c.executions for c in chunks] + ([2 * calibration["shots"]] if calibration else [])
        self.estimate = usage_estimate(backend, circuit, template.circuit.num_qubits, executions)
        self.warnings = plan_warnings(backend, template.circuit.num_qubits, self.estimate)
        self._submitted = False

    def __repr__(self) -> str:
        return f"SubmissionPlan(exchanges={self.exchanges}, backend={self.backend.spec!r}, jobs={len(self.chunks)})"

    @property
    def executions(self) -> int:
        """Circuit executions of every job together (shots x bindings)."""
        return sum(c.executions for c in self.chunks)

    def summary(self) -> dict:
        """The plan's public facts (JSON-ready; nothing secret)."""
        return {
            "backend": self.backend.spec, "backend_name": self.backend.name, "mode": self.template.mode,
            "schedule": self.schedule, "lanes": self.template.lanes, "exchanges": self.exchanges,
            "qubits": self.template.circuit.num_qubits, "depth": self.circuit_info["depth"],
            "physical_qubits": self.circuit_info.get("physical_qubits"),
            "excluded_qubits": self.circuit_info.get("excluded_qubits", []),
            "max_shots": self.backend.max_shots, "execution": self.backend.options.to_dict(),
            "jobs": [{"exchanges": c.stop - c.start, "shots": c.shots, "bindings": c.bindings,
                      "executions": c.executions} for c in self.chunks],
            "executions": self.executions, "estimate": self.estimate,
            "readout_calibration": None if self.calibration is None else {
                "qubits": self.calibration["qubits"], "shots": self.calibration["shots"], "executions":
                2 * self.calibration["shots"]},
        }

    def submit(self) -> PendingExchange:
        """Send the jobs (at once: nothing waits for them) and return the :class:`PendingExchange`."""
        if self._submitted:
            raise ConfigurationError("this plan was submitted already; plan again for another round "
                                     "(its choices must not be used twice)")
        self._submitted = True
        backend, circuit = self.backend, self.circuit
        seeds = (np.random.SeedSequence(self.seed).generate_state(len(self.chunks)).tolist()
                 if self.seed is not None else None)
        per_job = backend.takes_simulator_seed
        sampler = None if per_job else backend.sampler(seed=None, num_qubits=circuit.num_qubits)
        jobs = []
        for i, c in enumerate(self.chunks):
            pub = _pub_for(self.template, circuit, self.choices, self.schedule, c)
            if per_job:  # one sampler per job: each job gets its own seed
                job_seed = int(seeds[i]) if seeds is not None else draw_simulator_seed()
                sampler = backend.sampler(seed=job_seed, num_qubits=circuit.num_qubits)  # the seed goes nowhere else
            try:
                jobs.append(sampler.run([pub], shots=c.shots))
            except Exception as exc:
                raise BackendError(f"{backend.spec} refused the job: {exc}") from None
        calibration = None
        if self.calibration is not None:
            if per_job:
                cal_seed = (int(np.random.SeedSequence((self.seed, 1)).generate_state(1)[0])
                            if self.seed is not None else draw_simulator_seed())
                sampler = backend.sampler(seed=cal_seed, num_qubits=circuit.num_qubits)
            try:
                job = sampler.run([(c,) for c in self.calibration["circuits"]], shots=self.calibration["shots"])
            except Exception as exc:
                raise BackendError(f"{backend.spec} refused the readout calibration job: {exc}") from None
            calibration = {"qubits": self.calibration["qubits"], "shots": self.calibration["shots"], "job": job}
        backend.close_batch()
        return PendingExchange(backend=backend, template=self.template, exchanges=self.exchanges,
                               schedule=self.schedule, seed=self.seed, models=self.models, choices=self.choices,
                               chunks=self.chunks, jobs=jobs, circuit_info=self.circuit_info,
                               simulator_seed_bits=self.simulator_seed_bits, plan=self.summary(),
                               calibration=calibration)


def plan_submission(
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
    readout_calibration_shots: int | None = None,
) -> SubmissionPlan:
    """Everything :func:`submit` does but sending: the circuit, transpiled, the choices and the jobs.

    Same arguments as :func:`submit`.  The jobs are split so that no pub exceeds the backend's
    :attr:`~.backends.Backend.max_shots` executions (shots x parameter bindings: the conservative
    reading of a device's limit): ``qrng`` mode and the ``sequential`` schedule cut every
    ``max_shots x lanes`` exchanges, the ``grouped`` schedule where one of its 8 settings would
    pass ``max_shots // 8`` shots.  Without a limit the chunks are those of ``chunk`` alone.

    ``readout_calibration_shots`` (``ibm:`` and ``fake:`` only) adds one job measuring the
    qubits Bob reads after preparing |0> and |1>, that many shots each, for the readout-mitigated
    QBER of :meth:`PendingExchange.readout_mitigation` (a study figure, :mod:`.mitigation`).
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
    per_lane = _qubits_per_lane(mode, channel, detector, eve)
    if lanes is None:
        lanes = 1 if schedule == "sequential" else _default_lanes(backend, mode, channel, detector, eve)
    elif lanes == "device":
        if backend.num_qubits is None:
            raise ConfigurationError(f"lanes='device' needs a device backend, not {backend.spec!r}")
        lanes = _device_lanes(backend, per_lane)
    lanes = _check_count("lanes", lanes)
    if backend.kind == "fake" and lanes * per_lane > FAKE_MAX_QUBITS:
        raise ConfigurationError(
            f"{lanes} lanes need {lanes * per_lane} qubits; a fake device is "
            f"simulated on this machine as one joint state (memory exponential in the qubits), so at most "
            f"{FAKE_MAX_QUBITS} qubits run here: use fewer lanes, or lanes='device'")
    template = build_exchange_circuit(mode, channel=channel, detector=detector, eve=eve, lanes=lanes)
    circuit = backend.prepare(template.circuit)
    circuit_info = {"num_qubits": template.circuit.num_qubits, "depth": circuit.depth(),
                    "ops": {k: int(v) for k, v in circuit.count_ops().items()}}
    if backend.kind in ("fake", "ibm"):
        from .backends import used_qubits

        circuit_info["physical_qubits"] = used_qubits(circuit)
        if backend.options.exclude_worst_qubits:
            circuit_info["excluded_qubits"] = list(backend.excluded_qubits)
        if not backend.options.is_default:
            circuit_info["execution"] = backend.options.to_dict()

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
    chunks = [_chunk_for(template, choices, schedule, start, stop)
              for start, stop in _chunk_bounds(exchanges, chunk, template, choices, schedule, backend.max_shots)]
    calibration = None
    if readout_calibration_shots is not None:
        from .mitigation import bob_qubits, calibration_circuits

        shots = _check_count("readout_calibration_shots", readout_calibration_shots)
        if backend.kind not in ("fake", "ibm"):
            raise ConfigurationError(f"readout mitigation calibrates a device's qubits; {backend.spec!r} has none "
                                     "(use ibm:<name> or fake:<name>)")
        if backend.max_shots is not None and 2 * shots > backend.max_shots:
            raise ConfigurationError(f"the readout calibration's 2 x {shots:,} executions pass {backend.name}'s "
                                     f"limit of {backend.max_shots:,} per job")
        qubits = bob_qubits(circuit)
        calibration = {"qubits": qubits, "shots": shots, "circuits": calibration_circuits(backend._device, qubits)}
    return SubmissionPlan(backend=backend, template=template, circuit=circuit, circuit_info=circuit_info,
                          exchanges=exchanges, schedule=schedule, seed=seed,
                          models=_models_dict(channel, detector, eve), choices=choices, chunks=chunks,
                          simulator_seed_bits=simulator_seed_bits(backend, seed), calibration=calibration)


def _device_lanes(backend: Backend, per_lane: int) -> int:
    """``lanes='device'``: half the usable qubits (room for routing); a fake device at most
    :data:`FAKE_MAX_QUBITS` qubits (it is simulated here as one joint state)."""
    lanes = max(1, backend.usable_qubits // (2 * per_lane))
    if backend.kind == "fake":
        lanes = max(1, min(lanes, FAKE_MAX_QUBITS // per_lane))
    return lanes


def _chunk_bounds(exchanges: int, chunk: int, template: ExchangeTemplate, choices: PartyChoices | None,
                  schedule: str, max_shots: int | None) -> list[tuple[int, int]]:
    """Where the jobs start and stop: every ``chunk`` exchanges, and sooner where a pub would pass
    ``max_shots`` executions (see :func:`plan_submission`)."""
    lanes = template.lanes
    if max_shots is None or template.mode == "qrng" or schedule == "sequential":
        step = chunk if max_shots is None else min(chunk, max_shots * lanes)
        return [(start, min(start + step, exchanges)) for start in range(0, exchanges, step)]
    per_setting = (max_shots // 8) * lanes  # grouped: 8 bindings of ceil(count / lanes) shots each
    if per_setting < 1:
        raise ConfigurationError(f"max_shots {max_shots} is below 8: the grouped schedule runs 8 settings per pub; "
                                 "use schedule='sequential' or a larger limit")
    bounds, start = [], 0
    while start < exchanges:
        stop = min(start + chunk, exchanges)
        settings = _settings(choices, start, stop)
        for k in range(8):
            hits = np.flatnonzero(settings == k)
            if hits.size > per_setting:  # stop before the setting's (per_setting + 1)-th pulse
                stop = min(stop, start + int(hits[per_setting]))
        bounds.append((start, stop))
        start = stop
    return bounds


def _default_lanes(backend: Backend, mode: str, channel: Channel, detector: Detector, eve) -> int:
    """``submit``'s lanes when none are given (see its docstring for the measurements)."""
    if backend.kind == "ibm":  # what the device holds: one shot runs every lane at once
        return _device_lanes(backend, _qubits_per_lane(mode, channel, detector, eve))
    if backend.kind != "aer":
        return 1
    noisy = channel.has_noise_instructions or detector.has_noise_instructions
    per_lane = _qubits_per_lane(mode, channel, detector, eve)

    def fast(width: int) -> bool:
        if width <= DENSITY_MATRIX_MAX_QUBITS:  # Aer runs these as a density matrix
            return width <= AER_DENSITY_MATRIX_FAST_QUBITS
        return not noisy and width <= AER_STATEVECTOR_FAST_QUBITS

    return next((n for n in AER_LANE_CHOICES if fast(n * per_lane)), 1)


def _chunk_for(template: ExchangeTemplate, choices: PartyChoices | None, schedule: str, start: int,
               stop: int) -> _Chunk:
    """The job of exchanges ``start:stop``: its shots and (grouped) each exchange's setting."""
    lanes, size = template.lanes, stop - start
    if template.mode == "qrng":
        return _Chunk(start, stop, math.ceil(size / lanes), None, 1)
    if schedule == "grouped":
        settings = _settings(choices, start, stop)
        counts = np.bincount(settings, minlength=8)
        shots = max(1, math.ceil(int(counts.max()) / lanes))
        return _Chunk(start, stop, shots, settings, 8)
    return _Chunk(start, stop, 1, None, math.ceil(size / lanes))


def _pub_for(template: ExchangeTemplate, circuit, choices: PartyChoices | None, schedule: str, chunk: _Chunk):
    """The chunk's pub: the circuit alone (qrng), or with its parameter bindings."""
    lanes = template.lanes
    if template.mode == "qrng":
        return (circuit,)
    if schedule == "grouped":
        k = np.arange(8)
        theta_a, theta_b = _thetas(k >> 2 & 1, k >> 1 & 1, k & 1)
        values = {tuple(template.alice_theta): np.repeat(theta_a[:, None], lanes, axis=1),
                  tuple(template.bob_theta): np.repeat(theta_b[:, None], lanes, axis=1)}
        return (circuit, values)
    s = slice(chunk.start, chunk.stop)
    bindings = chunk.bindings
    pad = bindings * lanes - (chunk.stop - chunk.start)
    theta_a, theta_b = _thetas(choices.alice_bits[s], choices.alice_bases[s], choices.bob_bases[s])
    theta_a, theta_b = (np.pad(t, (0, pad)).reshape(bindings, lanes) for t in (theta_a, theta_b))
    values = {tuple(template.alice_theta): theta_a, tuple(template.bob_theta): theta_b}
    return (circuit, values)


def run_exchanges(exchanges: int, *, progress: Callable[[int, int], None] | None = None,
                  **kwargs) -> MeasurementRecord:
    """:func:`submit` and wait: returns the :class:`MeasurementRecord` (same arguments)."""
    return submit(exchanges, **kwargs).result(progress=progress)


def _without_noise_instructions(circuit) -> bool:
    """Whether ``circuit`` holds only gates, measurements, resets and barriers (no Aer noise channels)."""
    from qiskit.circuit import Gate

    return all(isinstance(inst.operation, Gate) or inst.operation.name in ("measure", "reset", "barrier", "delay")
               for inst in circuit.data)


def sample_circuit(circuit, shots: int, *, backend: str | Backend = "aer", seed: int | None = None,
                   parameter_values: Any = None) -> dict[str, np.ndarray]:
    """Run any circuit on ``backend`` and return each classical register's bits.

    The generic runner under every protocol's circuits (BBM92, six-state, E91, ...): the circuit
    is transpiled with :meth:`Backend.prepare` and sent as one pub, on one sampler built for this
    job, with the same seed discipline as :func:`submit`: on backends that take a simulator seed
    (``aer``, ``fake:``, ``braket-local``) a user ``seed`` is passed on as given (a public,
    reproducible simulation), and ``seed=None`` draws a fresh 64-bit secret seed for the job
    (:func:`~.backends.draw_simulator_seed`, never recorded).

    Args:
        circuit: a ``QuantumCircuit`` with named classical registers.
        shots: executions per parameter binding (>= 1).
        backend: a spec string or a resolved :class:`Backend`.
        seed: simulation seed (>= 0), or ``None`` for a secret one.
        parameter_values: the pub's parameter values, as a Qiskit ``SamplerV2`` pub takes them
            (e.g. ``{(theta_0, theta_1): array of shape (bindings..., 2)}``); ``None`` for a
            circuit without parameters.

    Returns:
        ``{register name: bool array of shape (bindings..., shots, register size)}``, bit ``j`` of
        the last axis being the register's clbit ``j`` (little-endian, as :class:`PendingExchange`
        reads its registers).  A circuit without parameters has no binding axes.

    Raises:
        ConfigurationError: a bad shot count or seed, a circuit without classical registers, or
            one wider than the backend.
        BackendError: the backend refused the job or the job failed.
    """
    shots = _check_count("shots", shots)
    if seed is not None:
        seed = _check_count("seed", seed, minimum=0)
    names = [reg.name for reg in getattr(circuit, "cregs", ())]
    if not names:
        raise ConfigurationError("sample_circuit needs a circuit with at least one named classical register")
    backend = resolve_backend(backend)
    prepared = backend.prepare(circuit)
    unitary = _without_noise_instructions(prepared)
    if backend.takes_simulator_seed:
        job_seed = draw_simulator_seed() if seed is None else seed  # the secret seed goes nowhere else
        sampler = backend.sampler(seed=job_seed, num_qubits=prepared.num_qubits, unitary=unitary)
    else:
        sampler = backend.sampler(seed=None, num_qubits=prepared.num_qubits)
    pub = (prepared,) if parameter_values is None else (prepared, parameter_values)
    try:
        job = sampler.run([pub], shots=shots)
    except Exception as exc:
        raise BackendError(f"{backend.spec} refused the job: {exc}") from None
    finally:
        backend.close_batch()
    try:
        result = job.result()[0]
    except Exception as exc:  # providers raise their own types for failed jobs
        raise BackendError(f"job {job.job_id()} on {backend.spec} failed: {exc}") from None
    return {name: getattr(result.data, name).to_bool_array(order="little") for name in names}
