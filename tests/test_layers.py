"""The package's layering, checked on the source: Ray only in synth/engine/, each layer imports only
the layers below it, every module belongs to a layer, and imports form no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "synth"

APP = (
    "synth.cli",
    "synth.api",
    "synth.dryrun",
    "synth.dryreport",
    "synth.dataset",
    "synth.inspect",
    "synth.export",
    "synth.quick",
    "synth.streaming",
)
# layer -> synth modules it must not import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "base": ("synth.engine", "synth.generators", "synth.providers", "synth.retrieval", "synth.simulator", *APP),
    "providers": ("synth.engine", "synth.generators", "synth.retrieval", "synth.simulator", *APP),
    "retrieval": ("synth.engine", "synth.generators", "synth.simulator", *APP),
    "generators": ("synth.engine", "synth.simulator", "synth.providers.dispatch", *APP),
    "simulator": ("synth.engine", "synth.generators", "synth.providers", "synth.retrieval", *APP),
    "engine": ("synth.simulator", *APP),
    "app": ("synth.cli", "synth.simulator"),
    "export": ("synth.cli", "synth.simulator"),  # the exporters: an app-level package
    "top": (),
}
# top-level modules -> their layer; a new module needs a line here (and so a decision)
TOP_LEVEL = {
    "errors.py": "base",
    "records.py": "base",
    "spec.py": "base",
    "defaults.py": "base",
    "providerspec.py": "base",
    "enginespec.py": "base",
    "plugins.py": "base",
    "tokens.py": "base",
    "fakeembed.py": "base",
    "fakegen.py": "base",
    "outcome.py": "base",
    "api.py": "app",
    "dryrun.py": "app",
    "dryreport.py": "app",
    "dataset.py": "app",
    "inspect.py": "app",
    "starter.py": "app",
    "guard.py": "app",  # how every command fails: one line, the exit code
    "jobscli.py": "app",  # synth jobs: the Ray Jobs API commands
    "quick.py": "app",
    "streaming.py": "app",
    "generatecli.py": "top",  # synth generate: the command, kept out of cli.py's size
    "benchcli.py": "top",  # synth bench: runs the checkout's benchmarks/bench.py
    "refdocs.py": "top",  # documents the command line, so it reads synth.cli as only the top may
    "cli.py": "top",
    "__init__.py": "top",
    "__main__.py": "top",
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def layer_of(path: Path) -> str | None:
    rel = path.relative_to(ROOT)
    if len(rel.parts) > 1:
        return rel.parts[0] if rel.parts[0] in FORBIDDEN else None
    return TOP_LEVEL.get(rel.name)


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def imports(path: Path, *, deferred: bool = True) -> set[str]:
    """synth modules (and others) ``path`` imports at run time. ``deferred``: count imports inside
    functions too; annotations-only imports (``if TYPE_CHECKING:``) never count."""
    out: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]

    def visit(nodes: list[ast.stmt] | list[ast.AST]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _type_checking(node):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                out.add(base)
                # 'from pkg import mod' imports the module pkg.mod
                out.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and not deferred:
                continue
            visit(list(ast.iter_child_nodes(node)))

    visit(ast.parse(path.read_text()).body)
    return out


def test_ray_is_imported_only_in_engine():
    offenders = [
        str(p.relative_to(ROOT))
        for p in ROOT.rglob("*.py")
        if "engine" not in p.relative_to(ROOT).parts and any(m == "ray" or m.startswith("ray.") for m in imports(p))
    ]
    assert offenders == []


def test_every_module_belongs_to_a_layer():
    assert sorted(str(p.relative_to(ROOT)) for p in MODULES.values() if layer_of(p) is None) == []


def test_layers_import_downward_only():
    bad = []
    for p in MODULES.values():
        banned = FORBIDDEN[layer_of(p) or "base"]
        for m in imports(p):
            if any(m == b or m.startswith(b + ".") for b in banned):
                bad.append(f"{p.relative_to(ROOT)} imports {m}")
    assert bad == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                walk(nxt, stack)
        stack.pop()
        state[node] = 2

    for n in sorted(graph):
        if n not in state:
            walk(n, [])
    return found


def _graph(prefix: str, *, deferred: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        if name == prefix or name.startswith(prefix + "."):
            # a package's own __init__ is run before any of its modules: not an edge worth counting
            graph[name] = {m for m in imports(path, deferred=deferred) if m in MODULES and m != name}
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    return graph


def test_no_import_cycles_at_module_level():
    assert _cycles(_graph("synth", deferred=False)) == []


def test_simulator_has_no_import_cycle_even_deferred():
    assert _cycles(_graph("synth.simulator", deferred=True)) == []


def test_modules_stay_small():
    big = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py") if (n := len(p.read_text().splitlines())) > 450}
    assert big == {}
