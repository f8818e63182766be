"""What every benchmark prints next to its figure: commit, versions, machine."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("qkd_circuits", "qiskit", "qiskit-aer", "numpy", "qiskit-ibm-runtime", "qiskit-braket-provider")


def commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).parent, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def context() -> dict:
    return {"commit": commit(), "versions": versions(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "machine": platform.machine()}


def emit(result: dict, *, as_json: bool, text: str) -> None:
    """One JSON object per line with --json, else a human line."""
    print(json.dumps(result) if as_json else text, flush=True)
