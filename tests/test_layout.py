"""The package's layout: imports point down the stages, no import cycle, no module over about 400
lines. The walk reads every module's imports with ast (function-level imports included: a lazy
import is still a dependency).

Stages, lowest first (docs/architecture.md), one subpackage each: core/ (errors, seeds, store,
device, threads, the schema), data/, models/, the collision search (collide/ and the modules it
uses) and attacks/, the config (checked against the registries below it, and the job builders),
bounds/ and paper 003's semirobust/, figures/, the planner plan/, and
last the command line cli/ and the Python API. A module may import its own stage or a lower one.
The imports and modules that break these rules today are listed below with the reason; the lists
may only shrink: an entry that no longer applies fails the test too, so that it is removed with the
fix.
"""

import ast
from pathlib import Path

from workflow_helpers import ROOT

PACKAGE = ROOT / "src" / "layerbound"
MAX_LINES = 400

STAGES = [
    ("core", ["layerbound", "core"]),
    ("data", ["data"]),
    ("models", ["models"]),
    ("search and attacks", ["collide", "attacks"]),
    ("config", ["config"]),
    ("bounds and studies", ["bounds", "semirobust"]),
    ("figures", ["figures"]),
    ("plan", ["plan"]),
    ("interfaces", ["cli", "api", "__main__"]),
]

# Each of these is a module of a lower stage that reaches up, with the reason it is left (none left).
UPWARD: set[tuple[str, str]] = set()

# Import cycles of today, each with its reason (none left).
CYCLES = []

# Modules over MAX_LINES lines, each with its reason (none left).
LONG: dict[str, str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path) -> set[str]:
    """The package's modules that `name` imports (a name imported from a package counts as its
    module when it is one, else as the package)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                found.add(candidate if candidate in MODULES else module)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _short(module: str) -> str:
    """The stage key of a module: its top-level name under layerbound (the package itself: layerbound)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


RANK = {module: rank for rank, (_, modules) in enumerate(STAGES) for module in modules}


def test_every_module_has_a_stage():
    assert sorted({_short(m) for m in MODULES} - set(RANK)) == []


def test_imports_point_down_the_stages():
    upward = {(_short(a), _short(b)) for a, targets in GRAPH.items() for b in targets
              if RANK[_short(b)] > RANK[_short(a)]}
    assert sorted(upward - UPWARD) == [], "imports from a lower stage to a higher one"
    assert sorted(UPWARD - upward) == [], "listed upward imports that no longer exist: remove them from UPWARD"


def test_no_import_cycle():
    # Tarjan's strongly connected components; any component of more than one module is a cycle.
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
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
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert sorted(cycles) == sorted(CYCLES)


def test_no_module_over_400_lines_but_the_listed_ones():
    long = {str(p.relative_to(PACKAGE)) for p in MODULES.values() if len(p.read_text().splitlines()) > MAX_LINES}
    assert sorted(long - set(LONG)) == [], f"modules over {MAX_LINES} lines"
    assert sorted(set(LONG) - long) == [], "listed long modules that are short now: remove them from LONG"


def test_the_walk_sees_the_imports_it_should():
    # The walk's own check: known edges of the package, relative and absolute, package and module.
    assert "layerbound.core.errors" in GRAPH["layerbound.core.store"]
    assert "layerbound.collide.base" in GRAPH["layerbound.collide.closed_form"]
    assert "layerbound.cli.collide" in GRAPH["layerbound.cli"]   # a function-level import
