"""The code's shape: imports run one way (no cycles), every module imports on its own,
and config's list of strategy names is the registry's."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

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


LAYERS = [
    ("tlhub.errors", "tlhub.registry", "tlhub.io", "tlhub.progress", "tlhub.version", "tlhub.compat", "tlhub.settings", "tlhub.wheels"),
    ("tlhub.data", "tlhub.models", "tlhub.metrics", "tlhub.loading"),
    ("tlhub.modalities", "tlhub.tasks"),
    ("tlhub.trainer", "tlhub.rundir", "tlhub.cache", "tlhub.domain.settings", "tlhub.domain.losses", "tlhub.domain.model",
     "tlhub.domain.adaptation", "tlhub.domain.target", "tlhub.domain.results"),
    ("tlhub.strategies",),
    ("tlhub.config",),
    ("tlhub.card", "tlhub.inference", "tlhub.domain.runs"),
]  # fmt: skip
UPPER = {"tlhub.pipeline", "tlhub.cli", "tlhub.compare", "tlhub.demo", "tlhub.schema"}


def test_lower_layers_never_import_upper_ones() -> None:
    """cli -> pipeline -> the runs a family is (domain.runs) -> config -> strategies -> the
    Trainer, the run folder (its checkpoints restored and saved), domain pieces and cache ->
    modalities, tasks -> data, models, loading -> errors, settings. A strategy or a task reads the config's types only."""
    graph = import_graph()
    for depth, layer in enumerate(LAYERS):
        above = set(UPPER).union(*[set(lay) for lay in LAYERS[depth + 1 :]])
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


def test_the_config_asks_the_registry_for_strategies() -> None:
    """strategy.name's choices, its help and the section's keys come from the registered units."""
    import dataclasses

    from tlhub.config import StrategyConfig
    from tlhub.strategies import STRATEGIES

    assert {"full", "partial", "feature_extraction", "lora", "contrastive"} <= set(STRATEGIES.names())
    keys = {f.name for f in dataclasses.fields(StrategyConfig)}
    for name in STRATEGIES.names():
        for settings in STRATEGIES.get(name).settings:
            assert {f.name for f in dataclasses.fields(settings)} <= keys, (name, settings)
    assert all(name in dataclasses.fields(StrategyConfig)[0].metadata["help"] for name in STRATEGIES.names())


STRATEGY_FREE = ("pipeline.py", "cache.py", "config.py", "card.py", "inference.py", "trainer.py", "rundir.py")


@pytest.mark.parametrize("module", STRATEGY_FREE)
def test_the_run_machinery_names_no_strategy(module: str) -> None:
    """Issue 26: a strategy is one unit; the modules that run, cache, configure and describe
    runs ask the registry and never test a strategy's name (no string literal is one)."""
    from tlhub.strategies import STRATEGIES

    names = set(STRATEGIES.names())
    tree = ast.parse((PACKAGE / module).read_text(encoding="utf-8"))
    found = [(node.lineno, node.value) for node in ast.walk(tree) if isinstance(node, ast.Constant) and node.value in names]
    assert not found, f"{module} names strategies: {found}"


def test_finetune_is_a_straight_line_of_at_most_60_lines() -> None:
    """finetune dispatches; run is the phases, one after the other, with no strategy in them."""
    tree = ast.parse((PACKAGE / "pipeline.py").read_text(encoding="utf-8"))
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    for name in ("finetune", "run"):
        node = functions[name]
        assert node.end_lineno - node.lineno + 1 <= 60, (name, node.end_lineno - node.lineno + 1)
    calls = {n.func.id for n in ast.walk(functions["finetune"]) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "finetune" not in calls  # no recursion: a family of runs is tlhub.domain.runs.adapt's


PRIVATE_ALLOWED = {"tlhub.compat"}


def test_no_private_name_of_another_library_outside_the_compatibility_module() -> None:
    """Attributes with a leading underscore are tlhub's own (self._x) or live in tlhub.compat."""
    offenders = []
    for name, path in modules().items():
        if name in PRIVATE_ALLOWED:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = node.value.id if isinstance(node.value, ast.Name) else ""
                if owner not in ("self", "cls"):
                    offenders.append(f"{name}:{node.lineno} .{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("transformers", "peft", "accelerate", "datasets"):
                offenders += [f"{name}:{node.lineno} {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not offenders, offenders


HEAVY_LIBRARIES = ("torch", "transformers", "peft", "accelerate", "datasets", "torchvision", "torchaudio")
SETTINGS_MACHINERY = ("tlhub.settings", "tlhub.errors")


@pytest.mark.parametrize("unit", sorted(p.name for p in (PACKAGE / "strategies").iterdir() if (p / "__init__.py").exists()))
def test_each_strategy_declares_its_settings_in_its_own_config_module(unit: str) -> None:
    """Issue 34: a strategy's keys live in ``strategies/<name>/config.py`` (as peft's LoraConfig
    lives beside its method), which imports the settings machinery and nothing heavy, and the
    unit lists them from there."""
    from tlhub.strategies import STRATEGIES

    config = PACKAGE / "strategies" / unit / "config.py"
    assert config.exists(), f"strategies/{unit} has no config.py"
    imported = []
    for node in ast.walk(ast.parse(config.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.append(node.module)
        elif isinstance(node, ast.Import):
            imported += [a.name for a in node.names]
    heavy = [m for m in imported if m.split(".")[0] in HEAVY_LIBRARIES]
    assert not heavy, f"strategies/{unit}/config.py imports {heavy}"
    own = [m for m in imported if m.split(".")[0] == "tlhub" and m not in SETTINGS_MACHINERY]
    assert not own, f"strategies/{unit}/config.py imports {own}; it may import {', '.join(SETTINGS_MACHINERY)} only"
    # the unit's settings classes are declared in some strategy's config module
    declared = {cls.__module__ for name in STRATEGIES.names() if STRATEGIES.get(name).__module__ == f"tlhub.strategies.{unit}"
                for cls in STRATEGIES.get(name).settings}  # fmt: skip
    assert all(m.startswith("tlhub.strategies.") and m.endswith(".config") for m in declared), declared
