"""`qkd keyrate` and `qkd decoy`: JSON contracts, plots, exit codes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from qkd_circuits.cli import main


def _run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_keyrate_json_curve_and_max_distance():
    res = _run("keyrate", "--distance-km", "0:200:5", "--preset", "GYS", "--decoy-method", "decoy-infinite", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["method"] == "decoy-infinite" and abs(out["max_distance_km"] - 142.05) < 1.0
    assert len(out["points"]) == 41 and out["points"][0]["distance_km"] == 0.0
    assert out["points"][-1]["rate"] == 0.0 and out["points"][0]["rate"] > 1e-3
    assert out["link"]["name"] == "GYS" and out["simulated"] == []


def test_keyrate_options_change_the_link_and_compare_adds_methods():
    res = _run("keyrate", "--distance-km", "0,50", "--eta-bob", "0.1", "--y0", "1e-7", "--compare", "--json")
    out = json.loads(res.output)
    assert out["link"]["eta_bob"] == 0.1 and out["link"]["y0"] == 1e-7
    assert set(out["others"]) == {"gllp", "decoy-infinite"}
    assert out["others"]["gllp"]["max_distance_km"] < out["max_distance_km"] < out["others"]["decoy-infinite"]["max_distance_km"]


def test_keyrate_plot_with_a_simulated_point(tmp_path):
    png = tmp_path / "rate.png"
    res = _run("keyrate", "--distance-km", "0:60:10", "--compare", "--simulate", "10", "--exchanges", "300000",
               "--seed", "3", "--plot", str(png), "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    (sim,) = out["simulated"]
    assert sim["distance_km"] == 10 and sim["pulses"] == 300_000 and sim["rate_sd"] > 0


@pytest.mark.parametrize("args, match", [
    (["--distance-km", "10:0:5"], "START:STOP:STEP"),
    (["--distance-km", "0:10:0"], "START:STOP:STEP"),
    (["--distance-km", "a,b"], "START:STOP:STEP"),
    (["--distance", "a,b"], "--distance-km takes START:STOP:STEP"),  # the old spelling, a hidden alias
    (["--eta-bob", "2"], "eta_bob is a probability"),
    (["--decoy-method", "decoy-vacuum-weak", "--mu", "0.05", "--nu", "0.1"], "brighter than the decoy"),
    (["--decoy-method", "decoy-infinite", "--simulate", "10"], "finite set of intensities"),
    (["--decoy-method", "assume-single-photons"], "Invalid value for '--decoy-method'"),
])
def test_keyrate_bad_usage_exits_2(args, match):
    res = CliRunner().invoke(main, ["keyrate", *args])
    assert res.exit_code == 2
    assert match in res.output


def test_decoy_command_catches_pns_with_exit_3():
    res = _run("decoy", "--exchanges", "400000", "--distance-km", "40", "--eve", "pns", "--seed", "2",
               "--p-signal", "0.6", "--p-decoy", "0.3", "--json")
    assert res.exit_code == 3, res.output
    out = json.loads(res.output)
    assert out["aborted"] and out["abort_reason"] == "decoy_check_failed" and out["report"] is None
    assert out["decoy"]["estimate"]["valid"] is False
    assert set(out["decoy"]["intensities"]) == {"signal", "decoy", "vacuum"}


def test_decoy_command_bad_usage():
    res = CliRunner().invoke(main, ["decoy", "--mu", "0.1", "--nu", "0.2"])
    assert res.exit_code == 2 and "must be weaker than the signal" in res.output
    res = CliRunner().invoke(main, ["decoy", "--p-signal", "0.9", "--p-decoy", "0.2"])
    assert res.exit_code == 2 and "probability of 'vacuum'" in res.output
