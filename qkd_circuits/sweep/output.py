"""Where sweep rows go: an appendable CSV file or a Parquet dataset directory, both resumable.

Both formats hold the same columns (:data:`COLUMNS`, fixed, so every row and every Parquet part
has one schema); ``None`` is an empty CSV field or a Parquet null.

CSV (any path not ending in ``.parquet``)
    One header line, then one line per finished task, written and flushed as the task
    completes.  Values never contain a newline (error messages are put on one line), so one
    line is one row.  A writer killed mid-line leaves a last line without its newline: on
    resume that partial line is cut off (the file is truncated to its last newline) and its task
    runs again.  A file whose header differs from :data:`COLUMNS` is refused, never rewritten.
``*.parquet``
    A directory of part files, ``part-<time>-<pid>-<n>.parquet``, one per batch of rows (every
    ``batch_rows`` rows or ``batch_seconds`` seconds, and when the sweep ends or is interrupted).
    Parquet files cannot be appended to, so each batch is a new file, written under a hidden
    temporary name and renamed into place: a part is either complete or absent.  A hard kill
    (SIGKILL, power loss) loses the rows of the batch not yet written, at most ``batch_rows``
    rows or ``batch_seconds`` of work; Ctrl-C loses only the tasks in flight.  Read it with
    ``pyarrow.parquet.read_table(path)`` (or pandas / polars / DuckDB on the directory).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable

from ..exceptions import ConfigurationError, MissingExtraError
from .spec import PARAMETERS

__all__ = ["COLUMNS", "open_output", "read_results"]

_PARAM_TYPES = {"exchanges": "int", **{n: "float" for n, p in PARAMETERS.items() if isinstance(p.default, float)}}

#: Every column of a sweep row, in file order, with its type (str, int, float or bool).
COLUMNS: dict[str, str] = {
    "task_id": "str", "seed": "int",
    **{name: _PARAM_TYPES.get(name, "str") for name in PARAMETERS},
    "detected": "int", "sifted": "int", "sample_bits": "int",
    "qber_estimate": "float", "qber_upper": "float", "qber_true_sifted": "float",
    "aborted": "bool", "abort_reason": "str", "final_key_bits": "int", "leaked_ec_bits": "int",
    "key_sha256": "str", "keys_match": "bool",
    "decoy_rate": "float", "decoy_y1": "float", "decoy_e1": "float", "decoy_valid": "bool",
    "gain_signal": "float", "gain_decoy": "float", "eve_known_fraction": "float",
    "quantum_s": "float", "postprocessing_s": "float", "wall_s": "float", "timings_s": "str",
    "error": "str", "worker": "str", "commit": "str", "versions": "str",
}


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


def open_output(path: str | Path, **parquet_options):
    """The writer for ``path``: Parquet dataset for ``*.parquet``, else CSV."""
    path = Path(path)
    return _ParquetOutput(path, **parquet_options) if _is_parquet(path) else _CsvOutput(path)


def read_results(path: str | Path) -> list[dict]:
    """Every complete row of a sweep output, typed as :data:`COLUMNS` says, in file order.

    Read-only: a partial trailing CSV line is skipped, not cut off.
    """
    path = Path(path)
    if _is_parquet(path):
        pq = _pyarrow()[1]
        parts = _ParquetOutput(path).parts()
        return [row for part in parts for row in pq.read_table(part).to_pylist()]
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(line for line in f if line.endswith("\n"))  # only the last can lack it
        _check_header(path, next(reader, None))
        return [{name: _from_text(kind, value) for (name, kind), value in zip(COLUMNS.items(), line)}
                for line in reader]


def _check_header(path: Path, header: list[str] | None) -> None:
    if header is not None and header != list(COLUMNS):
        raise ConfigurationError(
            f"{path} is not a sweep output of this version (its columns differ): write to a new file")


class _CsvOutput:
    def __init__(self, path: Path) -> None:
        self.path = path
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
            _check_header(self.path, next(reader, None))
            for number, line in enumerate(reader, start=2):
                if len(line) != len(COLUMNS):
                    raise ConfigurationError(f"{self.path} line {number} has {len(line)} fields, "
                                             f"expected {len(COLUMNS)}: the file is damaged")
                ids.add(line[0])
        return ids

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = self.path.open("a", newline="", encoding="utf-8")
        if new:
            self._write_line(list(COLUMNS))

    def _write_line(self, values: Iterable) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(values)
        self._file.write(buffer.getvalue())  # one write per line
        self._file.flush()

    def write(self, row: dict) -> None:
        self._write_line("" if row.get(name) is None else row[name] for name in COLUMNS)

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
    def __init__(self, path: Path, *, batch_rows: int = 256, batch_seconds: float = 30.0) -> None:
        self.path = path
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
        schema = pa.schema([(name, types[kind]) for name, kind in COLUMNS.items()])
        table = pa.Table.from_pylist([{n: row.get(n) for n in COLUMNS} for row in self._rows], schema=schema)
        name = f"part-{time.time_ns()}-{os.getpid()}-{self._count:05d}.parquet"
        temporary = self.path / f".{name}.tmp"
        pq.write_table(table, temporary)
        os.replace(temporary, self.path / name)
        self._count += 1
        self._rows = []

    def close(self) -> None:
        self.flush()
