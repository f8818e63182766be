"""The `qkd` command: the JSON contract and the exit codes.

The installed console script runs as a real subprocess once (the JSON contract); everything else
runs in-process through click's CliRunner (the same command, without a second of imports each).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

import qkd_circuits as qkd
from qkd_circuits.cli import main

QKD = str(Path(sys.executable).with_name("qkd"))
CONTRACT_FIELDS = {"exchanges", "detected", "sifted", "qber", "aborted", "abort_reason",
                   "final_key_bits", "timings_s", "backend", "mode", "seed"}


def qkd_process(*args: str) -> subprocess.CompletedProcess:
    """The installed ``qkd`` console script as a real process."""
    return subprocess.run([QKD, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def qkd_cli(*args: str) -> SimpleNamespace:
    """``qkd ARGS`` in this process: returncode, stdout and stderr as a process would give them."""
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)


def test_run_json_prints_one_report_with_the_agreed_fields():
    proc = qkd_process("run", "--json", "--exchanges", "200000", "--seed", "7", "--noise", "depolarizing:0.04",
                   "--distance-km", "10", "--dark-count", "1e-4")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # exactly one JSON document on stdout
    assert CONTRACT_FIELDS <= set(report)
    assert set(report["qber"]) >= {"estimate", "upper"}
    assert report["qber"]["estimate"] < report["qber"]["upper"] < 0.11
    assert (report["exchanges"], report["backend"], report["mode"], report["seed"]) == (200000, "aer", "qrng", 7)
    assert report["aborted"] is False and report["abort_reason"] is None
    assert report["final_key_bits"] > 0 and report["alice_key_sha256"] == report["bob_key_sha256"]
    assert {"sample_bits", "leaked_ec_bits", "cascade", "verification", "key_length"} <= set(report)
    assert report["cascade"]["variant"] == "option7" and report["verification"]["ok"] is True
    assert {"quantum", "sifting", "estimation", "reconciliation", "verification", "amplification"} <= set(report["timings_s"])
    assert report["sifted"] <= report["detected"] <= report["exchanges"]


def test_run_aborts_with_exit_3_under_full_intercept_resend():
    proc = qkd_cli("run", "--json", "-n", "20000", "--seed", "1", "--mode", "prepared",
                   "--eve", "intercept-resend:1:breidbart")
    assert proc.returncode == 3, proc.stderr
    report = json.loads(proc.stdout)
    assert report["aborted"] is True and report["abort_reason"] == "qber_too_high"
    assert report["qber"]["upper"] > 0.11
    assert report["eve"]["attack"]["basis"] == "breidbart"


@pytest.mark.parametrize("args, message", [
    (["--exchanges", "0"], "exchanges must be a whole number >= 1, got 0"),
    (["--exchanges", "-5"], "exchanges must be a whole number >= 1, got -5"),
    (["--noise", "depolarizing:1.5"], r"depolarizing must be a probability in [0, 1], got 1.5"),
    (["--noise", "gravity:0.1"], "unknown noise model 'gravity'"),
    (["--eve", "intercept-resend:2"], "intercept fraction must be a probability"),
    (["--backend", "nowhere"], "unknown backend 'nowhere'"),
    (["--mode", "classical"], "Invalid value for '--mode'"),
    (["--lanes", "many"], "must be a whole number or 'device'"),
    (["--distance-km", "-1"], "distance_km must be a finite number >= 0"),
    (["--sample-fraction", "1.5"], "sample_fraction must be in (0, 1)"),
    (["--cascade", "turbo"], "Invalid value for '--cascade'"),
    (["--backend", "braket-local", "--noise", "dephasing:0.1"], "cannot run them"),
])
def test_bad_usage_exits_2_with_a_clear_message(args, message):
    proc = qkd_cli("run", *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_human_report_and_saved_record(tmp_path):
    path = tmp_path / "rec.npz"
    proc = qkd_cli("run", "-n", "60000", "--seed", "3", "--save-record", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "final key" in proc.stdout and "same at both ends" in proc.stdout and "simulated" in proc.stdout
    assert len(qkd.load_record(path)) == 60000


def test_too_short_a_round_exits_3():
    proc = qkd_cli("run", "--json", "-n", "10000", "--seed", "3", "--noise", "depolarizing:0.04")
    assert proc.returncode == 3
    assert json.loads(proc.stdout)["abort_reason"] == "key_too_short"


def test_psk_bootstrap_attacks_and_mitm_from_the_command_line(tmp_path):
    psk, sim = tmp_path / "link.psk", tmp_path / "sim.psk"
    assert qkd_cli("psk", "init", str(psk), "--bits", "4096").returncode == 0
    assert "refusing to overwrite" in qkd_cli("psk", "init", str(psk)).stderr
    # A seeded round's key is public: it must not refill a real pool (the seeded-pool chain).
    proc = qkd_cli("run", "--json", "-n", "100000", "--seed", "2", "--psk", str(psk))
    assert proc.returncode == 2 and "simulation pool" in proc.stderr
    assert qkd.AuthKeyPool.load(psk).position == 0  # refused before anything was spent
    proc = qkd_cli("run", "--json", "-n", "100000", "--psk", str(psk))  # unseeded: the real pool takes it
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["auth"]["bootstrap"] == "psk" and report["auth"]["verified"]
    assert qkd.AuthKeyPool.load(psk).position == 64  # the pool file moved on by one round's slice
    assert qkd_cli("psk", "init", str(sim), "--bits", "4096", "--simulation").returncode == 0
    proc = qkd_cli("run", "--json", "-n", "100000", "--seed", "2", "--psk", str(sim), "--attack", "replay")
    assert proc.returncode == 3 and json.loads(proc.stdout)["abort_reason"] == "authentication_failed"
    proc = qkd_cli("run", "--json", "-n", "100000", "--seed", "2", "--psk", str(sim), "--store-a", str(tmp_path / "a.db"))
    assert proc.returncode == 2 and "never goes into a key store" in proc.stderr
    proc = qkd_cli("run", "--json", "-n", "60000", "--seed", "2", "--mitm")
    assert proc.returncode == 3 and json.loads(proc.stdout)["mitm"]["detected"] is True
    proc = qkd_cli("run", "--json", "-n", "60000", "--seed", "2")
    assert json.loads(proc.stdout)["auth"]["bootstrap"] == "demo-psk"  # said so in the report
    status = json.loads(qkd_cli("psk", "status", str(psk), "--json").stdout)
    assert status["next_round"] == 1 and status["halted"] is False and status["pending_rounds"] == []
    assert status["epsilon"]["rounds"] == 1 and status["epsilon"]["total"] > 0


@pytest.mark.parametrize("eps", ["0", "1.5", "2.0", "-1e-9", "nan"])
def test_bad_epsilons_are_refused_before_any_work(eps):
    proc = qkd_cli("run", "--json", "-n", "1000", "--eps-sec", eps)
    assert proc.returncode == 2 and "eps_sec" in proc.stderr and "Traceback" not in proc.stderr


def test_pki_bootstrap_from_the_command_line(tmp_path):
    pki = tmp_path / "pki"
    assert qkd_cli("pki", "init", str(pki), "--algorithm", "ed25519").returncode == 0
    proc = qkd_cli("run", "--json", "-n", "100000", "--seed", "2", "--pki", str(pki))
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["auth"]["bootstrap"] == "pki" and report["final_key_bits"] > 0
    assert qkd.AuthKeyPool.load(pki / "pool.psk").available_bits == 4096
    proc = qkd_cli("run", "--json", "-n", "1000", "--psk", "x", "--pki", str(pki))
    assert proc.returncode == 2 and "choose one bootstrap" in proc.stderr


def test_run_into_stores_after_a_re_bootstrap_gets_new_key_ids(tmp_path):
    # key_IDs derive from (link, pool epoch, round, index): a fresh PSK restarts the rounds at 0
    # but never reuses an ID (before, the second run was refused: "key_ID is already in the store").
    stores = ["--store-a", str(tmp_path / "a.db"), "--store-b", str(tmp_path / "b.db")]
    for _ in range(2):
        assert qkd_cli("psk", "init", str(tmp_path / "link.psk"), "--force").returncode == 0
        proc = qkd_cli("run", "--json", "-n", "60000", "--psk", str(tmp_path / "link.psk"), *stores)
        assert proc.returncode == 0, proc.stderr
    from qkd_circuits.keystore import KeyStore

    a, b = KeyStore(tmp_path / "a.db"), KeyStore(tmp_path / "b.db")
    assert a.key_IDs() == b.key_IDs() and a.fingerprint() == b.fingerprint() and a.count() > 2


def test_the_console_script_lists_every_group_without_heavy_imports():
    proc = qkd_process("--help")
    assert proc.returncode == 0, proc.stderr
    for group in ("run", "alice", "bob", "keyrate", "decoy", "psk", "pki", "kme", "node", "sweep"):
        assert f"  {group} " in proc.stdout, group
    code = ("import sys, qkd_circuits.cli; "
            "print(sorted(m for m in ('qiskit', 'qiskit_aer', 'dask', 'distributed', 'aiohttp', 'matplotlib') "
            "if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0 and loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr
