"""docs/plugins.md keeps up with the interface and the kit it documents."""

from __future__ import annotations

import re
from pathlib import Path

import lightspeed.testing
from lightspeed.storage import StorageBackend

DOC = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()


def test_every_method_of_the_interface_is_documented() -> None:
    methods = set(StorageBackend.__abstractmethods__) | {"read_many", "check_options"}
    missing = sorted(m for m in methods if not re.search(rf"`{m}\(", DOC))
    assert missing == []


def test_every_kit_mixin_and_flag_is_documented() -> None:
    names = [n for n in lightspeed.testing.__all__ if n.endswith("Tests")]
    flags = ["supports_multiple_processes", "persistent", "min_lease_seconds"]
    missing = [n for n in [*names, *flags] if f"`{n}`" not in DOC]
    assert missing == []


def test_the_kit_example_in_the_docs_is_a_working_subclass(tmp_path: Path) -> None:
    example = re.search(r"```python\n# tests/test_conformance.py\n(.*?)```", DOC, re.S)
    assert example is not None
    source = example.group(1).replace("from lightspeed_storage_NAME import NameStorage\n", "")
    namespace: dict[str, object] = {"NameStorage": StorageBackend}
    exec(compile(source, "docs/plugins.md", "exec"), namespace)
    kit = namespace["TestNameStorage"]
    assert isinstance(kit, type) and issubclass(kit, lightspeed.testing.StorageConformanceTests)
