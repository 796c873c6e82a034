"""The lightspeed storage conformance kit, run on this plugin: one subclass, one factory."""

from __future__ import annotations

from pathlib import Path

from lightspeed_storage_memory import MemoryStorage

from lightspeed.storage import StorageBackend
from lightspeed.testing import StorageConformanceTests, collection_config


class TestMemoryStorage(StorageConformanceTests):
    # Leases are honoured to the millisecond, so the lease tests can sleep briefly.
    min_lease_seconds = 0.1

    async def make_backend(self, tmp_path: Path) -> StorageBackend:
        # One store per test: the kit gives each test its own tmp_path.
        return MemoryStorage(options={"store": str(tmp_path)}, collection=collection_config(tmp_path, backend="memory"))
