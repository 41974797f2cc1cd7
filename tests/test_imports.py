"""The import graph of missrec/, counting imports inside functions: acyclic, and the model modules
reach no loading code (hub, .pth conversion, downloads)."""
from __future__ import annotations

import ast
from pathlib import Path

import missrec

ROOT = Path(missrec.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = ("missrec",) + p.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the missrec modules it imports anywhere in its body (functions included)."""
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                # "from .pkg import sub" imports the submodule sub when there is one
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in mods and t != name}
        graph[name] = edges
    return graph


def _cycle(graph) -> list[str] | None:
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def _reach(graph, start) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for m in graph[todo.pop()]:
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def test_the_graph_sees_function_level_imports():
    g = import_graph()
    assert "missrec.factory" in g["missrec.recipes.finetune"]  # imported inside functions there
    assert "missrec.data.atomic" in g["missrec.checkpoint"]  # inside catalogue_of


def test_no_import_cycle_inside_missrec():
    cycle = _cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_model_modules_import_no_loading_code():
    g = import_graph()
    loading = {"missrec.hub", "missrec.pth", "missrec.unpickle", "missrec.factory", "missrec.convert", "missrec.push"}
    from missrec.model_registry import MODELS
    models = {cls.__module__ for _, cls in MODELS.values()}
    assert {"missrec.model", "missrec.sasrec"} <= models
    for mod in sorted(models | {"missrec.seqmodel"}):
        assert not (_reach(g, mod) & loading), (mod, sorted(_reach(g, mod) & loading))
