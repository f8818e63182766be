"""Every notebook in notebooks/ executes top to bottom, and is kept as HTML with its wall time.

Each notebook is its own test class, so that ``--dist loadscope`` / ``worksteal`` (``make test``)
hands the notebooks to different workers instead of running them all in one (the whole file is
one unit under ``--dist loadfile``, and it is the heaviest file of the suite).

Each executed notebook is written as ``build/notebooks/<name>.html`` (nbconvert's HTML exporter;
``build/`` is ignored by git, CI keeps the folder as an artifact), and its wall time, the slowest
cells and the outcome go into ``build/notebooks/timings.json`` (one entry per notebook, merged
under a file lock, since xdist workers write it at the same time).  A failing notebook is
written too, so that its HTML shows where it failed.

Besides the cells' own outputs, a cell that drives a widget (``interactive_output``, a button's
first render) prints into the widget's Output model, which nbclient keeps in the notebook's
widget state: an error there fails the test as well.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebooks extra is not installed")
nbclient = pytest.importorskip("nbclient", reason="the notebooks extra is not installed")
nbconvert = pytest.importorskip("nbconvert", reason="the notebooks extra is not installed")

ROOT = Path(__file__).parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
BUILD = ROOT / "build" / "notebooks"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# The sentence every notebook states plainly (the course's promise about simulated keys).
WHOSE_KEY = "known to whoever runs it"


def test_there_are_notebooks():
    assert NOTEBOOKS


def _cell_seconds(cell) -> float | None:
    t = cell.metadata.get("execution", {})
    if "iopub.execute_input" not in t or "shell.execute_reply" not in t:
        return None
    start, end = (datetime.fromisoformat(t[k].replace("Z", "+00:00")) for k in ("iopub.execute_input", "shell.execute_reply"))
    return round((end - start).total_seconds(), 2)


def _record(path: Path, nb, wall_s: float, outcome: str) -> None:
    """The executed notebook as HTML, and its timing merged into timings.json."""
    BUILD.mkdir(parents=True, exist_ok=True)
    body, _ = nbconvert.HTMLExporter().from_notebook_node(nb)
    (BUILD / f"{path.stem}.html").write_text(body, encoding="utf-8")
    cells = [(i, s) for i, c in enumerate(nb.cells) if c.cell_type == "code" and (s := _cell_seconds(c)) is not None]
    entry = {"wall_s": round(wall_s, 2), "outcome": outcome,
             "slowest_cells": [{"cell": i, "seconds": s} for i, s in sorted(cells, key=lambda c: -c[1])[:3]]}
    with open(BUILD / "timings.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        timings_file = BUILD / "timings.json"
        timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
        timings[path.stem] = entry
        timings_file.write_text(json.dumps(timings, indent=1, sort_keys=True) + "\n")


def _widget_outputs(nb) -> list[list[dict]]:
    """The outputs of every Output widget model in the executed notebook's widget state."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    return [model["state"].get("outputs", []) for model in state.values() if model.get("model_name") == "OutputModel"]


def _check(nb) -> None:
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert errors == []
    widget_outputs = _widget_outputs(nb)
    assert [o for outputs in widget_outputs for o in outputs if o.get("output_type") == "error"] == []
    # Each widget ran once at its default values, so that a static copy shows something.
    assert all(widget_outputs), "a widget's Output stayed empty: its default values did not run"
    solutions = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    assert all(c.cell_type == "code" and c.execution_count and c.outputs for c in solutions), (
        "every solution cell runs and shows its answer")


def _run_notebook(path: Path):
    from jupyter_client.manager import KernelManager

    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    wall_s, outcome = None, "failed"
    # The kernel talks over Unix sockets, not TCP.  Over TCP, jupyter_client picks free ports and
    # releases them before the kernel binds them, while the suite's loopback servers bind port 0 on
    # the other worker; twice a notebook that runs in 1-5 s took 121 s and 124 s outside its cells
    # (kernel start or stop), which that race would explain.  No such wait has been seen over IPC.
    with tempfile.TemporaryDirectory(prefix="qkd-kernel-") as sockets:
        km = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(sockets, "kernel"))
        client = nbclient.NotebookClient(nb, km=km, timeout=120, store_widget_state=True,
                                         resources={"metadata": {"path": str(path.parent)}})
        try:
            client.execute()
            wall_s = time.perf_counter() - t0  # the execution only, not the checks
            _check(nb)
            outcome = "passed"
        finally:
            _record(path, nb, time.perf_counter() - t0 if wall_s is None else wall_s, outcome)
    return nb


def _notebook_class(path: Path) -> type:
    def test_notebook_runs(self):
        _run_notebook(path)

    name = "TestNotebook_" + re.sub(r"\W", "_", path.stem)
    return type(name, (), {"test_notebook_runs": test_notebook_runs, "__doc__": f"notebooks/{path.name} runs."})


globals().update({cls.__name__: cls for cls in map(_notebook_class, NOTEBOOKS)})


# --- what the notebooks say, read without running them --------------------------------------------

@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_says_whose_key_it_is(path):
    text = " ".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    assert WHOSE_KEY in re.sub(r"\s+", " ", text), f"{path.name} does not say a simulated key is {WHOSE_KEY}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    assert [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)] == []
    assert WIDGET_STATE not in nb.metadata.get("widgets", {})


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_use_the_public_api_only(path):
    # `import qkd_circuits as qkd` and documented submodules; never an underscore name of the package.
    code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    private = r"qkd_circuits(?:\.\w+)*\._(?!_)\w+|\bqkd\._(?!_)\w+|from qkd_circuits[\w.]* import [^\n]*\b_(?!_)\w+"
    assert re.findall(private, code) == []


def test_the_course_lists_every_notebook_in_order():
    course = nbformat.read(ROOT / "notebooks" / "00_course.ipynb", as_version=4)
    listed = re.findall(r"\]\((\d\d_\w+\.ipynb)\)", " ".join(c.source for c in course.cells))
    assert listed == [p.name for p in NOTEBOOKS if p.stem != "00_course"]


def test_exercises_have_solutions_that_run_in_the_test():
    nb = nbformat.read(ROOT / "notebooks" / "02_one_photon_eve.ipynb", as_version=4)
    exercises = [c for c in nb.cells if c.cell_type == "markdown" and re.search(r"\*\*Exercise \d", c.source)]
    solutions = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    assert len(exercises) == len(solutions) >= 3
    assert any(c.cell_type == "code" and "ipywidgets" in c.source for c in nb.cells)
    assert all("<details><summary>Solution</summary>" in c.source for c in exercises)
    assert all(c.cell_type == "code" and c.metadata["jupyter"]["source_hidden"] for c in solutions)


def test_the_recorder_merges_timings_and_writes_html(tmp_path, monkeypatch):
    # Two notebooks recorded one after the other keep both entries (a worker never drops another's).
    monkeypatch.setattr(sys.modules[__name__], "BUILD", tmp_path)
    from nbformat.v4 import new_markdown_cell, new_notebook

    for name in ("aa", "bb"):
        _record(Path(f"{name}.ipynb"), new_notebook(cells=[new_markdown_cell(f"notebook {name}")]), 1.234, "passed")
    timings = json.loads((tmp_path / "timings.json").read_text())
    assert timings == {"aa": {"wall_s": 1.23, "outcome": "passed", "slowest_cells": []},
                       "bb": {"wall_s": 1.23, "outcome": "passed", "slowest_cells": []}}
    assert "notebook aa" in (tmp_path / "aa.html").read_text()


def test_an_error_inside_a_widget_fails_the_run(tmp_path, monkeypatch):
    # ipywidgets catches a callback's exception and prints it into the Output widget: the cell
    # itself succeeds, so the runner must read the widget state to see it.
    monkeypatch.setattr(sys.modules[__name__], "BUILD", tmp_path / "build")
    from nbformat.v4 import new_code_cell, new_notebook

    path = tmp_path / "broken_widget.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(
        "import ipywidgets as w\n"
        "def f(x):\n"
        "    raise ValueError('the default value breaks the round')\n"
        "display(w.interactive_output(f, {'x': w.IntSlider(value=1)}))")],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}), path)
    with pytest.raises(AssertionError, match="ValueError"):
        _run_notebook(path)
    assert json.loads((tmp_path / "build" / "timings.json").read_text())["broken_widget"]["outcome"] == "failed"
