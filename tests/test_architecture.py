"""The import graph is the architecture: the library below, run stages above it, experiments and
the report on top, the API and CLI last. Every import (inside functions too) counts as an arrow."""

import ast
import subprocess
import sys
from pathlib import Path

import synth2

ROOT = Path(synth2.__file__).parent

# bottom to top; a component may import its own layer and the layers below, never above
LAYERS = [
    {"configtools", "progress", "hardware", "errors", "files"},
    {"data"},
    {"captions"},
    {"world"},
    {"models"},
    {"synthesis", "encoding", "train"},
    {"eval"},
    {"curate"},
    {"config", "run"},
    {"stages"},
    {"report"},
    {"experiments"},
    {"api"},
    {"cli", "__init__"},
]
LAYER = {component: level for level, components in enumerate(LAYERS) for component in components}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("synth2")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.startswith("synth2"):
                # `from synth2.x import y` may import the module synth2.x.y
                found |= {f"{base}.{a.name}" if (ROOT.parent / f"{base}.{a.name}".replace(".", "/")).with_suffix(".py").exists() else base for a in node.names}
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    return {name: {i for i in imports_of(path, name) if i in modules and i != name} for name, path in modules.items()}


def component(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def test_every_component_is_placed_in_a_layer():
    assert {component(m) for m in graph()} <= set(LAYER)


def test_no_import_points_upwards():
    upward = [(a, b) for a, targets in graph().items() for b in targets if LAYER[component(b)] > LAYER[component(a)] and component(a) != "__init__"]
    assert not upward, upward


def test_no_circle_between_modules():
    edges = graph()
    visiting, done, circles = set(), set(), []

    def visit(node, path):
        visiting.add(node)
        for nxt in edges[node]:
            if nxt in visiting:
                circles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in done:
                visit(nxt, path + [nxt])
        visiting.discard(node)
        done.add(node)

    for node in sorted(edges):
        if node not in done:
            visit(node, [node])
    assert not circles, circles


def test_the_config_loads_without_any_stage():
    code = "import sys, synth2.config; print(sorted(m for m in sys.modules if m.startswith('synth2.')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "synth2." in loaded and not any(part in loaded for part in ("synth2.stages", "synth2.experiments", "synth2.report", "synth2.api"))
