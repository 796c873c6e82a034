"""Options are checked without connecting, every problem at once, and no message shows the password."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightspeed_storage_postgres import PostgresStorage

from lightspeed.storage import StorageConfigError, StorageUnavailable
from lightspeed.testing import collection_config


def problems(options: dict[str, object], tmp_path: Path) -> list[str]:
    return PostgresStorage.check_options(options, collection_config(tmp_path, backend="postgres"))


def test_every_problem_is_named_by_its_key(tmp_path: Path) -> None:
    found = problems({"schema": "Bad-Name", "pool_min_size": 5, "pool_max_size": 2, "port": "x", "colour": 1}, tmp_path)
    text = "\n".join(found)
    for key in ("colour: unknown key", "dsn: required", "schema: must be", "pool_min_size: must not exceed"):
        assert key in text
    assert any(p.startswith("port: expected an integer, got a string") for p in found)
    with pytest.raises(StorageConfigError, match=r"user_data_collection\.storage\.options\.schema"):
        PostgresStorage(options={"dsn": "postgresql://x@h/d", "schema": "1x"}, collection=collection_config(tmp_path))


def test_the_dsn_or_its_parts_are_enough(tmp_path: Path) -> None:
    assert problems({"dsn": "postgresql://u@db:5432/lightspeed"}, tmp_path) == []
    parts = {"host": "db", "port": 5432, "user": "u", "password": "p", "database": "d", "schema": "ls_1"}
    assert problems(parts, tmp_path) == []


@pytest.mark.asyncio
async def test_errors_never_show_the_password(tmp_path: Path) -> None:
    backend = PostgresStorage(
        options={"dsn": f"postgresql://app:s3cret@/postgres?host={tmp_path}", "connect_timeout_seconds": 1},
        collection=collection_config(tmp_path, backend="postgres"),
    )
    assert "s3cret" not in repr(backend)
    with pytest.raises(StorageUnavailable) as info:
        await backend.open()
    assert "s3cret" not in str(info.value)
    assert "postgresql://app:***@" in str(info.value)
