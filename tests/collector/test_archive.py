"""The streaming archive: valid for tar(1) and Python alike, bounded, no temporary file left."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from lightspeed.collector.archive import (
    ArchiveTooLarge,
    _header,
    _header_template,
    build_archive,
    remove_orphaned_archives,
)
from lightspeed.records import RecordKind
from tests.collector.collector_support import MakeHarness, store_records, tree_files

NAMES = [
    "feedback/2f0e6bb5-3f7e-4c39-9d39-6e6a5c0bd2a7.json",
    "transcripts/" + "a" * 64 + "/conv_" + "b" * 48 + "/2f0e6bb5-3f7e-4c39-9d39-6e6a5c0bd2a7.json",
    "transcripts/" + "a" * 64 + "/2f0e6bb5-3f7e-4c39-9d39-6e6a5c0bd2a7/2f0e6bb5-3f7e-4c39-9d39-6e6a5c0bd2a7.json",
]


def gnu_tar_listing(path: Path) -> list[str]:
    """What GNU tar lists (gzip checks the file first; tar must not complain)."""
    subprocess.run(["gzip", "-t", str(path)], check=True)
    listing = subprocess.run(["tar", "tzf", str(path)], capture_output=True, text=True, check=True)
    assert listing.stderr == ""
    return sorted(listing.stdout.split())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 3_000_000])
def test_the_fast_header_is_the_one_tarfile_writes(name: str, size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 1_700_000_000, 0o644
    expected = info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")
    assert _header(_header_template(1_700_000_000), name.encode(), size) == expected


async def test_the_archive_is_read_by_gnu_tar_and_gzip(harness: MakeHarness, tmp_path: Path) -> None:
    h = await harness()
    stored = await store_records(h.storage, 300, 300)  # several chunks, so several gzip members
    claim = await h.storage.claim(
        owner="t", kinds=tuple(RecordKind), max_records=10_000, max_bytes=10**9, lease_seconds=60
    )
    archive = await build_archive(h.storage, claim.records, max_bytes=10**9, directory=tmp_path, chunk_records=64)
    try:
        assert archive.raw_bytes == sum(len(d) for d in stored.values())
        if shutil.which("tar") and shutil.which("gzip"):
            assert gnu_tar_listing(archive.path) == sorted(stored)
        with tarfile.open(archive.path, "r:gz") as tar:
            got = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
        assert got == stored
    finally:
        archive.discard()


async def test_an_archive_over_the_limit_stops_early_and_leaves_no_file(harness: MakeHarness, tmp_path: Path) -> None:
    h = await harness()
    await store_records(h.storage, 200, 0)
    claim = await h.storage.claim(
        owner="t", kinds=tuple(RecordKind), max_records=1000, max_bytes=10**9, lease_seconds=60
    )
    spill = Path(tempfile.mkdtemp(dir=tmp_path))
    with pytest.raises(ArchiveTooLarge):
        await build_archive(h.storage, claim.records, max_bytes=500, directory=spill, chunk_records=16)
    assert tree_files(spill) == []


def test_archives_of_collectors_that_no_longer_run_are_removed(tmp_path: Path) -> None:
    """Only files named as archives, of this user, whose process is gone; never a live
    collector's (this process's, or another running one's), never anything else."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive:
        try:
            names = {
                "orphan": f"lightspeed-upload-{dead}-abc_12.tar.gz",
                "ours": f"lightspeed-upload-{os.getpid()}-x1.tar.gz",
                "running": f"lightspeed-upload-{alive.pid}-x2.tar.gz",
                "old name": "lightspeed-upload-abc123.tar.gz",
                "other": f"lightspeed-upload-{dead}-abc.tar.gz.keep",
            }
            for name in names.values():
                (tmp_path / name).write_bytes(b"x")
            (tmp_path / f"lightspeed-upload-{dead}-dir.tar.gz").mkdir()
            removed = remove_orphaned_archives(tmp_path)
        finally:
            alive.kill()
    assert removed == [str(tmp_path / names["orphan"])]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([*(n for k, n in names.items() if k != "orphan"), f"lightspeed-upload-{dead}-dir.tar.gz"])
    assert remove_orphaned_archives(tmp_path / "missing") == []
