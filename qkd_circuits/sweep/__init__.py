"""Sweeps at scale: a grid of seeded BB84 sessions, serially or on Dask distributed, resumable.

``qkd sweep SPEC.toml --output results.csv`` (or :func:`run_sweep`) runs one ``run_bb84`` session
per grid point and seed, each an independent Dask task on a ``LocalCluster`` of single-threaded
worker processes (or on a running scheduler, ``--scheduler tcp://HOST:PORT``), or one after
another in this process (``--serial``; the default for at most 16 sessions to run or
``--workers 1``: no cluster start-up), and appends one row per session to a CSV file or a
Parquet dataset as sessions finish.  Beside the results go a copy of the spec and a run record
(timestamps, command, spec digest, commit, versions).  Rerun the same command after an
interruption and only the missing sessions run; another spec is refused.  Dask and Parquet
need the ``sweep`` extra (``pip install 'qkd_circuits[sweep]'``, which brings pandas too).
The format, the columns of each protocol and reading the results: ``docs/sweeps.md``.

The spec (TOML)::

    name = "qber-vs-distance"          # optional; default: the file's stem
    description = "..."                # optional, free text
    seeds = {start = 0, count = 20}    # or a list: seeds = [1, 2, 3]   (required)

    [fixed]                            # one value each, for every session
    mode = "prepared"
    exchanges = 20000
    detector_efficiency = 0.6

    [grid]                             # lists: the sweep is their Cartesian product
    distance_km = [0, 10, 25]
    noise = ["none", "depolarizing:0.04", "depolarizing:0.04+readout:0.01"]
    eve = ["none", "intercept-resend:0.2", "probe:0.3"]

This spec is 3 x 3 x 3 grid points x 20 seeds = 540 sessions (``benchmarks/sweep_example.toml``
is a commented one).  The parameters, their defaults (those of ``qkd run``) and their option:

====================  ==========  ==================================================================
parameter             default     meaning
====================  ==========  ==================================================================
mode                  "qrng"      ``--mode``: "prepared" or "qrng"
backend               "aer"       ``--backend``: "aer" or "fake:<name>" (local and seedable only)
exchanges             100000      ``--exchanges``: pulses per session (the block size)
noise                 "none"      ``--noise``: one model "depolarizing:0.04", several joined by "+"
                                  (or a list of strings), or "none"
eve                   "none"      ``--eve``: "intercept-resend:F[:basis]", "probe:S" or "none"
distance_km           0.0         ``--distance-km``
alpha_db_per_km       0.2         ``--alpha-db-per-km``
detector_efficiency   1.0         ``--detector-efficiency``
dark_count            0.0         ``--dark-count``
abort_qber            0.11        ``--abort-qber``
cascade               "option7"   ``--cascade``
sample_fraction       0.1         ``--sample-fraction``
eps_sec               1e-10       ``--eps-sec``
eps_cor               1e-15       ``--eps-cor``
protocol              "bb84"      "bb84" (``run_bb84``) or "decoy": a decoy-state round on weak
                                  coherent pulses (``run_decoy_session``, as ``qkd decoy``)
mu, nu                0.5, 0.1    decoy: signal and weak-decoy intensities
p_signal, p_decoy     0.7, 0.2    decoy: shares of signal and decoy pulses (the rest: vacuum)
u_alpha               5.0         decoy: the estimate methods' margin in standard deviations
decoy_method          "lim2014"   decoy: "lim2014" or "rusca2018" (composable finite-key, from the
                                  round's counts; rusca2018 uses signal + one decoy, p_decoy =
                                  1 − p_signal), or the estimates "decoy-vacuum-weak", "gllp",
                                  "assume-single-photons"
====================  ==========  ==================================================================

A decoy session reads ``exchanges`` as pulses, the fibre and detector parameters (noise may only
be "misalignment:E"), ``eve`` "none" or "pns" (photon-number splitting tuned to the signal's
honest click rate) and the post-processing parameters; it runs on "aer" and does not read
``mode``.  A spec runs one protocol (``protocol`` under ``[fixed]``) and may set only the
parameters that protocol reads: BB84 specs no decoy parameters, decoy specs no ``mode``.  A
BB84 task's id leaves the decoy-only parameters out.

Any parameter goes under ``[fixed]`` (a value) or ``[grid]`` (a non-empty list without repeats),
not both.  The whole spec is validated before anything runs (unknown keys, wrong types, empty
lists, values the channel / detector / Eve models refuse): :class:`~qkd_circuits.ConfigurationError`
names the key and the value.

Each session is a task with a stable id, 16 hex digits of SHA-256 over its parameters and seed
(:func:`task_id`), and gives one row with its protocol's columns (:func:`columns`): the task id,
seed and every parameter the protocol reads; the report's figures (detected, sifted,
sample_bits, qber_estimate / qber_upper / qber_true_sifted, aborted, abort_reason,
final_key_bits, leaked_ec_bits, key_sha256, keys_match); BB84: what Eve learned
(attacked_fraction, right_basis_fraction, guess_error_right_basis as in the report's ``eve``
part, and eve_known_fraction); decoy: decoy_rate, decoy_y1, decoy_e1, decoy_valid,
gain_signal, gain_decoy and eve_known_fraction (the simulator's ground truth); then
quantum_s / postprocessing_s / wall_s and all timings as JSON; ``error`` (the exception, when
the session raised instead of finishing); the worker, the git commit and the package versions
(JSON).  An aborted session is an ordinary row.  Rows come in completion order.  How CSV and
Parquet outputs, the spec copy and the run record are written and resumed:
:mod:`qkd_circuits.sweep.output`; :func:`read_results` reads them back as dicts.

Examples:
    >>> spec = parse_spec({"seeds": {"count": 3},
    ...                    "grid": {"distance_km": [0, 25], "eve": ["none", "intercept-resend:1"]}})
    >>> (spec.points, len(spec), len(expand(spec)))
    (4, 12, 12)
    >>> expand(spec)[0].parameters["distance_km"], expand(spec)[0].seed
    (0.0, 0)
"""

from .output import COLUMNS, columns, read_results, sidecars
from .runner import SweepSummary, run_sweep, run_task
from .spec import PARAMETERS, SweepSpec, Task, expand, load_spec, parse_spec, task_id

__all__ = ["COLUMNS", "PARAMETERS", "SweepSpec", "SweepSummary", "Task", "columns", "expand", "load_spec",
           "parse_spec", "read_results", "run_sweep", "run_task", "sidecars", "task_id"]
