"""``lightspeed collect --dry-run``: the next archive, exactly as it would be uploaded, and nothing sent."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import yaml

from lightspeed.collector.run import run_dry_run
from tests.collector.collector_support import Ingress, MakeHarness, store_records, tree_files


def members(data: bytes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for m in tar:
            fh = tar.extractfile(m)
            assert fh is not None
            out[m.name] = fh.read()
    return out


async def test_dry_run_lists_the_next_archive_and_changes_nothing(
    harness: MakeHarness, ingress: Ingress, capsys: pytest.CaptureFixture[str]
) -> None:
    h = await harness()
    stored = await store_records(h.storage, 3, 2)
    before = tree_files(h.feedback_root) + tree_files(h.transcripts_root)

    assert await run_dry_run(h.config, output=None) == 0

    out = capsys.readouterr().out
    assert "nothing was sent, acked or deleted" in out
    for name, data in stored.items():
        assert f"{len(data)}  {name}" in out
    assert ingress.emulator.attempts == []
    assert tree_files(h.feedback_root) + tree_files(h.transcripts_root) == before
    # The claim was released: the real cycle ships everything at once.
    report = await h.collector.run_once()
    assert report.records == 5


async def test_dry_run_output_is_the_archive_the_upload_carries(
    harness: MakeHarness, ingress: Ingress, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Small archives: the first batch is halved until it fits, in the dry run as in the cycle.
    h = await harness(max_payload_bytes=1200, compression_level=9)
    await store_records(h.storage, 12, 0)
    output = tmp_path / "next.tar.gz"

    assert await run_dry_run(h.config, output=output) == 0
    assert f"written to {output}" in capsys.readouterr().out
    previewed = members(output.read_bytes())
    assert 0 < len(previewed) < 12

    report = await h.collector.run_once()
    assert report.records == 12 and report.uploads > 1
    first_upload = members((ingress.emulator.store / ingress.emulator.uploads[0]["file"]).read_bytes())
    assert previewed == first_upload  # same members, same bytes, same limits


async def test_dry_run_with_nothing_pending(harness: MakeHarness, capsys: pytest.CaptureFixture[str]) -> None:
    h = await harness()
    assert await run_dry_run(h.config, output=None) == 0
    assert "nothing to upload" in capsys.readouterr().out


async def test_collect_dry_run_on_the_command_line_needs_no_credentials(tmp_path: Path) -> None:
    udc = {
        "feedback_enabled": True,
        "feedback_storage": str(tmp_path / "data" / "feedback"),
        "transcripts_enabled": True,
        "transcripts_storage": str(tmp_path / "data" / "transcripts"),
    }
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"user_data_collection": udc}))
    from lightspeed.config import parse_config
    from lightspeed.storage.filesystem import FilesystemStorage

    parsed = parse_config({"user_data_collection": udc}, env={}).user_data_collection
    storage = FilesystemStorage(options={}, collection=parsed)
    await storage.open()
    try:
        stored = await store_records(storage, 2, 1)
    finally:
        await storage.aclose()
    out_file = tmp_path / "archive.tar.gz"
    code, _out, err = await _collect_raw(config, "--dry-run", "--output", str(out_file))
    assert code == 0, err
    assert members(out_file.read_bytes()) == stored
    code, _, err = await _collect_raw(config, "--output", str(out_file))
    assert code == 2 and "--output: only with --dry-run" in err


async def _collect_raw(config_file: Path, *extra: str) -> tuple[int, str, str]:
    import asyncio
    import subprocess
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lightspeed", "collect", "-c", str(config_file), *extra,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
