"""The package's layering, checked on the source: Ray only in synth/engine/, and each layer imports
only the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "synth"

# layer -> synth modules it must not import
FORBIDDEN = {
    "providers": ("synth.engine", "synth.generators", "synth.cli", "synth.api", "synth.simulator"),
    "retrieval": ("synth.engine", "synth.generators", "synth.cli", "synth.api", "synth.simulator"),
    "generators": ("synth.engine", "synth.cli", "synth.api", "synth.simulator", "synth.providers.dispatch"),
    "simulator": ("synth.engine", "synth.generators", "synth.providers", "synth.retrieval", "synth.api"),
    "engine": ("synth.cli", "synth.simulator"),
}
BASE = ("spec.py", "records.py", "errors.py", "fakegen.py")


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_ray_is_imported_only_in_engine():
    offenders = [
        str(p.relative_to(ROOT))
        for p in ROOT.rglob("*.py")
        if "engine" not in p.relative_to(ROOT).parts and any(m == "ray" or m.startswith("ray.") for m in imports(p))
    ]
    assert offenders == []


def test_layers_import_downward_only():
    bad = []
    for p in ROOT.rglob("*.py"):
        rel = p.relative_to(ROOT)
        layer = rel.parts[0] if len(rel.parts) > 1 else None
        banned = FORBIDDEN.get(layer, ()) if layer else ()
        if rel.name in BASE and len(rel.parts) == 1:
            banned = (
                "synth.engine",
                "synth.generators",
                "synth.providers.dispatch",
                "synth.cli",
                "synth.api",
                "synth.simulator",
            )
        for m in imports(p):
            if any(m == b or m.startswith(b + ".") for b in banned):
                bad.append(f"{rel} imports {m}")
    assert bad == []


def test_modules_stay_small():
    big = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py") if (n := len(p.read_text().splitlines())) > 450}
    assert big == {}
