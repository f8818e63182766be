"""What every benchmark prints next to its figure: commit, versions, machine."""

from __future__ import annotations

import json
import os
import platform

from qkd_circuits import _provenance

# One implementation of "where a figure came from": the package's own (sweep rows use it too).
commit, versions = _provenance.commit, _provenance.versions


def context() -> dict:
    return {"commit": commit(), "versions": versions(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "machine": platform.machine()}


def emit(result: dict, *, as_json: bool, text: str) -> None:
    """One JSON object per line with --json, else a human line."""
    print(json.dumps(result) if as_json else text, flush=True)
