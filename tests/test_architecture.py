"""The package's shape: imports only run downwards through the layers, and the README's
API list is exactly ``gflow_jax.__all__``."""

import ast
import pathlib
import re

import gflow_jax as gf

ROOT = pathlib.Path(gf.__file__).parent
# lower layers first; a module may import only from its own layer or below
LAYERS = [
    {"_numerics", "_linalg", "_defaults", "_checks", "_storage"},
    {"models"},
    {"risks"},
    {"outcomes", "limits", "statistics"},
    {"dynamics"},
    {"ensemble", "engine", "certificates"},
    {"plots"},
    {"sweep", "experiments"},
    {"cli"},
]


def _layer(top: str) -> int:
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"module {top!r} is in no layer; add it to LAYERS")


def _imports(path: pathlib.Path):
    """Top-level gflow_jax modules imported by `path` (relative or absolute imports)."""
    package = path.relative_to(ROOT).parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                parts = list(base) + (node.module.split(".") if node.module else [])
                if parts:
                    yield parts[0]
                else:  # `from . import x` at the top level
                    yield from (alias.name for alias in node.names)
            elif node.module and node.module.startswith("gflow_jax."):
                yield node.module.split(".")[1]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("gflow_jax."):
                    yield alias.name.split(".")[1]


def test_no_upward_imports():
    bad = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts == ("__init__.py",):
            continue  # the public re-exports
        top = rel.parts[0].removesuffix(".py")
        for imported in _imports(path):
            if _layer(imported) > _layer(top):
                bad.append(f"{rel} imports {imported}")
    assert not bad, bad


def test_readme_api_list_is_all():
    readme = (ROOT.parent / "README.md").read_text()
    section = readme.split("## Public API")[1].split("\n## ")[0]
    listed = set(re.findall(r"`([A-Za-z_]+)`", section.split("- **Subpackages**")[0]))
    subpackages = {"certificates", "limits", "statistics", "plots"}
    assert listed | subpackages == set(gf.__all__), sorted(set(gf.__all__) ^ (listed | subpackages))
    for name in gf.__all__:
        assert hasattr(gf, name), name
