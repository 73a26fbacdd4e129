"""The package's layering stays true: imports go only downward through the layers, and no two
modules import each other, directly or around a loop (function-local imports included)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# bottom to top; a module may import its own layer (without a cycle) and those below it
LAYERS = [
    ("sim.errors", "sim.rng", "sim"),
    ("sim.config",),
    ("sim.hardware",),
    ("sim.models",),
    ("sim.output",),
    ("sim.engine",),
    ("sim.workloads",),
    ("sim.cluster",),
    ("sim.run",),
    ("sim.sweep", "sim.embedded_ray"),
    ("sim.shard",),
    ("sim.tools",),
    ("sim.plan",),
    ("analysis",),
    ("sim.cli",),
]
MAX_MODULE_LINES = 520
MAX_CLASS_LINES = 400


def modules() -> dict[str, Path]:
    out = {}
    for top in ("sim", "analysis"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def layer_of(module: str) -> int:
    best, index = "", None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > len(best):
                best, index = name, i
    assert index is not None, f"{module} is in no layer of tests/test_layers.py"
    return index


def imports_of(module: str, path: Path, known: dict) -> set[str]:
    """Project modules ``module`` imports anywhere in its file."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in known:  # the deepest project module it names
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports_of(m, p, known) for m, p in known.items()}


def test_every_import_goes_down_or_sideways():
    upward = []
    for module, deps in graph().items():
        for dep in deps:
            if module == "sim" or dep == "sim":
                continue  # the package root holds only the version
            if layer_of(dep) > layer_of(module):
                upward.append(f"{module} -> {dep}")
    assert not upward, "upward imports: " + ", ".join(sorted(upward))


def test_no_import_cycle():
    g = graph()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    # a package's __init__ that re-exports its submodules is not a cycle of behaviour
    cycles = [c for c in cycles if not all(m == c[0] or m.startswith(c[0] + ".") for m in c)]
    assert not cycles, f"import cycles: {cycles}"


def test_modules_and_classes_stay_small():
    big = []
    for module, path in modules().items():
        text = path.read_text()
        n = text.count("\n")
        if n > MAX_MODULE_LINES:
            big.append(f"{module}: {n} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                big.append(f"{module}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not big, "too big: " + ", ".join(big)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The walk finds function-local imports (a test that cannot fail would prove nothing)."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from sim.cli.main import main\n")
    assert imports_of("sim.models.x", f, {"sim.cli.main": f, "sim.cli": f}) == {"sim.cli.main"}
    assert layer_of("sim.cli.main") > layer_of("sim.models.x")
