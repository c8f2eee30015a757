"""The package's import layering: imports go down the layer list, never up, and never in a circle.

Every module under ``hf_lnorm/`` is parsed (not imported); every import in it,
at module level or inside a function, relative or absolute, is resolved to the
``hf_lnorm`` module it loads. Imports under ``if TYPE_CHECKING:`` are skipped
(they never run). Each module belongs to the first layer in ``LAYERS`` whose
prefix matches it most specifically; an import of a later (higher) layer fails,
and so does any cycle in the module graph.

``from pkg.sub import name`` is an edge to ``pkg.sub`` only, not to ``pkg``'s
``__init__``: a package ``__init__`` that re-exports its submodules is fine, as
long as no submodule imports names from that ``__init__`` back.

Imports by string (``importlib.import_module``) are not seen; the package uses
them only in the CLI's command table (top layer, by design).

Run ``python tests/test_layering.py`` to print the module graph's offending edges.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

ROOT = Path(__file__).resolve().parents[1] / "hf_lnorm"
PACKAGE = "hf_lnorm"

# Bottom first. A module's layer is the one with its longest matching prefix
# (``hf_lnorm.norms.int8`` is in "int8 math", the rest of ``hf_lnorm.norms`` in "norms").
LAYERS: List[Tuple[str, Tuple[str, ...]]] = [
    ("leaf", (
        "hf_lnorm.errors", "hf_lnorm._json", "hf_lnorm._machine", "hf_lnorm._version", "hf_lnorm.resources",
        "hf_lnorm._argtypes", "hf_lnorm.outputs", "hf_lnorm.inputs", "hf_lnorm.loading",
    )),
    ("norms", ("hf_lnorm.norms",)),
    ("int8 math", ("hf_lnorm.norms.int8",)),
    ("patching", ("hf_lnorm.patching", "hf_lnorm.probe", "hf_lnorm.patch_report")),
    ("patch modes", ("hf_lnorm.quantization",)),
    ("models", ("hf_lnorm.models",)),
    ("public API", ("hf_lnorm",)),  # hf_lnorm/__init__.py: patching, modes and families in one import
    ("export", ("hf_lnorm.export",)),
    ("top", ("hf_lnorm.benchmarks", "hf_lnorm.recipes", "hf_lnorm.commands", "hf_lnorm.experiments", "hf_lnorm.cli")),
]

# module -> why it may import upward. Keep this short: each entry is a design decision.
UPWARD_EXEMPT: Dict[str, str] = {
    "hf_lnorm.norms.quantized": "deprecation shim: resolves the old names from their new homes above norms, "
                                "lazily in a module __getattr__, and warns",
}


def module_name(path: Path) -> str:
    """Dotted module name of a file under ``ROOT`` (a package's ``__init__`` is the package)."""
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> Dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer_of(module: str) -> Tuple[int, str]:
    """(index, name) of the layer ``module`` belongs to (longest matching prefix wins).

    Raises:
        LookupError: the module is in no layer (add it to ``LAYERS``).
    """
    best: Optional[Tuple[int, int, str]] = None
    for index, (name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), index, name)
    if best is None:
        raise LookupError(f"{module} is in no layer of tests/test_layering.py LAYERS")
    return best[1], best[2]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> Iterator[ast.stmt]:
    """Every Import / ImportFrom in ``tree``, at any depth, except under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imports_of(module: str, path: Path, known: Set[str]) -> List[Tuple[str, int]]:
    """The package modules ``module`` imports, as ``(target, line)``.

    ``from X import name`` targets ``X.name`` when that is a module, else ``X``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: List[Tuple[str, int]] = []
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    found.append((alias.name, node.lineno))
            continue
        if node.level:
            base_parts = module.split(".") if is_package else module.split(".")[:-1]
            base_parts = base_parts[: len(base_parts) - (node.level - 1)]
            base = ".".join(base_parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        if not (base == PACKAGE or base.startswith(PACKAGE + ".")):
            continue
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            found.append((sub if sub in known else base, node.lineno))
    return found


def import_graph() -> Dict[str, List[Tuple[str, int]]]:
    """module -> [(imported package module, line)] for every module of the package."""
    modules = all_modules()
    known = set(modules)
    graph = {}
    for name, path in modules.items():
        edges = []
        for target, line in imports_of(name, path, known):
            if target not in known:
                raise AssertionError(f"{name}:{line} imports {target}, which is not a module of the package")
            if target != name and (target, line) not in edges:
                edges.append((target, line))
        graph[name] = edges
    return graph


def upward_imports(graph) -> List[str]:
    """One line per import of a higher layer, naming both ends, their layers and the line."""
    bad = []
    for src, edges in graph.items():
        if src in UPWARD_EXEMPT:
            continue
        src_index, src_layer = layer_of(src)
        for dst, line in edges:
            dst_index, dst_layer = layer_of(dst)
            if dst_index > src_index:
                bad.append(f"{src} ({src_layer}) -> {dst} ({dst_layer}) at line {line}")
    return bad


def imports_of_own_package(graph) -> List[str]:
    """One line per import of an enclosing package's ``__init__`` (other than ``hf_lnorm``'s public API).

    A package ``__init__`` re-exports its submodules, so a submodule that imports it
    back closes a cycle as soon as the ``__init__`` re-exports that submodule too.
    """
    bad = []
    for src, edges in graph.items():
        for dst, line in edges:
            if dst != PACKAGE and src.startswith(dst + "."):
                bad.append(f"{src} -> {dst} (its own package's __init__) at line {line}")
    return bad


def cycles(graph) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    on_stack: Set[str] = set()
    stack: List[str] = []
    found: List[List[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w, _ in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def describe_cycle(graph, component: List[str]) -> str:
    """The edges inside one cycle, as ``a -> b (line n)``."""
    members = set(component)
    edges = [f"{src} -> {dst} (line {line})" for src in component for dst, line in graph[src] if dst in members]
    return "; ".join(edges)


def test_every_module_has_a_layer():
    for name in all_modules():
        layer_of(name)  # raises LookupError naming the module


def test_no_upward_imports():
    bad = upward_imports(import_graph())
    assert not bad, "imports of a higher layer:\n  " + "\n  ".join(bad)


def test_no_submodule_imports_its_own_package():
    bad = imports_of_own_package(import_graph())
    assert not bad, "submodules importing their package's __init__ (import from the defining module):\n  " + "\n  ".join(bad)


def test_no_import_cycles():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles:\n  " + "\n  ".join(describe_cycle(graph, c) for c in found)


def test_exemptions_are_needed():
    """An exemption that no longer covers an upward import is stale and must go."""
    graph = import_graph()
    for module in UPWARD_EXEMPT:
        src_index, _ = layer_of(module)
        assert any(layer_of(dst)[0] > src_index for dst, _ in graph[module]), f"{module} no longer imports upward"


def test_checker_sees_function_level_relative_and_type_checking_imports(tmp_path):
    """The parser finds function-level and relative imports, and skips ``if TYPE_CHECKING:`` blocks."""
    src = tmp_path / "mod.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import fused\n"
        "if TYPE_CHECKING:\n"
        "    from ..export import ort\n"
        "def f():\n"
        "    from ..patching import patch\n"
        "    import hf_lnorm.models.layers\n",
        encoding="utf-8")
    known = {"hf_lnorm.norms.fused", "hf_lnorm.patching", "hf_lnorm.models.layers", "hf_lnorm.export.ort"}
    got = sorted(imports_of("hf_lnorm.norms.mod", src, known))
    assert got == [("hf_lnorm.models.layers", 7), ("hf_lnorm.norms.fused", 2), ("hf_lnorm.patching", 6)]
    graph = {"hf_lnorm.norms.mod": [(t, n) for t, n in got], "hf_lnorm.patching": [], "hf_lnorm.models.layers": [],
             "hf_lnorm.norms.fused": [("hf_lnorm.norms.mod", 1)]}
    assert upward_imports(graph) == [
        "hf_lnorm.norms.mod (norms) -> hf_lnorm.models.layers (models) at line 7",
        "hf_lnorm.norms.mod (norms) -> hf_lnorm.patching (patching) at line 6",
    ]
    assert cycles(graph) == [["hf_lnorm.norms.fused", "hf_lnorm.norms.mod"]]
    assert imports_of_own_package({"hf_lnorm.export.cli": [("hf_lnorm.export", 3), ("hf_lnorm", 4)]}) == [
        "hf_lnorm.export.cli -> hf_lnorm.export (its own package's __init__) at line 3"]


if __name__ == "__main__":  # pragma: no cover
    g = import_graph()
    print("\n".join(upward_imports(g)) or "no upward imports")
    print("\n".join(imports_of_own_package(g)) or "no imports of an enclosing package")
    for c in cycles(g):
        print("cycle:", describe_cycle(g, c))
