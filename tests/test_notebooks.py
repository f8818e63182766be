"""Every notebook in notebooks/ executes top to bottom (each well under a minute).

Each notebook is its own test class, so that ``--dist loadscope`` (``make test``) hands the
notebooks to different workers instead of running them all in one (the whole file is one unit
under ``--dist loadfile``, and it is the heaviest file of the suite).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebooks extra is not installed")
nbclient = pytest.importorskip("nbclient", reason="the notebooks extra is not installed")

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS


def _run_notebook(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert errors == []


def _notebook_class(path: Path) -> type:
    def test_notebook_runs(self):
        _run_notebook(path)

    name = "TestNotebook_" + re.sub(r"\W", "_", path.stem)
    return type(name, (), {"test_notebook_runs": test_notebook_runs, "__doc__": f"notebooks/{path.name} runs."})


globals().update({cls.__name__: cls for cls in map(_notebook_class, NOTEBOOKS)})
