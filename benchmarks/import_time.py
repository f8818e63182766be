"""Import time: what ``import qkd_circuits`` costs on top of ``import qiskit``.

Goal: ``import qiskit; import qkd_circuits`` takes less than 0.5 s more than ``import qiskit``
(median of fresh interpreters).

    python benchmarks/import_time.py            # human-readable lines
    python benchmarks/import_time.py --json     # one JSON object per result line
    python benchmarks/import_time.py --profile 10   # also the 10 slowest modules qkd_circuits adds

Each statement runs in a fresh interpreter (``sys.executable -c``), timed inside it with
``time.perf_counter`` around the import (interpreter start-up, the same for both, is left out);
``--warmups`` untimed runs of each first (default one: byte-code caches), then ``--runs`` runs,
the statements alternating.  The figures: the median seconds of ``import qiskit``, of ``import qiskit; import
qkd_circuits``, of ``import qkd_circuits`` alone, and the difference of the first two medians
(with the goal).  ``--profile N`` runs ``python -X importtime`` once and lists the N modules with
the largest self time among those that ``import qkd_circuits`` loads after qiskit is already in.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import context, emit  # noqa: E402

GOAL_SECONDS = 0.5
STATEMENTS = {
    "import_qiskit": "import qiskit",
    "import_qiskit_and_qkd_circuits": "import qiskit; import qkd_circuits",
    "import_qkd_circuits_alone": "import qkd_circuits",
}
_TIMER = ("import time as _t; _t0 = _t.perf_counter(); {statement}; "
          "print(repr(_t.perf_counter() - _t0))")


def time_import(statement: str) -> float:
    """Seconds of one import statement in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", _TIMER.format(statement=statement)], capture_output=True,
                          text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{statement!r} failed: {proc.stderr.strip()[-400:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def profile(top: int) -> list[dict]:
    """The modules with the largest self time that `import qkd_circuits` adds after `import qiskit`."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import qiskit; print('MARK', flush=True); "
                           "import sys; sys.stderr.write('import time: MARK\\n'); import qkd_circuits"],
                          capture_output=True, text=True, timeout=300, check=True)
    lines = proc.stderr.splitlines()
    after = lines[lines.index("import time: MARK") + 1:]
    rows = []
    for line in after:
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if match:
            rows.append({"module": match.group(4), "self_us": int(match.group(1)),
                         "cumulative_us": int(match.group(2)), "depth": len(match.group(3)) // 2})
    return sorted(rows, key=lambda row: -row["self_us"])[:top]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per result line")
    parser.add_argument("--runs", type=int, default=11, help="fresh interpreters per statement (median)")
    parser.add_argument("--warmups", type=int, default=1,
                        help="untimed fresh interpreters per statement first (byte-code and file caches)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also list the N slowest modules that import qkd_circuits adds")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.warmups < 0:
        parser.error("--warmups must be at least 0")
    ctx = context()

    for _ in range(args.warmups):  # warm-up: byte-code caches, the file system cache
        for statement in STATEMENTS.values():
            time_import(statement)
    seconds: dict[str, list[float]] = {figure: [] for figure in STATEMENTS}
    for _ in range(args.runs):
        for figure, statement in STATEMENTS.items():
            seconds[figure].append(time_import(statement))

    medians = {figure: statistics.median(values) for figure, values in seconds.items()}
    for figure, statement in STATEMENTS.items():
        values = seconds[figure]
        result = {"benchmark": "import_time", "figure": figure, "value": round(medians[figure], 4), "unit": "s",
                  "best": round(min(values), 4), "worst": round(max(values), 4), "goal": None, "meets_goal": None,
                  "params": {"statement": statement, "runs": args.runs, "warmups": args.warmups,
                             "python": sys.executable}, **ctx}
        emit(result, as_json=args.json,
             text=f"{statement:<38} {medians[figure] * 1e3:8.1f} ms  (best {min(values) * 1e3:.1f}, "
                  f"worst {max(values) * 1e3:.1f}; {args.runs} runs)")

    overhead = medians["import_qiskit_and_qkd_circuits"] - medians["import_qiskit"]
    result = {"benchmark": "import_time", "figure": "qkd_circuits_over_qiskit", "value": round(overhead, 4),
              "unit": "s", "goal": GOAL_SECONDS, "meets_goal": overhead < GOAL_SECONDS,
              "params": {"runs": args.runs, "of": ["import_qiskit_and_qkd_circuits", "import_qiskit"],
                         "statistic": "difference of the medians"}, **ctx}
    emit(result, as_json=args.json,
         text=f"{'qkd_circuits on top of qiskit':<38} {overhead * 1e3:8.1f} ms  (goal < {GOAL_SECONDS * 1e3:.0f} ms: "
              f"{'met' if overhead < GOAL_SECONDS else 'NOT met'})")

    if args.profile:
        for rank, row in enumerate(profile(args.profile), 1):
            result = {"benchmark": "import_time", "figure": "module_self_time", "value": row["self_us"] / 1e6,
                      "unit": "s", "goal": None, "meets_goal": None,
                      "params": {"rank": rank, "module": row["module"], "after": "import qiskit"},
                      "cumulative": row["cumulative_us"] / 1e6, **ctx}
            emit(result, as_json=args.json,
                 text=f"  {rank:>2}. {row['module']:<50} self {row['self_us'] / 1e3:7.1f} ms  "
                      f"cumulative {row['cumulative_us'] / 1e3:7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
