"""The import graph of ``bench/``: it has no cycle, and no library module imports the command-line layer.

Every ``import`` and ``from ... import`` of a ``bench`` module counts, at the top of a module,
inside a function or under ``if TYPE_CHECKING`` alike (an import inside a function is what lets
a cycle import at all; it is still a dependency). Relative imports are resolved. An import of a
package is an edge to its ``__init__.py``; ``from bench.x import y`` where ``y`` is a submodule
is an edge to that submodule (the package ``bench.x`` is imported too, and is an edge as well
unless it contains the importing module). Imports made by name at run time
(``importlib.import_module``, the plugin registry) are not in the graph.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "bench"

# The command-line layer: modules that only exist to be run (``python -m ...``, the
# ``pse-bench`` script). They may import anything; nothing in ``bench/`` imports them.
CLI_MODULES = frozenset({
    "bench.breakdown",
    "bench.compare",
    "bench.data.__main__",
    "bench.figures",
    "bench.perf",
    "bench.pse.__main__",
    "bench.run",
    "bench.sweep",
    "bench.tables",
    "bench.teacher_eer",
    "bench.versions",
    "bench.zoo.__main__",
})

# Library modules that also have a ``main`` for ``python -m``: the library is imported by other
# modules, so they belong to the library layer (and import no command-line module themselves).
LIBRARY_ENTRY_POINTS = {
    "bench.report.figures": "draws the figures and reports bench.run and bench.distributed write; its main only "
                     "parses the arguments of python -m bench.figures",
}

Edges = dict[str, dict[str, int]]  # module -> {imported module: first line}


def module_name(path: Path, root: Path) -> str:
    """``bench/pipeline/__init__.py`` -> ``bench.pipeline``, ``bench/run.py`` -> ``bench.run``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of ``package`` under ``root``, by dotted name."""
    return {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}


def _known_prefix(name: str, known: dict[str, Path]) -> str | None:
    """The longest prefix of dotted ``name`` that is a module (``bench.x.attr`` -> ``bench.x``)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: dict[str, Path],
             package: str) -> Iterator[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = _absolute(node, module, is_package)
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    for name in names:
        if name.split(".")[0] != package:
            continue
        target = _known_prefix(name, known)
        while target and target != package:
            yield target  # the module, then each package above it (their __init__ runs first)
            target = target.rpartition(".")[0]


def import_edges(root: Path = ROOT, package: str = PACKAGE) -> Edges:
    """``{module: {imported module: line of its first import}}`` for every module of ``package``.

    An edge to a package that contains the importing module is left out: the package is being
    imported already when its modules import each other."""
    known = modules(root, package)
    edges: Edges = {}
    for name, path in known.items():
        is_package = path.name == "__init__.py"
        out: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(node, name, is_package, known, package):
                    own_package = name.startswith(target + ".") and known[target].name == "__init__.py"
                    if target != name and not own_package:
                        out.setdefault(target, node.lineno)
        edges[name] = out
    return edges


def strongly_connected(edges: Edges) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iteratively), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, {})))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out)


def cycle_in(component: list[str], edges: Edges) -> list[str]:
    """One shortest cycle through the first module of a strongly connected component,
    ``[a, b, ..., a]``."""
    members = set(component)
    start = component[0]
    came: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v]):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(came[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w in members and w not in came:
                    came[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{component} is not strongly connected")


def describe_cycle(cycle: list[str], edges: Edges, root: Path = ROOT) -> str:
    """``bench/a.py:12 imports bench.b -> bench/b.py:40 imports bench.a``."""
    known = modules(root, cycle[0].split(".")[0])
    return " -> ".join(f"{known[a].relative_to(root)}:{edges[a][b]} imports {b}"
                       for a, b in zip(cycle, cycle[1:], strict=False))


def cycle_report(edges: Edges, root: Path = ROOT) -> list[str]:
    """One line per strongly connected component: its modules and one cycle through them."""
    return [f"{', '.join(comp)}: {describe_cycle(cycle_in(comp, edges), edges, root)}"
            for comp in strongly_connected(edges)]


# --------------------------------------------------------------------------- the parser itself
def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_the_graph_sees_function_level_relative_and_submodule_imports(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "def f():\n    from pkg.sub import b\n",
        "pkg/sub/__init__.py": "from .b import X\n",
        "pkg/sub/b.py": "import os\nX = 1\n\ndef g():\n    from .. import c\n",
        "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import f\n",
        "pkg/d.py": "import pkg.sub\nfrom pkg.c import thing, other\nfrom . import e\n",
        "pkg/e.py": "",
    })
    edges = import_edges(tmp_path, "pkg")
    assert edges["pkg.a"] == {"pkg.sub.b": 2, "pkg.sub": 2}  # a submodule, and the package above it
    assert edges["pkg.sub"] == {"pkg.sub.b": 1}  # relative; pkg itself is not an edge of its own module
    assert edges["pkg.sub.b"] == {"pkg.c": 5}  # relative from inside a function
    assert edges["pkg.c"] == {"pkg.a": 3}  # a type-checking import counts
    assert edges["pkg.d"] == {"pkg.sub": 1, "pkg.c": 2, "pkg.e": 3}  # `from pkg.c import name`: pkg.c
    assert strongly_connected(edges) == [["pkg.a", "pkg.c", "pkg.sub", "pkg.sub.b"]]
    (cycle,) = cycle_report(edges, tmp_path)
    assert "pkg/a.py:2 imports pkg.sub.b -> pkg/sub/b.py:5 imports pkg.c -> pkg/c.py:3 imports pkg.a" in cycle


def test_no_cycle_is_missed_in_a_two_module_loop(tmp_path):
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/x.py": "from pkg.y import f\n", "pkg/y.py": "import pkg.x\n"})
    edges = import_edges(tmp_path, "pkg")
    assert strongly_connected(edges) == [["pkg.x", "pkg.y"]]
    assert cycle_in(["pkg.x", "pkg.y"], edges) == ["pkg.x", "pkg.y", "pkg.x"]


# --------------------------------------------------------------------------- bench/
@pytest.fixture(scope="module")
def edges() -> Edges:
    return import_edges()


def test_bench_has_no_import_cycle(edges):
    cycles = cycle_report(edges)
    assert not cycles, "import cycles in bench/ (break each one; imports inside functions count too):\n" + \
        "\n".join(cycles)


def test_no_library_module_imports_the_command_line_layer(edges):
    bad = [f"{modules()[m].relative_to(ROOT)}:{line} imports {t}"
           for m, out in sorted(edges.items()) if m not in CLI_MODULES
           for t, line in sorted(out.items()) if t in CLI_MODULES]
    assert not bad, ("library modules import the command-line layer (move what they need into a library "
                     "module):\n" + "\n".join(bad))


def test_the_layers_name_every_entry_point_and_only_existing_modules():
    known = modules()
    listed = CLI_MODULES | set(LIBRARY_ENTRY_POINTS)
    assert not listed - set(known), f"listed modules that do not exist: {sorted(listed - set(known))}"
    assert not CLI_MODULES & set(LIBRARY_ENTRY_POINTS)

    def runnable(path: Path) -> bool:
        if path.name == "__main__.py":
            return True
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "__name__" \
                    and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in node.comparators):
                return True
        return False

    unlisted = sorted(m for m, p in known.items() if runnable(p) and m not in listed)
    assert not unlisted, (f"modules run as python -m that are in neither CLI_MODULES nor LIBRARY_ENTRY_POINTS of "
                          f"{Path(__file__).name}: {unlisted}")
