"""Options are checked without touching the disk, every problem at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightspeed_storage_sqlite import SqliteStorage

from lightspeed.storage import StorageConfigError
from lightspeed.testing import collection_config


def test_every_problem_is_named_by_its_key(tmp_path: Path) -> None:
    found = SqliteStorage.check_options(
        {"synchronous": "sometimes", "busy_timeout_seconds": 0, "pth": "x"}, collection_config(tmp_path)
    )
    text = "\n".join(found)
    for key in ("pth: unknown key", "path: required", "synchronous: must be one of", "busy_timeout_seconds:"):
        assert key in text
    assert not (tmp_path / "x").exists()
    with pytest.raises(StorageConfigError, match=r"user_data_collection\.storage\.options\.path: required"):
        SqliteStorage(options={}, collection=collection_config(tmp_path))


def test_a_path_is_enough(tmp_path: Path) -> None:
    assert SqliteStorage.check_options({"path": str(tmp_path / "db")}, collection_config(tmp_path)) == []
