"""The layer rule of docs/architecture.md ("Layer order"), enforced: every
import in src/ (module level, in functions, and under TYPE_CHECKING) points
to the same layer or one below, and no two modules import each other, directly
or through others."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
DOC = ROOT / "docs" / "architecture.md"


def layer_order() -> list[list[str]]:
    """The layers, top first: each a list of module prefixes (`core`, `net.plan`)."""
    text = DOC.read_text()
    section = text.split("## Layer order", 1)[1]
    block = section.split("```", 2)[1]
    layers = []
    for line in block.strip().splitlines():
        _, _, names = line.partition(":")
        layers.append(names.split())
    return layers


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imports(path: Path, name: str) -> set[str]:
    """microbox modules `path` imports, anywhere in it (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                base = ".".join(up[:len(up) - node.level + 1] + ([base] if base else []))
            subs = {f"{base}.{a.name}" for a in node.names}
            found.update(subs)
            if not subs <= set(modules()):  # names from the package itself
                found.add(base)
    known = modules()
    # `from microbox import X` runs the root package's __init__, which only
    # names the SDK lazily: no edge to it
    return {m for m in found if m in known and m not in (name, "microbox")}


def layer_of(name: str, layers: list[list[str]]) -> int | None:
    """The index of the layer whose longest prefix matches `name` (microbox. dropped)."""
    short = name.removeprefix("microbox.")
    best: tuple[int, int] | None = None
    for i, prefixes in enumerate(layers):
        for prefix in prefixes:
            matches = short == prefix or short.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[1]):
                best = (i, len(prefix))
    return None if best is None else best[0]


def graph() -> dict[str, set[str]]:
    return {name: imports(path, name) for name, path in modules().items()}


def test_every_module_has_a_layer() -> None:
    layers = layer_order()
    missing = [m for m in modules() if m != "microbox" and layer_of(m, layers) is None]
    assert not missing, f"docs/architecture.md's layer order names no layer for {missing}"


def test_imports_point_down_or_across() -> None:
    layers = layer_order()
    wrong = []
    for name, deps in graph().items():
        if name == "microbox":  # the package's lazy exports of the SDK's names
            continue
        mine = layer_of(name, layers)
        for dep in sorted(deps):
            theirs = layer_of(dep, layers)
            if mine is not None and theirs is not None and theirs < mine:
                wrong.append(f"{name} (layer {mine}) imports {dep} (layer {theirs})")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    g = graph()
    # a package's __init__ is imported with any of its modules: count it as an edge
    # only where it is named, so that `a/__init__` listing its modules is no cycle
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(g.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*stack[stack.index(dep):], dep]))
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_every_package_names_its_modules() -> None:
    """Each package's __init__ docstring names each of its modules, one line each."""
    unnamed = []
    for init in sorted(SRC.rglob("__init__.py")):
        if init.parent == SRC / "microbox":
            continue
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        named = {m.group(1) for m in re.finditer(r"^(\w+)(?:\.py|/)?\s", doc, re.M)}
        for mod in sorted(init.parent.iterdir()):
            stem = mod.stem if mod.suffix == ".py" else mod.name
            module = (mod.suffix == ".py" and mod.name != "__init__.py") or \
                (mod.is_dir() and (mod / "__init__.py").exists())
            if module and stem not in named:
                unnamed.append(f"{init.parent.relative_to(SRC)}/{mod.name}")
    assert not unnamed, "package __init__ docstrings do not name: " + ", ".join(unnamed)
