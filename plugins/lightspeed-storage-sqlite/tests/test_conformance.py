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
