"""``qkd sweep SPEC.toml --output FILE``: the sweep runner on the command line.

Registered on the ``qkd`` group by :mod:`qkd_circuits.cli`.  Exit codes (:mod:`.errors`):
0 every task ran (aborted sessions included), 2 bad usage or spec, 1 the scheduler failed or some
tasks ended in an error (their rows say which), 130 interrupted (rerun to resume).
"""

from __future__ import annotations

import json
import shlex
import sys

import click

from .errors import EXIT_BACKEND as EXIT_FAILED
from .errors import EXIT_INTERRUPTED, EXIT_OK, exit_codes, fail
from .options import json_option

__all__ = ["sweep_command"]


@click.command("sweep")
@click.argument("spec", metavar="SPEC.toml", type=click.Path(dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(),
              help="Results: a CSV file, or a Parquet dataset directory if it ends in .parquet. "
                   "Rows already there are kept and their tasks skipped (resume).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes of the local Dask cluster, one thread each  [default: the cores]")
@click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
              help="Use this running Dask scheduler (and its workers) instead of a local cluster.")
@click.option("--serial/--no-serial", default=None,
              help="--serial: run the sessions one after another in this process, without Dask (no cluster "
                   "start-up). --no-serial: on Dask even for a few sessions. [default: serial for --workers 1, "
                   "or for at most 16 sessions to run when neither --workers nor --scheduler is given]")
@click.option("--extend", is_flag=True,
              help="Accept a changed spec for an existing --output if every row already there is one of its "
                   "tasks (more seeds, another grid value); the spec copy is replaced.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary line.")
@json_option("Print the summary as one JSON object and nothing else.")
def sweep_command(spec, output, workers, scheduler, serial, extend, quiet, as_json) -> None:
    """Run a grid of seeded sessions (SPEC.toml), serially or on Dask, one row per session.

    See docs/sweeps.md for the spec format, the columns of each protocol and reading the
    results.  Beside --output go a copy of the spec and a run record (OUTPUT.spec.toml and
    OUTPUT.meta.json; inside a .parquet directory: _spec.toml and _meta.json).  Interrupt it
    at any time and rerun the same command: only the sessions missing from --output run; an
    output started by another spec is refused (see --extend).
    """
    from ..sweep.runner import run_sweep

    words = ["qkd", "sweep", spec, "--output", output]
    for flag, value in (("--workers", workers), ("--scheduler", scheduler)):
        if value is not None:
            words += [flag, str(value)]
    words += [*(["--serial"] if serial else ["--no-serial"] if serial is False else []),
              *(["--extend"] if extend else [])]
    try:
        with exit_codes():
            summary = run_sweep(spec, output, workers=workers, scheduler=scheduler, serial=serial, extend=extend,
                                progress=not (quiet or as_json), command=shlex.join(words))
    except KeyboardInterrupt:
        fail(f"interrupted; the rows written so far are in {output}: rerun the same command to resume",
             EXIT_INTERRUPTED)
    if as_json:
        click.echo(json.dumps(summary.to_dict()))
    elif not quiet:
        rate = f": {summary.sessions_per_s:,.2f} sessions/s" if summary.sessions_per_s else ""
        where = "serially in this process" if summary.serial else f"on {summary.workers} workers"
        click.echo(f"sweep {summary.spec!r}: {summary.tasks} tasks, {summary.skipped} already in {output}, "
                   f"{summary.run} run ({summary.aborted} aborted, {summary.failed} failed) {where} "
                   f"in {summary.wall_s:.1f} s (startup {summary.startup_s:.1f} s){rate}")
    sys.exit(EXIT_FAILED if summary.failed else EXIT_OK)
