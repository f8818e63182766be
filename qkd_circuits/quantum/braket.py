"""Amazon Braket devices: the local simulator with honoured seeds, AWS devices, task handles, cost.

:mod:`.backends` turns ``braket-local`` and ``braket:<device>`` spec strings into a
:class:`~qkd_circuits.quantum.backends.Backend` through :func:`resolve_braket`; the functions here
do the Braket-specific work behind it, all through qiskit-braket-provider (the ``braket`` extra):

``braket-local`` (``name=None``)
    The Braket local state-vector simulator (amazon-braket-default-simulator) on this machine.
``braket:sv1``, ``braket:dm1``, ``braket:tn1``
    The Amazon Braket managed simulators (their fixed ARNs
    ``arn:aws:braket:::device/quantum-simulator/amazon/<name>``, in the session's region).
``braket:<device name>`` (e.g. ``Ankaa-3``, ``Garnet``, ``Aria 1``)
    A device looked up by name in every Braket region (``BraketProvider().get_backend(name)``).
``braket:arn:aws:braket:...``
    A device by its full ARN (``BraketAwsBackend(arn=...)``; a QPU's ARN names its region).

Seeds on the local simulator.  amazon-braket-default-simulator 1.41 samples every shot of a
simulation in ``Simulation.retrieve_samples`` from ``self._rng_generator``, a
``numpy.random.default_rng()`` that each ``StateVectorSimulation`` / ``DensityMatrixSimulation``
creates for itself when the simulator's ``initialize_simulation`` builds it; there is no seed
argument anywhere in the simulator, ``LocalSimulator.run`` or qiskit-braket-provider's sampler.
:func:`braket_sampler` therefore runs each ``run()`` call on a fresh ``LocalSimulator`` wrapping a
subclass of the simulator whose ``initialize_simulation`` replaces that generator with one
generator per run, seeded from ``seed``.  What is seeded is exactly the measurement sampling of
that run's simulations (one per executable: a circuit with 8 parameter bindings is 8
simulations, run one after another in binding order, all drawing from the one generator in
that order); nothing global is touched (``numpy``'s global state, other ``LocalSimulator``
instances and other runs are unaffected), so runs on different threads do not share a
generator.  Every run of one sampler starts from the same seed, as with Aer's ``SamplerV2``.

``seed=None`` seeds each run with :data:`LOCAL_SEED_BITS` (128) bits from :mod:`secrets`, drawn
inside ``run()`` and kept nowhere else: in ``qrng`` mode the key *is* these samples.  An integer
seed is a public simulation seed: any non-negative integer, or a signed 64-bit one (a negative
value is read as its two's complement, ``seed + 2**64``, as Aer reads ``seed_simulator``, so the
seeds of :func:`~qkd_circuits.quantum.backends.draw_simulator_seed` work unchanged).  Should a
future simulator version stop keeping its generator in ``_rng_generator``, :func:`braket_sampler`
raises :class:`~qkd_circuits.exceptions.ConfigurationError` instead of running unseeded.

Devices in AWS take no seed (their randomness is the service's); asking for one is a
:class:`~qkd_circuits.exceptions.ConfigurationError`, never silently ignored.
"""

from __future__ import annotations

import re
import secrets
import warnings
from typing import Any, Iterable

import numpy as np
from qiskit.primitives import BaseSamplerV2

from ..exceptions import BackendError, ConfigurationError

__all__ = ["LOCAL_SEED_BITS", "MANAGED_SIMULATORS", "SeededLocalSampler", "braket_cost_estimate",
           "braket_sampler", "braket_task", "describe_cost", "resolve_braket"]

#: Entropy of an unseeded local run: the bits from :mod:`secrets` seeding its generator (the
#: 128-bit pool of numpy's ``SeedSequence``, as wide as PCG64's state).
LOCAL_SEED_BITS = 128
#: The Amazon Braket managed simulators, by the short names ``braket:<name>`` accepts.
MANAGED_SIMULATORS = {name: f"arn:aws:braket:::device/quantum-simulator/amazon/{name}"
                      for name in ("sv1", "dm1", "tn1")}
#: The local simulator ``braket-local`` runs.
LOCAL_SIMULATOR = "braket_sv"
PRICING_PAGE = "https://aws.amazon.com/braket/pricing/"

_DEVICE_ARN = re.compile(r"arn:aws:braket:[a-z0-9-]*::device/[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)*")
_TASK_ARN = re.compile(r"arn:aws:braket:[a-z0-9-]+:[0-9]{12}:quantum-task/[A-Za-z0-9-]+")
#: qiskit-braket-provider joins the ARNs of one job's tasks with this.
_TASK_ID_DIVIDER = ";"
#: A published shot range this wide means "no limit" (the local simulator says 2**63 - 1).
_UNBOUNDED_SHOTS = 1 << 62
_CREDENTIAL_CODES = {"UnrecognizedClientException", "InvalidSignatureException", "ExpiredToken",
                     "ExpiredTokenException", "InvalidClientTokenId", "AccessDeniedException"}
_NOT_FOUND_CODES = {"ResourceNotFoundException", "ValidationException"}
#: What braket's AwsDevice.get_devices warns (and otherwise swallows) when a region refuses a search.
_REGION_REFUSED = re.compile(r"(?P<code>\w+): Unable to search region '(?P<region>[\w-]+)' for devices")


def _require(module: str, purpose: str):
    from .backends import _import  # late: backends imports this module

    return _import(module, "braket", purpose)


# --------------------------------------------------------------------------------------------
# Resolving devices


class _AwsLookup:
    """The service-lookup boundary: device names through ``BraketProvider``, ARNs directly.

    Same call shape as qiskit-braket-provider's ``BraketProvider`` (``get_backend(name)``,
    ``get_backend(arns=[arn])``, ``backends()``), so a ``BraketProvider`` or a test stand-in can
    take its place as ``resolve_braket(..., provider=...)``.
    """

    def get_backend(self, name: str | None = None, *, arns: list[str] | None = None):
        if arns:
            from qiskit_braket_provider.providers.braket_backend import BraketAwsBackend

            return BraketAwsBackend(arn=arns[0])
        from qiskit_braket_provider import BraketProvider

        return BraketProvider().get_backend(name)

    def backends(self):
        from qiskit_braket_provider import BraketProvider

        return BraketProvider().backends()


def resolve_braket(spec: str, name: str | None, *, provider: Any = None) -> dict:
    """The :class:`~qkd_circuits.quantum.backends.Backend` fields for a Braket device.

    Args:
        spec: the spec string being resolved (``"braket-local"``, ``"braket:sv1"``...), for messages.
        name: ``None`` for the local state-vector simulator; ``"sv1"``, ``"dm1"``, ``"tn1"``
            (any case), a device name (``"Garnet"``, ``"Aria 1"``) or a device ARN.
        provider: what looks devices up (default: AWS through qiskit-braket-provider); any
            object with ``get_backend(name)`` and ``get_backend(arns=[arn])`` returning a
            qiskit-braket-provider backend, and optionally ``backends()`` to list what is known.

    Returns:
        ``{"kind", "name", "num_qubits", "runs_noise_instructions", "resumable", "max_shots",
        "_device"}``: ``kind`` is ``"braket-local"`` or ``"braket"``; ``resumable`` is true for
        AWS devices (their tasks live in AWS); ``max_shots`` is the device's published largest
        shot count per task (``None``: no limit); ``_device`` the qiskit-braket-provider backend.

    Raises:
        MissingExtraError: the ``braket`` extra is not installed.
        ConfigurationError: no device has that name or ARN, or the ARN is malformed.
        BackendError: AWS could not be used: boto3 found no credentials, no region is set, the
            endpoint could not be reached, or AWS refused the credentials.
    """
    braket_backend = _require("qiskit_braket_provider.providers.braket_backend",
                              "An Amazon Braket backend")
    if name is None:
        import logging

        logging.getLogger("braket").setLevel(logging.ERROR)
        device = braket_backend.BraketLocalBackend(LOCAL_SIMULATOR)
        return {"kind": "braket-local", "name": device.name, "num_qubits": None,
                "runs_noise_instructions": False, "resumable": False,
                "max_shots": _max_shots(device), "_device": device}
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"{spec!r} names no Braket device; use e.g. braket:sv1 or braket:Garnet")
    name = name.strip()
    lookup = provider if provider is not None else _AwsLookup()
    arn = MANAGED_SIMULATORS.get(name.lower())
    if arn is None and name.startswith("arn:"):
        if not _DEVICE_ARN.fullmatch(name):
            raise ConfigurationError(
                f"{name!r} is not a Braket device ARN (they look like "
                "arn:aws:braket:us-east-1::device/qpu/<provider>/<device> or "
                "arn:aws:braket:::device/quantum-simulator/amazon/sv1)")
        arn = name
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            device = lookup.get_backend(arns=[arn]) if arn else lookup.get_backend(name)
        except Exception as exc:
            refused = _refused_regions(caught)
            raise _lookup_error(spec, name, arn, exc, lookup, refused) from None
        finally:
            for w in caught:  # pass on what the lookup warned about, except the folded-in refusals
                if not _REGION_REFUSED.match(str(w.message)):
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return {"kind": "braket", "name": device.name, "num_qubits": getattr(device, "num_qubits", None),
            "runs_noise_instructions": False, "resumable": True, "max_shots": _max_shots(device),
            "_device": device}


def _refused_regions(caught) -> dict[str, str]:
    """Region -> error code, for each region that refused the device search."""
    found = (_REGION_REFUSED.match(str(w.message)) for w in caught)
    return {m["region"]: m["code"] for m in found if m}


def _lookup_error(spec: str, name: str, arn: str | None, exc: Exception, lookup,
                  refused: dict[str, str] | None = None) -> Exception:
    """The typed error for a failed device lookup (never the credentials themselves)."""
    from botocore import exceptions as boto

    from qiskit.providers.exceptions import QiskitBackendNotFoundError

    where = f"Amazon Braket device {name!r}" + (f" ({arn})" if arn and arn != name else "")
    if isinstance(exc, QiskitBackendNotFoundError):
        if "More than one" in str(exc):
            return ConfigurationError(f"more than one Braket device is called {name!r}; give its ARN")
        if refused:  # the search failed there, so "not found" may only mean "not searched"
            regions = ", ".join(f"{region} ({code})" for region, code in sorted(refused.items()))
            return BackendError(f"could not find {where}: AWS refused the device search in {regions}; "
                                "check the credentials boto3 found and their Braket permissions")
        return ConfigurationError(f"unknown {where}{_known_devices(lookup)}")
    if isinstance(exc, boto.NoCredentialsError):
        return BackendError(
            f"could not look up {where}: boto3 found no AWS credentials. Set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or run `aws configure` / `aws sso login`")
    if isinstance(exc, boto.NoRegionError):
        return BackendError(
            f"could not look up {where}: no AWS region is configured. Set AWS_REGION (or "
            "AWS_DEFAULT_REGION, or region in ~/.aws/config) to a Braket region, e.g. us-east-1")
    if isinstance(exc, (boto.EndpointConnectionError, boto.ConnectTimeoutError, boto.ReadTimeoutError,
                        boto.HTTPClientError)):
        return BackendError(f"could not look up {where}: the Amazon Braket endpoint could not be "
                            f"reached over the network ({type(exc).__name__})")
    if isinstance(exc, boto.ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in _NOT_FOUND_CODES:
            return ConfigurationError(f"unknown {where}: AWS answered {code}{_known_devices(lookup)}")
        if code in _CREDENTIAL_CODES:
            return BackendError(f"could not look up {where}: AWS refused the credentials boto3 "
                                f"found ({code}); check them and their Braket permissions")
        return BackendError(f"could not look up {where}: AWS answered {code or type(exc).__name__}")
    if isinstance(exc, boto.BotoCoreError):
        return BackendError(f"could not look up {where}: {type(exc).__name__}: {exc}")
    return BackendError(f"could not look up {where}: {type(exc).__name__}: {exc}")


def _known_devices(lookup) -> str:
    """``"; known: ..."`` from the lookup's device list, or a pointer where it cannot list."""
    try:
        names = sorted({b.name for b in lookup.backends()})
    except Exception:  # listing is a courtesy: a second failure must not hide the first
        names = []
    known = ", ".join([*MANAGED_SIMULATORS, *names])
    return f"; known: {known}" if names else f"; known: {known}, or any device ARN"


def _properties(device: Any):
    """The Braket device properties behind a qiskit-braket-provider backend, a Braket device or
    a properties object itself (``None`` where there are none)."""
    for candidate in (getattr(device, "_device", None), device):
        props = getattr(candidate, "properties", None)
        if props is not None and not callable(props):
            return props
    return device if hasattr(device, "service") else None


def _max_shots(device: Any) -> int | None:
    service = getattr(_properties(device), "service", None)
    shots_range = getattr(service, "shotsRange", None)
    if not shots_range:
        return None
    top = int(shots_range[1])
    return None if top >= _UNBOUNDED_SHOTS else top


def _is_local(device: Any) -> bool:
    from braket.devices import LocalSimulator
    from braket.emulation import Emulator

    inner = getattr(device, "_device", None)
    return isinstance(inner, (LocalSimulator, Emulator))


# --------------------------------------------------------------------------------------------
# Samplers


def _seed_sequence(seed: int | None) -> np.random.SeedSequence:
    if seed is None:
        return np.random.SeedSequence(secrets.randbits(LOCAL_SEED_BITS))
    return np.random.SeedSequence(seed)  # sim-rng: a public simulation seed


def _check_seed(seed: Any) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigurationError(f"seed must be a whole number or None, got {seed!r}")
    seed = int(seed)
    if seed < -(1 << 63):
        raise ConfigurationError(f"seed must be >= -2**63 (a signed 64-bit value) or >= 0, got {seed}")
    return seed + (1 << 64) if seed < 0 else seed


def _seeded_class(base: type) -> type:
    """``base`` (a default-simulator class) whose simulations sample from a given generator."""

    class Seeded(base):
        def __init__(self, generator: np.random.Generator) -> None:
            super().__init__()
            self._qkd_generator = generator

        def initialize_simulation(self, **kwargs):
            simulation = super().initialize_simulation(**kwargs)
            if not isinstance(getattr(simulation, "_rng_generator", None), np.random.Generator):
                raise ConfigurationError(_UNSEEDABLE.format(name=base.__name__))
            simulation._rng_generator = self._qkd_generator
            return simulation

    Seeded.__name__ = Seeded.__qualname__ = f"Seeded{base.__name__}"
    return Seeded


_UNSEEDABLE = ("this version of amazon-braket-default-simulator's {name} keeps no numpy generator "
               "in _rng_generator, so qkd_circuits cannot seed it; run braket-local without a seed, "
               "or use --backend aer for seeded runs")


class SeededLocalSampler(BaseSamplerV2):
    """A ``BaseSamplerV2`` on the Braket local simulator whose every ``run()`` honours ``seed``.

    Each ``run()`` builds a fresh ``LocalSimulator`` around a seeded subclass of the simulator
    (see the module docstring for exactly what is seeded) and runs the pubs through
    qiskit-braket-provider's ``BraketSampler``; the job it returns is that sampler's job.
    ``seed=None`` seeds each run with :data:`LOCAL_SEED_BITS` fresh bits from :mod:`secrets`.
    """

    def __init__(self, device: Any, simulator_class: type, *, seed: int | None, **options) -> None:
        self._device = device
        self._seeded = _seeded_class(simulator_class)
        self._seed = seed
        self._options = options

    def __repr__(self) -> str:  # the seed stays out: with it anyone recomputes the samples
        return (f"SeededLocalSampler({self._device.name!r}, "
                f"seed={'given' if self._seed is not None else 'secret per run'})")

    def run(self, pubs: Iterable, *, shots: int | None = None):
        from braket.devices import LocalSimulator
        from qiskit_braket_provider.providers.braket_backend import BraketLocalBackend
        from qiskit_braket_provider.providers.braket_sampler import BraketSampler

        # A generator, simulator and LocalSimulator of this run's own: runs share nothing.
        generator = np.random.default_rng(_seed_sequence(self._seed))  # sim-rng when seeded
        backend = BraketLocalBackend(self._device.name, device=LocalSimulator(self._seeded(generator)),
                                     target=self._device.target, qubit_labels=self._device.qubit_labels)
        sampler = BraketSampler(backend, **self._options)
        return sampler.run(pubs) if shots is None else sampler.run(pubs, shots=shots)


def braket_sampler(device: Any, *, seed: int | None, **options):
    """A ``BaseSamplerV2`` for ``device`` (a backend from :func:`resolve_braket`).

    On the local simulator a :class:`SeededLocalSampler`: the same ``seed`` gives the same
    samples, different seeds different ones, ``None`` a fresh secret seed per run.  On AWS
    devices qiskit-braket-provider's ``BraketSampler``; they take no seed.

    Raises:
        ConfigurationError: a seed for an AWS device or for a local device that cannot be seeded,
            or a malformed seed.
        BackendError: the device cannot take program sets, which the Braket sampler needs.
    """
    sampler_module = _require("qiskit_braket_provider.providers.braket_sampler", "The Braket sampler")
    if device is None:
        raise ConfigurationError("no Braket device given")
    seed = _check_seed(seed)
    if not _is_local(device):
        if seed is not None:
            raise ConfigurationError(
                f"{device.name} runs in AWS, which takes no simulator seed; leave out --seed "
                "there (it would be ignored), or use braket-local for seeded runs")
        try:
            return sampler_module.BraketSampler(device, **options)
        except ValueError as exc:
            raise BackendError(f"{device.name} cannot run qiskit-braket-provider's sampler: {exc}") from None
    from braket.default_simulator import DensityMatrixSimulator, StateVectorSimulator

    delegate = getattr(getattr(device, "_device", None), "_delegate", None)
    base = next((cls for cls in (StateVectorSimulator, DensityMatrixSimulator)
                 if type(delegate) is cls), None)
    if base is None:
        raise ConfigurationError(
            f"{device.name} is a local Braket device that qkd_circuits cannot seed "
            f"({type(delegate).__name__}); only the local state-vector and density-matrix "
            "simulators take seeds")
    seeded = _seeded_class(base)(np.random.default_rng(0))  # sim-rng: probe only, never sampled
    seeded.initialize_simulation(qubit_count=1, shots=1, batch_size=1)  # raises if unseedable
    return SeededLocalSampler(device, base, seed=seed, **options)


# --------------------------------------------------------------------------------------------
# Tasks


def _aws_task(arn: str, program_set: Any):
    from braket.aws import AwsQuantumTask

    return AwsQuantumTask(arn=arn, task_specification=program_set)


def braket_task(device: Any, task_id: str, *, pubs: Iterable | None = None, shots: int | None = None,
                lookup_task: Any = None):
    """The job of a Braket task (or of the ``;``-joined tasks of one sampler job) by id.

    ``task_id`` is what the sampler job's ``job_id()`` returned: one task ARN, or several joined
    by ``;`` where qiskit-braket-provider split a large program set.  ``pubs`` and ``shots``
    are those the job ran (the sampler's ``run(pubs, shots=shots)``): with them the returned
    ``BraketPrimitiveTask`` rebuilds the program set and its result is the same
    ``PrimitiveResult`` the original job gives.  Without them it still answers ``status()``,
    ``cancel()`` and ``job_id()``, and ``result()`` raises ``ConfigurationError``.

    ``lookup_task(arn, program_set)`` makes one task object (default:
    ``AwsQuantumTask(arn=..., task_specification=...)``, which calls AWS only when asked for
    its state or results); tests put a stand-in there.

    Raises:
        BackendError: ``device`` is a local simulator (its tasks end with their process).
        ConfigurationError: ``task_id`` holds no Braket task ARN, or the ARNs do not match the
            number of program sets ``pubs`` make on this device.
    """
    _require("qiskit_braket_provider.providers.braket_primitive_task", "A Braket task")
    if _is_local(device):
        raise BackendError(
            f"local tasks end with their process: {device.name} ran task {task_id!r} on this "
            "machine, and nothing outside the process that ran it holds its results")
    if not isinstance(task_id, str):
        raise ConfigurationError(f"a Braket task id is a string of task ARNs, got {type(task_id).__name__}")
    arns = [part.strip() for part in task_id.split(_TASK_ID_DIVIDER)]
    bad = [arn for arn in arns if not _TASK_ARN.fullmatch(arn)]
    if bad:
        raise ConfigurationError(
            f"{bad[0]!r} is not a Braket task ARN (they look like "
            "arn:aws:braket:<region>:<account>:quantum-task/<id>)")
    lookup_task = lookup_task or _aws_task
    from qiskit_braket_provider.providers.braket_primitive_task import BraketPrimitiveTask

    if pubs is None:
        class Untranslated(BraketPrimitiveTask):
            def result(self):
                raise ConfigurationError(
                    f"task {task_id} was looked up without the pubs it ran; pass pubs= and "
                    "shots= to braket_task to read its results")

        return Untranslated([lookup_task(arn, None) for arn in arns], None, None, None)
    program_set, translate, limit = _program_set(device, pubs, shots)
    parts, index_map = program_set.split(limit)  # as qiskit-braket-provider splits for AWS
    if len(parts) != len(arns):
        raise ConfigurationError(
            f"these pubs make {len(parts)} Braket task(s) on {device.name}, but the id holds "
            f"{len(arns)} task ARN(s): they are not the pubs task {arns[0]} ran")
    tasks = [lookup_task(arn, part) for arn, part in zip(arns, parts)]
    return BraketPrimitiveTask(tasks, translate, program_set, index_map)


def _program_set(device: Any, pubs: Iterable, shots: int | None):
    """The program set, result translator and executables limit of ``BraketSampler(device).run``.

    Rebuilt from qiskit-braket-provider 0.27's own steps (``SamplerPub.coerce``, the sampler's
    ``_translate_pub`` and ``_translate_result``), so a resumed job reads its results exactly as
    the original job would.
    """
    from braket.program_sets import ProgramSet
    from qiskit.primitives.containers.sampler_pub import SamplerPub
    from qiskit_braket_provider.providers import braket_sampler as bs

    try:
        sampler = bs.BraketSampler(device)
    except ValueError as exc:
        raise BackendError(f"{device.name} cannot run qiskit-braket-provider's sampler: {exc}") from None
    coerced = [SamplerPub.coerce(pub) for pub in pubs]
    if not coerced:
        raise ConfigurationError("no pubs given")
    pub_shots = bs.BraketSampler._pub_shots(coerced)
    per_executable = pub_shots if pub_shots is not None else (shots or bs._DEFAULT_SHOTS)
    bindings, indices = zip(*(sampler._translate_pub(pub) for pub in coerced))
    program_set = ProgramSet(list(bindings), shots_per_executable=per_executable)
    metadata = bs._JobMetadata(pubs=coerced, parameter_indices=list(indices), shots=per_executable)
    return (program_set, lambda result: bs.BraketSampler._translate_result(result, metadata),
            device._max_program_set_executables)


# --------------------------------------------------------------------------------------------
# Cost


def braket_cost_estimate(device: Any, *, shots: int, tasks: int = 1) -> dict | None:
    """What running ``shots`` shots in ``tasks`` tasks costs, from the device's published price.

    Reads only ``properties.service.deviceCost`` (``price`` in US dollars per ``unit``), the
    price the device publishes in its Braket properties; nothing is looked up elsewhere and
    no price is assumed.  ``shots`` is the total over all ``tasks``.

    Returns:
        ``None`` when the device publishes no ``deviceCost`` (the local simulator, and AWS
        devices whose properties carry none: :func:`describe_cost` says so).  Otherwise
        ``{"price", "unit", "shots", "tasks", "estimate_usd", "source", "note"}``: per shot the
        estimate is ``price * shots``, per task ``price * tasks``; for a price per minute or
        hour (billed by run time, unknown before the run) or an unknown unit it is ``None``.
        ``note`` says what the estimate leaves out (AWS bills QPUs a per-task fee besides the
        per-shot price, and that fee is not among the device properties).

    Raises:
        ConfigurationError: ``shots`` < 0 or ``tasks`` < 1, or not whole numbers.
    """
    shots = _whole("shots", shots, 0)
    tasks = _whole("tasks", tasks, 1)
    props = _properties(device)
    service = getattr(props, "service", None)
    cost = getattr(service, "deviceCost", None)
    if cost is None:
        return None
    price, unit = float(cost.price), str(cost.unit).strip().lower()
    name = getattr(device, "name", None) or getattr(getattr(device, "_device", None), "name", None)
    updated = getattr(service, "updatedAt", None)
    source = (f"{name + ': ' if name else ''}device properties service.deviceCost"
              + (f" (properties updated {updated.isoformat()})" if updated is not None else ""))
    if unit == "shot":
        estimate = price * shots
        note = (f"{shots} shots x ${price:g}/shot; any per-task fee is not in the device "
                f"properties and is not included (see {PRICING_PAGE})")
    elif unit == "task":
        estimate = price * tasks
        note = f"{tasks} task(s) x ${price:g}/task"
    elif unit in ("minute", "hour"):
        estimate = None
        note = (f"billed at ${price:g} per {unit} of run time, which is not known before the run; "
                "no estimate")
    else:
        estimate = None
        note = f"the device publishes a price per {cost.unit!r}, a unit qkd_circuits does not estimate"
    return {"price": price, "unit": unit, "shots": shots, "tasks": tasks,
            "estimate_usd": None if estimate is None else round(estimate, 6),
            "source": source, "note": note}


def describe_cost(estimate: dict | None, device_name: str) -> str:
    """One line for a cost estimate, saying so plainly where there is none."""
    if estimate is None:
        return (f"no cost estimate: {device_name} publishes no price in its Braket device "
                f"properties (see {PRICING_PAGE})")
    if estimate["estimate_usd"] is None:
        return f"no cost estimate for {device_name}: {estimate['note']}"
    return f"estimated cost on {device_name}: ${estimate['estimate_usd']:.2f} ({estimate['note']})"


def _whole(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigurationError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)
