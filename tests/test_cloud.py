"""Cloud jobs that survive a closed terminal: ``qkd submit`` / ``status`` / ``collect`` / ``cancel``,
job handles (version 2, and version 1 still read), jobs split below ``max_shots``, the IBM
execution options (modes, Sampler options, transpiler seed, worst qubits left out), the usage
estimate, and the IBM account error.

Everything runs offline: fake IBM devices in IBM Runtime's local testing mode, the Braket local
simulator, and, for ``ibm:``, a stand-in for ``QiskitRuntimeService`` at the service lookup only
(its ``backend(name)`` gives a fake device and ``job(id)`` the job); transpilation, the Runtime
sampler, handles and record assembly are the real code.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

import qkd_circuits as qkd
from qkd_circuits.cli import main
from qkd_circuits.quantum.backends import ExecutionOptions, worst_qubits
from qkd_circuits.quantum.execution import PendingExchange, plan_submission

QKD = [os.path.join(os.path.dirname(sys.executable), "qkd")]  # the venv's console script
#: The round every cross-process test runs: prepared mode on fake:nairobi, seeded, small.
ROUND = ["-n", "20000", "--mode", "prepared", "--backend", "fake:nairobi", "--seed", "11"]
#: Fields of a report that differ between two runs of the same seeded round by design.
VOLATILE = ("timings_s",)
VOLATILE_PROVENANCE = ("created_utc", "job_ids")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def qkd_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    """Run ``qkd`` in a new process (the terminal that submitted is gone); stops it on timeout."""
    return subprocess.run([*QKD, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def comparable(report: dict) -> dict:
    report = {k: v for k, v in report.items() if k not in VOLATILE}
    report["provenance"] = {k: v for k, v in report["provenance"].items() if k not in VOLATILE_PROVENANCE}
    return report


# ---- submit -> status -> collect, each in its own process ----------------------------------------

def test_submit_status_collect_in_new_processes_gives_the_report_of_qkd_run(tmp_path):
    handle = tmp_path / "round.npz"
    sub = qkd_cli("submit", *ROUND, "--handle", str(handle), "--json")
    assert sub.returncode == 0, sub.stderr
    submitted = json.loads(sub.stdout)
    assert submitted["samples_in_handle"] and len(submitted["job_ids"]) == 1
    assert stat.S_IMODE(handle.stat().st_mode) == 0o600
    assert submitted["plan"]["jobs"][0]["executions"] <= 100_000  # FakeNairobiV2's max_shots

    st = qkd_cli("status", str(handle), "--json")
    assert st.returncode == 0, st.stderr
    status = json.loads(st.stdout)
    assert status["all_done"] and [j["status"] for j in status["jobs"]] == ["DONE"]
    assert [j["job_id"] for j in status["jobs"]] == submitted["job_ids"]

    col = qkd_cli("collect", str(handle), "--json")
    run = CliRunner().invoke(main, ["run", *ROUND, "--json"])  # the same round in one go (this process)
    assert col.returncode == run.exit_code and col.returncode in (0, 3), col.stderr
    collected, direct = json.loads(col.stdout), json.loads(run.output)
    assert comparable(collected) == comparable(direct)
    assert collected["provenance"]["job_ids"] == submitted["job_ids"]
    assert collected["exchanges"] == 20_000 and collected["sifted"] > 8_000


def test_collect_prints_the_text_report_of_qkd_run_and_keeps_the_postprocessing_settings(tmp_path):
    handle = tmp_path / "h.npz"
    options = ["-n", "3000", "--mode", "prepared", "--seed", "5", "--abort-qber", "0.2", "--sample-fraction", "0.2"]
    runner = CliRunner()
    sub = runner.invoke(main, ["submit", *options, "--handle", str(handle)])
    assert sub.exit_code == 0, sub.output
    assert "submitted: " in sub.output and "estimated" not in sub.output  # aer: no device time to estimate
    defaults = qkd.PostProcessingConfig()
    assert PendingExchange.load(handle).postprocessing == {
        "sample_fraction": 0.2, "abort_qber": 0.2, "cascade": defaults.cascade, "eps_sec": defaults.eps_sec,
        "eps_cor": defaults.eps_cor}
    col = runner.invoke(main, ["collect", str(handle)])
    run = runner.invoke(main, ["run", *options])
    assert col.exit_code == run.exit_code

    def without_timings(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.strip().startswith("timings")]

    assert without_timings(col.output) == without_timings(run.output)


def test_braket_local_submit_and_collect_in_new_processes_gives_the_report_of_qkd_run(tmp_path):
    pytest.importorskip("qiskit_braket_provider")
    options = ["-n", "400", "--mode", "prepared", "--backend", "braket-local", "--seed", "3"]
    handle = tmp_path / "braket.npz"
    sub = qkd_cli("submit", *options, "--handle", str(handle), "--json")
    assert sub.returncode == 0, sub.stderr
    assert json.loads(sub.stdout)["samples_in_handle"]
    col = qkd_cli("collect", str(handle), "--json")
    run = CliRunner().invoke(main, ["run", *options, "--json"])
    assert col.returncode == run.exit_code, col.stderr
    collected = json.loads(col.stdout)
    assert comparable(collected) == comparable(json.loads(run.output))
    assert collected["backend"] == "braket-local" and collected["provenance"]["simulator_seed_bits"] == 0


# ---- max_shots --------------------------------------------------------------------------------

def _pub_executions(pending: PendingExchange) -> list[int]:
    """Each job's executions as its result shows them: bindings x shots."""
    out = []
    for job in pending.jobs:
        data = job.result()[0].data
        out.append(int(np.prod(data.shape, dtype=np.int64)) * data.bob_result.num_shots)
    return out


@pytest.mark.parametrize("mode, schedule", [("prepared", "grouped"), ("prepared", "sequential"), ("qrng", "grouped")])
def test_jobs_are_split_below_max_shots(mode, schedule):
    limit = 240
    small = qkd.resolve_backend("aer", max_shots=limit)
    n = 1200
    split = qkd.submit(n, mode=mode, schedule=schedule, backend=small, lanes=2, seed=9)
    executions = _pub_executions(split)
    assert len(executions) > 1 and max(executions) <= limit
    assert [c.executions for c in split.chunks] == executions
    rec = split.result()
    whole = qkd.run_exchanges(n, mode=mode, schedule=schedule, backend="aer", lanes=2, seed=9)
    assert len(rec) == n
    if mode == "prepared":  # the same choices; on a perfect channel Bob's sifted bits are Alice's in both
        for name in ("alice_bits", "alice_bases", "bob_bases", "detected"):
            np.testing.assert_array_equal(getattr(rec, name), getattr(whole, name))
        for r in (rec, whole):
            m = qkd.sift_mask(r.alice_bases, r.bob_bases, r.detected)
            np.testing.assert_array_equal(r.bob_results[m], r.alice_bits[m])


def test_max_shots_of_devices_and_misuse():
    assert qkd.resolve_backend("fake:nairobi").max_shots == 100_000
    assert qkd.resolve_backend("aer").max_shots is None
    with pytest.raises(qkd.ConfigurationError, match="above fake_nairobi's limit of 100,000"):
        qkd.resolve_backend("fake:nairobi", max_shots=100_001)
    with pytest.raises(qkd.ConfigurationError, match="max_shots must be a whole number >= 1"):
        qkd.resolve_backend("aer", max_shots=0)
    with pytest.raises(qkd.ConfigurationError, match="max_shots 7 is below 8"):
        qkd.submit(100, mode="prepared", backend=qkd.resolve_backend("aer", max_shots=7))


# ---- IBM: the job-id path with a stand-in service ---------------------------------------------

class RuntimeServiceStandIn:
    """Answers the QiskitRuntimeService calls the package makes (``backend(name)``, ``job(id)``)
    from this process with a fake device; records how it was opened."""

    opened: list = []

    def __init__(self, device=None, **kwargs):
        from qiskit_ibm_runtime.fake_provider import FakeNairobiV2

        self.device = device or FakeNairobiV2()
        self.jobs = {}
        RuntimeServiceStandIn.opened.append(kwargs)

    def backend(self, name):
        if name != self.device.name:
            raise KeyError(f"no backend {name!r}")
        return self.device

    def job(self, job_id):
        return self.jobs[job_id]

    def remember(self, pending):
        self.jobs.update((job.job_id(), job) for job in pending.jobs)


def test_ibm_handle_with_job_ids_is_collected_by_the_cli_through_the_service(tmp_path, monkeypatch):
    import qiskit_ibm_runtime

    service = RuntimeServiceStandIn()
    options = ExecutionOptions(sampler_mode="session", seed_transpiler=4)
    backend = qkd.resolve_backend("ibm:fake_nairobi", service=service, options=options)
    assert backend.resumable and backend.max_shots == 100_000
    plan = plan_submission(6000, mode="prepared", backend=backend, seed=31, chunk=2500)
    assert plan.template.lanes == 3  # ibm: what the device holds, 7 qubits // (2 x 1 per lane)
    pending = plan.submit()
    service.remember(pending)
    path = pending.save(tmp_path / "ibm.npz", postprocessing={"sample_fraction": 0.1, "abort_qber": 0.11,
                                                               "cascade": "yanetal", "eps_sec": 1e-10,
                                                               "eps_cor": 1e-15})
    with np.load(path) as npz:
        header = json.loads(str(npz["header"]))
        assert not any(k.startswith("sample_") for k in npz.files)  # ibm: ids only, no samples
    assert header["version"] == 2 and header["job_ids"] == list(pending.job_ids) and header["execution"]["seed_transpiler"] == 4

    monkeypatch.setattr(qiskit_ibm_runtime, "QiskitRuntimeService", lambda **kw: service)
    runner = CliRunner()
    st = runner.invoke(main, ["status", str(path), "--json"])
    assert st.exit_code == 0, st.output
    assert [j["job_id"] for j in json.loads(st.output)["jobs"]] == list(pending.job_ids)
    col = runner.invoke(main, ["collect", str(path), "--json"])
    assert col.exit_code in (0, 3), col.output
    report = json.loads(col.output)
    assert report["backend"] == "ibm:fake_nairobi" and report["exchanges"] == 6000
    assert report["provenance"]["job_ids"] == list(pending.job_ids)
    cancelled = runner.invoke(main, ["cancel", str(path), "--json"])
    assert cancelled.exit_code == 0, cancelled.output  # finished jobs are left as they are
    assert {j["status"] for j in json.loads(cancelled.output)["jobs"]} == {"DONE"}


def test_sampler_options_are_passed_through_to_the_runtime_sampler():
    service = RuntimeServiceStandIn()
    backend = qkd.resolve_backend("ibm:fake_nairobi", service=service,
                                  options=ExecutionOptions(sampler_mode="job", dynamical_decoupling="XY4",
                                                           twirling=True))
    sampler = backend.sampler(seed=None, num_qubits=1)
    assert sampler.options.dynamical_decoupling.enable and sampler.options.dynamical_decoupling.sequence_type == "XY4"
    assert sampler.options.twirling.enable_gates and sampler.options.twirling.enable_measure
    assert sampler.mode is None  # job mode: no Batch, no Session
    from qiskit_ibm_runtime import Batch

    batched = qkd.resolve_backend("ibm:fake_nairobi", service=service)  # the default mode
    assert isinstance(batched.sampler(seed=None, num_qubits=1).mode, Batch)
    batched.close_batch()
    with pytest.raises(qkd.ConfigurationError, match="sequence must be one of XX, XpXm, XY4"):
        ExecutionOptions(dynamical_decoupling="XZ")
    with pytest.raises(qkd.ConfigurationError, match="sampler mode must be one of batch, session, job"):
        ExecutionOptions(sampler_mode="queue")
    with pytest.raises(qkd.ConfigurationError, match="IBM Runtime settings"):
        qkd.resolve_backend("aer", options=ExecutionOptions(twirling=True))


def test_worst_qubits_are_left_out_of_the_layout_on_a_fake_device():
    from qiskit_ibm_runtime.fake_provider import FakeNairobiV2

    device = FakeNairobiV2()
    readout = {q: device.target["measure"][(q,)].error for q in range(device.num_qubits)}
    worst = sorted(readout, key=readout.get, reverse=True)[:2]
    assert sorted(worst_qubits(device, 2)) == sorted(worst)
    backend = qkd.resolve_backend("fake:nairobi", options=ExecutionOptions(exclude_worst_qubits=2, seed_transpiler=1))
    for eve in (None, qkd.InterceptResend(1.0)):  # 1 qubit per lane, and 4 qubits that interact
        plan = plan_submission(800, mode="prepared", backend=backend, eve=eve, lanes="device", seed=2)
        used = plan.summary()["physical_qubits"]
        assert used and not set(used) & set(worst), (used, worst)
        assert plan.summary()["excluded_qubits"] == sorted(worst)
    record = plan.submit().result()
    assert not set(record.provenance.circuit["physical_qubits"]) & set(worst)
    with pytest.raises(qkd.ConfigurationError, match="cannot leave out 7 of fake_nairobi's 7 qubits"):
        qkd.resolve_backend("fake:nairobi", options=ExecutionOptions(exclude_worst_qubits=7))


# ---- the IBM account error --------------------------------------------------------------------

def _refusing_service(**kwargs):
    raise ValueError("stand-in: the account was refused")


def test_ibm_error_says_what_is_missing(monkeypatch, tmp_path):
    import qiskit_ibm_runtime

    monkeypatch.setattr(qiskit_ibm_runtime, "QiskitRuntimeService", _refusing_service)
    monkeypatch.setenv("QISKIT_IBM_CONFIG", str(tmp_path / "none.json"))
    monkeypatch.setenv("QISKIT_IBM_TOKEN", "not-a-real-token")
    with pytest.raises(qkd.BackendError, match=r"QISKIT_IBM_TOKEN from the environment \(it is set\)") as err:
        qkd.resolve_backend("ibm:ibm_torino")
    assert "or set QISKIT_IBM_TOKEN" not in str(err.value) and "not-a-real-token" not in str(err.value)
    monkeypatch.delenv("QISKIT_IBM_TOKEN")
    with pytest.raises(qkd.BackendError, match="none is saved and QISKIT_IBM_TOKEN is not set"):
        qkd.resolve_backend("ibm:ibm_torino")
    (tmp_path / "saved.json").write_text(json.dumps({"default-ibm-quantum-platform": {}}))
    monkeypatch.setenv("QISKIT_IBM_CONFIG", str(tmp_path / "saved.json"))
    with pytest.raises(qkd.BackendError, match="with the saved account default-ibm-quantum-platform"):
        qkd.resolve_backend("ibm:ibm_torino")
    monkeypatch.setattr(qiskit_ibm_runtime, "QiskitRuntimeService", RuntimeServiceStandIn)
    with pytest.raises(qkd.BackendError, match="opened the account but gave no backend 'ibm_torino'"):
        qkd.resolve_backend("ibm:ibm_torino", instance="my-instance")
    assert RuntimeServiceStandIn.opened[-1] == {"instance": "my-instance"}


# ---- misuse ---------------------------------------------------------------------------------------

def test_missing_corrupt_and_foreign_handles(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(main, ["collect", str(tmp_path / "nothing.npz")])
    assert missing.exit_code == 2 and "no job handle at" in missing.output
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"\x00" * 16)
    corrupt = runner.invoke(main, ["status", str(bad)])
    assert corrupt.exit_code == 2 and "not a readable job handle" in corrupt.output
    future = tmp_path / "v9.npz"
    np.savez(future, header=np.array(json.dumps({"format": "qkd_circuits.PendingExchange", "version": 9})))
    with pytest.raises(qkd.RecordError, match="version-9 job handle; this version of qkd_circuits reads versions 1, 2"):
        PendingExchange.load(future)


def test_version_1_handles_are_still_read(tmp_path):
    service = RuntimeServiceStandIn()
    pending = qkd.submit(900, mode="prepared", backend=qkd.resolve_backend("ibm:fake_nairobi", service=service),
                         seed=4)
    service.remember(pending)
    path = pending.save(tmp_path / "v2.npz")
    with np.load(path) as npz:
        header = json.loads(str(npz["header"]))
        arrays = {k: npz[k] for k in npz.files if k != "header"}
    v1 = {k: header[k] for k in ("format", "backend", "mode", "lanes", "exchanges", "schedule", "seed", "models",
                                 "job_ids", "circuit", "chunks", "simulator_seed_bits")}
    v1["version"] = 1
    np.savez_compressed(tmp_path / "v1.npz", header=np.array(json.dumps(v1)), **arrays)
    resumed = PendingExchange.load(tmp_path / "v1.npz", service=service)
    assert resumed.postprocessing is None and resumed.job_ids == pending.job_ids
    np.testing.assert_array_equal(resumed.result().alice_bits, pending.choices.alice_bits)


def test_cancel_of_finished_local_jobs_and_dry_run(tmp_path):
    runner = CliRunner()
    handle = tmp_path / "local.npz"
    assert runner.invoke(main, ["submit", "-n", "500", "--seed", "1", "--handle", str(handle)]).exit_code == 0
    again = runner.invoke(main, ["submit", "-n", "500", "--handle", str(handle)])
    assert again.exit_code == 2 and "a handle is never overwritten" in again.output
    cancel = runner.invoke(main, ["cancel", str(handle)])
    assert cancel.exit_code == 1 and "nothing to cancel" in cancel.output
    with pytest.raises(qkd.BackendError, match="nothing to cancel"):
        PendingExchange.load(handle).cancel()

    dry = tmp_path / "dry.npz"
    out = runner.invoke(main, ["submit", "-n", "100000", "--mode", "prepared", "--backend", "fake:brisbane",
                               "--lanes", "device", "--dry-run", "--handle", str(dry)])
    assert out.exit_code == 0, out.output
    assert not dry.exists() and "dry run: nothing was submitted" in out.stdout
    assert "estimated QPU time" in out.stdout and "executions x (circuit" in out.stdout
    assert "WARNING: fake:brisbane is simulated on this machine" in out.stderr and "expect about" in out.stderr

    misuse = runner.invoke(main, ["submit", "-n", "100", "--dd", "XY4", "--handle", str(dry)])
    assert misuse.exit_code == 2 and "IBM Runtime settings" in misuse.output and not dry.exists()
    # A handle that could not be written is refused before any job is sent.
    nowhere = runner.invoke(main, ["submit", "-n", "100", "--handle", str(tmp_path / "no" / "h.npz")])
    assert nowhere.exit_code == 2 and "does not exist" in nowhere.output and "submitted" not in nowhere.output


def test_a_handle_is_collected_once_per_pool(tmp_path):
    runner = CliRunner()
    pool, handle = tmp_path / "pool.psk", tmp_path / "h.npz"
    assert runner.invoke(main, ["psk", "init", str(pool)]).exit_code == 0
    assert runner.invoke(main, ["submit", "-n", "2000", "--mode", "prepared", "--handle", str(handle)]).exit_code == 0
    first = runner.invoke(main, ["collect", str(handle), "--psk", str(pool), "--json"])
    assert first.exit_code in (0, 3), first.output
    again = runner.invoke(main, ["collect", str(handle), "--psk", str(pool)])
    assert again.exit_code == 2 and "post-processed with this pool before" in again.output


class QueuedJob:
    """An IBM job still in the queue, as the service's ``job(id)`` hands it back."""

    def __init__(self, job_id):
        self._id, self.state = job_id, "QUEUED"

    def job_id(self):
        return self._id

    def status(self):
        return self.state

    def cancel(self):
        self.state = "CANCELLED"

    def result(self):
        raise RuntimeError(f"job {self._id} was {self.state.lower()}")


def test_cancel_cancels_queued_ibm_jobs_and_leaves_finished_ones(tmp_path, monkeypatch):
    import qiskit_ibm_runtime

    service = RuntimeServiceStandIn()
    pending = qkd.submit(3000, mode="prepared", backend=qkd.resolve_backend("ibm:fake_nairobi", service=service),
                         chunk=1000, seed=8)
    service.remember(pending)
    pending.jobs[0].result()  # the first job has finished
    first, *queued = pending.job_ids
    service.jobs.update((job_id, QueuedJob(job_id)) for job_id in queued)
    path = pending.save(tmp_path / "ibm.npz")
    monkeypatch.setattr(qiskit_ibm_runtime, "QiskitRuntimeService", lambda **kw: service)
    out = CliRunner().invoke(main, ["cancel", str(path), "--json"])
    assert out.exit_code == 0, out.output
    assert [j["status"] for j in json.loads(out.output)["jobs"]] == ["DONE", "CANCELLED", "CANCELLED"]
    failed = CliRunner().invoke(main, ["collect", str(path)])
    assert failed.exit_code == 1 and "failed" in failed.output


def test_readout_mitigation_is_a_study_figure_beside_an_unchanged_report(tmp_path):
    from qiskit_ibm_runtime.fake_provider import FakeNairobiV2

    runner = CliRunner()
    handle = tmp_path / "m.npz"
    sub = runner.invoke(main, ["submit", *ROUND, "--readout-mitigation", "--handle", str(handle)])
    assert sub.exit_code == 0, sub.output
    assert "readout calibration: 1 more job, |0> and |1> on Bob's qubits [0], 8,192 shots each" in sub.output
    col = runner.invoke(main, ["collect", str(handle), "--json"])
    run = runner.invoke(main, ["run", *ROUND, "--json"])
    collected, direct = json.loads(col.output), json.loads(run.output)
    m = collected.pop("readout_mitigation")
    assert comparable(collected) == comparable(direct)  # the key length never sees the calibration
    # Qubit 0 of fake_nairobi reads wrong 5.8% of the time (its calibration); the round's QBER is
    # mostly that, and inverting the calibrated confusion leaves the gates' share, under 2%.
    readout = FakeNairobiV2().target["measure"][(0,)].error
    assert abs((m["readout_error_0to1"][0] + m["readout_error_1to0"][0]) / 2 - readout) < 0.01
    assert m["qber_measured"] == pytest.approx(collected["qber"]["true_sifted"])
    assert m["qber_measured"] > 0.04 and m["qber_mitigated"] < 0.02
    text = runner.invoke(main, ["collect", str(handle)])
    assert "readout-mitigated QBER" in text.output and "not used for the key length" in text.output

    for bad, match in ((["--backend", "aer", "--readout-mitigation"], "calibrates a device's qubits"),
                       (["--calibration-shots", "100"], "--calibration-shots needs --readout-mitigation")):
        out = runner.invoke(main, ["submit", "-n", "100", *bad, "--handle", str(tmp_path / "x.npz")])
        assert out.exit_code == 2 and match in out.output


def test_submit_reports_a_slow_fake_run_before_it_starts():
    class Stop(Exception):
        pass

    def stop(warning):  # the warning comes before any job is sent: stopping here sends none
        raise Stop(warning)

    with pytest.raises(Stop, match=r"fake:brisbane is simulated on this machine .* expect about 1\d\d s"):
        qkd.submit(100_000, mode="prepared", backend="fake:brisbane", lanes="device", on_warning=stop)
    quick = plan_submission(2_000, mode="prepared", backend="fake:nairobi", seed=1)
    assert quick.warnings == [] and quick.estimate["local_seconds"] < 10
    seen = []
    qkd.submit(200, mode="prepared", backend="fake:nairobi", seed=1, on_warning=seen.append).result()
    assert seen == []
