"""The lightspeed storage conformance kit on the PostgreSQL backend, against a real server."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from lightspeed_storage_postgres import PostgresStorage
from lightspeed_storage_postgres.testing import TemporaryCluster

from lightspeed.storage import StorageBackend
from lightspeed.testing import StorageConformanceTests, collection_config


class TestPostgresStorage(StorageConformanceTests):
    min_lease_seconds = 0.3

    @pytest.fixture(autouse=True)
    def _server(self, postgres_cluster: TemporaryCluster) -> None:
        self.dsn = postgres_cluster.dsn

    async def make_backend(self, tmp_path: Path) -> StorageBackend:
        # One schema per test, named after its tmp_path: two calls share it, two tests do not.
        schema = "kit_" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:20]
        options = {"dsn": self.dsn, "schema": schema, "pool_max_size": 4}
        return PostgresStorage(options=options, collection=collection_config(tmp_path, backend="postgres"))

    async def make_unreachable_backend(self, tmp_path: Path) -> StorageBackend:
        # A socket directory where no server listens.
        options = {"dsn": f"postgresql://postgres@/postgres?host={tmp_path}", "connect_timeout_seconds": 2}
        return PostgresStorage(options=options, collection=collection_config(tmp_path, backend="postgres"))
