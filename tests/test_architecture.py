"""The import rule (docs/architecture.md): imports flow one way, from the edges to the core.

A module may import only from the layers below its own; the storage contract, the records and
the configuration never see the web framework, so a storage plugin depends on nothing but
``lightspeed.storage``; the collector runs without the web application (``lightspeed collect``);
nothing but tests imports the conformance kit. Imports under ``if TYPE_CHECKING:`` count too,
except for ``lightspeed.state``'s (it names the types of what it holds).
"""

from __future__ import annotations

import ast
from pathlib import Path

import lightspeed

PACKAGE = Path(lightspeed.__file__).parent

#: Each layer may import itself and the layers before it, never one after it.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "actions", "config", "lcs_keys", "health", "records", "masking", "redaction", "logs"),
    ("storage", "llm", "auth", "kube", "metrics"),
    ("collector", "ingress", "purge"),
    ("state",),
    ("api", "access_log"),
    ("app", "exporter"),
    ("serving", "workers", "cli", "__main__", "__init__"),
]
#: Never imported by these, whatever their layer.
NO_WEB = ("errors", "config", "records", "storage", "collector")
#: About 400 lines a module at most (issue 9): a longer one is split along its seams.
MAX_MODULE_LINES = 420
#: Modules allowed to be longer, each with its reason.
LONG_MODULES = {
    "testing/storage.py": "the conformance kit: one test per promise of the storage contract, read top to bottom",
}
#: Known exceptions, each with its reason.
ALLOWED = {
    ("metrics", "lightspeed.api.openapi"): "add_routes declares the /metrics operation (a lazy import)",
}


def _layer(module: str) -> int:
    top = module.split(".")[0]
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"lightspeed.{module} is in no layer of tests/test_architecture.py: add it")


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every ``lightspeed.*`` and ``aiohttp.web`` import of ``path`` with its line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
            if node.module in ("aiohttp", "lightspeed"):
                found.extend((f"{node.module}.{alias.name}", node.lineno) for alias in node.names)
    return found


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        out.append((".".join(rel.parts), path))
    return out


def test_imports_flow_from_the_edges_to_the_core() -> None:
    problems = []
    for module, path in _modules():
        if module.startswith("testing"):
            continue
        mine = _layer(module)
        for name, line in _imports(path):
            if name.startswith("lightspeed.testing"):
                problems.append(f"lightspeed/{path.relative_to(PACKAGE)}:{line} imports the conformance kit")
                continue
            if name.startswith("lightspeed.") and name != "lightspeed.__version__":
                target = name.removeprefix("lightspeed.")
                if module == "state" and target.startswith("api."):
                    continue  # state names the types it holds (under TYPE_CHECKING)
                if _layer(target) > mine and (module, name) not in ALLOWED:
                    problems.append(f"lightspeed/{path.relative_to(PACKAGE)}:{line} imports {name} (a higher layer)")
            if name in ("aiohttp.web", "aiohttp.web_app") and module.split(".")[0] in NO_WEB:
                problems.append(f"lightspeed/{path.relative_to(PACKAGE)}:{line} imports {name}")
    assert problems == [], "\n".join(problems)


def test_the_rule_catches_a_violation(tmp_path: Path) -> None:
    """The checker itself: a storage module importing the API is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("from lightspeed.api.query import add_routes\nfrom aiohttp import web\n")
    names = [name for name, _ in _imports(bad)]
    assert "lightspeed.api.query" in names and "aiohttp.web" in names
    assert _layer("api.query") > _layer("storage.base")


def test_no_module_is_much_over_400_lines() -> None:
    long = []
    for _module, path in _modules():
        rel = path.relative_to(PACKAGE).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES and rel not in LONG_MODULES:
            long.append(f"lightspeed/{rel}: {lines} lines (split it along its seams; see docs/architecture.md)")
    assert long == [], "\n".join(long)
    assert all((PACKAGE / rel).is_file() for rel in LONG_MODULES), "an exempt module is gone: drop it from the list"
