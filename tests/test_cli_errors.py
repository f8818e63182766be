"""One exit-code mapper for every command: each exception class, and a bad value in each group."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from qkd_circuits.cli import main
from qkd_circuits.cli.errors import (EXIT_ABORTED, EXIT_BACKEND, EXIT_OK, EXIT_USAGE, exit_code, exit_codes, fail)
from qkd_circuits.exceptions import (AuthenticationError, BackendError, ConfigurationError, KeyStoreError,
                                     MissingExtraError, ProtocolError, QBERTooHigh, QKDError, RecordError)


def test_the_exit_codes_are_the_contract():
    assert (EXIT_OK, EXIT_BACKEND, EXIT_USAGE, EXIT_ABORTED) == (0, 1, 2, 3)


def _exit_of(exc: BaseException, overrides=None) -> tuple[int, str]:
    @click.command()
    def command():
        with exit_codes(overrides):
            raise exc

    result = CliRunner().invoke(command, [])
    return result.exit_code, result.output


def test_missing_extra_is_usage():
    exc = MissingExtraError("sweep", "dask", "sweep")
    assert isinstance(exc, BackendError) and isinstance(exc, ImportError)
    code, out = _exit_of(exc)
    assert code == 2 and "Error: sweep needs the optional package 'dask'" in out and "qkd_circuits[sweep]" in out


def test_backend_error_is_a_backend_failure():
    assert _exit_of(BackendError("the QPU queue is closed")) == (1, "Error: the QPU queue is closed\n")


def test_connection_error_is_a_backend_failure():
    assert _exit_of(ConnectionRefusedError("the peer is gone")) == (1, "Error: the peer is gone\n")
    assert _exit_of(TimeoutError("no answer"))[0] == 1


@pytest.mark.parametrize("cls", [ConfigurationError, RecordError, ProtocolError, AuthenticationError, KeyStoreError,
                                 QKDError])
def test_other_qkd_errors_are_usage(cls):
    assert _exit_of(cls("bad thing")) == (2, "Error: bad thing\n")


def test_a_protocol_abort_raised_is_usage_too():
    # A command reports an abort as exit 3 from the report; a raised QBERTooHigh is a QKDError.
    code, out = _exit_of(QBERTooHigh(0.2, 0.11, 0.18))
    assert code == 2 and "exceeds the abort threshold" in out


def test_click_errors_are_untouched():
    code, out = _exit_of(click.BadParameter("must be even", param_hint="--x"))
    assert code == 2 and "Invalid value for --x: must be even" in out and "Error: must be even" not in out
    assert exit_code(click.exceptions.Exit(0)) is None and exit_code(click.Abort()) is None


def test_other_exceptions_propagate():
    assert exit_code(ValueError("a bug")) is None and exit_code(KeyboardInterrupt()) is None
    result = CliRunner().invoke(click.command()(exit_codes()(lambda: 1 / 0)), [])
    assert isinstance(result.exception, ZeroDivisionError)


def test_overrides_change_one_block_only():
    assert _exit_of(OSError("address in use"), {OSError: (2, "cannot serve: {exc}")}) == (
        2, "Error: cannot serve: address in use\n")
    assert _exit_of(KeyStoreError("x"), {QKDError: (3, "{type}: {exc}")}) == (3, "Error: KeyStoreError: x\n")
    assert _exit_of(KeyStoreError("x")) == (2, "Error: x\n")  # the table itself is unchanged
    # The most specific class wins: a node's ConfigurationError stays usage when QKDError is 1.
    assert _exit_of(ConfigurationError("bad"), {QKDError: 1, ConfigurationError: 2})[0] == 2
    assert _exit_of(KeyStoreError("full"), {QKDError: 1, ConfigurationError: 2})[0] == 1


def test_as_a_decorator_and_fail():
    @click.command()
    @exit_codes()
    def command():
        fail("no such site", EXIT_USAGE)

    result = CliRunner().invoke(command, [])
    assert (result.exit_code, result.output) == (2, "Error: no such site\n")


# -- a bad value in every command group: exit 2 and a message that names it ------------------------------

@pytest.mark.parametrize("args, message", [
    (["run", "--exchanges", "ten"], "Invalid value for '--exchanges' / '-n'"),
    (["run", "--abort-qber", "2"], "abort_qber"),
    (["alice", "--listen", "nowhere", "--psk", "x.psk", "--seed", "1"], "address must be HOST:PORT, got 'nowhere'"),
    (["bob", "--connect", "127.0.0.1:1", "--psk", "x.psk", "--schedule", "random"], "Invalid value for '--schedule'"),
    (["keyrate", "--distance-km", "5:1:1"], "--distance-km takes START:STOP:STEP"),
    (["keyrate", "--simulate", "10", "--exchanges", "10"], "--exchanges must be >= 1000, got 10"),
    (["decoy", "--exchanges", "0"], "--exchanges must be >= 1, got 0"),
    (["decoy", "--distance-km", "-3"], "--distance-km must be >= 0, got -3.0"),
    (["psk", "init", "{tmp}/p.psk", "--bits", "7"], "bits"),
    (["psk", "status", "{tmp}/missing.psk"], "missing.psk"),
    (["pki", "init", "{tmp}/pki", "--algorithm", "rsa"], "Invalid value for '--algorithm'"),
    (["kme", "serve", "--id", "k", "--store", "{tmp}/s.db", "--sae", "a", "--unix", "{tmp}/s", "--unix-mode", "9x"],
     "--unix-mode must be octal, got '9x'"),
    (["kme", "status", "--kme", "http://x:1", "--slave", "b"], "--kme must be https://HOST:PORT or unix:PATH"),
    (["node", "init", "{tmp}/n", "--role", "carol"], "Invalid value for '--role'"),
    (["node", "status", "{tmp}"], "cannot read the node configuration"),
    (["sweep", "{tmp}/missing.toml", "-o", "{tmp}/out.csv"], "cannot read the sweep spec"),
])
def test_a_bad_value_exits_2_with_a_clear_message(tmp_path, args, message):
    result = CliRunner().invoke(main, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
