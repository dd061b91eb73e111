"""The import rules of DESIGN.md ("Import rules"), checked on the source with ``ast``.

Every module of ``src/pypluto`` is parsed; every ``import`` / ``from ... import``
counts, wherever it stands: at module level, inside a function, under
``if TYPE_CHECKING:`` (a type-only import is still a dependency, and hiding a
cycle behind it is what these rules forbid).  There is no table of exceptions:
a rule either holds for every module or the test names the offending imports.

Each rule is its own test function so that a failure says which rule broke.
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterable

import pypluto

SRC = pathlib.Path(pypluto.__file__).resolve().parent
ROOT = "pypluto"

# The bottom-layer modules: only the standard library below them.
BOTTOM = frozenset({"iana", "params", "textsafe"})


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


MODULES = _modules()


def _resolve(name: str) -> str:
    """The module a dotted name refers to: itself, or the nearest enclosing module we have."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _is_main_guard(node: ast.stmt) -> bool:
    """``if __name__ == "__main__":``"""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    t = node.test
    return (
        isinstance(t.left, ast.Name) and t.left.id == "__name__"
        and len(t.comparators) == 1 and isinstance(t.comparators[0], ast.Constant)
        and t.comparators[0].value == "__main__"
    )


def _targets(module: str, is_pkg: bool, source: str) -> Iterable[tuple[int, str, bool]]:
    """(line, imported pypluto module, script only) for every import of one module's source.

    "script only": the import sits under a top-level ``if __name__ == "__main__":``.  It
    runs when the file is executed as a script, in the ``__main__`` module (which nothing
    imports), never when the module is imported: it counts for the layer rules but is no
    edge of an import cycle.
    """
    package = module if is_pkg else module.rpartition(".")[0]
    tree = ast.parse(source, module)
    script_only = {
        id(n) for top in tree.body if _is_main_guard(top) for n in ast.walk(top)
    }
    for node in ast.walk(tree):
        script = id(node) in script_only
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == ROOT or alias.name.startswith(ROOT + "."):
                    yield node.lineno, _resolve(alias.name), script
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[: len(base) - (node.level - 1)]
                base_name = ".".join(base)
                absolute = f"{base_name}.{node.module}" if node.module else base_name
            else:
                absolute = node.module or ""
            if absolute != ROOT and not absolute.startswith(ROOT + "."):
                continue
            for alias in node.names:
                sub = f"{absolute}.{alias.name}"
                # ``from pkg import submodule`` depends on the submodule itself.
                yield node.lineno, sub if sub in MODULES else _resolve(absolute), script


Graph = dict[str, dict[str, list[int]]]


def _graph(*, scripts: bool) -> Graph:
    """module -> {imported module -> [lines]} (self-imports of a package dropped);
    with ``scripts=False`` without the imports under ``if __name__ == "__main__":``."""
    graph: Graph = {}
    for module, path in MODULES.items():
        edges: dict[str, list[int]] = {}
        source = path.read_text()
        for line, target, script in _targets(module, path.name == "__init__.py", source):
            if target and target != module and (scripts or not script):
                lines = edges.setdefault(target, [])
                if line not in lines:
                    lines.append(line)
        graph[module] = edges
    return graph


GRAPH = _graph(scripts=True)  # every import: the layer rules
IMPORT_GRAPH = _graph(scripts=False)  # what importing a module runs: the cycle check


def _layer(module: str) -> str:
    """``pypluto.ike.tasks.x`` -> ``ike``; ``pypluto.iana`` -> ``iana``; the root -> ``""``.

    ``pypluto.__main__`` (``python -m pypluto``) is a command-line entry point like the
    console scripts of ``cli/``, so it belongs to the ``cli`` layer.
    """
    if module == f"{ROOT}.__main__":
        return "cli"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _violations(layers: set[str], allowed: Iterable[str]) -> list[str]:
    """Imports from modules of ``layers`` into any layer not in ``allowed``."""
    ok = set(allowed)
    bad = []
    for module, edges in sorted(GRAPH.items()):
        if _layer(module) not in layers:
            continue
        for target, lines in sorted(edges.items()):
            if _layer(target) not in ok:
                where = MODULES[module].relative_to(SRC.parent)
                bad.extend(f"{where}:{line} imports {target}" for line in lines)
    return bad


def _forbidden(layers: set[str], forbidden: Iterable[str]) -> list[str]:
    every = {_layer(m) for m in MODULES}
    return _violations(layers, every - set(forbidden))


# --- the graph itself --------------------------------------------------------


_PROBE = """
from __future__ import annotations
import json
from typing import TYPE_CHECKING
import pypluto.crypto.sk
from . import payloads
from .constants import IKE_HEADER_SIZE
from ..kernel import base
if TYPE_CHECKING:
    from pypluto.ike.engine import Engine
def f() -> None:
    from pypluto import iana
    import pypluto.params as p
if __name__ == "__main__":
    from pypluto.cli import whack
"""


def test_parser_sees_every_kind_of_import() -> None:
    """Absolute, relative, ``from pkg import submodule``, function-local and type-only
    imports are all found (else every rule below would pass vacuously)."""
    found = {t: (line, script) for line, t, script in _targets("pypluto.wire.probe", False, _PROBE)}
    assert found == {
        "pypluto.crypto.sk": (5, False),
        "pypluto.wire.payloads": (6, False),
        "pypluto.wire.constants": (7, False),
        "pypluto.kernel.base": (8, False),
        "pypluto.ike.engine": (10, False),
        "pypluto.iana": (12, False),
        "pypluto.params": (13, False),
        "pypluto.cli.whack": (15, True),
    }
    assert set(_targets("pypluto.wire", True, "from . import message\n")) == {
        (1, "pypluto.wire.message", False)
    }


def test_graph_sees_the_package() -> None:
    """Every package of DESIGN.md is parsed, and known edges are in the graph."""
    assert {_layer(m) for m in MODULES} >= {
        "iana", "params", "wire", "crypto", "config", "ike", "kernel", "control", "daemon", "cli",
    }
    assert "pypluto.wire.payloads" in GRAPH["pypluto.wire.message"]
    assert "pypluto.iana" in GRAPH["pypluto.wire.constants"]


def _cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in graph:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                scc = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    scc.append(m)
                    if m == node:
                        break
                if len(scc) > 1:
                    found.append(sorted(scc))
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    """The cycle check can fail: a made-up three-module loop is reported, its tail is not."""
    graph = {"a": {"b": [1]}, "b": {"c": [1]}, "c": {"a": [1]}, "d": {"a": [1]}, "e": {}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"x": {"y": [1]}, "y": {}}) == []


def test_no_import_cycles() -> None:
    """No two modules of ``src/pypluto`` import each other, directly or around a loop."""
    report = []
    for scc in _cycles(IMPORT_GRAPH):
        members = set(scc)
        edges = [
            f"    {m} -> {t} (line {', '.join(map(str, IMPORT_GRAPH[m][t]))})"
            for m in scc
            for t in sorted(IMPORT_GRAPH[m])
            if t in members
        ]
        report.append(f"cycle among {len(scc)} modules:\n" + "\n".join(edges))
    assert not report, "\n".join(report)


# --- the layer rules (DESIGN.md "Import rules") -----------------------------


def test_bottom_modules_import_only_the_standard_library() -> None:
    """``iana`` and ``params`` are the bottom: they import nothing of ours."""
    bad = _violations(set(BOTTOM), ())
    assert not bad, "\n".join(bad)


def test_wire_imports_only_the_bottom_modules() -> None:
    """``wire/`` imports nothing of ours but ``pypluto.iana`` / ``pypluto.params``."""
    bad = _violations({"wire"}, {"wire"} | BOTTOM)
    assert not bad, "\n".join(bad)


def test_crypto_knows_nothing_of_exchanges() -> None:
    """``crypto/`` uses only the bottom modules: no wire, no engine, no config."""
    bad = _violations({"crypto"}, {"crypto"} | BOTTOM)
    assert not bad, "\n".join(bad)


def test_config_has_no_engine_kernel_or_daemon() -> None:
    """``config/`` reads files and returns objects: it never imports ike, kernel, daemon."""
    bad = _forbidden({"config"}, {"ike", "kernel", "daemon", "control", "cli", "loadtest"})
    assert not bad, "\n".join(bad)


def test_ike_never_imports_the_edges() -> None:
    """``ike/`` asks for SAs by returning actions: no daemon, kernel, control or cli."""
    bad = _forbidden({"ike"}, {"daemon", "kernel", "control", "cli", "loadtest"})
    assert not bad, "\n".join(bad)


def test_kernel_never_imports_the_engine_or_daemon() -> None:
    """``kernel/`` (the backends) consumes ``params`` objects; it never imports ike or daemon."""
    bad = _forbidden({"kernel"}, {"ike", "daemon", "control", "cli", "loadtest"})
    assert not bad, "\n".join(bad)


def test_control_never_imports_the_daemon() -> None:
    """``control/`` is shared by the whack client and the daemon's server side."""
    bad = _forbidden({"control"}, {"daemon", "cli", "loadtest"})
    assert not bad, "\n".join(bad)


def test_only_cli_imports_cli() -> None:
    """``cli/`` only parses arguments and calls into the rest; nothing calls back into it."""
    every = {_layer(m) for m in MODULES}
    bad = _violations(every - {"cli"}, every - {"cli"})
    assert not bad, "\n".join(bad)


def test_only_the_daemon_joins_engine_and_backend() -> None:
    """``daemon/`` is the only place where the engine (ike/) and a backend (kernel/) meet."""
    bad = []
    for layer in sorted({_layer(m) for m in MODULES} - {"daemon", "cli"}):
        targets = {_layer(t) for m in GRAPH if _layer(m) == layer for t in GRAPH[m]} - {layer}
        if {"ike", "kernel"} <= targets:
            bad.append(f"{layer or ROOT} imports both ike/ and kernel/")
    assert not bad, "\n".join(bad)
