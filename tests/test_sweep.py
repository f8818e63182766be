"""qkd sweep: spec validation, expansion, real sweeps on a two-worker Dask LocalCluster, resume,
Parquet output and the command line.  Sessions run real circuits on Aer, seeded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import assert_rate
from qkd_circuits import ConfigurationError
from qkd_circuits.cli import decoy_command, main, run as run_command
from qkd_circuits.sweep import (COLUMNS, PARAMETERS, Task, expand, load_spec, parse_spec, read_results, run_sweep,
                                run_task, task_id)

# 2 Eve settings x 2 noise settings x 3 seeds = 12 sessions of 20,000 pulses (~0.1-0.3 s each).
SPEC = """
name = "test"
seeds = {start = 0, count = 3}

[fixed]
mode = "prepared"
exchanges = 40000

[grid]
eve = ["none", "intercept-resend:1"]
noise = ["none", "depolarizing:0.04"]
"""
# Sifted QBER per grid point (models.py: depolarizing p gives p/2, intercept-resend f gives f/4;
# independent flips compose as a + b - 2ab).
EXPECTED_QBER = {("none", "none"): 0.0, ("none", "depolarizing:0.04"): 0.02,
                 ("intercept-resend:1", "none"): 0.25, ("intercept-resend:1", "depolarizing:0.04"): 0.26}
DETERMINISTIC = ("sifted", "detected", "qber_true_sifted", "qber_estimate", "final_key_bits", "key_sha256",
                 "abort_reason")


@pytest.fixture
def scheduler(dask_scheduler):
    """The session's two-worker cluster (conftest), for the tests that connect to a scheduler address."""
    return dask_scheduler


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text(SPEC)
    return path


# -- the spec -------------------------------------------------------------------------------

GRID = {"distance_km": [0, 10]}


@pytest.mark.parametrize("data, message", [
    ({"seeds": [1], "grids": GRID}, r"unknown top-level key 'grids' \(did you mean 'grid'\?\)"),
    ({"seeds": [1], "exchanges": 5}, r"put 'exchanges' under \[fixed\] or \[grid\]"),
    ({"seeds": [1], "grid": {"distance": [1]}}, r"unknown parameter in \[grid\] 'distance' \(did you mean 'distance_km'\?\)"),
    ({"seeds": [1], "fixed": [1]}, r"\[fixed\] must be a table"),
    ({"seeds": [1], "grid": {"distance_km": 5}}, r"grid.distance_km must be a list .*single value goes under \[fixed\]"),
    ({"seeds": [1], "grid": {"distance_km": []}}, r"grid.distance_km is empty"),
    ({"seeds": [1], "grid": {"distance_km": [10, 10.0]}}, r"grid.distance_km repeats a value: \[10.0, 10.0\]"),
    ({"seeds": [1], "grid": {"distance_km": [0, "far"]}}, r"grid.distance_km must be a finite number, got 'far'"),
    ({"seeds": [1], "fixed": {"exchanges": "many"}}, r"fixed.exchanges must be a whole number >= 1, got 'many'"),
    ({"seeds": [1], "fixed": {"exchanges": True}}, r"fixed.exchanges must be a whole number >= 1, got True"),
    ({"seeds": [1], "fixed": {"exchanges": 0}}, r"fixed.exchanges must be a whole number >= 1, got 0"),
    ({"seeds": [1], "fixed": {"mode": "classical"}}, r"fixed.mode must be 'prepared' or 'qrng', got 'classical'"),
    ({"seeds": [1], "fixed": {"backend": "ibm:ibm_torino"}}, r"fixed.backend must be aer or fake:<name>"),
    ({"seeds": [1], "grid": {"noise": ["none", "depolarizing:1.5"]}}, r"depolarizing must be a probability in \[0, 1\], got 1.5"),
    ({"seeds": [1], "grid": {"noise": ["gravity:0.1"]}}, r"unknown noise model 'gravity'"),
    ({"seeds": [1], "grid": {"noise": [7]}}, r"grid.noise must be a noise string"),
    ({"seeds": [1], "grid": {"eve": ["intercept:0.2"]}}, r"unknown eavesdropper 'intercept'"),
    ({"seeds": [1], "fixed": {"distance_km": 5}, "grid": {"distance_km": [1]}}, r"distance_km set in both \[fixed\] and \[grid\]"),
    ({"grid": GRID}, r"the spec needs seeds"),
    ({"seeds": []}, r"seeds must be a non-empty list"),
    ({"seeds": {"count": 0}}, r"seeds.count must be a whole number >= 1, got 0"),
    ({"seeds": {"start": 3}}, r"seeds = \{start = S, count = N\} needs count"),
    ({"seeds": {"stop": 3}}, r"unknown key in seeds 'stop'"),
    ({"seeds": [1, 1]}, r"seeds repeat a value: \[1, 1\]"),
    ({"seeds": [-1]}, r"each seed must be a whole number >= 0, got -1"),
    ({"seeds": [1], "grid": {"detector_efficiency": [0.5, 1.5]}},
     r"grid point \(detector_efficiency=1.5\): efficiency must be a probability in \[0, 1\], got 1.5"),
    ({"seeds": [1], "fixed": {"cascade": "turbo"}}, r"unknown Cascade preset 'turbo'"),
    ({"seeds": [1], "fixed": {"backend": "fake:nairobi", "noise": "depolarizing:0.04"}}, r"Aer noise instructions"),
    ({"seeds": [1], "fixed": {"protocol": "e91"}}, r"fixed.protocol must be one of 'bb84', 'decoy', got 'e91'"),
    ({"seeds": [1], "fixed": {"eve": "pns"}}, r"eve 'pns' \(photon-number splitting\) needs protocol = 'decoy'"),
    ({"seeds": [1], "fixed": {"protocol": "decoy", "noise": "depolarizing:0.04"}}, r"use 'misalignment:E' or 'none'"),
    ({"seeds": [1], "fixed": {"protocol": "decoy", "eve": "probe:0.3"}}, r"decoy sessions take eve 'none' or 'pns'"),
    ({"seeds": [1], "fixed": {"protocol": "decoy", "backend": "fake:nairobi"}}, r"decoy sessions run on backend 'aer'"),
    ({"seeds": [1], "fixed": {"protocol": "decoy"}, "grid": {"nu": [0.1, 0.6]}},
     r"grid point \(nu=0.6\): the decoy nu=0.6 must be weaker than the signal mu=0.5"),
    ({"seeds": [1], "fixed": {"protocol": "decoy", "decoy_method": "trust-me"}}, r"fixed.decoy_method must be one of"),
])
def test_bad_specs_are_refused_with_the_key_and_the_value(data, message):
    with pytest.raises(ConfigurationError, match=message):
        parse_spec(data)


def test_load_spec_refuses_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ConfigurationError, match="cannot read the sweep spec"):
        load_spec(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[grid\ndistance_km = [0]\n")
    with pytest.raises(ConfigurationError, match="broken.toml is not valid TOML"):
        load_spec(broken)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("seeds = [1]\n[grid]\ndistanse_km = [0]\n")
    with pytest.raises(ConfigurationError, match=r"unknown.toml: unknown parameter in \[grid\] 'distanse_km'"):
        load_spec(unknown)


def test_defaults_are_those_of_qkd_run():
    cli = {p.name: p.default for p in run_command.params}
    decoy = {p.name: p.default for p in decoy_command.params}  # the decoy-session parameters: qkd decoy's
    cli.update({k: decoy[k] for k in ("mu", "nu", "p_signal", "p_decoy", "u_alpha")},
               decoy_method=decoy["decoy_method"], protocol="bb84")
    for name, parameter in PARAMETERS.items():
        expected = {"noise": "none", "eve": "none"}.get(name, cli[name])
        assert parameter.default == expected, name


def test_expansion_counts_order_and_stable_ids(spec_file):
    spec = parse_spec({"seeds": {"start": 5, "count": 5}, "fixed": {"exchanges": 4000},
                       "grid": {"distance_km": [0, 10, 25], "noise": ["none", ["dephasing:0.02", "readout:0.01"]],
                                "eve": ["none", "probe:0.3"]}})
    tasks = expand(spec)
    assert (spec.points, len(spec), len(tasks)) == (12, 60, 60)
    assert len({t.task_id for t in tasks}) == 60
    # The last grid parameter (in PARAMETERS order: noise, eve, distance_km) varies fastest, seeds innermost.
    first = [(t.parameters["noise"], t.parameters["eve"], t.parameters["distance_km"], t.seed) for t in tasks[:7]]
    assert first == [("none", "none", 0.0, s) for s in range(5, 10)] + [("none", "none", 10.0, 5), ("none", "none", 10.0, 6)]
    assert tasks[-1].parameters["noise"] == "dephasing:0.02+readout:0.01"  # a list is joined with '+'
    assert all(t.parameters["exchanges"] == 4000 and t.parameters["mode"] == "qrng" for t in tasks)
    # Ids depend on values, not spelling: 10 == 10.0, a noise list == its '+' string.
    again = expand(parse_spec({"seeds": [5], "fixed": {"exchanges": 4000, "distance_km": 10.0,
                                                       "noise": "dephasing:0.02+readout:0.01", "eve": "probe:0.3"}}))
    assert again[0].task_id == next(t.task_id for t in tasks if t.seed == 5 and t.parameters["distance_km"] == 10
                                    and t.parameters["eve"] == "probe:0.3" and t.parameters["noise"] != "none")
    # Known answer: resuming depends on ids not changing between versions (bump TASK_ID_VERSION if they must).
    first = expand(load_spec(spec_file))[0]  # the pin was taken when the spec had 20,000 pulses
    assert task_id({**first.parameters, "exchanges": 20000}, first.seed) == "9e58fe5ab3459879"
    assert task_id(tasks[0].parameters, 6) != tasks[0].task_id


def test_a_failing_session_is_a_row_with_the_error_not_an_exception():
    point = expand(parse_spec({"seeds": [1], "fixed": {"exchanges": 1000}}))[0]
    row = run_task(Task("bad", 1, {**point.parameters, "exchanges": 0}))  # bypasses the spec's checks
    assert row["error"] == "ConfigurationError: exchanges must be a whole number >= 1, got 0"
    assert row["task_id"] == "bad" and set(row) == set(COLUMNS) and row["aborted"] is None


# -- real sweeps ----------------------------------------------------------------------------

def _check_rows(rows: list[dict], spec) -> None:
    ids = [r["task_id"] for r in rows]
    assert sorted(ids) == sorted(t.task_id for t in expand(spec)) and len(set(ids)) == len(ids)
    for r in rows:
        assert r["error"] is None and set(r) == set(COLUMNS)
        assert_rate(r["sifted"] / r["exchanges"], 0.5, r["exchanges"])  # bases agree half the time
        assert_rate(r["qber_true_sifted"], EXPECTED_QBER[r["eve"], r["noise"]], r["sifted"])
        if r["eve"] != "none":
            assert r["aborted"] and r["abort_reason"] == "qber_too_high" and r["final_key_bits"] == 0
            assert r["qber_upper"] > r["abort_qber"]
        else:  # 40,000 pulses at QBER <= 2%: a key beyond the 1024-bit pool refill, the same at both ends
            assert not r["aborted"] and r["final_key_bits"] > 0 and r["keys_match"] is True
            assert r["qber_upper"] < r["abort_qber"] and r["leaked_ec_bits"] > 0
        assert r["wall_s"] > 0 and "quantum" in json.loads(r["timings_s"])
        assert "qiskit-aer" in json.loads(r["versions"])


def test_a_sweep_on_a_two_worker_local_cluster_writes_every_session(spec_file, tmp_path):
    output = tmp_path / "results.csv"
    summary = run_sweep(spec_file, output, workers=2)
    assert (summary.tasks, summary.skipped, summary.run, summary.failed) == (12, 0, 12, 0)
    assert (summary.workers, summary.aborted, summary.keys, summary.scheduler) == (2, 6, 6, None)
    rows = read_results(output)
    _check_rows(rows, load_spec(spec_file))
    assert len({r["worker"] for r in rows}) == 2  # both processes took sessions
    assert output.read_text().count("\n") == 13  # one header, one line per session


def test_resume_runs_only_the_missing_sessions_after_a_partial_last_line(spec_file, tmp_path, scheduler):
    output = tmp_path / "results.csv"
    run_sweep(spec_file, output, scheduler=scheduler)
    before = {r["task_id"]: r for r in read_results(output)}
    lines = output.read_text().splitlines(keepends=True)
    # Keep the header and 7 rows, then half of the 8th: a writer killed mid-line.
    output.write_text("".join(lines[:8]) + lines[8][: len(lines[8]) // 2])
    assert len(read_results(output)) == 7  # readers skip the partial line

    summary = run_sweep(spec_file, output, scheduler=scheduler)
    assert (summary.skipped, summary.run, summary.failed, summary.scheduler) == (7, 5, 0, scheduler)
    rows = read_results(output)
    _check_rows(rows, load_spec(spec_file))
    for r in rows:  # seeded: a session run again on any worker gives the same figures
        assert {k: r[k] for k in DETERMINISTIC} == {k: before[r["task_id"]][k] for k in DETERMINISTIC}

    done = run_sweep(spec_file, output, scheduler=scheduler)
    assert (done.skipped, done.run, done.workers, done.sessions_per_s) == (12, 0, 0, None)

    foreign = tmp_path / "foreign.csv"
    foreign.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigurationError, match="foreign.csv is not a sweep output of this version"):
        run_sweep(spec_file, foreign, scheduler=scheduler)
    assert foreign.read_text() == "a,b\n1,2\n"  # refused, never rewritten


def test_parquet_dataset_round_trip_and_resume(tmp_path, scheduler):
    pq = pytest.importorskip("pyarrow.parquet")
    data = {"seeds": {"count": 2}, "fixed": {"mode": "prepared", "exchanges": 4000, "dark_count": 1e-3},
            "grid": {"distance_km": [0, 25]}}
    output = tmp_path / "results.parquet"
    calls = []
    summary = run_sweep(parse_spec(data), output, scheduler=scheduler, progress=lambda done, total: calls.append((done, total)))
    assert summary.run == 4 and calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    (tmp_path / "results.parquet" / ".part-killed.parquet.tmp").write_bytes(b"half a file")

    data["seeds"] = {"count": 3}  # one more seed: only its 2 sessions run, into a new part file
    summary = run_sweep(parse_spec(data), output, scheduler=scheduler)
    assert (summary.skipped, summary.run) == (4, 2)
    assert sorted(p.name.startswith("part-") for p in output.iterdir()) == [True, True]  # the .tmp is gone
    table = pq.read_table(output)
    assert table.num_rows == 6 and table.column_names == list(COLUMNS)
    rows = read_results(output)
    assert len({r["task_id"] for r in rows}) == 6
    for r in rows:
        assert isinstance(r["aborted"], bool) and isinstance(r["sifted"], int) and r["error"] is None
        assert r["distance_km"] in (0.0, 25.0) and r["dark_count"] == 1e-3
        # Fibre loss: detection probability 10^(-0.2 * 25 / 10) plus dark counts (models.py).
        expected = 1 - (1 - 10 ** (-0.2 * r["distance_km"] / 10)) * (1 - 1e-3)
        assert_rate(r["detected"] / r["exchanges"], expected, r["exchanges"])


def test_the_command_line(spec_file, tmp_path, scheduler):
    runner = CliRunner()
    output = tmp_path / "cli.csv"
    result = runner.invoke(main, ["sweep", str(spec_file), "--output", str(output), "--scheduler", scheduler, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # one JSON object, nothing else
    assert (summary["tasks"], summary["run"], summary["failed"], summary["workers"]) == (12, 12, 0, 2)
    assert summary["sessions_per_s"] > 0 and len(read_results(output)) == 12

    again = runner.invoke(main, ["sweep", str(spec_file), "-o", str(output), "--scheduler", scheduler])
    assert again.exit_code == 0 and "12 tasks, 12 already in" in again.stdout

    bad = tmp_path / "bad.toml"
    bad.write_text('seeds = [1]\n[grid]\neve = ["intercept:0.2"]\n')
    for args, message in [([str(bad), "-o", str(output)], "unknown eavesdropper 'intercept'"),
                          ([str(spec_file), "-o", str(output), "--workers", "2", "--scheduler", scheduler],
                           "workers (a local cluster) or a scheduler address, not both"),
                          ([str(spec_file), "-o", str(output), "--scheduler", "localhost:8786"],
                           "must look like tcp://HOST:PORT")]:
        result = runner.invoke(main, ["sweep", *args])
        assert result.exit_code == 2 and message in result.stderr, result.output


def test_without_dask_the_error_names_the_extra_and_the_cli_still_imports(spec_file, tmp_path):
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("dask", "distributed"):
                    raise ImportError("blocked in this test")
        sys.meta_path.insert(0, Block())
        import qkd_circuits.cli, qkd_circuits.sweep
        assert not any(m.split(".")[0] in ("dask", "distributed") for m in sys.modules)
        from qkd_circuits import MissingExtraError
        try:
            qkd_circuits.sweep.run_sweep({str(spec_file)!r}, {str(tmp_path / 'x.csv')!r})
        except MissingExtraError as exc:
            print(exc.extra, exc)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("sweep ") and "pip install 'qkd_circuits[sweep]'" in proc.stdout
    assert not (tmp_path / "x.csv").exists()


def test_ctrl_c_keeps_every_written_row_and_the_rerun_completes(tmp_path, scheduler):
    spec = tmp_path / "long.toml"
    spec.write_text('seeds = {count = 30}\n[fixed]\nmode = "prepared"\nexchanges = 4000\n')
    output = tmp_path / "long.csv"
    qkd = str(Path(sys.executable).with_name("qkd"))
    # A terminal's Ctrl-C: SIGINT to the whole process group (the driver and its workers).
    proc = subprocess.Popen([qkd, "sweep", str(spec), "-o", str(output), "--workers", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (output.exists() and output.read_text().count("\n") > 6):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "rerun the same command to resume" in err, err
    kept = read_results(output)
    assert 5 <= len(kept) < 30 and output.read_text().endswith("\n")

    summary = run_sweep(spec, output, scheduler=scheduler)
    assert (summary.skipped, summary.run) == (len(kept), 30 - len(kept))
    rows = read_results(output)
    assert sorted(r["task_id"] for r in rows) == sorted(t.task_id for t in expand(load_spec(spec)))


@pytest.mark.slow
def test_a_two_hundred_session_sweep_on_two_workers(tmp_path):
    # The scale: >= 200 sessions on a 2-worker LocalCluster; every one present once, and
    # the noiseless / intercepted ones where physics puts them (throughput: benchmarks/sweep.py).
    spec = parse_spec({"name": "scale", "seeds": {"count": 25},
                       "fixed": {"mode": "prepared", "exchanges": 8000},
                       "grid": {"eve": ["none", "intercept-resend:1"], "noise": ["none", "depolarizing:0.04"],
                                "distance_km": [0, 10]}})
    assert len(spec) == 200
    output = tmp_path / "scale.csv"
    summary = run_sweep(spec, output, workers=2)
    assert (summary.run, summary.failed, summary.workers) == (200, 0, 2)
    rows = read_results(output)
    assert len(rows) == 200 and len({r["task_id"] for r in rows}) == 200
    assert len({r["worker"] for r in rows}) == 2
    for r in rows:
        if r["eve"] != "none":
            assert r["aborted"] and r["abort_reason"] == "qber_too_high"


def test_decoy_sessions_in_a_sweep(tmp_path, scheduler):
    # The GYS link at 0 and 40 km, honest and under photon-number splitting: the decoys certify
    # single photons on the honest link and catch PNS at 40 km, where Eve holds every sifted bit.
    spec = parse_spec({"seeds": [3], "fixed": {"protocol": "decoy", "exchanges": 1_000_000, "p_signal": 0.6,
                                               "p_decoy": 0.3, "noise": "misalignment:0.033",
                                               "detector_efficiency": 0.045, "dark_count": 1.7e-6,
                                               "alpha_db_per_km": 0.21},
                       "grid": {"distance_km": [0, 40], "eve": ["none", "pns"]}})
    output = tmp_path / "decoy.csv"
    summary = run_sweep(spec, output, scheduler=scheduler)
    assert (summary.run, summary.failed) == (4, 0)
    rows = {(r["distance_km"], r["eve"]): r for r in read_results(output)}
    for distance in (0.0, 40.0):
        honest = rows[(distance, "none")]
        assert honest["decoy_valid"] and honest["decoy_y1"] > 0 and honest["eve_known_fraction"] == 0.0
    assert rows[(0.0, "none")]["decoy_rate"] > 0  # at 40 km the u_alpha = 3 margin leaves no rate at 10^6 pulses
    caught = rows[(40.0, "pns")]
    assert caught["aborted"] and caught["abort_reason"] == "decoy_check_failed" and not caught["decoy_valid"]
    assert caught["eve_known_fraction"] > 0.95 and caught["final_key_bits"] == 0
    # A BB84 task keeps the id it had before decoy parameters existed (resume across versions).
    bb84 = expand(parse_spec({"seeds": [3], "fixed": {"mu": 0.3}}))[0]
    assert bb84.task_id == expand(parse_spec({"seeds": [3]}))[0].task_id


@pytest.mark.parametrize("name, sessions", [("sweep_example.toml", 360), ("sweep_decoy.toml", 120)])
def test_the_example_specs_are_valid(name, sessions):
    spec = load_spec(Path(__file__).parent.parent / "benchmarks" / name)
    assert len(spec) == sessions and len({t.task_id for t in expand(spec)}) == sessions
