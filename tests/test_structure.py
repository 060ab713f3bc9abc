"""The house's shape, measured from the source with ast: no function over 60 lines, no import cycle.

    python -m pytest tests/test_structure.py -q
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (ROOT / "ssl_bench", ROOT / "methods")
MAX_LINES = 60


def _sources(folder: Path) -> list[Path]:
    # ssl_bench/methods is a link to methods/, which is measured once, as itself
    inside = (p for p in folder.rglob("*.py") if not p.relative_to(ROOT).as_posix().startswith("ssl_bench/methods/"))
    return sorted(inside)


def test_no_function_over_60_lines():
    long = []
    for folder in PACKAGES:
        for path in _sources(folder):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    n = node.end_lineno - node.lineno + 1
                    if n > MAX_LINES:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "functions over 60 lines (split them): " + "; ".join(long)


def import_graph() -> dict[str, set[str]]:
    """ssl_bench module -> the ssl_bench modules it imports anywhere (at the top or inside a function)."""
    mods = {}
    for path in _sources(ROOT / "ssl_bench"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [f"{node.module}.{a.name}" for a in node.names]
                     if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            graph[mod] |= {t for t in map(owner, names) if t and t != mod and t != "ssl_bench"}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    graph = import_graph()
    assert "ssl_bench.data.sources" in graph and len(graph) > 40
    assert cycles(graph) == []


def test_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
