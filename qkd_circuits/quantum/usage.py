"""What a submission will cost before it is sent: device time, price, or wall time here.

``ibm:`` (and ``fake:``, whose calibration is a real device's)
    QPU seconds ≈ executions x (circuit duration + rep_delay), with *executions* the shots x
    parameter bindings of every pub, the *circuit duration* of the transpiled circuit from the
    device's calibrated gate and measurement times (``QuantumCircuit.estimate_duration(target)``)
    and *rep_delay* the device's default delay between shots (``configuration().default_rep_delay``;
    250 µs on the fake devices of qiskit-ibm-runtime 0.51).  IBM's per-job overhead (loading the
    circuits, a few seconds a job) is not in it, nor the queue wait.
``braket:`` / ``braket-local``
    :func:`qkd_circuits.quantum.braket.braket_cost_estimate` (from the device's published
    pricing fields where it has them).
``fake:``, in addition
    the wall time of simulating it here (``local_seconds``).  IBM Runtime's local testing mode
    simulates every execution with the device's noise model: Aer keeps a density matrix up to
    10 active qubits and draws per-shot trajectories above.  Measured on 2 shared cores
    (qiskit-aer 0.18, ``fake:brisbane``, prepared mode, 1-16 lanes of 1 qubit; seconds per
    execution after the ~2.9 s it takes to build the 127-qubit noise model for each job):
    under 0.1 ms up to 9 qubits, 1 ms at 10, 10 ms at 12, 22 ms at 14, 18-23 ms at 16.
    :data:`FAKE_SECONDS_PER_EXECUTION` rounds these up; ``fake:brisbane --lanes device`` (16
    lanes, 100,000 pulses: 6,256 executions) comes to 160 s (the issue measured 113 s).
"""

from __future__ import annotations

from typing import Any

__all__ = ["FAKE_SECONDS_PER_EXECUTION", "SLOW_RUN_SECONDS", "fake_run_seconds", "plan_warnings", "usage_estimate"]

#: (widest active circuit, seconds per execution) for a fake device simulated here; rounded up
#: from the measurements in the module docstring.
FAKE_SECONDS_PER_EXECUTION = ((9, 1e-4), (10, 1e-3), (12, 1.2e-2), (16, 2.5e-2))
#: Building a fake device's noise model, per job and per device qubit (2.9 s for 127 qubits).
FAKE_SETUP_SECONDS_PER_QUBIT = 0.025
#: Expected local runs longer than this get a warning before they start.
SLOW_RUN_SECONDS = 10.0


def fake_run_seconds(device_qubits: int, width: int, executions: int, jobs: int) -> float:
    """Expected wall time of a fake-device run here (see the module docstring)."""
    per_execution = next((cost for upto, cost in FAKE_SECONDS_PER_EXECUTION if width <= upto),
                         FAKE_SECONDS_PER_EXECUTION[-1][1])
    return jobs * device_qubits * FAKE_SETUP_SECONDS_PER_QUBIT + executions * per_execution


def usage_estimate(backend: Any, circuit: Any, width: int, executions: list[int]) -> dict | None:
    """The usage estimate of a plan: ``backend`` resolved, ``circuit`` transpiled for it, ``width``
    its active qubits, ``executions`` per job.  ``None`` where there is nothing to estimate (Aer)."""
    total = int(sum(executions))
    if backend.kind in ("ibm", "fake"):
        device = backend._device
        try:
            duration = float(circuit.estimate_duration(device.target, unit="s"))
        except Exception:  # a target without gate durations
            duration = None
        try:
            rep_delay = float(device.configuration().default_rep_delay)
        except Exception:
            rep_delay = None
        qpu = total * (duration + rep_delay) if duration is not None and rep_delay is not None else None
        estimate = {"kind": "qpu_time", "formula": "executions x (circuit duration + rep_delay)",
                    "executions": total, "jobs": len(executions), "circuit_duration_s": duration,
                    "rep_delay_s": rep_delay, "qpu_seconds": qpu,
                    "not_included": "per-job overhead (a few seconds a job) and the queue wait"}
        if backend.kind == "fake":
            estimate["local_seconds"] = fake_run_seconds(backend.num_qubits, width, total, len(executions))
        return estimate
    if backend.kind in ("braket", "braket-local"):
        from .backends import _braket_module

        braket = _braket_module(required=backend.kind == "braket")
        if braket is None:
            return None
        cost = braket.braket_cost_estimate(backend._device, shots=total, tasks=len(executions))
        return None if cost is None else {"kind": "braket_cost", "executions": total, "jobs": len(executions),
                                          **cost}
    return None


def plan_warnings(backend: Any, width: int, estimate: dict | None) -> list[str]:
    """Warnings to print before a plan is sent (a slow local simulation of a fake device)."""
    out = []
    if estimate and estimate.get("local_seconds", 0) > SLOW_RUN_SECONDS:
        out.append(
            f"{backend.spec} is simulated on this machine with the device's noise: {width} active qubits, "
            f"{estimate['executions']:,} executions in {estimate['jobs']} job(s); expect about "
            f"{estimate['local_seconds']:.0f} s (above 10 qubits Aer draws every shot as a trajectory: "
            "fewer lanes run much faster)")
    if backend.kind == "fake" and (backend.options.dynamical_decoupling or backend.options.twirling):
        out.append("dynamical decoupling and twirling are passed to IBM Runtime's SamplerV2, but its local testing "
                   f"mode, which runs {backend.spec}, ignores them: they act on ibm: devices only")
    return out
