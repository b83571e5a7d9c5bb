"""docs/architecture.md's import rules, checked on the source: what must never import what."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "twotower"
ENTRY_POINTS = ("train", "evaluate", "export", "search", "mine", "ablate", "report")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path) -> set[str]:
    """The modules ``path`` imports when it runs (not under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


MODULES = {module_name(p): runtime_imports(p) for p in sorted(SRC.rglob("*.py"))}

# (modules whose name starts with this, imports that they must never make, allowed exceptions)
RULES = [
    ("twotower.losses", ("twotower.towers", "twotower.negatives", "twotower.data",
                         "twotower.module", "twotower.build"), ()),
    ("twotower.towers", ("twotower.data", "twotower.module", "twotower.losses",
                         "twotower.negatives", "twotower.build"),
     ("twotower.data.components.features",)),
    ("twotower.data", ("twotower.towers", "twotower.losses", "twotower.negatives",
                       "twotower.module", "twotower.build"), ()),
    ("twotower.negatives", ("twotower.towers", "twotower.losses", "twotower.data",
                            "twotower.module", "twotower.build"), ()),
    ("twotower.retrieval", ("twotower.module", "twotower.data", "twotower.build"), ()),
    ("twotower.module", ("hydra", "omegaconf", "twotower.build", "twotower.data"), ()),
    ("twotower.mining", ("twotower.module", "twotower.train", "twotower.mine"), ()),
    ("twotower.teacher", ("twotower.module", "twotower.train", "twotower.build"), ()),
    ("twotower", ("bench", "prepare"), ()),
]  # fmt: skip


def forbidden(name: str, imports: set[str], banned: tuple, allowed: tuple) -> list[str]:
    def under(module: str, prefixes: tuple) -> bool:
        return any(module == p or module.startswith(f"{p}.") for p in prefixes)

    return sorted(m for m in imports if under(m, banned) and not under(m, allowed))


@pytest.mark.parametrize(("scope", "banned", "allowed"), RULES, ids=[r[0] for r in RULES])
def test_no_layer_imports_what_it_must_not(scope, banned, allowed):
    bad = {
        name: forbidden(name, imports, banned, allowed)
        for name, imports in MODULES.items()
        if name == scope or name.startswith(f"{scope}.")
    }
    assert not {k: v for k, v in bad.items() if v}


def test_entry_points_do_not_import_each_other():
    entry = [f"twotower.{e}" for e in ENTRY_POINTS]
    for name in entry:
        others = tuple(e for e in entry if e != name)
        assert not forbidden(name, MODULES[name], others, ()), name
    for name, imports in MODULES.items():  # nor does anything below them
        if name not in entry:
            assert not forbidden(name, imports, tuple(entry), ()), name


def test_the_rules_see_the_imports():
    """The checker finds a real import (a checker that sees nothing would pass anything)."""
    assert "twotower.build" in MODULES["twotower.train"]
    assert "twotower.data.components.features.Feature" in MODULES["twotower.towers.features.tower"]
    assert not any("twotower.losses" in m for m in MODULES["twotower.negatives.base"])
