"""The package's import graph: data flows one way, and there are no cycles.

Layers, lowest first: the shared vocabulary (errors, vocab, sanitize),
DICOM reading, the plan-integrity checks, the DVH engine, protocols, the check, reports,
batch, the command line. A module may import its own layer and the layers
below it, never a layer above, not even inside a function. Test and sample
data helpers (``dvheval.testing``) are never imported by the runtime.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dvheval"

LAYERS = {
    "dvheval": 0,  # the package's own __init__ (public API) is checked separately
    "dvheval.errors": 0,
    "dvheval.vocab": 0,
    "dvheval.sanitize": 0,
    "dvheval.dicom": 1,
    "dvheval.integrity": 1.5,
    "dvheval.engine": 2,
    "dvheval.protocol": 3,
    "dvheval.check": 4,
    "dvheval.reports": 5,
    "dvheval.batch": 6,
    "dvheval.cli": 7,
    "dvheval.testing": 8,
}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit(module: str) -> str:
    """The layer unit a module belongs to (its top-level package or module)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def imports(path: Path, *, top_level_only: bool) -> set[str]:
    """The dvheval modules ``path`` imports (absolute and relative imports)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # include imports under `if TYPE_CHECKING:` etc. at top level
        nodes = [n for top in tree.body for n in ast.walk(top)
                 if not isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "dvheval"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "dvheval":
                found.add(target)
                found |= {f"{target}.{a.name}" for a in node.names
                          if (PACKAGE.parent / f"{target}.{a.name}".replace(".", "/")).is_dir()
                          or (PACKAGE.parent / (f"{target}.{a.name}".replace(".", "/") + ".py")
                              ).is_file()}
    return found


SOURCES = sorted(p for p in PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    for path in SOURCES:
        assert unit(module_name(path)) in LAYERS, f"{module_name(path)} has no layer"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_no_upward_imports(path):
    me = module_name(path)
    if me == "dvheval":
        return  # the public API re-exports from every layer
    mine = LAYERS[unit(me)]
    for target in imports(path, top_level_only=False):
        if target == "dvheval":
            continue  # only __version__ is taken from the package root
        theirs = LAYERS[unit(target)]
        assert theirs <= mine, f"{me} (layer {mine}) imports {target} (layer {theirs})"


def test_runtime_never_imports_test_helpers():
    for path in SOURCES:
        me = module_name(path)
        if unit(me) == "dvheval.testing":
            continue
        bad = {t for t in imports(path, top_level_only=False) if unit(t) == "dvheval.testing"}
        assert not bad, f"{me} imports {sorted(bad)}"


def test_no_import_cycles():
    graph = {module_name(p): {t for t in imports(p, top_level_only=True) if t != "dvheval"}
             for p in SOURCES}
    graph = {m: {t for t in targets if t in graph and t != m} for m, targets in graph.items()}
    # a package __init__ that imports its own submodules is not a cycle with them
    for m, targets in graph.items():
        graph[m] = {t for t in targets if not (t.startswith(m + ".") )}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle = path[path.index(t):] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_checker_sees_a_planted_upward_import(tmp_path):
    """The import scanner finds relative, absolute and function-level imports."""
    global PACKAGE
    fake = tmp_path / "dvheval"
    (fake / "engine").mkdir(parents=True)
    (fake / "reports").mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "reports" / "__init__.py").write_text("")
    (fake / "engine" / "__init__.py").write_text("")
    mod = fake / "engine" / "x.py"
    mod.write_text("from . import y\nfrom ..errors import E\n"
                   "def f():\n    from dvheval.reports import text\n")
    saved, PACKAGE = PACKAGE, fake
    try:
        assert imports(mod, top_level_only=False) == {
            "dvheval.engine", "dvheval.errors", "dvheval.reports"}
        assert imports(mod, top_level_only=True) == {"dvheval.engine", "dvheval.errors"}
    finally:
        PACKAGE = saved
