"""Where a result came from: the git commit of this checkout and the package versions.

The same figures ``benchmarks/_common.py`` records next to every benchmark, for code inside the
package (sweep rows carry them).  Both are computed once per process: a sweep worker asks for
them on every row.
"""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

__all__ = ["PACKAGES", "commit", "versions"]

PACKAGES = ("qkd_circuits", "qiskit", "qiskit-aer", "numpy", "scipy", "qiskit-ibm-runtime", "qiskit-braket-provider")

_HERE = Path(__file__).parent


@functools.lru_cache(maxsize=None)
def commit() -> str | None:
    """The short commit of the checkout this package runs from, ``-dirty`` if tracked files
    changed; ``None`` when the package is not run from a git checkout of itself (e.g. installed
    into a virtual environment that lives inside some other repository)."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=_HERE, timeout=10)

    try:
        # Only trust the repository that actually tracks this package.
        if git("ls-files", "--error-unmatch", "__init__.py").returncode != 0:
            return None
        out = git("rev-parse", "--short", "HEAD")
        if out.returncode != 0:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=None)
def _versions() -> tuple[tuple[str, str], ...]:
    found = []
    for name in PACKAGES:
        try:
            found.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            pass
    return tuple(found)


def versions() -> dict:
    """Installed versions of the packages a result depends on (absent ones left out)."""
    return dict(_versions())
