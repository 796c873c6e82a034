"""The lightspeed storage conformance kit on the SQLite backend."""

from __future__ import annotations

from pathlib import Path

from lightspeed_storage_sqlite import SqliteStorage

from lightspeed.storage import StorageBackend
from lightspeed.testing import StorageConformanceTests, collection_config


class TestSqliteStorage(StorageConformanceTests):
    min_lease_seconds = 0.2

    async def make_backend(self, tmp_path: Path) -> StorageBackend:
        options = {"path": str(tmp_path / "lightspeed.sqlite3")}
        return SqliteStorage(options=options, collection=collection_config(tmp_path, backend="sqlite"))

    async def make_unreachable_backend(self, tmp_path: Path) -> StorageBackend:
        (tmp_path / "blocked").write_text("a file where the database's directory belongs")
        options = {"path": str(tmp_path / "blocked" / "lightspeed.sqlite3")}
        return SqliteStorage(options=options, collection=collection_config(tmp_path, backend="sqlite"))

    async def make_reachable(self, tmp_path: Path) -> bool:
        (tmp_path / "blocked").unlink()
        return True
