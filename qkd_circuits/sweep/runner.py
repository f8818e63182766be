"""Running a sweep: one task per session, each row written as it finishes, serially or on Dask.

The driver (this process) reads the output to find what is done, checks that the output was
started with the same spec (its digest, in ``<output>.meta.json``), then runs the missing tasks:

* serially, in this process, one after another (``serial=True``; chosen by default for at most
  :data:`SERIAL_MAX_TASKS` tasks to run, or ``workers=1``): no cluster to start, no Dask needed;
* on Dask distributed: it starts a ``LocalCluster`` of single-threaded worker processes (or
  connects to a scheduler), keeps a window of tasks submitted, and appends each row as its task
  completes (``as_completed``).

A session runs as one ``run_bb84`` (or ``run_decoy_session``) call: its circuits on the
simulator, both parties' post-processing, seeded, so a task gives the same row serially and on
any worker.  Dask is imported here only when a Dask sweep runs, so ``import qkd_circuits`` and
the CLI stay fast and work without the ``sweep`` extra.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import platform
import shlex
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .. import _provenance
from ..exceptions import ConfigurationError, MissingExtraError
from .output import _read_meta, _utc_now, _write_meta, _write_spec_copy, columns, open_output, sidecars
from .spec import SweepSpec, Task, expand, load_spec, session_options

__all__ = ["SweepSummary", "run_sweep", "run_task"]

#: Tasks kept submitted per worker: enough to hide the round trip, few enough that an
#: interrupted sweep has little in flight and a huge sweep holds few futures.
TASKS_PER_WORKER_IN_FLIGHT = 4
WORKER_WAIT_S = 60.0
#: On an interrupt, how long a local worker gets to stop before it is killed: its task is lost
#: anyway (rerunning the sweep resumes it), so there is nothing to wait for.
INTERRUPTED_WORKER_STOP_S = 0.5
#: ... and how long the rest of the cluster (its scheduler, in this process) gets to close.
INTERRUPTED_CLOSE_S = 5.0
#: A sweep with at most this many tasks left to run runs serially unless told otherwise: a local
#: cluster takes seconds to start (medians 1.7 s and 7.7 s on the shared 2-core machine, quiet
#: and busy: benchmarks/sweep.py --part startup), the time of some 14 (quiet) to 60 (busy)
#: sessions of 0.3 s on 2 workers (docs/sweeps.md, "Serial or Dask").
SERIAL_MAX_TASKS = 16
META_FORMAT = "qkd_circuits.sweep.meta/1"


@dataclass(frozen=True)
class SweepSummary:
    """What a :func:`run_sweep` call did (``qkd sweep --json`` prints ``to_dict()``).

    ``sessions_per_s`` is ``run / compute_s``: rows written per second from the first task
    submitted to the last row written, with the workers already started and warm (their imports
    done); ``startup_s`` is everything before that, ``wall_s`` the whole call.  ``None`` when no
    task ran.  ``scheduler`` is the address given, or ``None`` for a cluster started here.
    ``serial``: the tasks ran in this process, without Dask (``workers`` is then 1 if any ran);
    ``meta``: the run record beside the output (:func:`~qkd_circuits.sweep.output.sidecars`).
    """

    spec: str
    output: str
    tasks: int
    skipped: int
    run: int
    failed: int
    aborted: int
    keys: int
    workers: int
    scheduler: str | None
    startup_s: float
    compute_s: float
    wall_s: float
    sessions_per_s: float | None
    serial: bool = False
    protocol: str = "bb84"
    meta: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _float(value) -> float | None:
    return None if value is None else float(value)


def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


def _row(task: Task) -> dict:
    schema = columns(task.parameters.get("protocol", "bb84"))
    return {**dict.fromkeys(schema), "task_id": task.task_id, "seed": task.seed,
            **{k: v for k, v in task.parameters.items() if k in schema},
            "commit": _provenance.commit(), "versions": json.dumps(_provenance.versions(), sort_keys=True)}


def _eve_columns(report) -> dict:
    """What Eve learned in a BB84 session: the report's ``eve`` part and eve_known_fraction, the
    share of sifted bits her result matched where her basis was the right one (0.0 without Eve)."""
    e = report.eve
    if e is None:
        return dict(eve_known_fraction=0.0)
    known = None
    if e.right_basis_fraction is not None:
        known = 0.0 if e.guess_error_right_basis is None else e.right_basis_fraction * (1 - e.guess_error_right_basis)
    return dict(attacked_fraction=e.attacked_fraction, right_basis_fraction=e.right_basis_fraction,
                guess_error_right_basis=e.guess_error_right_basis, eve_known_fraction=known)


def run_task(task: Task) -> dict:
    """Run one task in this process and return its row: what every Dask task does.

    An aborted session is an ordinary row (``aborted=True``); an exception becomes a row with
    ``error`` set (its type and message) and no figures.
    """
    t0 = time.perf_counter()
    row = {**_row(task), "worker": f"{socket.gethostname()}/{os.getpid()}"}
    try:
        options = session_options(task.parameters)
        if options.pop("protocol", "bb84") == "decoy":
            from ..decoy import run_decoy_session

            decoy = run_decoy_session(task.parameters["exchanges"], seed=task.seed, **options)
            a = decoy.analysis
            row.update(decoy_rate=float(a.rate), decoy_y1=float(a.estimate.y1), decoy_e1=float(a.estimate.e1),
                       decoy_valid=bool(a.estimate.valid), gain_signal=float(a.stats["signal"].gain),
                       gain_decoy=float(a.stats["decoy"].gain), eve_known_fraction=float(decoy.eve_known_fraction),
                       aborted=decoy.aborted, abort_reason=decoy.abort_reason)
            if decoy.bb84 is None:  # the decoy check failed: no post-processing ran
                row.update(final_key_bits=0, wall_s=time.perf_counter() - t0)
                return row
            result = decoy.bb84
        else:
            from ..session import run_bb84

            result = run_bb84(task.parameters["exchanges"], seed=task.seed, **options)
            row.update(_eve_columns(result.report))
    except Exception as exc:  # noqa: BLE001 -- one failing session must not end the sweep
        row.update(error=_one_line(exc), wall_s=time.perf_counter() - t0)
        return row
    r = result.report
    timings = {k: float(v) for k, v in r.timings_s.items()}
    row.update(
        detected=int(r.detected), sifted=int(r.sifted), sample_bits=int(r.sample_bits),
        qber_estimate=_float(r.qber.get("estimate")), qber_upper=_float(r.qber.get("upper")),
        qber_true_sifted=_float(r.qber.get("true_sifted")),
        aborted=bool(r.aborted), abort_reason=r.abort_reason, final_key_bits=int(r.final_key_bits),
        leaked_ec_bits=int(r.leaked_ec_bits), key_sha256=r.bob_key_sha256,
        keys_match=None if r.aborted else r.alice_key_sha256 == r.bob_key_sha256,
        quantum_s=timings.get("quantum"), postprocessing_s=sum(v for k, v in timings.items() if k != "quantum"),
        timings_s=json.dumps(timings), wall_s=time.perf_counter() - t0,
    )
    return row


def _warm_up() -> None:
    """Run a tiny session in a worker, so its first task does not pay for qiskit's lazy set-up."""
    from ..session import run_bb84

    run_bb84(256, seed=0)


def _distributed():
    try:
        import distributed
    except ImportError:
        raise MissingExtraError("sweep", "dask", "Running a sweep on Dask distributed") from None
    return distributed


SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _connect(distributed, workers: int | None, scheduler: str | None):
    """(client, cluster or None): a LocalCluster of ``workers`` processes, or the given scheduler."""
    if scheduler is None:
        with _workers_ignore_ctrl_c():
            # One thread per worker process, Aer's OpenMP and BLAS included: a worker is one core's
            # worth of sessions, so adding workers adds cores instead of contending for them.
            cluster = distributed.LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                                               processes=True, dashboard_address=None, env=SINGLE_THREAD_ENV)
        return distributed.Client(cluster), cluster
    try:
        client = distributed.Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise ConnectionError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except TimeoutError:
        client.close()
        raise ConnectionError(f"no worker joined the Dask scheduler at {scheduler} within {WORKER_WAIT_S:.0f} s") from None
    return client, None


def _close_cluster(cluster, *, interrupted: bool) -> None:
    """Close a local cluster; after an interrupt, stop its workers first without waiting.

    A worker busy with a session would otherwise get the nanny's default grace period (about
    4 s) before being killed.  Closing each nanny with a short timeout marks it closing (so it
    does not restart its worker) and kills the worker process once the timeout has passed.
    """
    if interrupted:
        import asyncio

        async def stop_workers():
            await asyncio.gather(*(nanny.close(timeout=INTERRUPTED_WORKER_STOP_S, reason="sweep-interrupted")
                                   for nanny in list(cluster.workers.values())), return_exceptions=True)

        with contextlib.suppress(Exception):
            cluster.sync(stop_workers)
            # Their workers are gone: nothing is left for the cluster to retire (retiring a
            # closed worker can wait forever), only its scheduler to close, which is bounded.
            cluster.workers.clear()
            cluster.worker_spec.clear()
        with contextlib.suppress(Exception):
            cluster.close(timeout=INTERRUPTED_CLOSE_S)
        return
    cluster.close()


@contextlib.contextmanager
def _workers_ignore_ctrl_c():
    """Start worker processes with SIGINT ignored (an ignored signal survives exec).

    Ctrl-C reaches the whole foreground process group; the driver handles it (closes the output,
    then the cluster), so the workers need not die of it, each printing a traceback.
    """
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals are not ours to change
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _check_usage(workers, scheduler, serial) -> None:
    if workers is not None and scheduler is not None:
        raise ConfigurationError("give workers (a local cluster) or a scheduler address, not both")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigurationError(f"workers must be a whole number >= 1, got {workers!r}")
    if scheduler is not None and (not isinstance(scheduler, str) or "://" not in scheduler):
        raise ConfigurationError(f"the scheduler address must look like tcp://HOST:PORT, got {scheduler!r}")
    if serial is not None and not isinstance(serial, bool):
        raise ConfigurationError(f"serial must be True, False or None (decide by the number of tasks), got {serial!r}")
    if serial and (scheduler is not None or (workers or 1) > 1):
        raise ConfigurationError("a serial sweep runs in this process: give serial, or workers > 1 / a scheduler "
                                 "(Dask), not both")


def _use_serial(serial: bool | None, workers: int | None, scheduler: str | None, pending: int) -> bool:
    """Serial when asked, else for ``workers=1`` or at most SERIAL_MAX_TASKS tasks with neither
    workers nor a scheduler given."""
    if serial is not None:
        return serial
    if scheduler is not None:
        return False
    return workers == 1 or (workers is None and pending <= SERIAL_MAX_TASKS)


def _check_meta(output, meta: dict | None, spec: SweepSpec, done: set[str], tasks: list[Task], extend: bool) -> None:
    """Refuse to add rows to an output another spec started (unless extending it, see run_sweep)."""
    spec_copy, meta_path = sidecars(output)
    if meta is None:
        if done:
            raise ConfigurationError(f"{output} has rows but no run record {meta_path.name} beside it: which spec wrote "
                                     "them is unknown; write this sweep to a new output")
        return
    if meta.get("spec_digest") == spec.digest():
        return
    if not extend:
        raise ConfigurationError(
            f"{output} was started by another spec (digest {meta.get('spec_digest')}; its copy: {spec_copy}) and this "
            f"one differs ({spec.digest()}): rerun that spec to resume, write to a new output, or extend the sweep "
            "(extend=True, qkd sweep --extend) when the new spec keeps every task already done")
    strays = len(done - {t.task_id for t in tasks})
    if strays:
        raise ConfigurationError(f"cannot extend {output}: {strays} of its {len(done)} rows are not tasks of the new "
                                 "spec (extending only adds tasks); write this sweep to a new output")


def _spec_text(source, spec: SweepSpec) -> str:
    """The spec copy's text: the spec file as written, or the canonical TOML of a parsed spec."""
    digest = f"# spec digest {spec.digest()}, copied by qkd_circuits.sweep at {_utc_now()}"
    if source is not None:
        return f"# The spec of this sweep: {Path(source).resolve()}\n{digest}\n" + Path(source).read_text(encoding="utf-8")
    return f"# The spec of this sweep, as parsed (SweepSpec.to_toml)\n{digest}\n" + spec.to_toml()


def _start_meta(output, meta: dict | None, spec: SweepSpec, source, n_tasks: int, run: dict) -> dict:
    """Write the spec copy and the run record with this run started; return the record."""
    if meta is None or meta.get("spec_digest") != spec.digest():
        _write_spec_copy(output, _spec_text(source, spec))
    previous = [] if meta is None else meta.get("previous_spec_digests", [])
    if meta is not None and meta.get("spec_digest") != spec.digest():
        previous = [*previous, meta.get("spec_digest")]
    meta = {"format": META_FORMAT, "spec_name": spec.name, "protocol": spec.protocol, "spec_digest": spec.digest(),
            "spec_copy": sidecars(output)[0].name, "previous_spec_digests": previous,
            "columns": list(columns(spec.protocol)), "tasks": n_tasks,
            "started_utc": run["started_utc"] if meta is None else meta["started_utc"], "finished_utc": None,
            "complete": False, "runs": [*([] if meta is None else meta.get("runs", [])), run]}
    _write_meta(output, meta)
    return meta


def _finish_meta(output, meta: dict, counts: dict, *, complete: bool, interrupted: bool) -> None:
    finished = _utc_now()
    meta["runs"][-1].update(finished_utc=finished, interrupted=interrupted, **counts)
    meta.update(finished_utc=finished, complete=complete)
    _write_meta(output, meta)


def _check_backends(tasks: list[Task]) -> None:
    """Resolve each fake device once here, so a wrong name fails before the workers start."""
    devices = {t.parameters["backend"] for t in tasks} - {"aer"}
    if devices:
        from ..quantum.backends import resolve_backend

        for spec in sorted(devices):
            resolve_backend(spec)


class _Progress:
    def __init__(self, progress, total: int) -> None:
        self._callback, self._bar, self.total, self.done = None, None, total, 0
        if callable(progress):
            self._callback = progress
        elif progress:
            import click

            self._bar = click.progressbar(length=total, label="sessions", file=sys.stderr, show_pos=True)
            self._bar.__enter__()

    def step(self) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update(1)
        if self._callback is not None:
            self._callback(self.done, self.total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


def run_sweep(spec: SweepSpec | str | Path, output: str | Path, *, workers: int | None = None,
              scheduler: str | None = None,
              progress: bool | Callable[[int, int], None] | None = None,
              serial: bool | None = None, extend: bool = False, command: str | None = None) -> SweepSummary:
    """Run every task of ``spec`` not yet in ``output`` and append their rows.

    Args:
        spec: a :class:`SweepSpec` or the path of a TOML spec.
        output: a CSV file, or a Parquet dataset directory if it ends in ``.parquet`` (see
            :mod:`qkd_circuits.sweep.output`).  Existing rows are kept and their tasks skipped.
        workers: worker processes of the local cluster (one thread each); default: the cores.
        scheduler: ``tcp://HOST:PORT`` of a running Dask scheduler to use instead; its workers
            need this version of qkd_circuits installed.
        progress: ``True`` draws a bar on stderr; a callable gets ``(done, total)`` per row.
        serial: ``True``: run the tasks one after another in this process, without Dask (no
            cluster start-up; ``workers`` > 1 and ``scheduler`` are then refused); ``False``: on
            Dask; ``None`` (default): serially when ``workers=1``, or when neither workers nor a
            scheduler is given and at most :data:`SERIAL_MAX_TASKS` tasks are left to run.
        extend: accept a spec other than the one the output was started with, if every row
            already there is one of its tasks (e.g. more seeds, another grid value); the spec
            copy is replaced and the run record keeps the earlier digests.
        command: the command line to put in the run record (default: this process's argv).

    Beside the output it writes a copy of the spec and a run record (timestamps, command,
    digest, commit, versions; :func:`~qkd_circuits.sweep.output.sidecars`) before the first task.

    Returns:
        A :class:`SweepSummary`.  Tasks that raised are rows with ``error`` and count as done
        (delete their lines to retry them); aborted sessions are ordinary rows.

    Raises:
        ConfigurationError: a bad spec, bad arguments, an output of another format or protocol,
            or one started by another spec.
        MissingExtraError: dask (or, for Parquet, pyarrow) is not installed.
        ConnectionError: the scheduler cannot be reached, has no workers, or lost the tasks.
        KeyboardInterrupt: after closing the output (rows written so far stay) and the cluster.
    """
    t0 = time.perf_counter()
    _check_usage(workers, scheduler, serial)
    source = None if isinstance(spec, SweepSpec) else spec
    spec = spec if isinstance(spec, SweepSpec) else load_spec(spec)
    tasks = expand(spec)
    sink = open_output(output, spec.protocol)
    done = sink.recover()
    meta = _read_meta(output)
    _check_meta(output, meta, spec, done, tasks, extend)
    pending = [t for t in tasks if t.task_id not in done]
    in_process = _use_serial(serial, workers, scheduler, len(pending))
    counts = dict(run=0, failed=0, aborted=0, keys=0)
    n_workers, compute_s, t_compute = 0, 0.0, time.perf_counter()
    if pending:
        distributed = None if in_process else _distributed()
        _check_backends(pending)
        run = {"started_utc": _utc_now(), "finished_utc": None, "interrupted": None,
               "command": command if command is not None else shlex.join(sys.argv),
               "executor": "serial" if in_process else "dask", "workers": None, "scheduler": scheduler,
               "skipped": len(tasks) - len(pending), "commit": _provenance.commit(), "versions": _provenance.versions(),
               "python": platform.python_version(), "host": socket.gethostname()}
        client = cluster = None
        bar, interrupted, started = None, False, None
        try:
            if in_process:
                n_workers = 1
            else:
                client, cluster = _connect(distributed, workers, scheduler)
                client.run(_warm_up)
                n_workers = len(client.scheduler_info()["workers"])
            run["workers"] = n_workers
            started = _start_meta(output, meta, spec, source, len(tasks), run)
            sink.open()
            bar = _Progress(progress, len(pending))
            t_compute = time.perf_counter()
            if in_process:
                _run_serial(pending, sink, bar, counts)
            else:
                _run(distributed, client, pending, sink, bar, counts,
                     window=TASKS_PER_WORKER_IN_FLIGHT * max(n_workers, 4))
            compute_s = time.perf_counter() - t_compute
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            if bar is not None:
                bar.close()
            sink.close()
            if client is not None:
                client.close()
            if cluster is not None:
                _close_cluster(cluster, interrupted=interrupted)
            if started is not None:
                _finish_meta(output, started, counts,
                             complete=not interrupted and counts["run"] == len(pending), interrupted=interrupted)
    return SweepSummary(
        spec=spec.name, output=str(output), tasks=len(tasks), skipped=len(tasks) - len(pending), **counts,
        workers=n_workers, scheduler=scheduler, startup_s=t_compute - t0, compute_s=compute_s,
        wall_s=time.perf_counter() - t0, sessions_per_s=counts["run"] / compute_s if counts["run"] else None,
        serial=bool(pending) and in_process, protocol=spec.protocol, meta=str(sidecars(output)[1]))


def _count(counts: dict, row: dict) -> None:
    counts["run"] += 1
    counts["failed"] += row.get("error") is not None
    counts["aborted"] += bool(row.get("aborted"))
    counts["keys"] += (row.get("final_key_bits") or 0) > 0


def _run_serial(pending: list[Task], sink, bar: _Progress, counts: dict) -> None:
    for task in pending:
        row = run_task(task)
        sink.write(row)
        _count(counts, row)
        bar.step()


def _run(distributed, client, pending: list[Task], sink, bar: _Progress, counts: dict, *, window: int) -> None:
    queue = iter(pending)
    tasks: dict[str, Task] = {}

    def submit(task: Task):
        future = client.submit(run_task, task, key=f"bb84-{task.task_id}")
        tasks[future.key] = task
        return future

    running = distributed.as_completed([submit(t) for t in itertools.islice(queue, window)])
    for future in running:
        task = tasks.pop(future.key)
        if future.status == "finished":
            row = future.result()
        elif future.status == "error":  # the worker died running it (e.g. out of memory)
            row = {**_row(task), "error": _one_line(future.exception())}
        else:
            raise ConnectionError(f"the scheduler lost task {task.task_id} ({future.status}): "
                                  "rerun the same sweep to resume")
        future.release()
        sink.write(row)
        _count(counts, row)
        bar.step()
        following = next(queue, None)
        if following is not None:
            running.add(submit(following))
