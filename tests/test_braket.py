"""Amazon Braket beyond the local simulator (qkd_circuits.quantum.braket), all offline.

The local simulator runs for real; AWS is replaced only at the service-lookup boundary: a
stand-in provider's ``get_backend``, a stand-in device's ``run_batch`` and a stand-in task
lookup.  The default lookup is exercised for real with no credentials or no region, which
botocore refuses before sending anything (instance metadata disabled, no config files).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("qiskit_braket_provider")

from botocore import exceptions as boto  # noqa: E402  (after the importorskip)
from braket.device_schema import DeviceServiceProperties  # noqa: E402
from braket.devices import LocalSimulator  # noqa: E402
from qiskit import QuantumCircuit  # noqa: E402
from qiskit.circuit import Parameter  # noqa: E402
from qiskit.providers import JobStatus  # noqa: E402
from qiskit.providers.exceptions import QiskitBackendNotFoundError  # noqa: E402

import qkd_circuits as qkd  # noqa: E402
from qkd_circuits.quantum import braket as qb  # noqa: E402

SHOTS = 256


@pytest.fixture(scope="module")
def local():
    return qb.resolve_braket("braket-local", None)["_device"]


def _h3() -> QuantumCircuit:
    qc = QuantumCircuit(3)
    qc.h(range(3))
    qc.measure_all()
    return qc


def _bits(device, seed, circuit=None, shots=SHOTS) -> np.ndarray:
    job = qb.braket_sampler(device, seed=seed).run([circuit or _h3()], shots=shots)
    return job.result()[0].data.meas.to_bool_array()


def _rotations(bindings: int = 8):
    """One qubit ry(θ) with θ alternating 0, π: binding k measures k % 2 on every shot."""
    theta = Parameter("theta")
    qc = QuantumCircuit(1)
    qc.ry(theta, 0)
    qc.measure_all()
    values = np.array([[np.pi * (k % 2)] for k in range(bindings)])
    return (qc, values), np.arange(bindings) % 2


# ---- seeds on the local simulator ------------------------------------------------------------

def test_same_seed_same_samples_other_seed_other_samples(local):
    a, b, c = _bits(local, 3), _bits(local, 3), _bits(local, 4)
    assert a.shape == (SHOTS, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)  # equal by chance with probability 2^-768
    # Still fair coins: 768 bits, mean within 5 sigma (0.018) of 1/2.
    assert abs(a.mean() - 0.5) < 5 * np.sqrt(0.25 / a.size)


def test_every_run_of_a_seeded_sampler_starts_from_its_seed(local):
    sampler = qb.braket_sampler(local, seed=11)
    h = QuantumCircuit(1)
    h.h(0)
    h.measure_all()
    first = sampler.run([h], shots=SHOTS).result()[0].data.meas.to_bool_array()
    second = sampler.run([h], shots=SHOTS).result()[0].data.meas.to_bool_array()
    assert np.array_equal(first, second)
    assert "11" not in repr(sampler) and "seed=given" in repr(sampler)


def test_parameter_bindings_are_seeded_and_in_order(local):
    theta = Parameter("theta")
    qc = QuantumCircuit(1)
    qc.ry(theta, 0)
    qc.measure_all()
    values = np.array([[0.0], [np.pi], [np.pi / 2], [np.pi / 2]])
    runs = [qb.braket_sampler(local, seed=5).run([(qc, values)], shots=SHOTS).result()[0].data.meas
            .to_bool_array() for _ in range(2)]
    assert runs[0].shape == (4, SHOTS, 1)
    assert np.array_equal(runs[0], runs[1])
    assert runs[0][0].sum() == 0 and runs[0][1].all()  # θ = 0 and π are certain
    assert not np.array_equal(runs[0][2], runs[0][3])  # two θ = π/2 bindings draw different shots


def test_unseeded_runs_differ_and_draw_their_seed_from_secrets(local, monkeypatch):
    assert not np.array_equal(_bits(local, None), _bits(local, None))
    widths = []

    def fixed(bits):
        widths.append(bits)
        return 12345

    monkeypatch.setattr(qb.secrets, "randbits", fixed)
    assert np.array_equal(_bits(local, None), _bits(local, None))  # so the seed is secrets'
    assert widths == [qb.LOCAL_SEED_BITS, qb.LOCAL_SEED_BITS] and qb.LOCAL_SEED_BITS == 128


def test_signed_64_bit_seeds_read_as_twos_complement(local):
    assert np.array_equal(_bits(local, -5), _bits(local, 2**64 - 5))
    assert np.array_equal(_bits(local, np.int64(9)), _bits(local, 9))


@pytest.mark.parametrize("seed, match", [
    (-(2**63) - 1, "signed 64-bit"),
    ("3", "whole number or None"),
    (True, "whole number or None"),
    (2.0, "whole number or None"),
])
def test_bad_seeds(local, seed, match):
    with pytest.raises(qkd.ConfigurationError, match=match):
        qb.braket_sampler(local, seed=seed)


def test_a_simulator_that_cannot_be_seeded_is_refused(local, monkeypatch):
    from braket.default_simulator import StateVectorSimulator

    monkeypatch.setattr(StateVectorSimulator, "initialize_simulation", lambda self, **kw: SimpleNamespace())
    with pytest.raises(qkd.ConfigurationError, match="cannot seed it; run braket-local without a seed"):
        qb.braket_sampler(local, seed=3)


def test_seeded_runs_leave_other_simulators_unseeded(local):
    _bits(local, 3)
    plain = [LocalSimulator("braket_sv").run(_braket_h3(), shots=SHOTS).result().measurements
             for _ in range(2)]
    assert not np.array_equal(plain[0], plain[1])


def _braket_h3():
    from braket.circuits import Circuit

    return Circuit().h(0).h(1).h(2)


def test_submit_on_braket_local_with_a_seed_is_reproducible():
    # The bug: two runs with --seed 3 on braket-local differed, both labelled seed 3 (the
    # provider's sampler draws from an unseeded numpy generator; qrng mode's bits are those draws).
    records = [qkd.submit(300, backend="braket-local", seed=seed).result() for seed in (3, 3, 4)]
    fields = ("alice_bits", "alice_bases", "bob_bases", "bob_results", "detected")
    for name in fields:
        assert np.array_equal(getattr(records[0], name), getattr(records[1], name)), name
    assert not all(np.array_equal(getattr(records[0], n), getattr(records[2], n)) for n in fields)
    assert records[0].provenance.seed == 3


# ---- resolving devices -------------------------------------------------------------------------

class StandInProvider:
    """The lookup boundary: answers like BraketProvider, with local-simulator-backed devices."""

    def __init__(self, names=("Garnet", "Aria 1"), arns=tuple(qb.MANAGED_SIMULATORS.values())):
        from qiskit_braket_provider.providers.braket_backend import BraketLocalBackend

        self.devices = {name: BraketLocalBackend("braket_sv") for name in names}
        self.arns = set(arns) | {"arn:aws:braket:eu-north-1::device/qpu/iqm/Garnet"}
        self.calls = []

    def get_backend(self, name=None, *, arns=None):
        self.calls.append(arns[0] if arns else name)
        if arns:
            if arns[0] not in self.arns:
                raise QiskitBackendNotFoundError("No backend matches the criteria")
            return self.devices["Garnet"]
        if name not in self.devices:
            raise QiskitBackendNotFoundError("No backend matches the criteria")
        return self.devices[name]

    def backends(self):
        return [SimpleNamespace(name=n) for n in self.devices]


def test_braket_local_fields():
    fields = qb.resolve_braket("braket-local", None)
    assert {k: v for k, v in fields.items() if k != "_device"} == {
        "kind": "braket-local", "name": "braket_sv", "num_qubits": None,
        "runs_noise_instructions": False, "resumable": False, "max_shots": None}


@pytest.mark.parametrize("name, looked_up", [
    ("Garnet", "Garnet"),
    ("Aria 1", "Aria 1"),
    ("sv1", qb.MANAGED_SIMULATORS["sv1"]),
    ("DM1", qb.MANAGED_SIMULATORS["dm1"]),
    ("tn1", "arn:aws:braket:::device/quantum-simulator/amazon/tn1"),
    ("arn:aws:braket:eu-north-1::device/qpu/iqm/Garnet", "arn:aws:braket:eu-north-1::device/qpu/iqm/Garnet"),
])
def test_devices_by_name_and_arn(name, looked_up):
    provider = StandInProvider()
    fields = qb.resolve_braket(f"braket:{name}", name, provider=provider)
    assert provider.calls == [looked_up]
    assert fields["kind"] == "braket" and fields["resumable"] is True
    assert fields["runs_noise_instructions"] is False
    assert fields["_device"] is provider.devices.get(name, provider.devices["Garnet"])


def test_published_limits_are_read_from_the_device_properties():
    service = DeviceServiceProperties.parse_obj({
        "executionWindows": [{"executionDay": "Everyday", "windowStartHour": "00:00",
                              "windowEndHour": "23:59"}],
        "shotsRange": [1, 100000]})
    properties = SimpleNamespace(service=service)
    fake = SimpleNamespace(name="Garnet", num_qubits=20, _device=SimpleNamespace(properties=properties))
    fields = qb.resolve_braket("braket:Garnet", "Garnet",
                               provider=SimpleNamespace(get_backend=lambda name=None, arns=None: fake))
    assert (fields["name"], fields["num_qubits"], fields["max_shots"]) == ("Garnet", 20, 100000)


def test_unknown_device_lists_the_known_ones():
    with pytest.raises(qkd.ConfigurationError,
                       match=r"unknown Amazon Braket device 'Nowhere'; known: sv1, dm1, tn1, Aria 1, Garnet$"):
        qb.resolve_braket("braket:Nowhere", "Nowhere", provider=StandInProvider())
    arn = "arn:aws:braket:us-west-1::device/qpu/nobody/none"
    with pytest.raises(qkd.ConfigurationError, match=f"unknown Amazon Braket device '{arn}'"):
        qb.resolve_braket(f"braket:{arn}", arn, provider=StandInProvider())


@pytest.mark.parametrize("name, match", [
    ("arn:aws:s3:::bucket", "is not a Braket device ARN"),
    ("arn:aws:braket:us-east-1:123456789012:quantum-task/abc", "is not a Braket device ARN"),
    ("  ", "names no Braket device"),
])
def test_malformed_names_are_refused_before_any_lookup(name, match):
    provider = StandInProvider()
    with pytest.raises(qkd.ConfigurationError, match=match):
        qb.resolve_braket(f"braket:{name}", name, provider=provider)
    assert provider.calls == []


def _raising(exc):
    def get_backend(name=None, arns=None):
        raise exc

    return SimpleNamespace(get_backend=get_backend)


@pytest.mark.parametrize("exc, error, match", [
    (boto.NoCredentialsError(), qkd.BackendError, "boto3 found no AWS credentials"),
    (boto.NoRegionError(), qkd.BackendError, "no AWS region is configured. Set AWS_REGION"),
    (boto.EndpointConnectionError(endpoint_url="https://braket.us-east-1.amazonaws.com"),
     qkd.BackendError, "could not be reached over the network"),
    (boto.ClientError({"Error": {"Code": "UnrecognizedClientException", "Message": "bad"}}, "GetDevice"),
     qkd.BackendError, r"AWS refused the credentials boto3 found \(UnrecognizedClientException\)"),
    (boto.ClientError({"Error": {"Code": "ResourceNotFoundException", "Message": "no"}}, "GetDevice"),
     qkd.ConfigurationError, "unknown Amazon Braket device 'sv1' .* AWS answered ResourceNotFoundException"),
    (boto.ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow"}}, "GetDevice"),
     qkd.BackendError, "AWS answered ThrottlingException"),
])
def test_lookup_failures_say_which(exc, error, match):
    with pytest.raises(error, match=match):
        qb.resolve_braket("braket:sv1", "sv1", provider=_raising(exc))


def test_regions_that_refuse_the_search_are_named():
    import warnings

    def get_backend(name=None, arns=None):  # what AwsDevice.get_devices does on AccessDenied
        for region in ("us-east-1", "eu-north-1"):
            warnings.warn(f"AccessDeniedException: Unable to search region '{region}' for devices."
                          " Please check your settings or try again later.", stacklevel=1)
        raise QiskitBackendNotFoundError("No backend matches the criteria")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the folded-in warnings are not warned again
        with pytest.raises(qkd.BackendError, match=r"AWS refused the device search in eu-north-1 "
                           r"\(AccessDeniedException\), us-east-1 \(AccessDeniedException\)"):
            qb.resolve_braket("braket:Garnet", "Garnet", provider=SimpleNamespace(get_backend=get_backend))


@pytest.fixture
def no_aws_account(monkeypatch, tmp_path):
    """An environment where boto3 can find no credentials without asking anything over the network."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
                "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    return monkeypatch


def test_the_real_lookup_without_credentials(no_aws_account):
    no_aws_account.setenv("AWS_REGION", "us-east-1")
    with pytest.raises(qkd.BackendError, match="boto3 found no AWS credentials"):
        qb.resolve_braket("braket:sv1", "sv1")


def test_the_real_lookup_without_a_region(no_aws_account):
    with pytest.raises(qkd.BackendError, match="no AWS region is configured"):
        qb.resolve_braket("braket:sv1", "sv1")


def test_missing_extra_names_the_extra(monkeypatch):
    import sys

    provider = StandInProvider()
    monkeypatch.setitem(sys.modules, "qiskit_braket_provider.providers.braket_backend", None)
    with pytest.raises(qkd.MissingExtraError, match=r"pip install 'qkd_circuits\[braket\]'"):
        qb.resolve_braket("braket:sv1", "sv1", provider=provider)
    assert provider.calls == []


def test_aws_devices_take_no_seed():
    fake = SimpleNamespace(name="SV1", _device=SimpleNamespace(), _max_program_set_executables=100)
    with pytest.raises(qkd.ConfigurationError, match="SV1 runs in AWS, which takes no simulator seed"):
        qb.braket_sampler(fake, seed=3)


# ---- tasks -------------------------------------------------------------------------------------

def test_local_tasks_cannot_be_looked_up(local):
    job = qb.braket_sampler(local, seed=1).run([_h3()], shots=4)
    with pytest.raises(qkd.BackendError, match="local tasks end with their process"):
        qb.braket_task(local, job.job_id())


class StandInAws:
    """A device in AWS at the service boundary: run_batch runs each program set on the local
    simulator and hands back tasks with ARNs; max 3 executables per task, so 8 bindings split."""

    ARN = "arn:aws:braket:us-east-1:123456789012:quantum-task/{:04d}"

    def __init__(self, local):
        self.name, self.target, self.qubit_labels = "SV1", local.target, None
        self._max_program_set_executables = 3
        self._device = self
        self.submitted, self.cancelled = {}, []

    def run_batch(self, program_sets, shots):
        tasks = []
        for part in program_sets:
            arn = self.ARN.format(len(self.submitted))
            self.submitted[arn] = (part, LocalSimulator("braket_sv").run(part, shots=None).result())
            tasks.append(self.task(arn))
        return SimpleNamespace(tasks=tasks)

    def task(self, arn, part=None):
        aws = self

        class Task:
            id = arn

            def result(self):
                return aws.submitted[arn][1]

            def state(self):
                return "COMPLETED"

            def cancel(self):
                aws.cancelled.append(arn)

        if part is not None:  # what braket_task rebuilt is what the first process submitted
            assert part.to_ir() == self.submitted[arn][0].to_ir()
        return Task()


def test_a_new_process_collects_a_split_job_by_its_task_ids(local):
    aws = StandInAws(local)
    pub, expected = _rotations(8)
    job = qb.braket_sampler(aws, seed=None).run([pub], shots=16)
    task_id = job.job_id()
    assert task_id.count(";") == 2  # 8 executables in tasks of at most 3

    resumed = qb.braket_task(aws, task_id, pubs=[pub], shots=16, lookup_task=aws.task)
    assert resumed.job_id() == task_id and resumed.status() is JobStatus.DONE
    bits = resumed.result()[0].data.meas.to_bool_array()
    assert bits.shape == (8, 16, 1)
    assert np.array_equal(bits[:, :, 0], np.repeat(expected[:, None], 16, axis=1).astype(bool))
    assert np.array_equal(bits, job.result()[0].data.meas.to_bool_array())
    resumed.cancel()
    assert aws.cancelled == task_id.split(";")


@pytest.mark.parametrize("mode", ["prepared", "qrng"])
def test_a_braket_round_collected_from_its_handle(local, mode, monkeypatch, tmp_path):
    """submit on braket:sv1 -> handle file -> fresh objects from the file -> the same record.

    AWS is replaced at the two lookups only: the device (qb._AwsLookup.get_backend) and the
    task by ARN (qb._aws_task); everything from the handle onwards is the real code path."""
    aws = StandInAws(local)
    monkeypatch.setattr(qb._AwsLookup, "get_backend", lambda self, name=None, *, arns=None: aws)
    monkeypatch.setattr(qb, "_aws_task", aws.task)
    pending = qkd.submit(300, mode=mode, backend="braket:sv1")
    assert all(arn.startswith("arn:aws:braket:") for job in pending.job_ids for arn in job.split(";"))
    handle = pending.save(tmp_path / "round.npz")
    resumed = qkd.PendingExchange.load(handle)
    assert resumed.job_ids == pending.job_ids and resumed.status() == ["DONE"] * len(pending.job_ids)
    before, after = pending.result(), resumed.result()
    for name in ("alice_bits", "alice_bases", "bob_bases", "bob_results", "detected"):
        assert np.array_equal(getattr(before, name), getattr(after, name)), name
    assert after.provenance.backend == "braket:sv1" and len(after) == 300


def test_task_ids_that_do_not_fit(local):
    aws = StandInAws(local)
    pub, _ = _rotations(8)
    task_id = qb.braket_sampler(aws, seed=None).run([pub], shots=4).job_id()
    two = ";".join(task_id.split(";")[:2])
    with pytest.raises(qkd.ConfigurationError, match=r"make 3 Braket task\(s\) on SV1, but the id holds 2"):
        qb.braket_task(aws, two, pubs=[pub], shots=4, lookup_task=aws.task)
    with pytest.raises(qkd.ConfigurationError, match="'0f3e' is not a Braket task ARN"):
        qb.braket_task(aws, f"{task_id};0f3e", pubs=[pub], shots=4, lookup_task=aws.task)
    bare = qb.braket_task(aws, task_id, lookup_task=aws.task)
    assert bare.status() is JobStatus.DONE
    with pytest.raises(qkd.ConfigurationError, match="without the pubs it ran; pass pubs="):
        bare.result()


# ---- cost --------------------------------------------------------------------------------------

def _priced(price, unit):
    service = DeviceServiceProperties.parse_obj({
        "executionWindows": [{"executionDay": "Everyday", "windowStartHour": "00:00",
                              "windowEndHour": "23:59"}],
        "shotsRange": [1, 100000], "deviceCost": {"price": price, "unit": unit},
        "updatedAt": "2026-11-30T12:00:00"})
    return SimpleNamespace(name="Garnet", _device=SimpleNamespace(properties=SimpleNamespace(service=service)))


def test_cost_per_shot_and_per_task():
    per_shot = qb.braket_cost_estimate(_priced(0.00145, "shot"), shots=200_000, tasks=2)
    assert per_shot["estimate_usd"] == pytest.approx(290.0, rel=1e-12)
    assert (per_shot["price"], per_shot["unit"], per_shot["shots"], per_shot["tasks"]) == (0.00145, "shot", 200_000, 2)
    assert per_shot["source"] == ("Garnet: device properties service.deviceCost "
                                  "(properties updated 2026-11-30T12:00:00)")
    assert "per-task fee is not in the device properties" in per_shot["note"]
    assert qb.describe_cost(per_shot, "Garnet").startswith("estimated cost on Garnet: $290.00")
    per_task = qb.braket_cost_estimate(_priced(0.3, "task"), shots=1000, tasks=3)
    assert per_task["estimate_usd"] == pytest.approx(0.9, rel=1e-12)


def test_cost_billed_by_time_has_no_estimate():
    per_minute = qb.braket_cost_estimate(_priced(0.075, "minute"), shots=1000, tasks=1)
    assert per_minute["estimate_usd"] is None and per_minute["price"] == 0.075
    assert qb.describe_cost(per_minute, "SV1") == (
        "no cost estimate for SV1: billed at $0.075 per minute of run time, which is not known "
        "before the run; no estimate")


def test_no_published_price_no_estimate(local):
    assert qb.braket_cost_estimate(local, shots=1000, tasks=1) is None
    assert qb.describe_cost(None, "braket_sv").startswith(
        "no cost estimate: braket_sv publishes no price in its Braket device properties")


@pytest.mark.parametrize("shots, tasks, match", [
    (-1, 1, "shots must be a whole number >= 0"),
    (10, 0, "tasks must be a whole number >= 1"),
    (1.5, 1, "shots must be a whole number"),
])
def test_cost_misuse(shots, tasks, match):
    with pytest.raises(qkd.ConfigurationError, match=match):
        qb.braket_cost_estimate(_priced(0.3, "task"), shots=shots, tasks=tasks)
