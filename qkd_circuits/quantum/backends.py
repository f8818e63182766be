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
    IBM Quantum hardware through ``qiskit_ibm_runtime.SamplerV2`` in a ``Batch`` (or a
    ``Session``, or plain jobs: :attr:`ExecutionOptions.sampler_mode`); credentials come from a
    saved account or the environment (``QiskitRuntimeService(instance=...)``).
``braket-local``, ``braket:<device>``
    Amazon Braket through qiskit-braket-provider: the local state-vector simulator, or a cloud
    device by name (``braket:sv1``, ``braket:dm1``, a QPU's name) or ARN; the device lookup,
    sampler, task lookup and cost estimate live in :mod:`.braket`.

How a device run is shaped (:class:`ExecutionOptions`, the ``qkd submit`` options): the Runtime
execution mode, Sampler options passed through (dynamical decoupling, twirling; IBM Runtime's
local testing mode, which runs ``fake:`` devices, ignores both), the transpiler seed, and leaving
out the qubits worst by calibration (:func:`worst_qubits`).  :attr:`Backend.max_shots` is the
device's limit on one pub's executions (shots x parameter bindings), which
:func:`~qkd_circuits.submit` splits jobs to respect.

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
from dataclasses import dataclass, field, replace
from typing import Any

from qiskit import QuantumCircuit, transpile

from ..exceptions import BackendError, ConfigurationError, MissingExtraError

__all__ = ["Backend", "ExecutionOptions", "resolve_backend", "draw_simulator_seed", "used_qubits", "worst_qubits",
           "DENSITY_MATRIX_MAX_QUBITS", "SAMPLER_MODES", "DD_SEQUENCES", "SIMULATOR_SEED_BITS"]

#: Above this many qubits the density matrix (4^n entries) gets too large; Aer then picks its
#: own method (noisy circuits fall back to per-shot trajectories, which are much slower).
DENSITY_MATRIX_MAX_QUBITS = 12
#: Entropy of a seed from :func:`draw_simulator_seed`: the full width of Aer's ``seed_simulator``.
SIMULATOR_SEED_BITS = 64
#: IBM Runtime execution modes: a ``Batch`` (jobs scheduled together, the default), a
#: ``Session`` (exclusive device access between jobs, for iterative work) or plain jobs.
SAMPLER_MODES = ("batch", "session", "job")
#: Dynamical-decoupling sequences IBM Runtime's SamplerV2 accepts (``sequence_type``).
DD_SEQUENCES = ("XX", "XpXm", "XY4")


@dataclass(frozen=True)
class ExecutionOptions:
    """How jobs run on an IBM device (``ibm:`` and ``fake:``), beyond the circuits themselves.

    Attributes:
        sampler_mode: one of :data:`SAMPLER_MODES`.
        dynamical_decoupling: a sequence of :data:`DD_SEQUENCES` (``options.dynamical_decoupling``
            enabled with that ``sequence_type``), or ``None`` (off).
        twirling: Pauli twirling of gates and measurements (``options.twirling.enable_gates`` and
            ``enable_measure``).
        seed_transpiler: passed to ``generate_preset_pass_manager`` (the same layout and routing
            on every run).
        exclude_worst_qubits: leave out this many qubits, worst by calibration
            (:func:`worst_qubits`): no gate or measurement of the circuit lands on them.
    """

    sampler_mode: str = "batch"
    dynamical_decoupling: str | None = None
    twirling: bool = False
    seed_transpiler: int | None = None
    exclude_worst_qubits: int = 0

    def __post_init__(self) -> None:
        if self.sampler_mode not in SAMPLER_MODES:
            raise ConfigurationError(f"sampler mode must be one of {', '.join(SAMPLER_MODES)}, "
                                     f"got {self.sampler_mode!r}")
        if self.dynamical_decoupling is not None and self.dynamical_decoupling not in DD_SEQUENCES:
            raise ConfigurationError(f"dynamical decoupling sequence must be one of {', '.join(DD_SEQUENCES)}, "
                                     f"got {self.dynamical_decoupling!r}")
        for name in ("seed_transpiler", "exclude_worst_qubits"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigurationError(f"{name} must be a whole number >= 0, got {value!r}")

    @property
    def is_default(self) -> bool:
        return self == ExecutionOptions()

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


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
        kind: ``"aer"``, ``"fake"``, ``"ibm"``, ``"braket-local"`` or ``"braket"``.
        name: the backend's own name.
        num_qubits: device size, or ``None`` when unbounded in practice.
        runs_noise_instructions: whether Aer noise instructions can run here.
        resumable: whether a job id can be collected later from another process.
        max_shots: the most executions (shots x parameter bindings) one pub may have, or
            ``None`` for no limit; :func:`~qkd_circuits.submit` splits jobs below it.
        options: :class:`ExecutionOptions` (IBM devices; the defaults elsewhere).
        instance: the IBM Cloud instance the service was opened with (``None``: the account's).
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
    max_shots: int | None = None
    options: ExecutionOptions = field(default_factory=ExecutionOptions)
    instance: str | None = None

    def __post_init__(self) -> None:
        if not self.options.is_default and self.kind not in ("fake", "ibm"):
            raise ConfigurationError(
                f"sampler mode, dynamical decoupling, twirling, transpiler seed and qubit exclusion are IBM "
                f"Runtime settings; {self.spec!r} takes none of them (use ibm:<name> or fake:<name>)")

    @property
    def excluded_qubits(self) -> tuple[int, ...]:
        """The physical qubits :attr:`ExecutionOptions.exclude_worst_qubits` leaves out (sorted)."""
        k = self.options.exclude_worst_qubits
        return tuple(sorted(worst_qubits(self._device, k))) if k else ()

    @property
    def usable_qubits(self) -> int | None:
        """Qubits a circuit may use: the device's, less the excluded ones."""
        return None if self.num_qubits is None else self.num_qubits - self.options.exclude_worst_qubits

    def prepare(self, circuit: QuantumCircuit) -> QuantumCircuit:
        """Transpile ``circuit`` into instructions this backend executes (ISA for devices)."""
        if self.num_qubits is not None and circuit.num_qubits > self.num_qubits:
            raise ConfigurationError(
                f"the circuit needs {circuit.num_qubits} qubits but {self.name} has "
                f"{self.num_qubits}: use fewer lanes or a larger device"
            )
        if self.usable_qubits is not None and circuit.num_qubits > self.usable_qubits:
            raise ConfigurationError(
                f"the circuit needs {circuit.num_qubits} qubits but {self.name} has {self.usable_qubits} "
                f"once the {self.options.exclude_worst_qubits} worst are left out: use fewer lanes or exclude fewer")
        if self.kind == "aer":
            # target= rather than the backend: AerSimulator rebuilds its Target on every .target
            # access, and transpile(backend=...) reads it hundreds of times (0.1 s per call).
            # The same Target, so the same transpiled circuit.
            return transpile(circuit, target=self._aer_simulator(circuit.num_qubits).target, optimization_level=1)
        if self.kind in ("fake", "ibm"):
            from qiskit.transpiler import generate_preset_pass_manager

            excluded = self.excluded_qubits
            if not excluded:
                pm = generate_preset_pass_manager(backend=self._device, optimization_level=1,
                                                  seed_transpiler=self.options.seed_transpiler)
                return pm.run(circuit)
            coupling, layout = _layout_avoiding(circuit, self._device, excluded)
            import warnings

            with warnings.catch_warnings():
                # Qiskit warns that a coupling map beside the backend drops the target's error rates
                # and durations from the pass manager: meant here (the layout is ours, not VF2's;
                # the usage estimate reads durations from the device's own target).
                warnings.filterwarnings("ignore", message="Providing `coupling_map`", category=UserWarning)
                pm = generate_preset_pass_manager(backend=self._device, optimization_level=1, coupling_map=coupling,
                                                  initial_layout=layout, seed_transpiler=self.options.seed_transpiler)
            isa = pm.run(circuit)
            hit = sorted(set(used_qubits(isa)) & set(excluded))
            if hit:  # routing is confined to the kept edges, so this is a bug, not a user error
                raise BackendError(f"the transpiled circuit uses excluded qubits {hit}")
            return isa
        # Braket: decompose controlled rotations ourselves.  amazon-braket-default-simulator
        # 1.41 drops gates written with a control modifier (``ctrl @ ry``) in some 4-qubit
        # circuits (seen here: H on q0 and q2, CNOT q0->q3, then ctrl@ry q1->q3 is lost), which
        # is what qiskit-braket-provider emits for cry/crx; plain cnot/ccnot/cswap are fine.
        return transpile(circuit, basis_gates=_BRAKET_SAFE_GATES, optimization_level=0)

    @property
    def takes_simulator_seed(self) -> bool:
        """Whether :meth:`sampler` passes ``seed`` on (``aer``, ``fake:``, and ``braket-local``
        through :mod:`.braket`'s seeded sampler; hardware and AWS devices take none)."""
        if self.kind in ("aer", "fake"):
            return True
        return self.kind == "braket-local" and _braket_module(required=False) is not None

    def sampler(self, *, seed: int | None, num_qubits: int, unitary: bool = False):
        """A fresh ``BaseSamplerV2`` for circuits of ``num_qubits`` qubits.

        ``seed`` is the simulator seed of every job the sampler runs; ``None`` leaves it to the
        backend (Aer: 32 bits of its own per run).  For secret results, build one sampler per
        job with ``seed=draw_simulator_seed()``, as :func:`~qkd_circuits.submit` does.
        ``unitary=True`` (a circuit without noise instructions) lets Aer use the state vector at
        any width: exact there, and far cheaper than the density matrix it otherwise picks up to
        :data:`DENSITY_MATRIX_MAX_QUBITS` qubits (a 12-qubit MDI pulse circuit: 114 s as a density
        matrix).
        """
        if self.kind == "aer":
            from qiskit_aer.primitives import SamplerV2

            method = "statevector" if unitary else _aer_method(num_qubits)
            return SamplerV2(seed=seed, options={"backend_options": {"method": method}})
        if self.kind in ("fake", "ibm"):
            from qiskit_ibm_runtime import Batch, SamplerV2, Session

            # One Batch (or Session) per submission: its jobs are scheduled together on the device.
            # In local testing mode (fake:) Runtime runs them in this process either way.
            mode = self._device
            if self.options.sampler_mode != "job":
                if self._batch is None:
                    opener = Batch if self.options.sampler_mode == "batch" else Session
                    self._batch = opener(backend=self._device)
                mode = self._batch
            sampler = SamplerV2(mode=mode)
            if seed is not None and self.kind == "fake":
                sampler.options.simulator.seed_simulator = seed
            if self.options.dynamical_decoupling is not None:
                sampler.options.dynamical_decoupling.enable = True
                sampler.options.dynamical_decoupling.sequence_type = self.options.dynamical_decoupling
            if self.options.twirling:
                sampler.options.twirling.enable_gates = True
                sampler.options.twirling.enable_measure = True
            return sampler
        if self.kind == "braket":
            return _braket_module().braket_sampler(self._device, seed=seed)
        braket = _braket_module(required=False)
        if braket is not None:
            return braket.braket_sampler(self._device, seed=seed)
        from qiskit_braket_provider.providers.braket_sampler import BraketSampler

        return BraketSampler(self._device)

    def close_batch(self) -> None:
        """Stop the open IBM Batch (or Session) taking new jobs; its submitted jobs still run to the end."""
        if self._batch is not None:
            self._batch.close()
            self._batch = None

    def job(self, job_id: str, *, pubs: Any = None, shots: int | None = None):
        """Look up a job (IBM) or task (Braket) by id; local jobs end with their process.

        ``pubs`` and ``shots`` are what the job ran: a Braket task needs them to translate its
        results (:func:`.braket.braket_task`); IBM keeps them with the job.
        """
        if not self.resumable:
            raise BackendError(
                f"jobs on {self.spec!r} run in this process and cannot be looked up later by id; "
                "only ibm:<name> jobs and braket:<device> tasks can be (qkd submit keeps a local "
                "job's samples in its handle instead)"
            )
        if self.kind == "braket":
            return _braket_module().braket_task(self._device, job_id, pubs=pubs, shots=shots)
        try:
            return self._service.job(job_id)
        except Exception as exc:  # the runtime raises its own types for unknown ids and network errors
            raise BackendError(f"IBM Quantum could not find job {job_id!r}: {exc}") from None

    def public_info(self) -> dict:
        """What a job handle records about the backend (enough to label a record without the device)."""
        return {"spec": self.spec, "kind": self.kind, "name": self.name, "num_qubits": self.num_qubits,
                "runs_noise_instructions": self.runs_noise_instructions, "resumable": self.resumable,
                "max_shots": self.max_shots, "instance": self.instance}

    def _aer_simulator(self, num_qubits: int):
        from qiskit_aer import AerSimulator

        return AerSimulator(method=_aer_method(num_qubits))


_BRAKET_SAFE_GATES = ["cx", "ccx", "cswap", "rx", "ry", "rz", "h", "x", "measure"]


def _braket_module(required: bool = True):
    """:mod:`.braket` (the Braket device lookup, sampler, tasks and costs), or ``None`` when it is
    not there and not ``required`` (``braket-local`` then runs through the provider directly)."""
    try:
        return importlib.import_module(f"{__package__}.braket")
    except ImportError as exc:
        if exc.name != f"{__package__}.braket":  # the module is there; what it imports is not
            raise MissingExtraError("braket", "qiskit-braket-provider", "Amazon Braket backends") from None
        if required:
            raise ConfigurationError("Braket cloud devices need qkd_circuits.quantum.braket, which this "
                                     "installation lacks; use braket-local") from None
        return None


def used_qubits(circuit: QuantumCircuit) -> list[int]:
    """The physical qubits a transpiled circuit acts on (gates and measurements; not barriers or delays)."""
    return sorted({circuit.find_bit(q).index for inst in circuit.data
                   if inst.operation.name not in ("barrier", "delay") for q in inst.qubits})


def worst_qubits(device: Any, k: int) -> list[int]:
    """The ``k`` qubits of an IBM device (or fake device) worst by calibration.

    Ordered by readout error (``target["measure"][(q,)].error``), highest first; ties, and qubits
    with the same error, by T1 (``target.qubit_properties[q].t1``), shortest first.  A qubit
    without a readout error counts as error 1 (worst), one without T1 as T1 = 0.  Calibration
    changes daily on hardware: the choice is made when the circuit is transpiled.
    """
    if k == 0:
        return []
    if device is None:
        raise ConfigurationError("leaving out the worst qubits needs a device's calibration (ibm: or fake:)")
    target = device.target
    n = device.num_qubits
    if k >= n:
        raise ConfigurationError(f"cannot leave out {k} of {device.name}'s {n} qubits")

    def badness(q: int) -> tuple[float, float]:
        props = target["measure"].get((q,)) if "measure" in target.operation_names else None
        error = props.error if props is not None and props.error is not None else 1.0
        qp = target.qubit_properties[q] if target.qubit_properties else None
        t1 = qp.t1 if qp is not None and getattr(qp, "t1", None) is not None else 0.0
        return (-error, t1)

    return sorted(range(n), key=lambda q: (badness(q), q))[:k]


def _layout_avoiding(circuit: QuantumCircuit, device: Any, excluded: tuple[int, ...]):
    """A coupling map without the ``excluded`` qubits' edges and an initial layout on the others.

    The circuit's qubits that interact (its lanes) go to a connected set of kept qubits each, so
    routing, confined to the kept edges, never passes through an excluded qubit.
    """
    from qiskit.transpiler import CouplingMap

    bad = set(excluded)
    edges = [tuple(e) for e in device.coupling_map.get_edges() if not (set(e) & bad)]
    neighbours: dict[int, set[int]] = {q: set() for q in range(device.num_qubits) if q not in bad}
    for a, b in edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    # The circuit's interaction components (union-find over its multi-qubit gates).
    parent = list(range(circuit.num_qubits))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for inst in circuit.data:
        idx = [circuit.find_bit(q).index for q in inst.qubits]
        for other in idx[1:]:
            parent[root(other)] = root(idx[0])
    components: dict[int, list[int]] = {}
    for i in range(circuit.num_qubits):
        components.setdefault(root(i), []).append(i)
    layout = [0] * circuit.num_qubits
    free = set(neighbours)
    for comp in sorted(components.values(), key=len, reverse=True):
        placed = _connected_set(len(comp), free, neighbours)
        if placed is None:
            raise ConfigurationError(
                f"{device.name} has no connected set of {len(comp)} qubits left once qubits {sorted(bad)} are "
                "left out: use fewer lanes or exclude fewer qubits")
        for virtual, physical in zip(comp, placed):
            layout[virtual] = physical
        free -= set(placed)
    return CouplingMap(edges), layout


def _connected_set(size: int, free: set[int], neighbours: dict[int, set[int]]) -> list[int] | None:
    """``size`` free qubits connected through free qubits (breadth first from the lowest index)."""
    for start in sorted(free):
        seen, queue = [start], [start]
        while queue and len(seen) < size:
            for nb in sorted(neighbours[queue.pop(0)]):
                if nb in free and nb not in seen:
                    seen.append(nb)
                    queue.append(nb)
                    if len(seen) == size:
                        break
        if len(seen) == size:
            return seen
    return None


def _aer_method(num_qubits: int) -> str:
    return "density_matrix" if num_qubits <= DENSITY_MATRIX_MAX_QUBITS else "automatic"


def resolve_backend(spec: str | Backend = "aer", *, service: Any = None, instance: str | None = None,
                    options: ExecutionOptions | None = None, max_shots: int | None = None,
                    provider: Any = None) -> Backend:
    """Turn a backend spec string into a :class:`Backend`.

    Args:
        spec: ``"aer"``, ``"fake:<name>"``, ``"ibm:<name>"``, ``"braket-local"`` or
            ``"braket:<device>"`` (``sv1``, ``dm1``, a device name or an ARN).
        service: for ``ibm:``, a ``QiskitRuntimeService`` to use instead of the default account.
        instance: for ``ibm:``, the IBM Cloud instance (CRN or name) to open the service with.
        options: IBM :class:`ExecutionOptions` (``ibm:`` and ``fake:`` only).
        max_shots: a lower limit on one pub's executions than the device's own (e.g. to keep
            jobs short); above the device's limit it is refused.
        provider: for ``braket:``, a ``BraketProvider`` to look the device up with.

    Raises:
        ConfigurationError: unknown spec or device name, or options the backend does not take.
        MissingExtraError: the extra that provides the backend is not installed.
        BackendError: the cloud service could not be reached or the device not found.
    """
    if isinstance(spec, Backend):
        if options is not None or max_shots is not None or instance is not None:
            raise ConfigurationError("options, max_shots and instance are given when resolving a spec string, "
                                     "not with a resolved Backend")
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"backend must be a spec string, got {type(spec).__name__}")
    kind, _, name = spec.partition(":")
    if instance is not None and kind != "ibm":
        raise ConfigurationError(f"--instance names an IBM Cloud instance; {spec!r} is not an ibm: backend")
    if kind == "aer" and not name:
        backend = Backend(spec, "aer", "aer_simulator", None, True, False)
    elif kind == "fake" and name:
        backend = _fake_backend(spec, name)
    elif kind == "ibm" and name:
        backend = _ibm_backend(spec, name, service, instance)
    elif kind == "braket-local" and not name:
        backend = _braket_backend(spec, None, provider, local=True)
    elif kind == "braket" and name:
        backend = _braket_backend(spec, name, provider, local=False)
    else:
        raise ConfigurationError(
            f"unknown backend {spec!r}; use aer, fake:<name> (e.g. fake:nairobi), ibm:<name> "
            "(e.g. ibm:ibm_torino), braket-local or braket:<device> (sv1, dm1, a QPU's name or ARN)"
        )
    if options is not None:
        k = options.exclude_worst_qubits
        if k and backend.num_qubits is not None and k >= backend.num_qubits:
            raise ConfigurationError(f"cannot leave out {k} of {backend.name}'s {backend.num_qubits} qubits")
        backend = replace(backend, options=options)
    if max_shots is not None:
        if isinstance(max_shots, bool) or not isinstance(max_shots, int) or max_shots < 1:
            raise ConfigurationError(f"max_shots must be a whole number >= 1, got {max_shots!r}")
        if backend.max_shots is not None and max_shots > backend.max_shots:
            raise ConfigurationError(f"max_shots {max_shots:,} is above {backend.name}'s limit of "
                                     f"{backend.max_shots:,} executions per pub")
        backend = replace(backend, max_shots=max_shots)
    return backend


def _device_max_shots(device: Any) -> int | None:
    """An IBM device's (or fake device's) ``max_shots``: its configuration's, else its target's."""
    try:
        value = device.configuration().max_shots
    except Exception:  # BackendV2 devices without a configuration
        value = getattr(getattr(device, "target", None), "max_shots", None)
    return int(value) if value else None


def _braket_backend(spec: str, name: str | None, provider: Any, *, local: bool) -> Backend:
    braket = _braket_module(required=not local)
    if braket is None:  # the provider's local simulator, as before qkd_circuits.quantum.braket
        provider_module = _import(
            "qiskit_braket_provider.providers.braket_backend", "braket", "The Braket local simulator"
        )
        logging.getLogger("braket").setLevel(logging.ERROR)
        device = provider_module.BraketLocalBackend("braket_sv")
        return Backend(spec, "braket-local", device.name, None, False, False, _device=device)
    info = dict(braket.resolve_braket(spec, name, provider=provider))
    known = {"kind", "name", "num_qubits", "runs_noise_instructions", "resumable", "max_shots", "_device"}
    unknown = sorted(set(info) - known)
    if unknown:
        raise BackendError(f"qkd_circuits.quantum.braket.resolve_braket returned unknown fields {unknown}")
    return Backend(spec, info.get("kind", "braket-local" if local else "braket"), info["name"],
                   info.get("num_qubits"), bool(info.get("runs_noise_instructions", False)),
                   bool(info.get("resumable", not local)), _device=info["_device"], max_shots=info.get("max_shots"))


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
    return Backend(spec, "fake", device.name, device.num_qubits, False, False, _device=device,
                   max_shots=_device_max_shots(device))


def _saved_ibm_accounts() -> list[str]:
    """Names of the accounts saved with ``QiskitRuntimeService.save_account`` (none if unreadable)."""
    import json
    import os
    from pathlib import Path

    path = Path(os.environ.get("QISKIT_IBM_CONFIG", Path.home() / ".qiskit" / "qiskit-ibm.json"))
    try:
        return sorted(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return []


def _ibm_backend(spec: str, name: str, service: Any, instance: str | None) -> Backend:
    import os

    runtime = _import("qiskit_ibm_runtime", "ibm", "IBM Quantum hardware")
    if service is None:
        token_set = bool(os.environ.get("QISKIT_IBM_TOKEN"))
        saved = _saved_ibm_accounts()
        try:
            service = runtime.QiskitRuntimeService(**({"instance": instance} if instance else {}))
        except Exception as exc:  # the runtime raises many types for account/network problems
            # Say what is actually missing (never the token itself).
            if token_set:
                where = "with QISKIT_IBM_TOKEN from the environment (it is set)"
                fix = ("check the token, and QISKIT_IBM_INSTANCE or --instance if your account has several "
                       "instances" if not instance else f"check the token and that it may use instance {instance!r}")
            elif saved:
                where = f"with the saved account{'s' if len(saved) > 1 else ''} {', '.join(saved)}"
                fix = "check it with QiskitRuntimeService.saved_accounts(), or save it again"
            else:
                where = "without an account: none is saved and QISKIT_IBM_TOKEN is not set"
                fix = "save one with QiskitRuntimeService.save_account(token=..., instance=...) or set QISKIT_IBM_TOKEN"
            raise BackendError(f"could not open IBM Quantum {where}: {exc}; {fix}") from None
    try:
        device = service.backend(name)
    except Exception as exc:
        raise BackendError(
            f"IBM Quantum opened the account but gave no backend {name!r}: {exc}; list the devices this "
            "account may use with QiskitRuntimeService().backends()" + (f" (instance {instance!r})" if instance else "")
        ) from None
    return Backend(spec, "ibm", device.name, device.num_qubits, False, True, _device=device, _service=service,
                   max_shots=_device_max_shots(device), instance=instance)
