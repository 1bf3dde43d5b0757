"""The import graph of mmesim keeps DESIGN.md's layers: no cycle, and no import across a rule.

Every ``import`` in every module counts, top level or inside a function (a deferred import
is still a dependency). The rules are data: a new package adds a line to RULES.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "mmesim"

# The foundation every layer may use.
BASE = ("mmesim.errors", "mmesim.serde", "mmesim.units")      # (and the package root, mmesim)
# The shared vocabulary: imports nothing above itself.
TYPES = ("mmesim.catalog", "mmesim.profile", "mmesim.workload", "mmesim.endpoint", "mmesim.profiles",
         "mmesim.workloads")

# (layer, the modules it covers, allowed: only these prefixes | None, forbidden prefixes, why)
RULES = [
    ("types", TYPES, BASE + TYPES, (), "the types import nothing above them"),
    ("sim", ("mmesim.sim",), None,
     ("mmesim.triton", "mmesim.calibrate", "mmesim.emulator", "mmesim.loadtest", "mmesim.plan", "mmesim.derive",
      "mmesim.report", "mmesim.outputs", "mmesim.cli"),
     "the model of a server knows no real one, nor what sits above it"),
    ("calibrate", ("mmesim.calibrate",), None, ("mmesim.sim", "mmesim.derive"),
     "measuring must not depend on the model (fits that run the simulator live in derive/)"),
    ("results", ("mmesim.results",), None, ("mmesim.report", "mmesim.outputs", "mmesim.cli"),
     "numbers know no pictures"),
    ("triton", ("mmesim.triton",), None, ("mmesim.sim", "mmesim.calibrate", "mmesim.derive", "mmesim.results",
                                          "mmesim.report", "mmesim.cli"),
     "the real server's driver serves every loop and depends on none"),
    ("report", ("mmesim.report",), None, ("mmesim.sim", "mmesim.calibrate", "mmesim.triton", "mmesim.cli"),
     "pictures draw results; they do not run anything"),
    ("library", ("mmesim",), None, ("mmesim.cli",), "cli.py is a thin layer nobody imports (but python -m mmesim)"),
]


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, known: set[str], root: Path = ROOT) -> set[str]:
    """mmesim modules a file imports (``from pkg import mod`` resolves to ``pkg.mod``)."""
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.add(sub if sub in known else mod)
    return {m for m in out if m == "mmesim" or m.startswith("mmesim.")} - {me}


@functools.cache
def _graph(root: Path) -> dict[str, frozenset[str]]:
    files = sorted(root.rglob("*.py"))
    known = {module_name(f, root) for f in files}
    return {module_name(f, root): frozenset(imports(f, known, root)) for f in files}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the mmesim modules it imports (a fresh copy each call)."""
    return {m: set(d) for m, d in _graph(root).items()}


def within(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def violations(graph: dict[str, set[str]], rules=RULES) -> list[str]:
    out = []
    for layer, covers, allowed, forbidden, why in rules:
        for mod, deps in graph.items():
            if not within(mod, covers) or (layer == "library" and mod in ("mmesim.cli", "mmesim.__main__")):
                continue
            for dep in sorted(deps):
                if within(dep, forbidden) or (allowed is not None and not within(dep, allowed)
                                              and not (dep == "mmesim")):
                    out.append(f"{mod} imports {dep}: {layer} rule ({why})")
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph between top-level parts (mmesim.results, mmesim.report, ...)."""
    def top(m: str) -> str:
        return ".".join(m.split(".")[:2])
    out: dict[str, set[str]] = {}
    for mod, deps in graph.items():
        out.setdefault(top(mod), set()).update(top(d) for d in deps if top(d) != top(mod) and d != "mmesim")
    return out


def test_no_import_crosses_a_layer_rule():
    graph = import_graph()
    assert "mmesim.results.summary" in graph and "mmesim.sim.mme" in graph     # the walk found the code
    assert violations(graph) == []


def test_no_import_cycle_between_modules_or_packages():
    graph = import_graph()
    assert cycles(graph) == []
    assert cycles(package_graph(graph)) == []


@pytest.mark.parametrize("edge, rule", [
    (("mmesim.results.summary", "mmesim.report.steps"), "results rule"),
    (("mmesim.sim.mme", "mmesim.triton.client"), "sim rule"),
    (("mmesim.calibrate.run", "mmesim.sim.mme"), "calibrate rule"),
    (("mmesim.workload", "mmesim.results.records"), "types rule"),
])
def test_the_checker_catches_a_broken_rule(edge, rule):
    graph = import_graph()
    graph[edge[0]] = graph[edge[0]] | {edge[1]}
    assert any(rule in v and edge[1] in v for v in violations(graph))


def test_the_checker_catches_a_cycle():
    graph = import_graph()
    graph["mmesim.results.records"] = graph["mmesim.results.records"] | {"mmesim.results.summary"}
    assert ["mmesim.results.records", "mmesim.results.summary"] in cycles(graph)
