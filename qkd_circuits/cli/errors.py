"""The exit codes of ``qkd`` and the one place that maps exceptions to them.

Exit codes (a contract for scripts): :data:`EXIT_OK` 0 a key was made (or the command did its
job), :data:`EXIT_BACKEND` 1 a backend, a peer or the network failed, :data:`EXIT_USAGE` 2 bad
usage, :data:`EXIT_ABORTED` 3 the protocol aborted on purpose (the reason is in the report),
:data:`EXIT_INTERRUPTED` 130 a sweep was interrupted (rerun it to resume).

Every command runs its work inside :func:`exit_codes`, which turns the package's exceptions into
``Error: <message>`` on stderr and the exit code of :data:`EXIT_CODES` (the most specific class
in the exception's MRO wins); click's own usage errors pass through untouched (click prints them
and exits 2).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Mapping, NoReturn, Union

import click

from ..exceptions import BackendError, MissingExtraError, QKDError

__all__ = ["EXIT_ABORTED", "EXIT_BACKEND", "EXIT_CODES", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "exit_code",
           "exit_codes", "fail"]

EXIT_OK, EXIT_BACKEND, EXIT_USAGE, EXIT_ABORTED = 0, 1, 2, 3
EXIT_INTERRUPTED = 130

#: Exception class -> exit code.  MissingExtraError is a BackendError and an ImportError: installing
#: an extra is the user's to do, so it is a usage error.  OSError subclasses other than these (a file
#: that cannot be read...) are left to the commands that expect them (see ``overrides``).
EXIT_CODES: Mapping[type, int] = {
    MissingExtraError: EXIT_USAGE,
    BackendError: EXIT_BACKEND,
    ConnectionError: EXIT_BACKEND,
    TimeoutError: EXIT_BACKEND,
    QKDError: EXIT_USAGE,
}

#: An override: an exit code, or ``(code, template)`` where the template formats the message from
#: ``{exc}`` (the exception's text) and ``{type}`` (its class name).
Override = Union[int, "tuple[int, str]"]
_CLICK_ERRORS = (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort)


def fail(message: str, code: int) -> NoReturn:
    """Print ``Error: message`` on stderr and exit with ``code``."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def exit_code(exc: BaseException, overrides: Mapping[type, Override] | None = None) -> tuple[int, str] | None:
    """``(code, message)`` for ``exc``, or ``None`` when it is not ours to map (it propagates)."""
    if isinstance(exc, _CLICK_ERRORS):
        return None
    table = {**EXIT_CODES, **(overrides or {})}
    for cls in type(exc).__mro__:
        if cls in table:
            entry = table[cls]
            code, template = entry if isinstance(entry, tuple) else (entry, "{exc}")
            return code, template.format(exc=exc, type=type(exc).__name__)
    return None


class exit_codes(contextlib.ContextDecorator):  # noqa: N801 (used as a context manager and a decorator)
    """Run a command's work; a mapped exception ends the process with its exit code.

    Used as ``with exit_codes(): ...`` or as a decorator; what it decides is :func:`exit_code`'s:

    >>> from qkd_circuits.exceptions import ConfigurationError, MissingExtraError
    >>> exit_code(ConfigurationError("bad")), exit_code(MissingExtraError("ibm", "qiskit_ibm_runtime", "IBM"))[0]
    ((2, 'bad'), 2)
    >>> exit_code(KeyError("not ours")) is None
    True

    ``overrides`` changes or adds entries for this block only, e.g.
    ``{OSError: (EXIT_BACKEND, "cannot serve: {exc}")}``.
    """

    def __init__(self, overrides: Mapping[type, Override] | None = None) -> None:
        self.overrides = dict(overrides or {})

    def __enter__(self) -> "exit_codes":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            return False
        mapped = exit_code(exc, self.overrides)
        if mapped is None:
            return False
        fail(mapped[1], mapped[0])
