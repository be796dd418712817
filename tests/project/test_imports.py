"""The import graph of pixscribe's top-level units (api, engine, backends, experts, io, methods,
metrics, report, cli, config, record, imaging, testing, ...) runs one way (issue 24,
docs/architecture.md): no cycle between units, ``api`` imports neither the engine nor a method,
the engine imports no method, ``config`` and ``torchdev`` import no backend.

Every ``import`` and ``from ... import`` of every module counts, at module level or inside a
function (a lazy import is still a dependency), except those under ``if TYPE_CHECKING:``
(annotations only, never run). Imports by name at run time (``importlib.import_module`` of the
registry's built-in package and of the commands' modules) are not edges: they are the
plug-in points.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pixscribe

ROOT = Path(pixscribe.__file__).parent

# Edges allowed to close a cycle until the phase-2 task that removes them lands, each with
# that task. Phase 2 only deletes lines here.
KNOWN_CYCLE_EDGES: dict[tuple[str, str], str] = {}

# what each unit may import (units of pixscribe); None: not checked beyond the cycle rule
ALLOWED: dict[str, set[str] | None] = {
    "errors": set(),
    "record": {"errors"},
    "deps": {"errors"},
    "config": {"errors"},
    "torchdev": {"errors"},
    "api": {"errors", "record"},
}
FORBIDDEN: dict[str, set[str]] = {
    "engine": {"methods", "stages", "cli", "cli_methods", "commands"},
    "methods": {"engine", "cli", "cli_methods"},
    "backends": {"engine", "methods", "stages", "cli"},
}


def _unit(module: str, methods_apart: bool = False) -> str | None:
    """The unit of a module: its top-level package or module; with ``methods_apart`` each
    method's package (``methods.region``) is a unit of its own."""
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "pixscribe":
        return None
    top = parts[1]
    if methods_apart and top == "methods" and len(parts) > 2 and (ROOT / "methods" / parts[2]).is_dir():
        return f"methods.{parts[2]}"
    return top if (ROOT / top).is_dir() or (ROOT / f"{top}.py").is_file() else None


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(path: Path) -> list[str]:
    package = list(path.relative_to(ROOT.parent).parts[:-1])  # the package a relative import starts from
    tree = ast.parse(path.read_text(encoding="utf-8"))
    hidden = {id(n) for i in ast.walk(tree) if isinstance(i, ast.If) and _type_checking(i) for n in ast.walk(i)}
    out: list[str] = []
    for n in ast.walk(tree):
        if id(n) in hidden:
            continue
        if isinstance(n, ast.Import):
            out += [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            if n.level:
                base = ".".join(package[: len(package) - n.level + 1])
                out += [f"{base}.{n.module}"] if n.module else [f"{base}.{a.name}" for a in n.names]
            elif n.module:
                out.append(n.module)
    return out


def import_graph(methods_apart: bool = False) -> dict[str, dict[str, list[str]]]:
    """unit -> unit it imports -> the modules doing it (``a.b imports c.d``)."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        src = _unit(module.removesuffix(".__init__"), methods_apart)
        for target in _imports(path):
            dst = _unit(target, methods_apart)
            if src and dst and src != dst:
                graph[src][dst].append(f"{module} imports {target}")
    return graph


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_the_units_and_their_imports():
    g = import_graph()
    assert {"api", "engine", "backends", "methods", "cli", "config", "record"} <= set(g)
    assert "api" in g["engine"] and "api" in g["methods"]  # both sides of the interface
    assert any("pixscribe.engine.context imports pixscribe.api" in w for w in g["engine"]["api"])


def test_no_cycle_between_units_but_the_known_ones():
    g = import_graph()
    edges = {u: {v for v in vs if (u, v) not in KNOWN_CYCLE_EDGES} for u, vs in g.items()}
    found = cycles(edges)
    assert found == [], "\n".join(f"{' <-> '.join(c)}: " + "; ".join(
        w for u in c for v in c if v in g[u] for w in g[u][v][:3]) for c in found)
    stale = [e for e in KNOWN_CYCLE_EDGES if e[1] not in g.get(e[0], {})]
    assert stale == [], f"known cycle edges that no longer exist (delete them): {stale}"


def test_each_unit_imports_only_what_it_may():
    g = import_graph()
    for unit, allowed in ALLOWED.items():
        extra = {v: w[:2] for v, w in g.get(unit, {}).items() if allowed is not None and v not in allowed}
        assert extra == {}, f"{unit} may import only {sorted(allowed or ())}"
    for unit, forbidden in FORBIDDEN.items():
        bad = {v: w[:2] for v, w in g.get(unit, {}).items() if v in forbidden}
        assert bad == {}, f"{unit} must not import {sorted(forbidden)}"


# a method that imports another: experts' --profile full captions with recap's declared options
METHOD_TO_METHOD = {("methods.experts", "methods.recap")}


def test_each_method_is_a_room_of_its_own():
    """With each method's package a unit: no cycle; no shared room (stages, metrics, experts,
    spatial, ...) imports a method; a method imports another only where listed above."""
    g = import_graph(methods_apart=True)
    methods = {u for u in g if u.startswith("methods.")}
    assert {"methods.recap", "methods.textualize", "methods.panoptic", "methods.region", "methods.tipcap",
            "methods.experts"} <= methods
    assert cycles({u: set(vs) for u, vs in g.items()}) == []
    for unit, targets in g.items():
        into = {v: w[:2] for v, w in targets.items() if v.startswith("methods.")}
        if unit.startswith("methods."):
            into = {v: w for v, w in into.items() if (unit, v) not in METHOD_TO_METHOD}
        assert into == {}, f"{unit} imports a method: {into}"


def test_a_cycle_is_found_and_named():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
