"""The command line's options come from params.py: one spelling, one default, hidden old spellings."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from qkd_circuits import params
from qkd_circuits.cli import main
from qkd_circuits.cli.analysis import decoy_command, keyrate
from qkd_circuits.cli.bb84 import run
from qkd_circuits.cli.options import ROUND, AliasedOption, param_option
from qkd_circuits.cli.party import alice, bob
from qkd_circuits.params import DECOY_EXCHANGES, PARAMETERS

#: Options that knowingly differ from the table: the command derives the value (None) or the
#: round size differs.  Every other option named after a parameter has the table's default.
DERIVED = {
    ("decoy", "exchanges"): DECOY_EXCHANGES,
    ("keyrate", "exchanges"): 1_000_000,            # pulses per simulated point
    ("keyrate", "mu"): None,                        # optimised per distance
    ("keyrate", "alpha_db_per_km"): None,           # the preset's
    ("keyrate", "distance_spec"): "0:200:5",        # a range of distances
    ("keyrate", "decoy_method"): "decoy-vacuum-weak",
    ("keyrate", "eps_sec"): None,                   # 1e-10, or kappa x length with --kappa
    ("decoy", "eve"): "none",
}


def _invoke(*args):
    return CliRunner().invoke(main, list(args))


def _generated(command):
    return [p for p in command.params if isinstance(p, AliasedOption)]


@pytest.mark.parametrize("command", [run, alice, bob, decoy_command, keyrate], ids=lambda c: c.name)
def test_every_generated_option_default_is_the_params_default(command):
    options = _generated(command)
    assert options, "no option generated from params.PARAMETERS"
    for option in options:
        key = (command.name, option.name)
        expected = DERIVED.get(key, params.default(option.name) if option.name in PARAMETERS else None)
        if option.multiple:
            expected = (expected,)
        assert option.default == expected, key
        flag = PARAMETERS[option.name].flag if option.name in PARAMETERS else "--distance-km"
        assert flag in option.opts, key


def test_round_commands_take_every_round_parameter_in_the_same_order():
    for command in (run, alice, bob):
        names = [p.name for p in _generated(command)]
        assert names == list(ROUND), command.name
    assert set(ROUND) <= set(PARAMETERS)
    assert params.default("u_alpha") == next(p.default for p in decoy_command.params if p.name == "u_alpha")
    assert params.default("nu") == next(p.default for p in keyrate.params if p.name == "nu")


@pytest.mark.parametrize("command, alias, flag", [
    (["run"], "--pulses", "--exchanges"), (["alice"], "--pulses", "--exchanges"), (["bob"], "--distance", "--distance-km"),
    (["decoy"], "--pulses", "--exchanges"), (["decoy"], "--method", "--decoy-method"),
    (["keyrate"], "--distance", "--distance-km"), (["keyrate"], "--method", "--decoy-method"),
    (["keyrate"], "--pulses", "--exchanges"),
])
def test_hidden_aliases_are_absent_from_help(command, alias, flag):
    result = _invoke(*command, "--help")
    assert result.exit_code == 0
    assert flag in result.output
    assert alias not in result.output.replace(flag, "")


def test_hidden_aliases_are_accepted_and_mean_the_same():
    new = _invoke("keyrate", "--distance-km", "0,50", "--decoy-method", "gllp", "--json")
    old = _invoke("keyrate", "--distance", "0,50", "--method", "gllp", "--json")
    assert new.exit_code == old.exit_code == 0, old.output
    assert json.loads(new.output) == json.loads(old.output)
    assert json.loads(old.output)["method"] == "gllp" and len(json.loads(old.output)["points"]) == 2
    # The same value parsed under the old spelling (a bad one names the current flag).
    for flags in (["--exchanges", "0"], ["--pulses", "0"], ["-n", "0"]):
        result = _invoke("run", *flags)
        assert result.exit_code == 2 and "exchanges must be a whole number >= 1, got 0" in result.output, flags
    result = _invoke("decoy", "--method", "turbo")
    assert result.exit_code == 2 and "Invalid value for '--decoy-method'" in result.output
    assert "--method" not in result.output


def test_an_aliased_option_on_a_new_command():
    @click.command()
    @param_option("distance_km", aliases=("--km",))
    def show(distance_km):
        click.echo(repr(distance_km))

    for args in (["--distance-km", "3"], ["--distance", "3"], ["--km", "3"]):
        assert CliRunner().invoke(show, args).output == "3.0\n"
    assert CliRunner().invoke(show, []).output == "0.0\n"
    help_text = CliRunner().invoke(show, ["--help"]).output
    assert "--distance-km" in help_text and "--km" not in help_text and "--distance " not in help_text


def test_noise_joined_by_plus_is_the_option_repeated(monkeypatch):
    import qkd_circuits.session as session
    from qkd_circuits.exceptions import ConfigurationError

    seen = []

    def fake_run_bb84(exchanges, **options):
        seen.append(options)
        raise ConfigurationError("stop here")

    monkeypatch.setattr(session, "run_bb84", fake_run_bb84)
    for args in (["--noise", "dephasing:0.02+readout:0.01"], ["--noise", "dephasing:0.02", "--noise", "readout:0.01"]):
        result = _invoke("run", *args)
        assert result.exit_code == 2 and "stop here" in result.output
    assert seen[0]["channel"] == seen[1]["channel"] and seen[0]["detector"] == seen[1]["detector"]
    assert seen[0]["channel"].dephasing == 0.02 and seen[0]["detector"].readout_error == 0.01


def test_the_command_line_and_a_sweep_translate_round_parameters_the_same_way():
    # One translation (qkd_circuits.session.round_arguments) behind `qkd run` and a sweep's points.
    from qkd_circuits import params
    from qkd_circuits.cli.options import ROUND, round_kwargs
    from qkd_circuits.sweep.spec import PARAMETERS, session_options

    values = {name: params.default(name) for name in ROUND}
    values.update(noise=("depolarizing:0.02", "readout:0.01"), distance_km=10.0, abort_qber=0.09)
    point = {name: p.default for name, p in PARAMETERS.items()}
    point.update(noise="depolarizing:0.02+readout:0.01", distance_km=10.0, abort_qber=0.09)
    from_cli, from_sweep = round_kwargs(values), session_options(point)
    for key in ("mode", "backend", "channel", "detector", "eve", "config"):
        assert from_cli[key] == from_sweep[key], key
    assert from_cli["channel"].depolarizing == 0.02 and from_cli["detector"].readout_error == 0.01
    assert from_cli["config"].abort_qber == 0.09
