"""The rough edges new users hit with ``qkd run`` and ``qkd keyrate``, one test each.

Each test failed before its fix: an output path that cannot be written ended in a traceback after
the work (and the report was lost); ``--mitm --json`` printed an object of its own without the
report fields; the simulation notice claimed a key on aborted and hardware rounds; a qrng round
that a device's gate noise aborts did not point at ``--mode prepared``; a small round's "why" named
only the sample it lacked, not the round a key needs; the README's list of abort reasons was
incomplete; ``--show-bits`` did not exist.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from qkd_circuits import AbortReason
from qkd_circuits.cli import report as cli_report
from qkd_circuits.session import QberSummary, Report

from test_cli import CONTRACT_FIELDS, qkd_cli

README = Path(__file__).parent.parent / "README.md"


def test_save_record_to_an_unwritable_path_is_refused_before_the_round(tmp_path):
    missing = tmp_path / "no-such-dir" / "rec.npz"
    proc = qkd_cli("run", "-n", "2000", "--seed", "1", "--save-record", str(missing))
    assert proc.returncode == 2, proc.stderr
    assert "--save-record" in proc.stderr and "no-such-dir" in proc.stderr and "does not exist" in proc.stderr
    assert proc.stdout == ""  # refused before any work: nothing ran, nothing to report
    assert not missing.exists()


def test_save_record_into_a_directory_path_is_refused(tmp_path):
    proc = qkd_cli("run", "-n", "2000", "--seed", "1", "--save-record", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_keyrate_plot_to_an_unwritable_path_is_refused_before_the_work(tmp_path):
    proc = qkd_cli("keyrate", "--plot", str(tmp_path / "no-such-dir" / "rate.png"))
    assert proc.returncode == 2, proc.stderr
    assert "--plot" in proc.stderr and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_mitm_json_is_the_report_schema_of_every_round():
    proc = qkd_cli("run", "--json", "-n", "60000", "--seed", "2", "--mitm")
    report = json.loads(proc.stdout)
    assert proc.returncode == 3
    assert CONTRACT_FIELDS <= set(report)
    assert report["aborted"] is True and report["abort_reason"] == "authentication_failed"
    assert report["final_key_bits"] == 0 and report["alice_key_sha256"] is None
    assert "quantum" in report["timings_s"] and "threshold" in report["qber"]
    # ...and the man-in-the-middle's own findings, the fields the old object had.
    mitm = report["mitm"]
    assert mitm["detected"] is True and mitm["authenticated"] is True
    assert isinstance(report["detected"], int)  # the report's count of detections, as in every round
    unauthenticated = json.loads(qkd_cli("run", "--json", "-n", "60000", "--seed", "2", "--mitm",
                                         "--no-authentication").stdout)
    assert unauthenticated["mitm"]["detected"] is False and unauthenticated["aborted"] is False
    assert unauthenticated["final_key_bits"] > 0  # a key, shared with Eve: the report says so
    assert unauthenticated["qber"]["estimate"] is not None  # Bob's leg ran to the end
    assert unauthenticated["alice_key_sha256"] != unauthenticated["bob_key_sha256"]  # each shares hers/his with Eve
    assert unauthenticated["mitm"]["key_shared_with"] == "eve"


def _report(**overrides) -> Report:
    values = dict(exchanges=1000, detected=1000, sifted=500, qber=QberSummary(0.11, "clopper-pearson", 0.0),
                  aborted=False, abort_reason=None, final_key_bits=128, timings_s={"quantum": 0.1},
                  backend="aer", mode="prepared", seed=None, alice_key_sha256="ab" * 32, bob_key_sha256="ab" * 32)
    values.update(overrides)
    return Report(**values)


@pytest.mark.parametrize("backend, words", [
    ("aer", "simulator's operator knows every bit of this key"),
    ("fake:nairobi", "simulator's operator knows every bit of this key"),
    ("braket-local", "simulator's operator knows every bit of this key"),
    ("ibm:ibm_torino", "IBM"),
    ("braket:sv1", "Amazon"),
])
def test_the_notice_says_who_knows_the_key(backend, words):
    assert words in cli_report.simulation_notice(_report(backend=backend))


def test_an_aborted_round_claims_no_key(capsys):
    aborted = _report(aborted=True, abort_reason=AbortReason.QBER_TOO_HIGH, final_key_bits=0,
                      alice_key_sha256=None, bob_key_sha256=None)
    cli_report.print_report(aborted)
    out = capsys.readouterr().out
    assert "no key was output" in out and "this key" not in out


def test_a_hardware_round_is_not_called_simulated(capsys):
    cli_report.print_report(_report(backend="ibm:ibm_torino"))
    out = capsys.readouterr().out
    assert "simulated" not in out and "IBM" in out


def test_a_small_round_says_what_a_key_needs():
    proc = qkd_cli("run", "--json", "-n", "2000", "--seed", "1")
    report = json.loads(proc.stdout)
    assert proc.returncode == 3 and report["abort_reason"] == "qber_too_high"
    assert report["qber"]["estimate"] == 0.0  # the rate was fine: the sample was too small to bound it
    assert "a key needs at least" in report["abort_detail"]
    text = qkd_cli("run", "-n", "2000", "--seed", "1").stdout
    assert "the sample was too small" in text


def test_a_device_aborting_qrng_round_points_at_prepared_mode():
    """qrng draws the choices on the device with entangling gates; their errors alone abort on a device."""
    proc = qkd_cli("run", "--json", "-n", "3000", "--seed", "1", "--backend", "fake:nairobi")
    report = json.loads(proc.stdout)
    assert proc.returncode == 3 and report["abort_reason"] == "qber_too_high"
    assert report["qber"]["estimate"] > 0.05  # the device's gate errors, measured
    assert "--mode prepared" in report["abort_detail"]


def test_the_readme_lists_every_abort_reason():
    text = README.read_text()
    listed = re.search(r"Exit codes: `0` a key was made, `3` the protocol aborted \((.*?)`2` bad usage", text, re.S)
    assert listed, "README: the exit-code paragraph moved"
    reasons = set(re.findall(r"`(\w+)`", listed.group(1)))
    assert {r.value for r in AbortReason} <= reasons


def test_show_bits_prints_the_first_pulses():
    proc = qkd_cli("run", "-n", "2000", "--seed", "1", "--mode", "prepared", "--eve", "intercept-resend:1",
                   "--show-bits", "12")
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if "Alice" in line and "Bob" in line)
    rows = [line for line in lines[header + 1:] if re.match(r"\s*\d+\s+[01]\s", line)]
    assert len(rows) == 12 and "Eve" in lines[header]
    assert proc.returncode == 3  # and the round's report follows, as without the table
    bad = qkd_cli("run", "-n", "2000", "--show-bits", "0")
    assert bad.returncode == 2 and "--show-bits" in bad.stderr


def test_the_readme_fake_device_example_makes_a_key():
    """It read ``--eve probe:0.4 --backend fake:nairobi``: qrng mode on a device, which aborts (8.8% QBER)."""
    block = re.search(r"## The command line\n\n```sh\n(.*?)```", README.read_text(), re.S).group(1)
    line = next(line for line in block.splitlines() if "fake:" in line)
    proc = qkd_cli(*line.split()[1:], "--json", "--seed", "5")
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, report["abort_detail"]
    assert report["final_key_bits"] > 0 and report["eve"]["attack"]["kind"] == "probe"


def test_a_classroom_round_compares_every_sifted_bit_and_claims_no_key(tmp_path):
    proc = qkd_cli("run", "--classroom", "--json", "-n", "600", "--seed", "1", "--mode", "prepared",
                   "--eve", "intercept-resend:1")
    report = json.loads(proc.stdout)
    assert proc.returncode == 3 and report["abort_reason"] == "classroom_round" and report["final_key_bits"] == 0
    assert report["qber"]["n"] == report["sifted"] == report["sample_bits"] > 200  # all of them, in public
    # Eve intercepting every pulse: a quarter of the sifted bits differ (5 sigma of 300 bits: ±0.125).
    assert abs(report["qber"]["estimate"] - 0.25) < 0.125
    assert "no round size gives a key" in report["abort_detail"]
    assert len(report["pulses"]) == 16 and {"kept", "error"} <= set(report["pulses"][0])
    clean = json.loads(qkd_cli("run", "--classroom", "--json", "-n", "600", "--seed", "1", "--mode", "prepared").stdout)
    assert clean["qber"]["estimate"] == 0.0 and "a round delivers a key from about" in clean["abort_detail"]
    refused = qkd_cli("run", "--classroom", "-n", "600", "--store-a", str(tmp_path / "a.db"))
    assert refused.returncode == 2 and "raw key material" in refused.stderr


def test_a_key_the_pool_refill_took_whole_says_so():
    """It printed the reason and no why: 12,000 prepared pulses make an 815-bit key, shorter than the 1,024-bit refill."""
    report = json.loads(qkd_cli("run", "--json", "-n", "12000", "--seed", "11", "--mode", "prepared").stdout)
    assert report["abort_reason"] == "no_key_left_after_replenishment"
    assert "went whole into the authentication pool" in report["abort_detail"] and "1,024" in report["abort_detail"]
