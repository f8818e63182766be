"""The same BB84 circuits on other samplers: an IBM fake device (local testing mode, with the
device's noise), the Braket local simulator, and the IBM submit-now-collect-later path."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

import qkd_circuits as qkd
from conftest import assert_rate, sifted_stats

N = 20_000
#: fake_nairobi's calibration: readout errors of a few percent and ~1% per CX; over the ~10
#: two-qubit gates of the transpiled qrng circuit with Eve that adds up to <= 12% extra QBER.
DEVICE_NOISE_ALLOWANCE = 0.12


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("mode", ["qrng", "prepared"])
@pytest.mark.parametrize("eve, ideal_qber", [(None, 0.0), (qkd.InterceptResend(1.0), 0.25)])
def test_fake_ibm_device_matches_theory_within_device_noise(mode, eve, ideal_qber):
    rec = qkd.run_exchanges(N, mode=mode, backend="fake:nairobi", eve=eve, seed=21)
    assert rec.provenance.backend_name == "fake_nairobi"
    s = sifted_stats(rec)
    assert_rate(s["sifted"] / N, 0.5, N, extra=0.02)  # basis choices: readout noise only on qrng ancillas
    assert ideal_qber - 0.02 <= s["qber"] <= ideal_qber + DEVICE_NOISE_ALLOWANCE
    if eve is None:
        assert s["qber"] > 0.005, "the fake device's noise model should show up in the QBER"


def test_fake_device_transpiles_to_its_isa_and_sizes_lanes_to_the_device():
    rec = qkd.run_exchanges(3000, mode="prepared", backend="fake:nairobi", lanes="device", seed=1)
    assert rec.provenance.lanes == 3  # 7 qubits, one per lane, half left for routing
    assert set(rec.provenance.circuit["ops"]) <= {"rz", "sx", "x", "cx", "ecr", "measure", "barrier"}
    with pytest.raises(qkd.ConfigurationError, match="needs 8 qubits but fake_nairobi has 7"):
        qkd.run_exchanges(100, mode="qrng", backend="fake:nairobi", lanes=2)


@pytest.mark.parametrize("mode", ["qrng", "prepared"])
def test_braket_local_simulator_matches_theory(mode):
    for eve, channel, qber in [
        (None, None, 0.0),
        (qkd.InterceptResend(1.0), None, 0.25),
        (qkd.EntanglingProbe(0.5), None, qkd.EntanglingProbe(0.5).expected_qber()),
        (None, qkd.Channel(misalignment=0.1), 0.1),
    ]:
        rec = qkd.run_exchanges(N, mode=mode, backend="braket-local", eve=eve, channel=channel, seed=22)
        s = sifted_stats(rec)
        assert_rate(s["qber"], qber, s["sifted"])
        assert_rate(s["sifted"] / N, 0.5, N)


def test_braket_local_detection_with_loss_and_dark_counts():
    det = qkd.Detector(efficiency=0.3, dark_count_probability=0.1)
    rec = qkd.run_exchanges(N, mode="qrng", backend="braket-local", detector=det, seed=23)
    p_click = 1 - 0.7 * 0.9
    assert_rate(rec.detected.mean(), p_click, N)
    s = sifted_stats(rec)
    assert_rate(s["qber"], 0.1 / 2 / p_click, s["sifted"])


def test_noise_instructions_are_refused_off_aer():
    with pytest.raises(qkd.ConfigurationError, match="cannot run them"):
        qkd.run_exchanges(100, backend="braket-local", channel=qkd.Channel(depolarizing=0.1))


@pytest.mark.parametrize("spec, match", [
    ("fake:nowhere", "unknown fake backend 'nowhere'; known: "),
    ("quantinuum", "unknown backend 'quantinuum'"),
    ("aer:gpu", "unknown backend 'aer:gpu'"),
])
def test_unknown_backends(spec, match):
    with pytest.raises(qkd.ConfigurationError, match=match):
        qkd.resolve_backend(spec)


def test_missing_extra_names_the_extra(monkeypatch):
    # A None entry in sys.modules makes the import fail as if the package were not installed.
    for name in ("qiskit_braket_provider", "qiskit_braket_provider.providers",
                 "qiskit_braket_provider.providers.braket_backend"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(qkd.MissingExtraError, match=r"pip install 'qkd_circuits\[braket\]'"):
        qkd.resolve_backend("braket-local")


def test_local_jobs_are_saved_for_later_only_with_their_samples(tmp_path):
    pending = qkd.submit(100, backend="aer", seed=1)
    with pytest.raises(qkd.BackendError, match=r"live in this process.*save\(path, samples=True\)"):
        pending.save(tmp_path / "h.npz")
    record = pending.result()
    assert len(record) == 100
    resumed = qkd.PendingExchange.load(pending.save(tmp_path / "h.npz", samples=True))
    assert resumed.status() == ["DONE"] and resumed.job_ids == pending.job_ids
    np.testing.assert_array_equal(resumed.result().bob_results, record.bob_results)


class _RuntimeServiceStandIn:
    """Answers the two QiskitRuntimeService calls the resume path makes (``backend(name)`` and
    ``job(id)``) from this process, with a fake device: the lookup is the only thing stood in
    for; transpilation, the Runtime sampler in a Batch, and record assembly are the real code."""

    def __init__(self, device):
        self.device = device
        self.jobs = {}

    def backend(self, name):
        assert name == self.device.name
        return self.device

    def job(self, job_id):
        return self.jobs[job_id]


@pytest.mark.parametrize("mode", ["prepared", "qrng"])
def test_ibm_jobs_submit_now_and_collect_later(tmp_path, mode):
    from qiskit_ibm_runtime.fake_provider import FakeNairobiV2

    service = _RuntimeServiceStandIn(FakeNairobiV2())
    backend = qkd.resolve_backend("ibm:fake_nairobi", service=service)
    assert backend.resumable
    pending = qkd.submit(6000, mode=mode, backend=backend, eve=qkd.InterceptResend(1.0), seed=31, chunk=2500)
    for job in pending.jobs:
        service.jobs[job.job_id()] = job
    path = pending.save(tmp_path / "handle.npz")

    resumed = qkd.PendingExchange.load(path, service=service)
    assert resumed.job_ids == pending.job_ids and len(resumed.job_ids) == 3
    rec = resumed.result()
    assert rec.provenance.backend == "ibm:fake_nairobi"
    assert rec.provenance.job_ids == pending.job_ids
    if mode == "prepared":
        np.testing.assert_array_equal(rec.alice_bits, pending.choices.alice_bits)
    s = sifted_stats(rec)
    assert 0.23 <= s["qber"] <= 0.25 + DEVICE_NOISE_ALLOWANCE


def test_corrupt_job_handle(tmp_path):
    path = tmp_path / "h.npz"
    path.write_bytes(b"\x00" * 10)
    with pytest.raises(qkd.RecordError, match="not a readable job handle"):
        qkd.PendingExchange.load(path)


def test_ibm_without_an_account_says_how_to_set_one_up(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("QISKIT_IBM_TOKEN", raising=False)
    with pytest.raises(qkd.BackendError, match="save_account"):
        qkd.resolve_backend("ibm:ibm_torino")


def test_fake_devices_are_capped_at_what_this_machine_can_simulate():
    # A fake device is simulated locally as one joint state: lanes="device" stays small, and an
    # explicit request beyond it is refused with the reason, not a memory error deep in Aer.
    from qkd_circuits.quantum.execution import FAKE_MAX_QUBITS

    # 160 pulses over 16 lanes: a few noisy shots per setting (each a 16-qubit trajectory) show it runs.
    pending = qkd.submit(160, mode="prepared", backend="fake:sherbrooke", lanes="device", seed=1)
    assert pending.template.circuit.num_qubits <= FAKE_MAX_QUBITS
    assert len(pending.result()) == 160
    with pytest.raises(qkd.ConfigurationError, match="simulated on this machine as one joint state"):
        qkd.submit(2000, mode="prepared", backend="fake:sherbrooke", lanes=40, seed=1)
