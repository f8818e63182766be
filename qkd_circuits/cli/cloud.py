"""``qkd submit``, ``qkd status``, ``qkd collect``, ``qkd cancel``: a round whose jobs outlive the terminal.

``qkd submit`` takes the options of ``qkd run`` and ``--handle FILE``; it prints the plan and a
usage estimate, sends the jobs, prints their ids at once and writes the handle (a secret file,
0600: it holds the parties' choices, or with local jobs every raw bit), which carries everything
the round still needs: backend, models, choices, chunks, job ids and the post-processing
settings.  Jobs that run in this process (``aer``, ``fake:``, ``braket-local``) finish during
``submit`` and their samples go into the handle, so that any later process can collect them.
``qkd collect FILE`` then waits for the jobs and prints exactly the report ``qkd run`` prints
(exit 0 a key, 3 aborted, 1 a backend failed).  See docs/cloud.md for the walk-through.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ..exceptions import ConfigurationError
from .errors import EXIT_ABORTED, EXIT_OK, exit_codes
from .options import json_option, output_file, round_kwargs, round_options
from .report import echo_json, print_report

__all__ = ["cancel", "collect", "status", "submit"]

_HANDLE = click.argument("handle", type=click.Path(dir_okay=True))


@click.command()
@round_options()
@click.option("--handle", "handle", type=click.Path(dir_okay=False), required=True, callback=output_file,
              help="Write the job handle here (0600; holds the parties' choices: keep it as secret as a key).")
@click.option("--sampler-mode", type=click.Choice(["batch", "session", "job"]), default="batch", show_default=True,
              help="IBM Runtime execution mode: a Batch, a Session, or plain jobs.")
@click.option("--dd", "dd", type=click.Choice(["XX", "XpXm", "XY4"]), default=None, metavar="SEQUENCE",
              help="Dynamical decoupling on IBM devices with this sequence (XX, XpXm, XY4).")
@click.option("--twirling", is_flag=True, help="Pauli twirling of gates and measurements on IBM devices.")
@click.option("--instance", default=None, help="IBM Cloud instance (CRN or name) to open the account with.")
@click.option("--seed-transpiler", type=click.IntRange(min=0), default=None, metavar="N",
              help="Transpiler seed (the same layout and routing each time).")
@click.option("--exclude-worst-qubits", type=click.IntRange(min=0), default=0, metavar="K",
              help="Leave out the K qubits worst by calibration (readout error, then T1).")
@click.option("--max-shots", type=click.IntRange(min=1), default=None, metavar="N",
              help="Split jobs below N executions per pub (default: the device's limit).")
@click.option("--readout-mitigation", is_flag=True,
              help="Add a calibration job on Bob's qubits; 'qkd collect' then reports a readout-mitigated QBER "
                   "(a study figure, never used for the key length).")
@click.option("--calibration-shots", type=click.IntRange(min=1), default=None, metavar="N",
              help="Shots per calibration circuit (|0> and |1>) with --readout-mitigation  [default: 8192].")
@click.option("--dry-run", is_flag=True, help="Print the plan and the usage estimate; submit nothing.")
@json_option("Print one JSON object (the plan, the estimate, the job ids) and nothing else.")
def submit(exchanges, handle, sampler_mode, dd, twirling, instance, seed_transpiler, exclude_worst_qubits,
           max_shots, readout_mitigation, calibration_shots, dry_run, as_json, **values) -> None:
    """Submit one BB84 round's jobs, print their ids and write a handle for 'qkd collect'."""
    from ..quantum.backends import ExecutionOptions, resolve_backend
    from ..quantum.execution import plan_submission
    from ..quantum.mitigation import DEFAULT_CALIBRATION_SHOTS

    with exit_codes():
        if not dry_run and Path(handle).exists():
            raise ConfigurationError(f"{handle} exists (another round's handle?): a handle is never overwritten, "
                                     "since its jobs could not be collected without it; choose another path")
        options = round_kwargs(values)
        config = options.pop("config")
        spec = options.pop("backend")
        ibm_like = spec.startswith(("ibm:", "fake:"))
        execution = ExecutionOptions(sampler_mode=sampler_mode, dynamical_decoupling=dd, twirling=twirling,
                                     seed_transpiler=seed_transpiler, exclude_worst_qubits=exclude_worst_qubits)
        if not ibm_like and not execution.is_default:
            raise ConfigurationError(f"--sampler-mode, --dd, --twirling, --seed-transpiler and --exclude-worst-qubits "
                                     f"are IBM Runtime settings; {spec!r} is not an ibm: or fake: backend")
        backend = resolve_backend(spec, instance=instance, max_shots=max_shots,
                                  options=execution if ibm_like else None)
        if calibration_shots is not None and not readout_mitigation:
            raise ConfigurationError("--calibration-shots needs --readout-mitigation")
        shots = (calibration_shots or DEFAULT_CALIBRATION_SHOTS) if readout_mitigation else None
        plan = plan_submission(exchanges, backend=backend, readout_calibration_shots=shots, **options)
        summary = plan.summary()
        for warning in plan.warnings:
            click.echo(f"WARNING: {warning}", err=True)
        if not as_json:
            _print_plan(summary)
        if dry_run:
            if as_json:
                echo_json({"dry_run": True, "handle": None, "plan": summary, "warnings": plan.warnings,
                           "job_ids": []})
            else:
                click.echo("dry run: nothing was submitted")
            sys.exit(EXIT_OK)
        pending = plan.submit()
        local = not backend.resumable
        # The handle first, then the ids: output that fails (a closed terminal, a broken pipe) must
        # not lose jobs already queued.  Cloud jobs are not waited for; local ones finish here.
        path = pending.save(handle, postprocessing=config, samples=local)
        if not as_json:
            click.echo("submitted: " + ", ".join(pending.job_ids))
    if as_json:
        echo_json({"dry_run": False, "handle": str(path), "plan": summary, "warnings": plan.warnings,
                   "job_ids": list(pending.job_ids), "samples_in_handle": local})
    else:
        kept = "the jobs ran here; their samples are in the handle" if local else "the jobs run in the cloud"
        click.echo(f"handle written to {path} (0600; {kept}): 'qkd status {path}', then 'qkd collect {path}'")
    sys.exit(EXIT_OK)


def _print_plan(summary: dict) -> None:
    jobs = summary["jobs"]
    limit = f", at most {summary['max_shots']:,} executions per pub" if summary["max_shots"] else ""
    click.echo(f"plan: {summary['exchanges']:,} pulses on {summary['backend']} ({summary['mode']} mode, "
               f"{summary['lanes']} lane(s), {summary['qubits']} qubits, depth {summary['depth']}), "
               f"{len(jobs)} job(s), {summary['executions']:,} executions{limit}")
    if summary.get("physical_qubits") is not None:
        excluded = f"; left out {summary['excluded_qubits']}" if summary["excluded_qubits"] else ""
        click.echo(f"  physical qubits {summary['physical_qubits']}{excluded}")
    if summary.get("readout_calibration"):
        cal = summary["readout_calibration"]
        click.echo(f"  readout calibration: 1 more job, |0> and |1> on Bob's qubits {cal['qubits']}, "
                   f"{cal['shots']:,} shots each")
    e = summary["estimate"]
    if not e:
        return
    if e["kind"] == "qpu_time":
        if e["qpu_seconds"] is not None:
            click.echo(f"  estimated QPU time {e['qpu_seconds']:.1f} s = {e['executions']:,} executions x "
                       f"(circuit {e['circuit_duration_s'] * 1e6:.2f} us + rep_delay {e['rep_delay_s'] * 1e6:.0f} us); "
                       f"not included: {e['not_included']}")
        else:
            click.echo("  no QPU-time estimate: the device publishes no gate durations or rep_delay")
        if "local_seconds" in e:
            click.echo(f"  simulated here: expect about {e['local_seconds']:.1f} s")
    elif e["kind"] == "braket_cost":
        usd = e.get("estimate_usd")
        click.echo(f"  estimated cost {'n/a' if usd is None else f'${usd:.2f}'}: {e.get('note', '')}")


@click.command()
@_HANDLE
@json_option("Print one JSON object (each job's id and status) and nothing else.")
def status(handle, as_json) -> None:
    """Each job's status (local jobs: done, their samples in the handle)."""
    from ..quantum.execution import PendingExchange

    with exit_codes():
        pending = PendingExchange.load(handle)
        statuses = pending.status()
    jobs = [{"job_id": job_id, "status": st, "exchanges": c.stop - c.start, "executions": c.executions}
            for job_id, st, c in zip(pending.job_ids, statuses, pending.chunks)]
    done = all(j["status"].upper() in ("DONE", "COMPLETED") for j in jobs)
    if as_json:
        echo_json({"handle": str(handle), "backend": pending.backend.spec, "samples_in_handle": pending.stored,
                   "jobs": jobs, "all_done": done})
    else:
        where = "samples in the handle" if pending.stored else "in the cloud"
        click.echo(f"{handle}: {len(jobs)} job(s) on {pending.backend.spec} ({where})")
        for j in jobs:
            click.echo(f"  {j['job_id']}  {j['status']:<10} {j['exchanges']:>10,} pulses")
        click.echo("all done: 'qkd collect' reads them now" if done else "not all done: 'qkd collect' waits for them")
    sys.exit(EXIT_OK)


@click.command()
@_HANDLE
@click.option("--psk", "psk_file", type=click.Path(dir_okay=False), default=None,
              help="Authentication key pool (from 'qkd psk init'); updated in place after the round.")
@json_option()
def collect(handle, psk_file, as_json) -> None:
    """Wait for a handle's jobs, post-process them and print the report 'qkd run' prints."""
    from ..channel.pool import AuthKeyPool
    from ..postprocessing.protocol import PostProcessingConfig
    from ..quantum.execution import PendingExchange
    from ..session import postprocess

    with exit_codes():
        pending = PendingExchange.load(handle)
        if pending.postprocessing is None:
            click.echo(f"WARNING: {handle} is a version-1 handle without post-processing settings: "
                       "the defaults are used", err=True)
        config = PostProcessingConfig(**(pending.postprocessing or {}))
        pool = AuthKeyPool.load(psk_file) if psk_file else None
        pools = {} if pool is None else {"alice_pool": pool, "bob_pool": pool.copy()}
        t0 = time.perf_counter()
        record = pending.result()
        result = postprocess(record, config, **pools, timings_s={"quantum": time.perf_counter() - t0})
        mitigation = pending.readout_mitigation(record)
    if pool is not None:
        pools["bob_pool"].save(psk_file)  # Bob's view decides, as in 'qkd run'
    report = result.report
    if as_json:
        echo_json(report.to_dict() if mitigation is None else {**report.to_dict(), "readout_mitigation": mitigation})
    else:
        print_report(report)
        if mitigation is not None:
            m = mitigation
            click.echo(f"  readout-mitigated QBER {m['qber_mitigated']:.4%} (measured {m['qber_measured']:.4%} over "
                       f"{m['sifted_bits']:,} sifted bits; qubits {m['qubits']}, {m['calibration_shots']:,} calibration "
                       "shots each): a study figure, not used for the key length")
    sys.exit(EXIT_ABORTED if report.aborted else EXIT_OK)


@click.command()
@_HANDLE
@json_option("Print one JSON object (each job's status after cancelling) and nothing else.")
def cancel(handle, as_json) -> None:
    """Cancel a handle's jobs still queued or running (IBM jobs, Braket tasks)."""
    from ..quantum.execution import PendingExchange

    with exit_codes():
        pending = PendingExchange.load(handle)
        statuses = pending.cancel()
    if as_json:
        echo_json({"handle": str(handle), "jobs": [{"job_id": j, "status": s}
                                                  for j, s in zip(pending.job_ids, statuses)]})
    else:
        for job_id, st in zip(pending.job_ids, statuses):
            click.echo(f"  {job_id}  {st}")
    sys.exit(EXIT_OK)
