"""The conformance kit on our own default backend."""

from __future__ import annotations

from pathlib import Path

from lightspeed.storage import StorageBackend
from lightspeed.storage.filesystem import FilesystemStorage
from lightspeed.testing import StorageConformanceTests, collection_config


class TestFilesystemStorage(StorageConformanceTests):
    min_lease_seconds = 0.2

    async def make_backend(self, tmp_path: Path) -> StorageBackend:
        return FilesystemStorage(
            options={"state_path": str(tmp_path / "state")}, collection=collection_config(tmp_path)
        )

    async def make_unreachable_backend(self, tmp_path: Path) -> StorageBackend:
        (tmp_path / "blocked").write_text("a file where the storage directories belong")
        return await self.make_backend(tmp_path / "blocked")

    async def make_reachable(self, tmp_path: Path) -> bool:
        (tmp_path / "blocked").unlink()
        return True
