"""The validation board's fast rows, run in-process: every row expected to reproduce a
published figure does, every known gap is still reported as a gap (with its reason), and the
Markdown writer puts every row in its table.  (The slow rows — optimised finite-key rate
curves — run with ``make validation``.)"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent / "benchmarks"


def _load():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("validation_board", BENCH / "validation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


validation = _load()


@pytest.fixture(scope="module")
def fast_rows():
    return validation.run_rows(fast=True)


def test_the_fast_subset_holds_the_analytic_rows(fast_rows):
    ids = {r["id"] for r in fast_rows}
    assert {"shor-preskill-threshold", "gys-infinite-decoy", "gys-vacuum-weak",
            "tlgr-table2-n1e6-q1", "tlgr-table2-n1e4-q1", "cascade-option7-q0.02"} <= ids
    every = {r.id for r in validation.rows()}
    assert ids < every  # the slow rows exist but are not in the fast subset
    assert all(r["fast"] for r in fast_rows)


def test_every_row_expected_to_reproduce_passes(fast_rows):
    expected = [r for r in fast_rows if r["expected"] == "pass"]
    assert len(expected) >= 5
    failing = {r["id"]: (r["published"], r["ours"], r["difference"]) for r in expected if r["status"] != "pass"}
    assert not failing


def test_known_gaps_are_still_reported_as_gaps(fast_rows):
    gaps = [r for r in fast_rows if r["expected"] == "gap"]
    assert {r["id"] for r in gaps} >= {"tlgr-table2-n1e4-q1", "tlgr-table2-n1e4-q2.5"}
    for r in gaps:
        # A gap that closes must be re-marked in the script, not pass silently; one that is
        # reported must carry its measured difference and its reason.
        assert r["status"] == "fail", f"{r['id']} now reproduces: mark it expected 'pass'"
        assert r["difference"] is not None and abs(r["difference"]) > r["tolerance"]
        assert r["gap_reason"] and len(r["gap_reason"]) > 40


def test_rows_without_a_published_value_report_ours_and_say_so(fast_rows):
    unconfirmed = [r for r in fast_rows if r["expected"] == "unconfirmed"]
    assert unconfirmed
    for r in unconfirmed:
        assert r["status"] == "no published value" and r["published"] is None
        assert r["published_source"] == "none" and r["reading"].startswith(("no published value", "published value not confirmed"))
        assert r["ours"] is not None and math.isfinite(r["ours"]) and r["ours"] > 0


def test_published_sources_are_named(fast_rows):
    for r in fast_rows:
        assert r["published_source"] in ("paper", "citing", "none")
        assert r["reading"] and r["paper"] and r["where"] and r["tolerance_why"]
        if r["published_source"] == "citing":  # not confirmed in the paper itself: the reading says by whom
            assert "quoted" in r["reading"]


def test_the_analytic_values(fast_rows):
    by_id = {r["id"]: r for r in fast_rows}
    # 1 − 2h(Q) = 0 at Q = 11.003% (bisection to 1e-12).
    assert by_id["shor-preskill-threshold"]["ours"] == pytest.approx(11.0028, abs=1e-3)
    # GYS: two decoys (vacuum + ν = 0.05) reach less far than infinitely many.
    assert by_id["gys-vacuum-weak"]["ours"] < by_id["gys-infinite-decoy"]["ours"]
    assert by_id["gys-gllp-no-decoy"]["ours"] < by_id["gys-vacuum-weak"]["ours"] / 2
    # The Cascade fast row: f between the Shannon limit and the original protocol's ~1.2, and no frame left wrong.
    cascade = by_id["cascade-option7-q0.02"]
    assert 1.0 < cascade["ours"] < 1.2 and cascade["details"]["frame_error_rate"] == 0.0
    assert cascade["details"]["frames"] == 20


def test_the_markdown_board_has_every_row(fast_rows):
    text = validation.markdown(fast_rows)
    table = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(table) == len(fast_rows)
    for r in fast_rows:
        assert f"`{r['id']}`" in text
        if r["status"] != "pass":  # a paragraph per row that does not pass
            assert f"### `{r['id']}` — {r['status']}" in text
    assert "Reason: at the table's own parameters" in text


def test_json_lines_carry_the_benchmark_contract():
    proc = subprocess.run([sys.executable, str(BENCH / "validation.py"), "--json", "--rows",
                           "shor-preskill-threshold,tlgr-table2-n1e4-q1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr  # a gap row does not change the exit status
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["id"] for r in lines] == ["shor-preskill-threshold", "tlgr-table2-n1e4-q1"]
    for r in lines:
        assert r["benchmark"] == "validation" and r["figure"] == r["id"] and r["unit"] and r["params"]
        assert r["value"] > 0 and "qiskit" in r["versions"] and "commit" in r


def test_unknown_tolerance_kind_is_refused():
    row = validation.Row("x", "p", "w", {}, 1.0, "u", "r", "paper", 0.1, "nearly", "t", lambda fast: (1.0, {}))
    with pytest.raises(ValueError, match="unknown tolerance kind 'nearly'"):
        validation.evaluate(row, fast=True)
