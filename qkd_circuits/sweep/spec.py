"""The sweep spec: parameters, their validation, and the expansion into tasks.

A spec is read once (:func:`load_spec` / :func:`parse_spec`) and fully validated there: every
grid point is turned into the channel, detector, eavesdropper and post-processing config
``run_bb84`` will get, so a bad value fails before a single worker starts.  :func:`expand` then
lists the tasks, grid point by grid point (parameters in :data:`PARAMETERS` order, the last one
varying fastest), each point with every seed.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from .. import params as _params
from ..exceptions import ConfigurationError
from ..quantum.models import parse_eve, parse_noise
from ..session import round_arguments

__all__ = ["PARAMETERS", "SweepSpec", "Task", "expand", "load_spec", "parse_spec", "session_options", "task_id"]

#: Mixed into every task id: bump it if the meaning of a parameter changes.
TASK_ID_VERSION = "qkd_circuits.sweep/1"
_TOP_LEVEL = ("name", "description", "seeds", "fixed", "grid")
_LOCAL_BACKENDS = "aer or fake:<name> (a local, seedable simulator)"


def _whole(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return value


def _number(name: str, value: Any) -> float:
    # Integers become floats, so 10 and 10.0 are the same value (and the same task id).
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigurationError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string, got {value!r}")
    return value.strip()


def _mode(name: str, value: Any) -> str:
    value = _text(name, value)
    if value not in ("prepared", "qrng"):
        raise ConfigurationError(f"{name} must be 'prepared' or 'qrng', got {value!r}")
    return value


def _backend(name: str, value: Any) -> str:
    value = _text(name, value)
    kind, _, device = value.partition(":")
    if not ((kind == "aer" and not device) or (kind == "fake" and device)):
        raise ConfigurationError(f"{name} must be {_LOCAL_BACKENDS}, got {value!r}")
    return value


def _noise(name: str, value: Any) -> str:
    """``"none"``, one ``qkd run --noise`` string, several joined by ``+``, or a list of them."""
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, str) for item in items):
        raise ConfigurationError(
            f"{name} must be a noise string such as 'depolarizing:0.04' (or several joined by '+', "
            f"or a list of strings), got {value!r}")
    parts = [p.strip() for item in items for p in item.split("+") if p.strip() and p.strip() != "none"]
    parse_noise(parts)  # raises with the model's own message
    return "+".join(parts) or "none"


def _eve(name: str, value: Any) -> str:
    value = _text(name, value)
    if value == "pns":  # photon-number splitting: decoy sessions only (checked per point)
        return value
    parse_eve(value)
    return value or "none"


def _choice(*allowed: str) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        value = _text(name, value)
        if value not in allowed:
            raise ConfigurationError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    return check


@dataclass(frozen=True)
class _Parameter:
    default: Any
    check: Callable[[str, Any], Any]


#: The check of each parameter a spec may set, in row-column order (task ids hash the names: add,
#: never rename).  ``protocol`` is the sweep's own; every other default is :mod:`qkd_circuits.params`'.
_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "mode": _mode,
    "backend": _backend,
    "exchanges": lambda n, v: _whole(n, v, 1),
    "noise": _noise,
    "eve": _eve,
    "distance_km": _number,
    "alpha_db_per_km": _number,
    "detector_efficiency": _number,
    "dark_count": _number,
    "abort_qber": _number,
    "cascade": _text,
    "sample_fraction": _number,
    "eps_sec": _number,
    "eps_cor": _number,
    # Decoy-state sessions on weak coherent pulses (``qkd decoy``'s options and defaults).
    "protocol": _choice("bb84", "decoy"),  # _PROTOCOL_NAMES
    "mu": _number,
    "nu": _number,
    "p_signal": _number,
    "p_decoy": _number,
    "u_alpha": _number,
    "decoy_method": _choice(*_params.PARAMETERS["decoy_method"].choices),
}
_SWEEP_DEFAULTS = {"protocol": "bb84"}

#: Every parameter a spec may set, with its default (the one :mod:`qkd_circuits.params` gives
#: ``qkd run`` and ``qkd decoy``) and its check.  Row columns follow this order.
PARAMETERS: dict[str, _Parameter] = {
    name: _Parameter(_SWEEP_DEFAULTS[name] if name in _SWEEP_DEFAULTS else _params.default(name), check)
    for name, check in _CHECKS.items()
}
#: Parameters only decoy sessions read; a BB84 task's id leaves them out (so it does not change).
DECOY_ONLY = ("protocol", "mu", "nu", "p_signal", "p_decoy", "u_alpha", "decoy_method")
#: Parameters only BB84 sessions read (a decoy session simulates its weak coherent pulses directly).
BB84_ONLY = ("mode",)
_PROTOCOL_NAMES = ("bb84", "decoy")


def _protocol_parameters(protocol: str) -> list[str]:
    """The parameters a ``protocol`` session reads, in :data:`PARAMETERS` order: its rows' parameter
    columns (``protocol`` is one of them)."""
    foreign = BB84_ONLY if protocol == "decoy" else tuple(n for n in DECOY_ONLY if n != "protocol")
    return [n for n in PARAMETERS if n not in foreign]


@dataclass(frozen=True)
class SweepSpec:
    """A validated spec: fixed values, grid lists (canonical values, in spec order) and seeds."""

    name: str
    fixed: Mapping[str, Any]
    grid: Mapping[str, tuple]
    seeds: tuple[int, ...]
    description: str = ""

    @property
    def points(self) -> int:
        """Grid points (without seeds)."""
        return math.prod(len(values) for values in self.grid.values())

    def __len__(self) -> int:
        return self.points * len(self.seeds)

    @property
    def protocol(self) -> str:
        """The one protocol every session of this spec runs (``"bb84"`` or ``"decoy"``)."""
        if "protocol" in self.grid:
            return self.grid["protocol"][0]
        return self.fixed.get("protocol", PARAMETERS["protocol"].default)

    def digest(self) -> str:
        """``sha256:`` and 64 hex digits over what decides the tasks: fixed values, grid lists (in
        order) and seeds, canonical (``10`` and ``10.0`` alike); ``name`` and ``description`` are
        not in it.  A resumed sweep compares it with the one its output was started with."""
        canonical = json.dumps({"version": TASK_ID_VERSION, "fixed": dict(self.fixed),
                                "grid": {n: list(v) for n, v in self.grid.items()}, "seeds": list(self.seeds)},
                               sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    def to_toml(self) -> str:
        """The spec as TOML, canonical values: :func:`parse_spec` of it gives the same :meth:`digest`."""
        lines = [f"name = {_toml_value(self.name)}"]
        if self.description:
            lines.append(f"description = {_toml_value(self.description)}")
        seeds = list(self.seeds)
        if seeds == list(range(seeds[0], seeds[0] + len(seeds))):
            lines.append(f"seeds = {{start = {seeds[0]}, count = {len(seeds)}}}")
        else:
            lines.append(f"seeds = {_toml_value(seeds)}")
        for table, values in (("fixed", self.fixed), ("grid", self.grid)):
            lines += ["", f"[{table}]"] + [f"{n} = {_toml_value(v)}" for n, v in values.items()]
        return "\n".join(lines) + "\n"

    def grid_points(self):
        """Every grid point as a full parameter dict, in expansion order."""
        names = [n for n in PARAMETERS if n in self.grid]
        for values in itertools.product(*(self.grid[n] for n in names)):
            point = {n: self.fixed.get(n, PARAMETERS[n].default) for n in PARAMETERS}
            point.update(zip(names, values))
            yield point


def _toml_value(value: Any) -> str:
    """A canonical spec value as TOML: strings (JSON's escapes are TOML's), finite numbers, lists."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)


@dataclass(frozen=True)
class Task:
    """One session of a sweep: a full parameter dict (read-only by convention) and a seed."""

    task_id: str
    seed: int
    parameters: dict


def task_id(parameters: Mapping[str, Any], seed: int) -> str:
    """A stable id for (parameters, seed): 16 hex digits of SHA-256 over canonical JSON.

    Values are the canonical ones :func:`parse_spec` makes (numbers as floats, noise joined by
    ``+``), so writing ``10`` or ``10.0`` names the same task.
    """
    if parameters.get("protocol", "bb84") == "bb84":
        parameters = {k: v for k, v in parameters.items() if k not in DECOY_ONLY}
    canonical = json.dumps({"version": TASK_ID_VERSION, "seed": seed, "parameters": dict(parameters)},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def session_options(parameters: Mapping[str, Any]) -> dict:
    """The keyword arguments of ``run_bb84`` (all but ``exchanges`` and ``seed``) for a point.

    For ``protocol = "decoy"``: those of :func:`qkd_circuits.decoy.run_decoy_session`, plus
    ``protocol="decoy"``.
    """
    p = parameters
    if p.get("protocol", "bb84") == "decoy":
        return _decoy_options(p)
    if p["eve"] == "pns":
        raise ConfigurationError("eve 'pns' (photon-number splitting) needs protocol = 'decoy' (weak coherent pulses)")
    options = round_arguments(p)
    if p["backend"] != "aer" and (options["channel"].has_noise_instructions
                                  or options["detector"].has_noise_instructions):
        raise ConfigurationError(
            f"noise {p['noise']!r} is made of Aer noise instructions, which backend {p['backend']!r} cannot run: "
            "use backend 'aer', or misalignment (a rotation) on a fake device")
    return options


def _decoy_options(p: Mapping[str, Any]) -> dict:
    """A decoy-state session: weak coherent pulses over the same fibre and detector parameters."""
    from ..quantum.wcp import PhotonNumberSplitting, WeakCoherentSource

    if p["backend"] != "aer":
        raise ConfigurationError("decoy sessions run on backend 'aer' (millions of pulses per session)")
    if p["eve"] not in ("none", "pns"):
        raise ConfigurationError(f"decoy sessions take eve 'none' or 'pns', got {p['eve']!r}")
    options = round_arguments({**p, "eve": "none"})
    channel, detector, config = options["channel"], options["detector"], options["config"]
    if channel.has_noise_instructions or detector.has_noise_instructions:
        raise ConfigurationError(f"decoy sessions model misalignment, loss and dark counts; noise {p['noise']!r} "
                                 "has Aer noise instructions: use 'misalignment:E' or 'none'")
    if p["decoy_method"] == "rusca2018":  # one decoy, no vacuum: p_decoy is 1 - p_signal
        from ..decoy import one_decoy_source
        source = one_decoy_source(p["mu"], p["nu"], p_signal=p["p_signal"])
    else:
        source = WeakCoherentSource.vacuum_weak(p["mu"], p["nu"], p_signal=p["p_signal"], p_decoy=p["p_decoy"])
    eve = PhotonNumberSplitting.matching(p["mu"], channel, detector) if p["eve"] == "pns" else None
    if p["u_alpha"] < 0:
        raise ConfigurationError(f"u_alpha must be >= 0, got {p['u_alpha']}")
    return dict(protocol="decoy", source=source, channel=channel, detector=detector, eve=eve, config=config,
                method=p["decoy_method"], u_alpha=p["u_alpha"])


def _unknown(key: str, known, where: str) -> ConfigurationError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigurationError(f"unknown {where} {key!r}{hint}; known: {', '.join(known)}")


def _table(data: Mapping, key: str) -> Mapping:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"[{key}] must be a table of parameters, got {value!r}")
    for name in value:
        if name not in PARAMETERS:
            raise _unknown(name, list(PARAMETERS), f"parameter in [{key}]")
    return value


def _seeds(value: Any) -> tuple[int, ...]:
    if value is None:
        raise ConfigurationError("the spec needs seeds: seeds = [1, 2, 3] or seeds = {start = 0, count = 50}")
    if isinstance(value, Mapping):
        for key in value:
            if key not in ("start", "count"):
                raise _unknown(key, ["start", "count"], "key in seeds")
        if "count" not in value:
            raise ConfigurationError("seeds = {start = S, count = N} needs count")
        start = _whole("seeds.start", value.get("start", 0), 0)
        return tuple(range(start, start + _whole("seeds.count", value["count"], 1)))
    if not isinstance(value, list) or not value:
        raise ConfigurationError(f"seeds must be a non-empty list of whole numbers or {{start, count}}, got {value!r}")
    seeds = tuple(_whole("each seed", s, 0) for s in value)
    if len(set(seeds)) != len(seeds):
        raise ConfigurationError(f"seeds repeat a value: {list(seeds)}")
    return seeds


def parse_spec(data: Mapping[str, Any]) -> SweepSpec:
    """Validate a spec given as the dict ``tomllib`` returns.

    Raises:
        ConfigurationError: unknown keys, wrong types, empty or repeated grid values, a grid
            point the models refuse; the message names the key and the value.
    """
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"a sweep spec is a table, got {type(data).__name__}")
    for key in data:
        if key not in _TOP_LEVEL:
            where = "parameter at the top level" if key in PARAMETERS else "top-level key"
            error = _unknown(key, list(_TOP_LEVEL), where)
            if key in PARAMETERS:
                error = ConfigurationError(f"{error}; put {key!r} under [fixed] or [grid]")
            raise error
    name, description = (_text(k, data.get(k, "")) for k in ("name", "description"))
    fixed_in, grid_in = _table(data, "fixed"), _table(data, "grid")
    both = sorted(set(fixed_in) & set(grid_in))
    if both:
        raise ConfigurationError(f"{', '.join(both)} set in both [fixed] and [grid]: keep one")
    fixed = {n: PARAMETERS[n].check(f"fixed.{n}", v) for n, v in fixed_in.items()}
    grid = {}
    for n, values in grid_in.items():
        if not isinstance(values, list):
            raise ConfigurationError(f"grid.{n} must be a list of values (a single value goes under [fixed]), "
                                     f"got {values!r}")
        if not values:
            raise ConfigurationError(f"grid.{n} is empty: give at least one value, or remove it")
        canonical = tuple(PARAMETERS[n].check(f"grid.{n}", v) for v in values)
        if len(set(canonical)) != len(canonical):
            raise ConfigurationError(f"grid.{n} repeats a value: {list(canonical)}")
        grid[n] = canonical
    spec = SweepSpec(name=name, fixed=fixed, grid=grid, seeds=_seeds(data.get("seeds")), description=description)
    _check_protocol(spec)
    for point in spec.grid_points():
        try:
            session_options(point)
        except ConfigurationError as exc:
            varying = ", ".join(f"{n}={point[n]!r}" for n in grid)
            raise ConfigurationError(f"grid point ({varying}): {exc}" if varying else str(exc)) from None
    return spec


def _check_protocol(spec: SweepSpec) -> None:
    """One protocol per sweep (its output has that protocol's columns), and only its parameters."""
    if len(spec.grid.get("protocol", ())) > 1:
        raise ConfigurationError(
            f"grid.protocol lists {list(spec.grid['protocol'])}: a sweep runs one protocol (its output holds "
            "that protocol's columns); put protocol under [fixed] and run one sweep per protocol, each to its own file")
    protocol, given = spec.protocol, [*spec.fixed, *spec.grid]
    foreign = [n for n in given if n not in _protocol_parameters(protocol)]
    if foreign:
        if protocol == "decoy":
            raise ConfigurationError(f"{', '.join(foreign)}: read by BB84 sessions only (a decoy session simulates "
                                     "weak coherent pulses directly); remove it from the decoy spec")
        raise ConfigurationError(f"{', '.join(foreign)}: read by decoy sessions only; set protocol = 'decoy' "
                                 "under [fixed], or remove it")


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a TOML spec file (see the package docstring for the format)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: the same parser as a package
        try:
            import tomli as tomllib
        except ImportError:
            raise ConfigurationError("reading a TOML spec needs Python >= 3.11 (tomllib) or the tomli package; "
                                     "or pass the parsed dict to parse_spec()") from None
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read the sweep spec {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path} is not valid TOML: {exc}") from None
    try:
        spec = parse_spec(data)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{path}: {exc}") from None
    return spec if spec.name else SweepSpec(path.stem, spec.fixed, spec.grid, spec.seeds, spec.description)


def expand(spec: SweepSpec) -> list[Task]:
    """Every task of ``spec``: each grid point with each seed, ids unique."""
    return [Task(task_id(point, seed), seed, point) for point in spec.grid_points() for seed in spec.seeds]
