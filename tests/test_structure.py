"""The code's shape: imports run one way (no cycles), every module imports on its own,
and config's list of strategy names is the registry's."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tlhub"


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the tlhub modules it imports anywhere in its code, except under
    ``if TYPE_CHECKING:`` (annotations only, never run)."""
    mods = modules()

    def owner(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                node.body = []
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tlhub":
                deps.add(owner(node.module))
                deps.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in mods)
            elif isinstance(node, ast.Import):
                deps.update(owner(a.name) for a in node.names if a.name.split(".")[0] == "tlhub")
        graph[name] = deps - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert "tlhub.pipeline" in graph["tlhub.cli"] or any(d.startswith("tlhub.pipeline") for d in graph["tlhub.cli"])
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_lower_layers_never_import_upper_ones() -> None:
    """cli -> pipeline -> strategies / modalities -> data / models -> config / errors."""
    graph = import_graph()
    layers = [
        ("tlhub.config", "tlhub.errors", "tlhub.registry", "tlhub.io", "tlhub.progress"),
        ("tlhub.data", "tlhub.models", "tlhub.metrics"),
        ("tlhub.strategies", "tlhub.modalities"),
    ]
    upper = {"tlhub.pipeline", "tlhub.cli", "tlhub.compare", "tlhub.demo"}
    for depth, layer in enumerate(layers):
        above = set(upper).union(*[set(lay) for lay in layers[depth + 1 :]])
        for name, deps in graph.items():
            if name.startswith(layer):
                bad = {d for d in deps if d.startswith(tuple(above)) and not d.startswith(layer)}
                assert not bad, f"{name} imports {sorted(bad)}"


def test_every_module_imports_on_its_own() -> None:
    """Each module imported first, in a process where no other tlhub module is loaded."""
    names = sorted(name for name in modules() if name != "tlhub.__main__")  # (that one runs the command)
    script = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'tlhub' or m.startswith('tlhub.')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_config_strategy_names_are_the_registry() -> None:
    from tlhub.config import STRATEGY_NAMES
    from tlhub.strategies import STRATEGIES

    assert sorted(STRATEGY_NAMES) == STRATEGIES.names()
