"""Quantum backends behind one interface: the Qiskit V2 sampler.

A backend spec string names where circuits run:

``aer``
    Qiskit Aer's ``SamplerV2`` on this machine (default; no account).  Circuits of up to
    :data:`DENSITY_MATRIX_MAX_QUBITS` qubits run with the density-matrix method, so noise channels
    are applied exactly and all shots are sampled from one final state.
``fake:<name>``
    An IBM fake backend (``qiskit_ibm_runtime.fake_provider``, e.g. ``fake:fake_nairobi`` or
    ``fake:nairobi``) through IBM Runtime's ``SamplerV2`` in local testing mode: the same ISA
    transpilation and sampler code path as hardware, simulated with the device's noise model.
``ibm:<name>``
    IBM Quantum hardware through ``qiskit_ibm_runtime.SamplerV2`` in a ``Batch``; credentials
    come from a saved account or the environment (``QiskitRuntimeService()``).
``braket-local``
    The Amazon Braket local state-vector simulator through qiskit-braket-provider's sampler.

Every backend takes the same logical circuits from :mod:`.circuits`; :meth:`Backend.prepare`
transpiles them to what the backend accepts.  Only Aer runs the channel-noise instructions.

Simulator seeds.  In ``qrng`` mode the raw key *is* the simulator's random numbers, so its seed
is as secret as the key.  Left to itself Aer draws a 32-bit seed per run (``std::random_device``),
which an attacker who knows the circuit could search exhaustively.  Unseeded runs therefore pass
:func:`draw_simulator_seed` — 64 bits from :mod:`secrets`, a fresh one per job — on ``aer`` and
``fake:`` backends (:attr:`Backend.takes_simulator_seed`).  Aer's ``seed_simulator`` accepts
exactly the signed 64-bit integers (found by experiment with qiskit-aer 0.18: ``2**63 - 1`` and
``-2**63`` run, ``2**63`` and ``2**64 - 1`` raise ``TypeError``) and uses them as its unsigned
64-bit seed, so a uniform signed 64-bit value has the full 64 bits of entropy.
"""

from __future__ import annotations

import importlib
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from qiskit import QuantumCircuit, transpile

from ..exceptions import BackendError, ConfigurationError, MissingExtraError

__all__ = ["Backend", "resolve_backend", "draw_simulator_seed", "DENSITY_MATRIX_MAX_QUBITS",
           "SIMULATOR_SEED_BITS"]

#: Above this many qubits the density matrix (4^n entries) gets too large; Aer then picks its
#: own method (noisy circuits fall back to per-shot trajectories, which are much slower).
DENSITY_MATRIX_MAX_QUBITS = 12
#: Entropy of a seed from :func:`draw_simulator_seed`: the full width of Aer's ``seed_simulator``.
SIMULATOR_SEED_BITS = 64


def draw_simulator_seed() -> int:
    """A fresh simulator seed from :mod:`secrets`, uniform over the 2^64 seeds Aer tells apart.

    The value is a signed 64-bit integer (Aer's ``seed_simulator`` refuses ``2**63`` and above).
    Use one per job, and never write it down: with it anyone can recompute the job's results.
    """
    value = secrets.randbits(SIMULATOR_SEED_BITS)
    return value - (1 << SIMULATOR_SEED_BITS) if value >> (SIMULATOR_SEED_BITS - 1) else value


def _import(module: str, extra: str, purpose: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(extra, module.split(".")[0].replace("_", "-"), purpose) from None


@dataclass
class Backend:
    """A resolved backend: a sampler factory plus how to prepare circuits for it.

    Attributes:
        spec: the spec string it was resolved from.
        kind: ``"aer"``, ``"fake"``, ``"ibm"`` or ``"braket-local"``.
        name: the backend's own name.
        num_qubits: device size, or ``None`` when unbounded in practice.
        runs_noise_instructions: whether Aer noise instructions can run here.
        resumable: whether a job id can be collected later from another process.
    """

    spec: str
    kind: str
    name: str
    num_qubits: int | None
    runs_noise_instructions: bool
    resumable: bool
    _device: Any = field(default=None, repr=False)
    _service: Any = field(default=None, repr=False)
    _batch: Any = field(default=None, repr=False)

    def prepare(self, circuit: QuantumCircuit) -> QuantumCircuit:
        """Transpile ``circuit`` into instructions this backend executes (ISA for devices)."""
        if self.num_qubits is not None and circuit.num_qubits > self.num_qubits:
            raise ConfigurationError(
                f"the circuit needs {circuit.num_qubits} qubits but {self.name} has "
                f"{self.num_qubits}: use fewer lanes or a larger device"
            )
        if self.kind == "aer":
            # target= rather than the backend: AerSimulator rebuilds its Target on every .target
            # access, and transpile(backend=...) reads it hundreds of times (0.1 s per call).
            # The same Target, so the same transpiled circuit.
            return transpile(circuit, target=self._aer_simulator(circuit.num_qubits).target, optimization_level=1)
        if self.kind in ("fake", "ibm"):
            from qiskit.transpiler import generate_preset_pass_manager

            pm = generate_preset_pass_manager(backend=self._device, optimization_level=1)
            return pm.run(circuit)
        # Braket: decompose controlled rotations ourselves.  amazon-braket-default-simulator
        # 1.41 drops gates written with a control modifier (``ctrl @ ry``) in some 4-qubit
        # circuits (seen here: H on q0 and q2, CNOT q0->q3, then ctrl@ry q1->q3 is lost), which
        # is what qiskit-braket-provider emits for cry/crx; plain cnot/ccnot/cswap are fine.
        return transpile(circuit, basis_gates=_BRAKET_SAFE_GATES, optimization_level=0)

    @property
    def takes_simulator_seed(self) -> bool:
        """Whether :meth:`sampler` passes ``seed`` on (``aer`` and ``fake:``; hardware and the
        Braket simulator take none)."""
        return self.kind in ("aer", "fake")

    def sampler(self, *, seed: int | None, num_qubits: int):
        """A fresh ``BaseSamplerV2`` for circuits of ``num_qubits`` qubits.

        ``seed`` is the simulator seed of every job the sampler runs; ``None`` leaves it to the
        backend (Aer: 32 bits of its own per run).  For secret results, build one sampler per
        job with ``seed=draw_simulator_seed()``, as :func:`~qkd_circuits.submit` does.
        """
        if self.kind == "aer":
            from qiskit_aer.primitives import SamplerV2

            return SamplerV2(seed=seed, options={"backend_options": {"method": _aer_method(num_qubits)}})
        if self.kind == "fake":
            from qiskit_ibm_runtime import SamplerV2

            sampler = SamplerV2(mode=self._device)
            if seed is not None:
                sampler.options.simulator.seed_simulator = seed
            return sampler
        if self.kind == "ibm":
            from qiskit_ibm_runtime import Batch, SamplerV2

            # One Batch per submission: its jobs are scheduled together on the device.
            if self._batch is None:
                self._batch = Batch(backend=self._device)
            return SamplerV2(mode=self._batch)
        from qiskit_braket_provider.providers.braket_sampler import BraketSampler

        return BraketSampler(self._device)

    def close_batch(self) -> None:
        """Stop the open IBM Batch taking new jobs; its submitted jobs still run to the end."""
        if self._batch is not None:
            self._batch.close()
            self._batch = None

    def job(self, job_id: str):
        """Look up a job by id (IBM only: local jobs end with their process)."""
        if not self.resumable:
            raise BackendError(
                f"jobs on {self.spec!r} run in this process and cannot be collected later; "
                "only ibm:<name> jobs can be resumed"
            )
        return self._service.job(job_id)

    def _aer_simulator(self, num_qubits: int):
        from qiskit_aer import AerSimulator

        return AerSimulator(method=_aer_method(num_qubits))


_BRAKET_SAFE_GATES = ["cx", "ccx", "cswap", "rx", "ry", "rz", "h", "x", "measure"]


def _aer_method(num_qubits: int) -> str:
    return "density_matrix" if num_qubits <= DENSITY_MATRIX_MAX_QUBITS else "automatic"


def resolve_backend(spec: str | Backend = "aer", *, service: Any = None) -> Backend:
    """Turn a backend spec string into a :class:`Backend`.

    Args:
        spec: ``"aer"``, ``"fake:<name>"``, ``"ibm:<name>"`` or ``"braket-local"``.
        service: for ``ibm:``, a ``QiskitRuntimeService`` to use instead of the default account.

    Raises:
        ConfigurationError: unknown spec or device name.
        MissingExtraError: the extra that provides the backend is not installed.
        BackendError: the cloud service could not be reached or the device not found.
    """
    if isinstance(spec, Backend):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"backend must be a spec string, got {type(spec).__name__}")
    kind, _, name = spec.partition(":")
    if kind == "aer" and not name:
        return Backend(spec, "aer", "aer_simulator", None, True, False)
    if kind == "fake" and name:
        return _fake_backend(spec, name)
    if kind == "ibm" and name:
        return _ibm_backend(spec, name, service)
    if kind == "braket-local" and not name:
        braket = _import(
            "qiskit_braket_provider.providers.braket_backend", "braket", "The Braket local simulator"
        )
        logging.getLogger("braket").setLevel(logging.ERROR)
        device = braket.BraketLocalBackend("braket_sv")
        return Backend(spec, "braket-local", device.name, None, False, False, _device=device)
    raise ConfigurationError(
        f"unknown backend {spec!r}; use aer, fake:<name> (e.g. fake:nairobi), ibm:<name> "
        "(e.g. ibm:ibm_torino) or braket-local"
    )


def _fake_backend(spec: str, name: str) -> Backend:
    fake = _import("qiskit_ibm_runtime.fake_provider", "ibm", "IBM fake backends")
    key = name.lower()
    key = key if key.startswith("fake_") else f"fake_{key}"
    key = key.removesuffix("v2")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some fake devices warn about their own properties
        backends = {b.name: b for b in fake.FakeProviderForBackendV2().backends()}
    if key not in backends:
        raise ConfigurationError(
            f"unknown fake backend {name!r}; known: {', '.join(sorted(backends))}"
        )
    device = backends[key]
    return Backend(spec, "fake", device.name, device.num_qubits, False, False, _device=device)


def _ibm_backend(spec: str, name: str, service: Any) -> Backend:
    runtime = _import("qiskit_ibm_runtime", "ibm", "IBM Quantum hardware")
    try:
        service = service or runtime.QiskitRuntimeService()
        device = service.backend(name)
    except Exception as exc:  # the runtime raises many types for account/network problems
        raise BackendError(
            f"could not reach IBM Quantum backend {name!r}: {exc}. Save an account first with "
            "QiskitRuntimeService.save_account(...) or set QISKIT_IBM_TOKEN"
        ) from None
    return Backend(spec, "ibm", device.name, device.num_qubits, False, True, _device=device, _service=service)
