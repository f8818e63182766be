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


def test_keyrate_finite_curves_carry_provenance(tmp_path):
    png = tmp_path / "finite.png"
    res = _run("keyrate", "--distance-km", "0,100", "--preset", "lim2014", "--finite", "1e6", "--finite", "1e8",
               "--finite-method", "bb84-single-photon", "--kappa", "1e-15", "--plot", str(png), "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["link"]["name"] == "Lim2014" and out["link"]["afterpulse"] == 0.04
    small, big = out["finite"]
    assert small["n_key"] == 1e6 and big["n_key"] == 1e8 and small["method"] == "bb84-single-photon"
    assert 0 < small["points"][1]["rate"] < big["points"][1]["rate"]
    assert small["max_distance_km"] < big["max_distance_km"]
    point = big["points"][0]
    assert point["eps_sec"] == point["key_length"]["eps_sec"] == 1e-15 * point["length"]
    prov = out["provenance"]
    assert set(prov) >= {"commit", "versions", "parameters", "link"}
    assert {"qkd_circuits", "numpy", "scipy"} <= set(prov["versions"])
    assert prov["parameters"]["finite_sizes"] == ["1e6", "1e8"] and prov["parameters"]["kappa"] == 1e-15
    assert prov["parameters"]["preset"].lower() == "lim2014"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The existing fields are all still there.
    assert {"method", "link", "mu", "nu", "max_distance_km", "points", "simulated", "others"} <= set(out)


def test_keyrate_without_finite_has_an_empty_list_and_provenance():
    out = json.loads(_run("keyrate", "--distance-km", "0,50", "--json").output)
    assert out["finite"] == [] and out["provenance"]["parameters"]["distance_spec"] == "0,50"


@pytest.mark.parametrize("args, match", [
    (["--finite", "abc"], "--finite takes a block size"),
    (["--finite", "0"], "--finite takes a block size"),
    (["--kappa", "1e-15"], "add --finite N"),
    (["--finite", "1e6", "--kappa", "1e-15", "--eps-sec", "1e-10"], "not both"),
    (["--finite", "1e6", "--eps-sec", "2"], "eps_sec must be in (0, 0.5]"),
    (["--finite", "1e6", "--kappa", "3"], "kappa (secrecy per key bit) must be in (0, 1)"),
    (["--finite", "1e6", "--finite-method", "gllp"], "Invalid value for '--finite-method'"),
    (["--afterpulse", "1.5"], "afterpulse is a probability"),
    (["--preset", "nope"], "Invalid value for '--preset'"),
])
def test_keyrate_finite_bad_usage_exits_2(args, match):
    res = CliRunner().invoke(main, ["keyrate", "--distance-km", "0", *args])
    assert res.exit_code == 2, res.output
    assert match in res.output


def test_decoy_command_catches_pns_with_exit_3():
    res = _run("decoy", "--exchanges", "400000", "--distance-km", "40", "--eve", "pns", "--seed", "2",
               "--p-signal", "0.6", "--p-decoy", "0.3", "--json")
    assert res.exit_code == 3, res.output
    out = json.loads(res.output)
    # The composable default stops inside the protocol, before error correction.
    assert out["aborted"] and out["abort_reason"] == "decoy_check_failed" and out["composable"]
    assert out["report"]["cascade"] is None and out["report"]["final_key_bits"] == 0
    assert out["report"]["decoy_key_length"]["length"] == 0 and out["abort_detail"]
    assert out["decoy"]["estimate"]["valid"] is False
    assert set(out["decoy"]["intensities"]) == {"signal", "decoy", "vacuum"}


def test_decoy_command_bad_usage():
    res = CliRunner().invoke(main, ["decoy", "--mu", "0.1", "--nu", "0.2"])
    assert res.exit_code == 2 and "must be weaker than the signal" in res.output
    res = CliRunner().invoke(main, ["decoy", "--p-signal", "0.9", "--p-decoy", "0.2"])
    assert res.exit_code == 2 and "probability of 'vacuum'" in res.output
