"""qkd sweep: spec validation, expansion, real sweeps (serial, and on a two-worker Dask cluster),
the per-protocol columns, the spec copy and run record, resume, Parquet output, reading with
pandas and the command line.  Sessions run real circuits on Aer, seeded."""

from __future__ import annotations

import json
import os
import signal
import socket
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
from qkd_circuits.sweep import (COLUMNS, PARAMETERS, Task, columns, expand, load_spec, parse_spec, read_results,
                                run_sweep, run_task, sidecars, task_id)
from qkd_circuits.sweep.output import LEGACY_COLUMNS
from qkd_circuits.sweep.runner import SERIAL_MAX_TASKS, _use_serial

BB84_COLUMNS, DECOY_COLUMNS = columns("bb84"), columns("decoy")

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
    # One protocol per sweep, and only the parameters it reads (its rows have no other columns).
    ({"seeds": [1], "grid": {"protocol": ["bb84", "decoy"]}}, r"grid.protocol lists \['bb84', 'decoy'\]: a sweep runs one"),
    ({"seeds": [1], "fixed": {"mu": 0.3}}, r"mu: read by decoy sessions only; set protocol = 'decoy'"),
    ({"seeds": [1], "grid": {"nu": [0.05, 0.1], "u_alpha": [3.0]}}, r"nu, u_alpha: read by decoy sessions only"),
    ({"seeds": [1], "fixed": {"protocol": "decoy", "mode": "prepared"}}, r"mode: read by BB84 sessions only"),
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
    assert row["task_id"] == "bad" and list(row) == list(BB84_COLUMNS) and row["aborted"] is None


def test_each_protocol_has_its_own_columns_and_old_files_keep_theirs():
    bb84, decoy = list(BB84_COLUMNS), list(DECOY_COLUMNS)
    foreign_to_bb84 = {"mu", "nu", "p_signal", "p_decoy", "u_alpha", "decoy_method", "decoy_rate", "decoy_y1",
                       "decoy_e1", "decoy_valid", "gain_signal", "gain_decoy"}
    assert not foreign_to_bb84 & set(bb84) and foreign_to_bb84 <= set(decoy)
    eve = ["attacked_fraction", "right_basis_fraction", "guess_error_right_basis", "eve_known_fraction"]
    assert bb84[bb84.index("keys_match") + 1:][:4] == eve  # the report's eve part, then what Eve knew
    assert "mode" not in decoy and not set(eve[:3]) & set(decoy) and "eve_known_fraction" in decoy
    # Add, never rename: the old fixed header's names are all still names of some protocol's columns.
    assert set(LEGACY_COLUMNS) == (set(bb84) | set(decoy)) - set(eve[:3]) and set(COLUMNS) == set(bb84) | set(decoy)
    assert all(COLUMNS[n] == kind for n, kind in {**BB84_COLUMNS, **DECOY_COLUMNS}.items())
    with pytest.raises(ConfigurationError, match="protocol must be one of 'bb84', 'decoy', got 'e91'"):
        columns("e91")


def test_a_spec_renders_as_toml_with_the_same_digest():
    tomllib = pytest.importorskip("tomllib")
    spec = parse_spec({"name": "r", "description": 'a "quoted" name', "seeds": [4, 1, 9],
                       "fixed": {"exchanges": 4000, "eps_sec": 1e-10, "distance_km": 10},
                       "grid": {"noise": ["none", ["dephasing:0.02", "readout:0.01"]], "eve": ["none", "probe:0.3"]}})
    again = parse_spec(tomllib.loads(spec.to_toml()))
    assert again == spec and again.digest() == spec.digest() and spec.digest().startswith("sha256:")
    assert len(spec.digest()) == len("sha256:") + 64
    # What decides the tasks decides the digest; name and description do not.
    assert parse_spec({**tomllib.loads(spec.to_toml()), "name": "other"}).digest() == spec.digest()
    assert parse_spec({**tomllib.loads(spec.to_toml()), "seeds": [4, 1]}).digest() != spec.digest()
    assert "seeds = {start = 0, count = 3}" in parse_spec({"seeds": {"count": 3}}).to_toml()


def test_small_sweeps_run_serially_unless_told_otherwise():
    assert _use_serial(None, None, None, SERIAL_MAX_TASKS) and not _use_serial(None, None, None, SERIAL_MAX_TASKS + 1)
    assert _use_serial(None, 1, None, 10_000)  # one worker: this process is as good, without the start-up
    assert not _use_serial(None, 2, None, 1) and not _use_serial(None, None, "tcp://h:1", 1)
    assert not _use_serial(False, 1, None, 1) and _use_serial(True, None, None, 10_000)
    spec = parse_spec({"seeds": [1]})
    for kwargs, message in [(dict(serial=True, workers=2), "a serial sweep runs in this process"),
                            (dict(serial=True, scheduler="tcp://h:1"), "a serial sweep runs in this process"),
                            (dict(serial="yes"), "serial must be True, False or None")]:
        with pytest.raises(ConfigurationError, match=message):
            run_sweep(spec, "unused.csv", **kwargs)
    assert not Path("unused.csv").exists()


# -- real sweeps ----------------------------------------------------------------------------

def _check_rows(rows: list[dict], spec) -> None:
    ids = [r["task_id"] for r in rows]
    assert sorted(ids) == sorted(t.task_id for t in expand(spec)) and len(set(ids)) == len(ids)
    for r in rows:
        assert r["error"] is None and list(r) == list(BB84_COLUMNS)
        assert_rate(r["sifted"] / r["exchanges"], 0.5, r["exchanges"])  # bases agree half the time
        assert_rate(r["qber_true_sifted"], EXPECTED_QBER[r["eve"], r["noise"]], r["sifted"])
        if r["eve"] != "none":
            assert r["aborted"] and r["abort_reason"] == "qber_too_high" and r["final_key_bits"] == 0
            assert r["qber_upper"] > r["abort_qber"]
            # What Eve learned: she measured every pulse; her basis was right on half of the sifted
            # bits, and there her result is Alice's bit (a noiseless measurement): she knows those.
            assert r["attacked_fraction"] == 1.0 and r["guess_error_right_basis"] == 0.0
            assert_rate(r["right_basis_fraction"], 0.5, r["sifted"])
            assert r["eve_known_fraction"] == pytest.approx(r["right_basis_fraction"], abs=1e-12)
        else:  # 40,000 pulses at QBER <= 2%: a key beyond the 1024-bit pool refill, the same at both ends
            assert r["attacked_fraction"] is None and r["eve_known_fraction"] == 0.0
            assert not r["aborted"] and r["final_key_bits"] > 0 and r["keys_match"] is True
            assert r["qber_upper"] < r["abort_qber"] and r["leaked_ec_bits"] > 0
        assert r["wall_s"] > 0 and "quantum" in json.loads(r["timings_s"])
        assert "qiskit-aer" in json.loads(r["versions"])


def test_a_sweep_on_a_two_worker_dask_cluster_writes_every_session(spec_file, tmp_path, scheduler):
    # The cluster of the session (conftest); a LocalCluster started by the sweep itself: the
    # Ctrl-C test (qkd sweep --workers 2) and the slow 200-session one.
    output = tmp_path / "results.csv"
    summary = run_sweep(spec_file, output, scheduler=scheduler)
    assert (summary.tasks, summary.skipped, summary.run, summary.failed) == (12, 0, 12, 0)
    assert (summary.workers, summary.aborted, summary.keys, summary.serial) == (2, 6, 6, False)
    rows = read_results(output)
    _check_rows(rows, load_spec(spec_file))
    assert len({r["worker"] for r in rows}) == 2  # both processes took sessions
    assert output.read_text().count("\n") == 13  # one header, one line per session
    meta = json.loads(sidecars(output)[1].read_text())
    assert [(r["executor"], r["workers"], r["scheduler"], r["run"]) for r in meta["runs"]] == [("dask", 2, scheduler, 12)]


def test_resume_runs_only_the_missing_sessions_after_a_partial_last_line(spec_file, tmp_path, scheduler):
    output = tmp_path / "results.csv"
    run_sweep(spec_file, output, scheduler=scheduler)
    before = {r["task_id"]: r for r in read_results(output)}
    lines = output.read_text().splitlines(keepends=True)
    # Keep the header and 7 rows, then half of the 8th: a writer killed mid-line.
    output.write_text("".join(lines[:8]) + lines[8][: len(lines[8]) // 2])
    assert len(read_results(output)) == 7  # readers skip the partial line

    summary = run_sweep(spec_file, output)  # 5 left: serially, in this process
    assert (summary.skipped, summary.run, summary.failed, summary.serial, summary.workers) == (7, 5, 0, True, 1)
    rows = read_results(output)
    _check_rows(rows, load_spec(spec_file))
    for r in rows:  # seeded: a session run again, in a Dask worker or in this process, gives the same figures
        assert {k: r[k] for k in DETERMINISTIC} == {k: before[r["task_id"]][k] for k in DETERMINISTIC}
    assert {r["worker"] for r in rows if r["task_id"] not in [l.split(",")[0] for l in lines[1:8]]} == {
        f"{socket.gethostname()}/{os.getpid()}"}

    done = run_sweep(spec_file, output, scheduler=scheduler)
    assert (done.skipped, done.run, done.workers, done.sessions_per_s, done.serial) == (12, 0, 0, None, False)
    meta = json.loads(sidecars(output)[1].read_text())
    assert [(r["executor"], r["run"], r["skipped"]) for r in meta["runs"]] == [("dask", 12, 0), ("serial", 5, 7)]
    assert meta["complete"] and meta["spec_digest"] == load_spec(spec_file).digest()

    foreign = tmp_path / "foreign.csv"
    foreign.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigurationError, match="foreign.csv is not a sweep output of this version"):
        run_sweep(spec_file, foreign, scheduler=scheduler)
    assert foreign.read_text() == "a,b\n1,2\n"  # refused, never rewritten


def test_parquet_dataset_round_trip_and_an_extended_spec(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    data = {"seeds": {"count": 2}, "fixed": {"mode": "prepared", "exchanges": 4000, "dark_count": 1e-3},
            "grid": {"distance_km": [0, 25]}}
    output = tmp_path / "results.parquet"
    calls = []
    summary = run_sweep(parse_spec(data), output, progress=lambda done, total: calls.append((done, total)))
    assert summary.run == 4 and summary.serial and calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    (tmp_path / "results.parquet" / ".part-killed.parquet.tmp").write_bytes(b"half a file")

    data["seeds"] = {"count": 3}  # one more seed: another spec, refused unless the sweep is extended
    with pytest.raises(ConfigurationError, match=r"results.parquet was started by another spec \(digest sha256:"):
        run_sweep(parse_spec(data), output)
    summary = run_sweep(parse_spec(data), output, extend=True)  # only the new seed's 2 sessions run
    assert (summary.skipped, summary.run) == (4, 2)
    assert sorted(p.name for p in output.iterdir() if not p.name.startswith("part-")) == ["_meta.json", "_spec.toml"]
    assert len(list(output.glob("part-*.parquet"))) == 2  # the .tmp is gone
    meta = json.loads((output / "_meta.json").read_text())
    assert meta["spec_digest"] == parse_spec(data).digest() and len(meta["previous_spec_digests"]) == 1
    assert load_spec(output / "_spec.toml").digest() == parse_spec(data).digest()  # the copy is the new spec

    table = pq.read_table(output)  # the _-files are not parts to a Parquet reader
    assert table.num_rows == 6 and table.column_names == list(BB84_COLUMNS)
    rows = read_results(output)
    assert len({r["task_id"] for r in rows}) == 6
    for r in rows:
        assert isinstance(r["aborted"], bool) and isinstance(r["sifted"], int) and r["error"] is None
        assert r["distance_km"] in (0.0, 25.0) and r["dark_count"] == 1e-3
        # Fibre loss: detection probability 10^(-0.2 * 25 / 10) plus dark counts (models.py).
        expected = 1 - (1 - 10 ** (-0.2 * r["distance_km"] / 10)) * (1 - 1e-3)
        assert_rate(r["detected"] / r["exchanges"], expected, r["exchanges"])

    fewer = {**data, "seeds": {"count": 1}}  # extending cannot drop rows
    with pytest.raises(ConfigurationError, match=r"cannot extend .*: 4 of its 6 rows are not tasks of the new spec"):
        run_sweep(parse_spec(fewer), output, extend=True)


def test_pandas_reads_both_formats_as_docs_sweeps_md_says(tmp_path):
    pandas = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    spec = parse_spec({"seeds": [1, 2], "fixed": {"mode": "prepared", "exchanges": 2000},
                       "grid": {"eve": ["none", "intercept-resend:1"]}})
    for name in ("r.csv", "r.parquet"):
        run_sweep(spec, tmp_path / name)
    # The one-liners of docs/sweeps.md.
    csv_frame = pandas.read_csv(tmp_path / "r.csv")
    parquet_frame = pandas.read_parquet(tmp_path / "r.parquet")
    for frame in (csv_frame, parquet_frame):
        assert list(frame.columns) == list(BB84_COLUMNS) and len(frame) == 4
        frame = frame.sort_values("task_id").reset_index(drop=True)
        assert frame["eve_known_fraction"].notna().all() and (frame["sifted"] > 0).all()
    key = ["task_id", "sifted", "qber_true_sifted", "eve_known_fraction", "aborted"]
    assert csv_frame.sort_values("task_id")[key].reset_index(drop=True).equals(
        parquet_frame.sort_values("task_id")[key].reset_index(drop=True))  # same sessions, same figures
    attacked = csv_frame[csv_frame["eve"] == "intercept-resend:1"]
    assert attacked["aborted"].all() and (attacked["eve_known_fraction"] > 0.4).all()


def test_the_spec_copy_and_run_record_beside_the_output(spec_file, tmp_path):
    output = tmp_path / "out.csv"
    small = tmp_path / "small.toml"
    small.write_text("# two sessions\nseeds = [1, 2]\n[fixed]\nexchanges = 1000\n")
    summary = run_sweep(small, output, command="qkd sweep small.toml -o out.csv")
    spec_copy, meta_path = sidecars(output)
    assert (spec_copy.name, meta_path.name, summary.meta) == ("out.csv.spec.toml", "out.csv.meta.json", str(meta_path))
    assert spec_copy.read_text().endswith(small.read_text())  # the file as written, comments and all
    assert load_spec(spec_copy).digest() == load_spec(small).digest()
    meta = json.loads(meta_path.read_text())
    assert (meta["protocol"], meta["tasks"], meta["complete"], meta["columns"]) == ("bb84", 2, True, list(BB84_COLUMNS))
    run = meta["runs"][0]
    assert (run["command"], run["executor"], run["run"], run["interrupted"]) == (
        "qkd sweep small.toml -o out.csv", "serial", 2, False)
    assert meta["started_utc"] == run["started_utc"] <= run["finished_utc"] == meta["finished_utc"]
    assert run["started_utc"].endswith("+00:00") and "qiskit-aer" in run["versions"]

    # Another spec into the same output: refused, naming both digests and the copy; nothing written.
    before = output.read_bytes()
    with pytest.raises(ConfigurationError, match=r"out.csv was started by another spec .*out.csv.spec.toml"):
        run_sweep(spec_file, output)
    assert output.read_bytes() == before and json.loads(meta_path.read_text()) == meta
    # Rows without a run record: which spec wrote them is unknown.
    meta_path.unlink()
    with pytest.raises(ConfigurationError, match=r"out.csv has rows but no run record out.csv.meta.json"):
        run_sweep(small, output)


def test_an_interrupted_serial_sweep_keeps_its_rows_and_its_record_says_so(tmp_path):
    spec = parse_spec({"seeds": {"count": 5}, "fixed": {"mode": "prepared", "exchanges": 1000}})
    output = tmp_path / "stopped.csv"

    def ctrl_c_after_two(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, output, progress=ctrl_c_after_two)
    assert len(read_results(output)) == 2
    meta = json.loads(sidecars(output)[1].read_text())
    assert (meta["complete"], meta["runs"][0]["interrupted"], meta["runs"][0]["run"]) == (False, True, 2)
    summary = run_sweep(spec, output)
    assert (summary.skipped, summary.run, summary.serial) == (2, 3, True)
    meta = json.loads(sidecars(output)[1].read_text())
    assert meta["complete"] and [(r["interrupted"], r["run"]) for r in meta["runs"]] == [(True, 2), (False, 3)]


def test_old_files_read_and_other_protocols_files_are_refused(tmp_path):
    legacy = tmp_path / "legacy.csv"
    values = {n: "" for n in LEGACY_COLUMNS} | {"task_id": "abc", "seed": "3", "mu": "0.5", "sifted": "120",
                                                "aborted": "True", "protocol": "bb84"}
    legacy.write_text(",".join(LEGACY_COLUMNS) + "\n" + ",".join(values[n] for n in LEGACY_COLUMNS) + "\n")
    (row,) = read_results(legacy)  # the old fixed header still reads, typed
    assert (row["seed"], row["mu"], row["sifted"], row["aborted"], row["qber_upper"]) == (3, 0.5, 120, True, None)
    spec = parse_spec({"seeds": [1], "fixed": {"exchanges": 1000}})
    with pytest.raises(ConfigurationError, match=r"legacy.csv was written by an earlier version .*read_results\(\)"):
        run_sweep(spec, legacy)
    decoy = tmp_path / "decoy.csv"
    decoy.write_text(",".join(DECOY_COLUMNS) + "\n")
    with pytest.raises(ConfigurationError, match=r"decoy.csv holds a 'decoy' sweep and this spec runs 'bb84'"):
        run_sweep(spec, decoy)
    assert decoy.read_text() == ",".join(DECOY_COLUMNS) + "\n" and not sidecars(decoy)[1].exists()
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigurationError, match=r"unknown.csv is not a sweep output"):
        read_results(unknown)


def test_the_command_line(tmp_path, scheduler):
    runner = CliRunner()
    spec_file = tmp_path / "cli.toml"  # 4 sessions of 2,000 pulses
    spec_file.write_text('seeds = [1, 2]\n[fixed]\nexchanges = 2000\n[grid]\neve = ["none", "intercept-resend:1"]\n')
    output = tmp_path / "cli.csv"
    result = runner.invoke(main, ["sweep", str(spec_file), "--output", str(output), "--serial", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # one JSON object, nothing else
    assert (summary["tasks"], summary["run"], summary["failed"], summary["workers"], summary["serial"]) == (
        4, 4, 0, 1, True)
    assert summary["sessions_per_s"] > 0 and len(read_results(output)) == 4
    assert summary["meta"] == str(sidecars(output)[1]) and summary["protocol"] == "bb84"
    meta = json.loads(sidecars(output)[1].read_text())
    assert meta["runs"][0]["command"] == f"qkd sweep {spec_file} --output {output} --serial"

    again = runner.invoke(main, ["sweep", str(spec_file), "-o", str(output), "--scheduler", scheduler])
    assert again.exit_code == 0 and "4 tasks, 4 already in" in again.stdout

    bad = tmp_path / "bad.toml"
    bad.write_text('seeds = [1]\n[grid]\neve = ["intercept:0.2"]\n')
    other = tmp_path / "other.toml"
    other.write_text("seeds = [7]\n")
    for args, message in [([str(bad), "-o", str(output)], "unknown eavesdropper 'intercept'"),
                          ([str(spec_file), "-o", str(output), "--workers", "2", "--scheduler", scheduler],
                           "workers (a local cluster) or a scheduler address, not both"),
                          ([str(spec_file), "-o", str(output), "--serial", "--workers", "2"],
                           "a serial sweep runs in this process"),
                          ([str(other), "-o", str(output)], "was started by another spec"),
                          ([str(spec_file), "-o", str(output), "--scheduler", "localhost:8786"],
                           "must look like tcp://HOST:PORT")]:
        result = runner.invoke(main, ["sweep", *args])
        assert result.exit_code == 2 and message in result.stderr, result.output
    assert "--serial" in runner.invoke(main, ["sweep", "--help"]).stdout


def test_without_dask_a_small_sweep_runs_serially_and_dask_names_the_extra(tmp_path):
    spec = tmp_path / "tiny.toml"
    spec.write_text("seeds = [1]\n[fixed]\nexchanges = 1000\n")
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
        summary = qkd_circuits.sweep.run_sweep({str(spec)!r}, {str(tmp_path / 'serial.csv')!r})
        print(summary.serial, summary.run)
        try:
            qkd_circuits.sweep.run_sweep({str(spec)!r}, {str(tmp_path / 'x.csv')!r}, workers=2)
        except MissingExtraError as exc:
            print(exc.extra, exc)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    assert first == "True 1" and len(read_results(tmp_path / "serial.csv")) == 1
    assert second.startswith("sweep ") and "pip install 'qkd_circuits[sweep]'" in second
    assert not (tmp_path / "x.csv").exists() and not sidecars(tmp_path / "x.csv")[1].exists()


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
    meta = json.loads(sidecars(output)[1].read_text())
    assert (meta["complete"], meta["runs"][0]["interrupted"], meta["runs"][0]["executor"]) == (False, True, "dask")
    assert meta["runs"][0]["run"] == len(kept) and meta["runs"][0]["finished_utc"] is not None

    summary = run_sweep(spec, output, scheduler=scheduler)
    assert (summary.skipped, summary.run) == (len(kept), 30 - len(kept))
    rows = read_results(output)
    assert sorted(r["task_id"] for r in rows) == sorted(t.task_id for t in expand(load_spec(spec)))
    meta = json.loads(sidecars(output)[1].read_text())
    assert meta["complete"] and [r["interrupted"] for r in meta["runs"]] == [True, False]


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
    assert all(list(r) == list(DECOY_COLUMNS) for r in rows.values())  # no mode, no BB84 Eve columns
    for distance in (0.0, 40.0):
        honest = rows[(distance, "none")]
        assert honest["decoy_valid"] and honest["decoy_y1"] > 0 and honest["eve_known_fraction"] == 0.0
    assert rows[(0.0, "none")]["decoy_rate"] > 0  # at 40 km the u_alpha = 3 margin leaves no rate at 10^6 pulses
    caught = rows[(40.0, "pns")]
    assert caught["aborted"] and caught["abort_reason"] == "decoy_check_failed" and not caught["decoy_valid"]
    assert caught["eve_known_fraction"] > 0.95 and caught["final_key_bits"] == 0
    # A BB84 row next to it would be refused: one protocol's schema per file.
    with pytest.raises(ConfigurationError, match=r"decoy.csv holds a 'decoy' sweep and this spec runs 'bb84'"):
        run_sweep(parse_spec({"seeds": [3]}), output)


@pytest.mark.parametrize("name, sessions", [("sweep_example.toml", 360), ("sweep_decoy.toml", 120)])
def test_the_example_specs_are_valid(name, sessions):
    spec = load_spec(Path(__file__).parent.parent / "benchmarks" / name)
    assert len(spec) == sessions and len({t.task_id for t in expand(spec)}) == sessions
