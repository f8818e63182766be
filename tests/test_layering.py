"""The import layering of the package, read from the source with ``ast``.

Every module of qkd_circuits belongs to a unit: a top-level module (``session``), a subpackage
(``channel``) or the package's own ``__init__`` (the facade, unit ``""``).  Units are stacked in
layers; a module may import its own layer and the layers below, never a layer above.  Imports
count wherever they are written: at the top, inside functions (the lazy ones), under
``TYPE_CHECKING``, and ``importlib.import_module("qkd_circuits...")`` with a literal name.

Glue between units uses public names only: no ``from ..network import _result`` and no
``network._result`` across units (inside a unit, private helpers are shared freely).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import qkd_circuits

ROOT = Path(qkd_circuits.__file__).parent

# The intended design, bottom -> top.  Placing a new top-level module or subpackage here is part
# of adding it (test_every_module_has_a_layer).
LAYERS: dict[str, int] = {
    # 0: foundations: the exceptions, the table of round parameters, secret files, provenance
    "exceptions": 0, "params": 0, "secretfile": 0, "_provenance": 0,
    # 1: pure numpy: the sharp primitives and the key-length / key-rate formulas
    "hazmat": 1, "analysis": 1,
    #    and the protocol definitions (what a protocol contributes: bases, sifting, key-length bound)
    "protocols": 1,
    # 2: the measurement record, and post-processing as two sans-I/O parties
    "records": 2, "postprocessing": 2,
    # 3: the quantum layer (the only Qiskit importer) and the authenticated classical channel
    "quantum": 3, "channel": 3,
    # 4: whole rounds and what stores their keys: session recipes, decoy rounds, the two-process
    #    link, the post-quantum hybrid, the key store
    "keystore": 4, "session": 4, "decoy": 4, "hybrid": 4, "network": 4, "teaching": 4,
    # 5: the facade, qkd_circuits/__init__.py: re-exports of layers 0-4 (so `import qkd_circuits`
    #    loads no service)
    "": 5,
    # 6: long-running services and studies: the ETSI 014 KME, the link node, the sweeps
    "etsi014": 6, "node": 6, "sweep": 6,
    # 7: the command line
    "cli": 7,
}

# Edges of the current code that break the rules, each (importer module, imported module or
# module.name).  The list is meant to be emptied, never grown: fix the import instead.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = ["qkd_circuits", *path.relative_to(ROOT).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def unit(module: str) -> str:
    """The layer unit of a dotted module name: "" for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # the module imported (a name imported from a module resolves to that module)
    name: str | None  # the name taken from the target (``from target import name``), or an attribute
    line: int


def _resolve(module: str, path: Path, level: int, name: str | None) -> str:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    base = package.split(".")
    if level > 1:
        base = base[: len(base) - level + 1]
    return ".".join(base + ([name] if name else []))


def imports_of(module: str, path: Path | None = None, source: str | None = None) -> list[Import]:
    """Every qkd_circuits import of one module, at any depth."""
    path = path or MODULES[module]
    tree = ast.parse(source if source is not None else path.read_text(), filename=str(path))
    found: list[Import] = []
    bound: dict[str, str] = {}  # local names bound to qkd_circuits modules (for `alias._private`)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "qkd_circuits" or alias.name.startswith("qkd_circuits."):
                    found.append(Import(module, alias.name, None, node.lineno))
                    if alias.asname:
                        bound[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            source_module = (_resolve(module, path, node.level, node.module) if node.level
                             else node.module or "")
            if not (source_module == "qkd_circuits" or source_module.startswith("qkd_circuits.")):
                continue
            for alias in node.names:
                full = f"{source_module}.{alias.name}"
                if full in MODULES:  # `from .. import decoy`: the module itself
                    found.append(Import(module, full, None, node.lineno))
                    bound[alias.asname or alias.name] = full
                else:
                    found.append(Import(module, source_module, alias.name, node.lineno))
        elif (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
              and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and node.args[0].value.startswith("qkd_circuits")):
            found.append(Import(module, node.args[0].value, None, node.lineno))
    for node in ast.walk(tree):  # `network._result` on a module bound above
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(Import(module, bound[node.value.id], node.attr, node.lineno))
    return found


def upward_imports(graph: list[Import]) -> list[tuple[str, str, str]]:
    return [(i.importer, i.target, f"line {i.line}: layer {LAYERS[unit(i.importer)]} imports layer "
             f"{LAYERS[unit(i.target)]}") for i in graph if LAYERS[unit(i.target)] > LAYERS[unit(i.importer)]]


def private_imports(graph: list[Import]) -> list[tuple[str, str, str]]:
    bad = []
    for i in graph:
        if unit(i.importer) == unit(i.target):
            continue
        # a private module of another unit (a declared unit such as _provenance is not private)
        inner = i.target.split(".")[2:]
        if any(part.startswith("_") for part in inner):
            bad.append((i.importer, i.target, f"line {i.line}: a private module of another unit"))
        elif i.name and i.name.startswith("_") and not i.name.startswith("__"):
            bad.append((i.importer, f"{i.target}.{i.name}", f"line {i.line}: a private name of another unit"))
    return bad


@pytest.fixture(scope="module")
def graph() -> list[Import]:
    return [imp for module in MODULES for imp in imports_of(module)]


def test_every_module_has_a_layer():
    assert sorted({unit(m) for m in MODULES} - set(LAYERS)) == []
    assert sorted(set(LAYERS) - {unit(m) for m in MODULES}) == [], "a layer unit no longer exists"


def test_the_parser_sees_lazy_relative_and_dynamic_imports():
    source = (
        "from .. import decoy\n"
        "from ..channel.pool import AuthKeyPool\n"
        "import qkd_circuits.records as rec\n"
        "def later():\n"
        "    from ..cli import main\n"
        "    import importlib\n"
        "    importlib.import_module('qkd_circuits.sweep')\n"
        "    return rec._private\n"
    )
    found = {(i.target, i.name) for i in imports_of("qkd_circuits.analysis.finite_key", source=source)}
    assert found == {("qkd_circuits.decoy", None), ("qkd_circuits.channel.pool", "AuthKeyPool"),
                     ("qkd_circuits.records", None), ("qkd_circuits.cli", "main"),
                     ("qkd_circuits.sweep", None), ("qkd_circuits.records", "_private")}
    graph = imports_of("qkd_circuits.analysis.finite_key", source=source)
    assert {(a, b) for a, b, _ in upward_imports(graph)} == {
        ("qkd_circuits.analysis.finite_key", t) for t in ("qkd_circuits.decoy", "qkd_circuits.channel.pool",
                                                           "qkd_circuits.records", "qkd_circuits.cli",
                                                           "qkd_circuits.sweep")}
    assert [(a, b) for a, b, _ in private_imports(graph)] == [
        ("qkd_circuits.analysis.finite_key", "qkd_circuits.records._private")]


def test_no_module_imports_a_higher_layer(graph):
    bad = [edge for edge in upward_imports(graph) if edge[:2] not in KNOWN_VIOLATIONS]
    assert bad == []


def test_glue_uses_public_names_only(graph):
    bad = [edge for edge in private_imports(graph) if edge[:2] not in KNOWN_VIOLATIONS]
    assert bad == []


def cycle_edges(graph: list[Import], allowed: set[tuple[str, str]] = frozenset()) -> list[tuple[str, str, str]]:
    """The imports (not in ``allowed``) from one unit to another that the other reaches back."""
    edges = [i for i in graph if unit(i.importer) != unit(i.target) and (i.importer, i.target) not in allowed]
    deps: dict[str, set[str]] = {}
    for i in edges:
        deps.setdefault(unit(i.importer), set()).add(unit(i.target))

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            here = todo.pop()
            if here == goal:
                return True
            if here not in seen:
                seen.add(here)
                todo.extend(deps.get(here, ()))
        return False

    return sorted({(i.importer, i.target, f"line {i.line}: {unit(i.target)!r} imports {unit(i.importer)!r} back")
                   for i in edges if reaches(unit(i.target), unit(i.importer))})


def test_no_import_cycles_between_units(graph):
    assert cycle_edges(graph, KNOWN_VIOLATIONS) == []


def test_known_violations_are_still_real(graph):
    # An entry that no longer matches a violating edge is stale: delete it, so the list only shrinks.
    edges = {edge[:2] for edge in upward_imports(graph) + private_imports(graph) + cycle_edges(graph)}
    assert sorted(KNOWN_VIOLATIONS - edges) == []


def test_only_the_quantum_layer_imports_qiskit():
    offenders = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(n == "qiskit" or n.startswith(("qiskit.", "qiskit_")) for n in names) and unit(module) != "quantum":
                offenders.append(f"{module}:{node.lineno}")
    assert offenders == []
