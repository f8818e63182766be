"""Where sweep rows go: an appendable CSV file or a Parquet dataset directory, both resumable.

A file holds one protocol's sweep and that protocol's columns (:func:`columns`): a BB84 row has
no decoy parameters or figures, a decoy row no ``mode`` and no BB84 eavesdropper figures.  Every
row and every Parquet part of a file has the one schema; ``None`` is an empty CSV field or a
Parquet null.  Writing one protocol's rows into the other's file is refused.  Files written
before the per-protocol columns (one fixed header, :data:`LEGACY_COLUMNS`) still read with
:func:`read_results`, and are refused for writing.

CSV (any path not ending in ``.parquet``)
    One header line, then one line per finished task, written and flushed as the task
    completes.  Values never contain a newline (error messages are put on one line), so one
    line is one row.  A writer killed mid-line leaves a last line without its newline: on
    resume that partial line is cut off (the file is truncated to its last newline) and its task
    runs again.  A file whose header is not this protocol's columns is refused, never rewritten.
    Beside it: ``<output>.spec.toml`` and ``<output>.meta.json`` (see below).
``*.parquet``
    A directory of part files, ``part-<time>-<pid>-<n>.parquet``, one per batch of rows (every
    ``batch_rows`` rows or ``batch_seconds`` seconds, and when the sweep ends or is interrupted).
    Parquet files cannot be appended to, so each batch is a new file, written under a hidden
    temporary name and renamed into place: a part is either complete or absent.  A hard kill
    (SIGKILL, power loss) loses the rows of the batch not yet written, at most ``batch_rows``
    rows or ``batch_seconds`` of work; Ctrl-C loses only the tasks in flight.  Read it with
    ``pyarrow.parquet.read_table(path)`` or ``pandas.read_parquet(path)`` (or polars / DuckDB on
    the directory).  Inside it: ``_spec.toml`` and ``_meta.json``, which Parquet readers skip
    (names starting with ``_``).

The spec copy and the run record (:func:`sidecars`)
    ``spec.toml`` is the spec the sweep ran: the spec file's own text (comments included) when
    the sweep was given a path, else :meth:`SweepSpec.to_toml`.  ``meta.json`` holds the spec's
    digest (:meth:`SweepSpec.digest`), the protocol and its columns, the first start and the last
    finish (UTC, ISO 8601), whether every task is in the output, and one entry per run (started /
    finished, interrupted or not, the command, serial or Dask, rows run / skipped / failed, the
    commit and the package versions).  Both are replaced atomically (written under a temporary
    name, then renamed).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from ..exceptions import ConfigurationError, MissingExtraError
from .spec import _PROTOCOL_NAMES, PARAMETERS, _protocol_parameters

__all__ = ["COLUMNS", "LEGACY_COLUMNS", "columns", "open_output", "read_results", "sidecars"]

_PARAM_TYPES = {"exchanges": "int", **{n: "float" for n, p in PARAMETERS.items() if isinstance(p.default, float)}}
_REPORT = {
    "detected": "int", "sifted": "int", "sample_bits": "int",
    "qber_estimate": "float", "qber_upper": "float", "qber_true_sifted": "float",
    "aborted": "bool", "abort_reason": "str", "final_key_bits": "int", "leaked_ec_bits": "int",
    "key_sha256": "str", "keys_match": "bool",
}
#: BB84 rows: what Eve learned (``None`` where the session had no eavesdropper, but
#: eve_known_fraction, which is then 0.0).  The first three are the report's ``eve`` part.
_EVE_BB84 = {"attacked_fraction": "float", "right_basis_fraction": "float", "guess_error_right_basis": "float",
             "eve_known_fraction": "float"}
_DECOY = {"decoy_rate": "float", "decoy_y1": "float", "decoy_e1": "float", "decoy_valid": "bool",
          "gain_signal": "float", "gain_decoy": "float", "eve_known_fraction": "float"}
_TAIL = {"quantum_s": "float", "postprocessing_s": "float", "wall_s": "float", "timings_s": "str",
         "error": "str", "worker": "str", "commit": "str", "versions": "str"}


def _parameter_columns(names: Iterable[str]) -> dict[str, str]:
    return {name: _PARAM_TYPES.get(name, "str") for name in names}


def columns(protocol: str) -> dict[str, str]:
    """The columns of a ``protocol`` sweep's rows, in file order, with their types (str, int,
    float or bool): the task id, the seed, the parameters the protocol reads, the report's
    figures, the protocol's own (BB84: Eve's information; decoy: the decoy analysis), timings,
    error and provenance."""
    if protocol not in _PROTOCOL_NAMES:
        raise ConfigurationError(f"protocol must be one of {', '.join(map(repr, _PROTOCOL_NAMES))}, got {protocol!r}")
    own = _EVE_BB84 if protocol == "bb84" else _DECOY
    return {"task_id": "str", "seed": "int", **_parameter_columns(_protocol_parameters(protocol)),
            **_REPORT, **own, **_TAIL}


#: The one fixed header of every row before the columns were per protocol (files written then).
LEGACY_COLUMNS: dict[str, str] = {
    "task_id": "str", "seed": "int",
    **_parameter_columns(["mode", "backend", "exchanges", "noise", "eve", "distance_km", "alpha_db_per_km",
                          "detector_efficiency", "dark_count", "abort_qber", "cascade", "sample_fraction",
                          "eps_sec", "eps_cor", "protocol", "mu", "nu", "p_signal", "p_decoy", "u_alpha",
                          "decoy_method"]),
    **_REPORT, **{k: v for k, v in _DECOY.items()}, **_TAIL,
}
#: Every column a row of some protocol may have (the union of :func:`columns`), with its type.
COLUMNS: dict[str, str] = {**LEGACY_COLUMNS, **_EVE_BB84}


def _from_text(kind: str, text: str) -> Any:
    if text == "":
        return None
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "bool":
        return text == "True"
    return text


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() == ".parquet"


def sidecars(path: str | Path) -> tuple[Path, Path]:
    """(spec copy, run record) of the output ``path``: ``<path>.spec.toml`` and
    ``<path>.meta.json`` beside a CSV file, ``_spec.toml`` and ``_meta.json`` inside a Parquet
    dataset directory."""
    path = Path(path)
    if _is_parquet(path):
        return path / "_spec.toml", path / "_meta.json"
    return path.with_name(path.name + ".spec.toml"), path.with_name(path.name + ".meta.json")


def open_output(path: str | Path, protocol: str = "bb84", **parquet_options):
    """The writer for ``path`` and a ``protocol`` sweep: Parquet dataset for ``*.parquet``, else CSV."""
    path = Path(path)
    schema = columns(protocol)
    if _is_parquet(path):
        return _ParquetOutput(path, schema, protocol, **parquet_options)
    return _CsvOutput(path, schema, protocol)


def _known_schema(header: list[str]) -> dict[str, str] | None:
    for protocol in _PROTOCOL_NAMES:
        if header == list(columns(protocol)):
            return columns(protocol)
    return LEGACY_COLUMNS if header == list(LEGACY_COLUMNS) else None


def read_results(path: str | Path) -> list[dict]:
    """Every complete row of a sweep output, typed as its protocol's :func:`columns` say, in file order.

    Reads both protocols' files and those written with the old fixed header
    (:data:`LEGACY_COLUMNS`); read-only: a partial trailing CSV line is skipped, not cut off.

    Raises:
        ConfigurationError: the file's columns are no sweep schema this version knows.
    """
    path = Path(path)
    if _is_parquet(path):
        pq = _pyarrow()[1]
        parts = _ParquetOutput(path, {}, "").parts()
        return [row for part in parts for row in pq.read_table(part).to_pylist()]
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(line for line in f if line.endswith("\n"))  # only the last can lack it
        header = next(reader, None)
        if header is None:
            return []
        schema = _known_schema(header)
        if schema is None:
            raise ConfigurationError(f"{path} is not a sweep output (its columns are no sweep schema this version knows)")
        return [{name: _from_text(kind, value) for (name, kind), value in zip(schema.items(), line)}
                for line in reader]


def _refuse(path: Path, found: list[str], protocol: str) -> ConfigurationError:
    """Why the output at ``path`` (its columns ``found``) cannot take a ``protocol`` sweep's rows."""
    if found == list(LEGACY_COLUMNS):
        return ConfigurationError(
            f"{path} was written by an earlier version (one fixed header for every protocol): read it with "
            "qkd_circuits.sweep.read_results(), and write this sweep to a new file")
    for other in _PROTOCOL_NAMES:
        if other != protocol and found == list(columns(other)):
            return ConfigurationError(
                f"{path} holds a {other!r} sweep and this spec runs {protocol!r}: one protocol per output "
                "(one schema per file); write it to a new file")
    return ConfigurationError(f"{path} is not a sweep output of this version (its columns differ): write to a new file")


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _replace_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: under a temporary name, then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _read_meta(path: str | Path) -> dict | None:
    """The run record beside the output ``path`` (:func:`sidecars`), or ``None`` if there is none."""
    meta = sidecars(path)[1]
    try:
        return json.loads(meta.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the sweep's run record {meta}: {exc}") from None


def _write_meta(path: str | Path, meta: dict) -> None:
    _replace_text(sidecars(path)[1], json.dumps(meta, indent=2, sort_keys=False) + "\n")


def _write_spec_copy(path: str | Path, text: str) -> None:
    _replace_text(sidecars(path)[0], text)


class _CsvOutput:
    def __init__(self, path: Path, schema: dict[str, str], protocol: str) -> None:
        self.path, self.schema, self.protocol = path, schema, protocol
        self._file = None

    def recover(self) -> set[str]:
        """Cut off a partial last line; return the task ids already written."""
        if not self.path.exists():
            return set()
        if self.path.is_dir():
            raise ConfigurationError(f"{self.path} is a directory; CSV output needs a file path")
        with self.path.open("r+b") as f:
            size = f.seek(0, os.SEEK_END)
            end = size
            while end > 0:  # find the last newline, reading backwards
                step = min(end, 1 << 16)
                f.seek(end - step)
                chunk = f.read(step)
                cut = chunk.rfind(b"\n")
                if cut >= 0:
                    end = end - step + cut + 1
                    break
                end -= step
            if end != size:
                f.truncate(end)
        ids = set()
        with self.path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is not None and header != list(self.schema):
                raise _refuse(self.path, header, self.protocol)
            for number, line in enumerate(reader, start=2):
                if len(line) != len(self.schema):
                    raise ConfigurationError(f"{self.path} line {number} has {len(line)} fields, "
                                             f"expected {len(self.schema)}: the file is damaged")
                ids.add(line[0])
        return ids

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = self.path.open("a", newline="", encoding="utf-8")
        if new:
            self._write_line(list(self.schema))

    def _write_line(self, values: Iterable) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(values)
        self._file.write(buffer.getvalue())  # one write per line
        self._file.flush()

    def write(self, row: dict) -> None:
        self._write_line("" if row.get(name) is None else row[name] for name in self.schema)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise MissingExtraError("sweep", "pyarrow", "Parquet sweep output") from None
    return pyarrow, pyarrow.parquet


class _ParquetOutput:
    def __init__(self, path: Path, schema: dict[str, str], protocol: str, *, batch_rows: int = 256,
                 batch_seconds: float = 30.0) -> None:
        self.path, self.schema, self.protocol = path, schema, protocol
        self.batch_rows, self.batch_seconds = batch_rows, batch_seconds
        self._rows: list[dict] = []
        self._since = time.monotonic()
        self._count = 0

    def parts(self) -> list[Path]:
        if not self.path.exists():
            return []
        if not self.path.is_dir():
            raise ConfigurationError(f"{self.path} is a file; Parquet sweep output is a directory of part files")
        return sorted(self.path.glob("part-*.parquet"))

    def recover(self) -> set[str]:
        pq = _pyarrow()[1]
        ids = set()
        for part in self.parts():
            found = pq.read_schema(part).names
            if found != list(self.schema):
                raise _refuse(part, found, self.protocol)
            ids.update(pq.read_table(part, columns=["task_id"]).column("task_id").to_pylist())
        for leftover in self.path.glob(".part-*.tmp") if self.path.exists() else ():
            leftover.unlink()  # a batch whose writer was killed before the rename
        return ids

    def open(self) -> None:
        _pyarrow()
        self.path.mkdir(parents=True, exist_ok=True)

    def write(self, row: dict) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.batch_rows or time.monotonic() - self._since >= self.batch_seconds:
            self.flush()

    def flush(self) -> None:
        self._since = time.monotonic()
        if not self._rows:
            return
        pa, pq = _pyarrow()
        types = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
        schema = pa.schema([(name, types[kind]) for name, kind in self.schema.items()])
        table = pa.Table.from_pylist([{n: row.get(n) for n in self.schema} for row in self._rows], schema=schema)
        name = f"part-{time.time_ns()}-{os.getpid()}-{self._count:05d}.parquet"
        temporary = self.path / f".{name}.tmp"
        pq.write_table(table, temporary)
        os.replace(temporary, self.path / name)
        self._count += 1
        self._rows = []

    def close(self) -> None:
        self.flush()
