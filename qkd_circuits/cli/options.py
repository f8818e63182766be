"""Command-line options generated from :data:`qkd_circuits.params.PARAMETERS`.

One parameter, one option: its flag is ``Parameter.flag`` (``--distance-km``), its default, help,
unit and choices are the table's, and its earlier spellings (``Parameter.aliases``, e.g.
``--pulses``) are still accepted but not shown in ``--help`` (:class:`AliasedOption`).

:func:`round_options` puts the options every round-running command takes (``qkd run``,
``qkd alice``/``bob``) on a command; :func:`round_kwargs` turns their parsed values into the
keyword arguments of :func:`~qkd_circuits.run_bb84` / :func:`~qkd_circuits.submit`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import click

from ..params import PARAMETERS

__all__ = ["AliasedOption", "ROUND", "SHORT", "json_option", "output_file", "param_option", "round_kwargs",
           "round_options"]

#: The parameters of every round-running command, in ``--help`` order.
ROUND = ("exchanges", "mode", "backend", "noise", "eve", "distance_km", "alpha_db_per_km", "detector_efficiency",
         "dark_count", "seed", "lanes", "schedule", "abort_qber", "cascade", "sample_fraction", "eps_sec", "eps_cor")
#: Short flags (a parameter's one-letter spelling, the same in every command).
SHORT = {"exchanges": "-n"}
_METAVARS = {"noise": "MODEL:P", "eve": "SPEC"}


class AliasedOption(click.Option):
    """A ``click.Option`` that also accepts hidden ``aliases`` (earlier spellings).

    The aliases parse exactly like the option's own flags but appear neither in ``--help`` nor
    in error messages, which name the current spelling.
    """

    def __init__(self, *args: Any, aliases: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aliases = tuple(aliases)

    def add_to_parser(self, parser, ctx) -> None:
        super().add_to_parser(parser, ctx)
        if self.aliases:
            shown = self.opts
            self.opts = list(self.aliases)
            try:
                super().add_to_parser(parser, ctx)
            finally:
                self.opts = shown


def param_option(name: str, *, dest: str | None = None, aliases: Iterable[str] = (), **overrides: Any) -> Callable:
    """The click option of parameter ``name``; ``overrides`` replace what the table says
    (e.g. ``default=None`` where the command derives the value), ``aliases`` add hidden spellings."""
    p = PARAMETERS[name]
    decls = [p.flag, *([SHORT[name]] if name in SHORT else []), dest or name]
    help_text = p.help.rstrip(".") + f", in {p.unit}." if p.unit else p.help
    settings: dict[str, Any] = dict(type=click.Choice(p.choices) if p.choices else p.kind, default=p.default,
                                    show_default=p.default is not None, help=help_text)
    if name in _METAVARS:
        settings["metavar"] = _METAVARS[name]
    if name == "noise":  # repeatable, and '+' joins several in one value
        settings.update(multiple=True, default=(p.default,))
    settings.update(overrides)
    return click.option(*decls, cls=AliasedOption, aliases=(*p.aliases, *aliases), **settings)


def json_option(help: str = "Print one JSON report and nothing else.") -> Callable:  # noqa: A002
    """``--json``: machine-readable output (the field names are a contract)."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def round_options(*names: str) -> Callable:
    """Decorate a command with the options of ``names`` (default: :data:`ROUND`), in that order."""
    def decorate(command):
        for name in reversed(names or ROUND):
            command = param_option(name)(command)
        return command
    return decorate


def round_kwargs(values: dict) -> dict:
    """Pop the :data:`ROUND` values (but ``exchanges``) out of a command's ``values`` into keyword
    arguments for ``run_bb84`` / ``submit`` (:func:`qkd_circuits.session.round_arguments`, plus
    ``seed``, ``lanes`` and ``schedule``; raises ``QKDError``)."""
    from ..session import round_arguments

    v = {name: values.pop(name) for name in ROUND if name != "exchanges"}
    lanes = v["lanes"]
    if lanes is not None and lanes != "device":
        if not lanes.isdigit():
            raise click.BadParameter(f"must be a whole number or 'device', got {lanes!r}", param_hint="--lanes")
        lanes = int(lanes)
    return dict(round_arguments(v), seed=v["seed"], lanes=lanes, schedule=v["schedule"])


def output_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Option callback for a file the command writes after its work (``--save-record``, ``--plot``).

    Checks before any work that the path could be written: its folder exists and is a folder, and
    the path is not itself a folder, so a typo costs a clear message (exit 2) instead of a
    traceback at the end that loses the result.
    """
    if value is None:
        return None
    import os
    from pathlib import Path

    path = Path(value)
    folder = path.parent
    if path.is_dir():
        raise click.BadParameter(f"{value!r} is a folder; give a file name in it", ctx=ctx, param=param)
    if not folder.exists():
        raise click.BadParameter(f"the folder {str(folder)!r} does not exist", ctx=ctx, param=param)
    if not folder.is_dir():
        raise click.BadParameter(f"{str(folder)!r} is not a folder", ctx=ctx, param=param)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise click.BadParameter(f"the folder {str(folder)!r} is not writable", ctx=ctx, param=param)
    return value
