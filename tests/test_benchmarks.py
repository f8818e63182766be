"""Benchmark scripts keep their output contract: with --json, one JSON object per result line
carrying the figure, its unit, the parameters, the commit and the package versions.
(The figures themselves are measured by running the scripts, never asserted here.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parent.parent / "benchmarks"


def test_throughput_json_lines():
    proc = subprocess.run(
        [sys.executable, str(BENCH / "throughput.py"), "--json", "--exchanges", "2000", "--repeats", "1",
         "--sequential-exchanges", "200"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(lines) == 11  # 5 cases x 2 modes + the sequential reference
    for row in lines:
        assert row["unit"] == "exchanges/s" and row["value"] > 0
        assert {"mode", "schedule", "case", "backend", "exchanges"} <= set(row["params"])
        assert "qiskit" in row["versions"] and "commit" in row
