"""The package's modules import each other in one direction: no cycle, counting every import
of the package (at module level, inside functions and under ``TYPE_CHECKING``), so that each
module can be read, tested and replaced on top of the ones it uses."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "iba_jax"


def module_files(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module and package of ``package``."""
    found = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that the file imports (``from pkg import name`` counts as the
    module ``pkg.name`` when it is one, else as ``pkg``)."""

    def owner(name: str) -> str:
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    root = PACKAGE.name
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {owner(a.name) for a in node.names if a.name.split(".")[0] == root}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == root:
            for alias in node.names:  # (the package imports itself by absolute names only)
                name = f"{node.module}.{alias.name}"
                found.add(name if name in modules else owner(str(node.module)))
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per back edge of a depth-first search (none when the graph is acyclic)."""
    state: dict[str, str] = {}
    path: list[str] = []
    found = []

    def visit(node: str) -> None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle_and_none_in_a_chain():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_the_modules_import_each_other_in_one_direction():
    modules = module_files(PACKAGE)
    assert {"iba_jax.attribute", "iba_jax.loop", "iba_jax.evaluation.run"} <= set(modules)
    graph = {name: imports_of(path, modules) - {name} for name, path in modules.items()}
    assert "iba_jax.loop" in graph["iba_jax.attribute"]  # the graph is read
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)
