"""Benchmark scripts keep their output contract: with --json, one JSON object per result line
carrying the figure, its unit, the parameters, the commit and the package versions.
(The figures themselves are measured by running the scripts, never asserted here.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent / "benchmarks"


def test_throughput_json_lines():
    # A budget of 0.1 ms: every case's first 200-exchange probe takes longer than a tenth of it,
    # so each is timed on the probe's 200 exchanges (the shrinking path, and 3 runs a case, not 5).
    proc = subprocess.run(
        [sys.executable, str(BENCH / "throughput.py"), "--json", "--exchanges", "2000", "--repeats", "1",
         "--sequential-exchanges", "200", "--max-seconds", "0.0001", "--cases", "noiseless,lossy-link+probe"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(lines) == 5  # 2 cases x 2 modes + the sequential reference (every case: make bench)
    for row in lines:
        assert row["unit"] == "exchanges/s" and row["value"] > 0
        assert {"mode", "schedule", "case", "backend", "exchanges"} <= set(row["params"])
        assert row["params"]["exchanges"] == 200  # what was timed, not what was asked for
        assert "qiskit" in row["versions"] and "commit" in row


def _json_lines(script: str, *args: str, signed: tuple[str, ...] = ()) -> list[dict]:
    """The script's JSON lines, each checked for the contract; figures in ``signed`` (differences)
    may be zero or negative, the others are positive."""
    proc = subprocess.run([sys.executable, str(BENCH / script), "--json", *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    for row in rows:
        assert (row.get("figure") in signed or row["value"] > 0) and row["unit"] and row["params"]
        assert "qiskit" in row["versions"] and "commit" in row
    return rows


def test_cascade_json_lines_carry_the_issue_fields():
    rows = _json_lines("cascade.py", "--variants", "original,option7", "--qbers", "0.05", "--sizes", "2000",
                       "--runs-small", "2")
    assert len(rows) == 2
    for row in rows:
        assert {"variant", "qber", "bits", "runs", "efficiency", "frame_error_rate", "channel_uses",
                "bits_per_s"} <= set(row)


def test_amplification_json_lines():
    rows = _json_lines("amplification.py", "--sizes", "1000", "--repeats", "1")
    assert {row["unit"] for row in rows} == {"bits/s"}
    assert all({"n", "repeats"} <= set(row["params"]) for row in rows)


def test_session_json_lines():
    rows = _json_lines("session.py", "--exchanges", "60000", "--repeats", "1", "--modes", "prepared")
    assert rows[0]["unit"] == "secret bits/s" and rows[0]["final_key_bits"] > 0


def test_authentication_json_lines():
    rows = _json_lines("authentication.py", "--exchanges", "60000", "--rounds", "1")
    assert rows[0]["unit"] == "fraction" and rows[0]["pool_bits_used_per_round"] == 512
    assert 0 < rows[0]["forgery_bound_per_tag"] < 1e-30


def test_kme_load_json_lines():
    rows = _json_lines("kme_load.py", "--clients", "1,2", "--deliveries", "5")
    assert [(row["params"]["clients"], row["params"]["deliveries"], row["deliveries"]) for row in rows] == [
        (1, 5, 5), (2, 5, 10)]
    for row in rows:
        assert row["unit"] == "deliveries/s" and 0 < row["p50_ms"] <= row["p99_ms"]
        assert row["goal"] is None and row["meets_goal"] is None  # the goal is stated at 10 clients
        assert "aiohttp" in row["versions"]


def test_sweep_json_lines():
    # One grid point (one circuit to build per worker), 8 seeds: the two clusters' start-up is the cost.
    rows = _json_lines("sweep.py", "--sessions", "8", "--exchanges", "1000", "--grid", '{"noise": ["none"]}')
    assert [(row["figure"], row["unit"]) for row in rows] == [
        ("sessions_per_s", "sessions/s"), ("sessions_per_s", "sessions/s"), ("speedup", "x")]
    assert [row["workers"] for row in rows[:2]] == [1, 2] and all(row["sessions"] == 8 for row in rows[:2])
    assert rows[2]["goal"] == 1.6 and rows[2]["params"]["reference_workers"] == 1
    assert all(row["params"]["grid"] == {"noise": ["none"]} for row in rows[:2])


def test_decoy_json_lines():
    # 100,000 pulses (seeded): the decoy's clicks at 40 km under PNS are still counted (not zero);
    # the cost is mostly the circuits' transpilation, one per photon number.
    rows = _json_lines("decoy.py", "--distances", "0", "--pulses", "100000", "--repeats", "2")
    figures = [row["figure"] for row in rows]
    assert figures.count("max_distance") == 3 and "simulated_rate" in figures and "pns_eve_known" in figures
    assert figures.count("simulated_rate") == 2 and figures.count("simulated_rate_mean") == 1
    sim = next(row for row in rows if row["figure"] == "simulated_rate")
    assert sim["unit"] == "bits/pulse" and sim["analytic"] > 0 and sim["sd"] > 0


def test_node_rate_json_lines():
    rows = _json_lines("node_rate.py", "--distances", "0", "--rounds", "1", "--exchanges", "30000")
    assert len(rows) == 1 and rows[0]["unit"] == "secret bits/s into both stores"
    assert rows[0]["key_bits"] > 0 and rows[0]["params"]["distance_km"] == 0


def test_import_time_json_lines():
    # No warm-up interpreters (the suite's byte-code caches are written already): 4 interpreters, not 7.
    rows = _json_lines("import_time.py", "--runs", "1", "--warmups", "0", "--profile", "3",
                       signed=("qkd_circuits_over_qiskit",))
    assert [row["figure"] for row in rows] == ["import_qiskit", "import_qiskit_and_qkd_circuits",
                                              "import_qkd_circuits_alone", "qkd_circuits_over_qiskit",
                                              "module_self_time", "module_self_time", "module_self_time"]
    assert {row["unit"] for row in rows} == {"s"}
    assert rows[1]["params"]["statement"] == "import qiskit; import qkd_circuits" and rows[1]["params"]["runs"] == 1
    assert rows[1]["params"]["warmups"] == 0
    over = rows[3]
    assert over["goal"] == 0.5 and isinstance(over["meets_goal"], bool)
    assert over["value"] == pytest.approx(rows[1]["value"] - rows[0]["value"], abs=2e-4)
    assert [row["params"]["rank"] for row in rows[4:]] == [1, 2, 3]
    assert all(row["params"]["module"] and row["cumulative"] >= row["value"] for row in rows[4:])


@pytest.mark.parametrize("args, message", [(["--runs", "0"], "--runs must be at least 1"),
                                           (["--warmups", "-1"], "--warmups must be at least 0")])
def test_import_time_refuses_zero_runs(args, message):
    proc = subprocess.run([sys.executable, str(BENCH / "import_time.py"), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr


def test_decoy_composable_json_lines():
    # Key lengths may be 0 (no key at 100 km from 1e9 pulses): "signed" lets the figure be 0.
    rows = _json_lines("decoy_composable.py", "--distances", "0,100", "--pulses", "1e9", signed=("decoy_key_length",))
    assert [row["params"]["distance_km"] for row in rows] == [0.0, 100.0]
    assert all(row["figure"] == "decoy_key_length" and row["unit"] == "bits" for row in rows)
    assert 0 < rows[0]["value"] <= rows[0]["lim2014_fung"] and rows[0]["old_gllp"] > 0


def test_every_benchmark_script_has_a_contract_test():
    # Here, or in a test module of its own (the validation board's is tests/test_validation.py).
    scripts = {p.name for p in BENCH.glob("*.py") if not p.name.startswith("_")}
    source = Path(__file__).read_text() + (Path(__file__).parent / "test_validation.py").read_text()
    assert sorted(name for name in scripts if f'"{name}"' not in source) == []


def test_decoy_round_json_lines():
    # 300,000 pulses stop at the decoy check (ℓ = 0, hence "signed"); the contract is what is checked.
    rows = _json_lines("decoy_round.py", "--pulses", "300000", "--methods", "lim2014",
                       signed=("decoy_round_key_length",))
    assert len(rows) == 1 and rows[0]["unit"] == "bits" and rows[0]["params"]["method"] == "lim2014"
    assert rows[0]["value"] == 0 and rows[0]["abort_reason"] == "decoy_check_failed"


def test_protocols_json_lines():
    rows = _json_lines("protocols.py", "--exchanges", "20000", "--backends", "aer", "--protocols", "bb84,six-state,e91")
    assert [(r["params"]["protocol"], r["unit"]) for r in rows] == [
        ("bb84", "exchanges/s"), ("six-state", "exchanges/s"), ("e91", "exchanges/s")]
    assert all(0 < r["qber"] < 0.06 and r["params"]["exchanges"] == 20000 for r in rows)  # depolarizing 0.04: 2%
    assert rows[2]["secret_bits_per_s"] is None and 2.4 < rows[2]["s"] < 3.0  # E91: S and rates, no round yet


@pytest.mark.slow  # starts a Dask LocalCluster (6 s on 2 cores); make test-all runs it
def test_sweep_startup_json_lines():
    # One session serially, one on a fresh 2-worker LocalCluster: the cluster's start-up is the cost.
    rows = _json_lines("sweep.py", "--part", "startup", "--repeats", "1", "--startup-sessions", "1",
                       signed=("startup_saved_by_serial_s",))
    assert [row["figure"] for row in rows] == ["serial_startup_s", "serial_wall_s", "dask_startup_s",
                                               "dask_wall_s", "startup_saved_by_serial_s"]
    assert all(row["unit"] == "s" and row["params"]["sessions"] == 1 for row in rows)
    assert [row["params"]["serial"] for row in rows[:4]] == [True, True, False, False]
