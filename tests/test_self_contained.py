"""The repository stands on its own: no tracked file points at a path outside it, at notes that
are not in it, or at a tracker's issue numbers."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Built from pieces so that this file does not match itself.
FORBIDDEN = {
    "a sibling folder outside the repository": re.compile(re.escape("../" + "shared")),
    "a design note that is not in the repository": re.compile(r"\b" + "DESIGN" + r"\.md\b"),
    "a reference list that is not in the repository (docs/references.md is)": re.compile(
        r"\b" + "REFERENCES" + r"\.md\b"),
    "a style guide that is not in the repository": re.compile(r"\b" + "STYLE" + r"\.md\b"),
    "an absolute path of a development machine": re.compile(re.escape("/" + "work/")),
    "a tracker's issue number": re.compile(r"\b[Ii]ssues? #?[0-9]+\b"),
}


def _tracked_text_files() -> list[Path]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=60).stdout
    files = []
    for name in out.decode().split("\0"):
        path = REPO / name
        if not name or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:  # binary (a record fixture, an image)
            continue
        files.append(path)
    return files


def test_the_patterns_catch_what_they_are_for():
    samples = {"see ../" + "shared/notes": 0, "as DESIGN" + ".md says": 1, "REFERENCES" + ".md": 2,
               "STYLE" + ".md": 3, "/" + "work/main/x": 4, "issue " + "12": 5}
    patterns = list(FORBIDDEN.values())
    for text, index in samples.items():
        assert [i for i, p in enumerate(patterns) if p.search(text)] == [index], text
    assert not any(p.search("docs/references.md, a known issue, issues arise") for p in patterns)


def test_no_tracked_file_points_outside_the_repository():
    files = _tracked_text_files()
    assert len(files) > 50
    hits = []
    for path in files:
        text = path.read_text(errors="replace")
        for what, pattern in FORBIDDEN.items():
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                hits.append(f"{path.relative_to(REPO)}:{line}: {what}: {match.group(0)!r}")
    assert hits == []


def test_relative_links_in_the_docs_resolve():
    # README.md and docs/*.md link to files of the repository; each such link must exist.
    broken = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert broken == []
    assert (REPO / "docs" / "architecture.md").exists() and (REPO / "docs" / "references.md").exists()
