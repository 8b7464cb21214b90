"""The architecture, read from the code's own imports (docs/architecture.md): lib's packages are
layers, each importing only from the layers below it; no import cycle between lib's modules; no
function in lib/ over 80 lines. Imports inside functions count too (they are how cycles hide)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "lib"
LAYERS = ["core", "data", "features", "inputs", "models", "evaluation", "inference", "training", "components",
          "runs", "shipping", "cli"]
"""lib's packages (and top-level modules) from the ground floor up; docs/architecture.md says why."""
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(LIB.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str | None = None) -> set[str]:
    """The ``lib`` modules that the file at ``path`` (the module named ``module``, by default
    its name under lib/) imports (absolute names), anywhere in it."""
    module = module or _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "lib"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if base.split(".")[0] != "lib":
                continue
            for alias in node.names:  # `from pkg import module` imports the module
                sub = f"{base}.{alias.name}"
                found.add(sub if _exists(sub) else base)
    return found - {module}


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (LIB / rel).with_suffix(".py").is_file() or (LIB / rel / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): {m for m in _imports(p) if _exists(m)} for p in sorted(LIB.rglob("*.py"))}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_package_has_a_layer():
    tops = {p.stem if p.is_file() else p.name for p in LIB.iterdir()
            if (p.is_dir() and (p / "__init__.py").is_file()) or (p.suffix == ".py" and p.stem != "__init__")}
    assert tops == set(LAYERS), f"packages without a layer: {tops - set(LAYERS)}; layers without a package: " \
                                f"{set(LAYERS) - tops}"


def test_no_import_runs_back_up_a_layer():
    upward = [f"{m} -> {d}" for m, deps in _graph().items() for d in deps
              if _layer(m) is not None and _layer(d) is not None and _layer(d) > _layer(m)]
    assert not upward, "imports from a lower layer to a higher one:\n  " + "\n  ".join(upward)


def test_core_imports_no_other_lib_package():
    out = [f"{m} -> {d}" for m, deps in _graph().items() if m.startswith("lib.core") for d in deps
           if not d.startswith("lib.core")]
    assert not out, "lib.core is the ground floor:\n  " + "\n  ".join(out)


def test_no_import_cycles():
    graph = _graph()
    cycles, state = [], {}

    def visit(node, stack):  # depth-first search; a grey node met again closes a cycle
        state[node] = "grey"
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "grey":
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = "black"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    # a package's __init__ importing its own modules is no cycle unless one of them imports it back
    assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)


def test_no_function_over_80_lines():
    long = [f"{p.relative_to(LIB.parent)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for p in sorted(LIB.rglob("*.py")) for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, "functions over 80 lines:\n  " + "\n  ".join(long)


@pytest.mark.parametrize("bad, expected", [
    ("from ..runs import experiment\n", "lib.core.fake -> lib.runs.experiment"),
    ("from ..core import errors\n", None),
])
def test_the_layer_check_sees_an_upward_import(tmp_path, bad, expected):
    """The checks above read imports correctly: a generated module of lib.core importing lib.runs
    inside a function is found, one importing its own layer is not."""
    path = tmp_path / "fake.py"
    path.write_text(f"def f():\n    {bad}")
    deps = {f"lib.core.fake -> {d}" for d in _imports(path, "lib.core.fake") if _exists(d) and not d.startswith("lib.core")}
    assert deps == ({expected} if expected else set())


def test_the_docs_list_every_run_only_key():
    """The run-only keys are one list (lib.core.config.RUN_ONLY_KEYS); the docs that explain them name each."""
    from lib.core.config import RUN_ONLY_KEYS

    docs = LIB.parent / "docs"
    for page in ("experiment.md", "distributed.md"):
        text = (docs / page).read_text()
        assert all(f"`{k}`" in text for k in RUN_ONLY_KEYS), (page, [k for k in RUN_ONLY_KEYS if f"`{k}`" not in text])
