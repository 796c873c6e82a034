"""``lightspeed collect --once`` and ``lightspeed ingress`` as real processes."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import yaml

from lightspeed.config import parse_config
from lightspeed.storage.filesystem import FilesystemStorage
from tests.collector.collector_support import received, store_records, tree_files


@asynccontextmanager
async def ingress_process(store: Path, *args: str) -> AsyncIterator[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lightspeed.ingress", "--port", "0", "--store", str(store), *args,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        match = re.search(r"http://\S+", line)
        assert match, line
        yield match.group(0)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0


async def collect(config_file: Path, *extra: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lightspeed", "collect", "--once", "-c", str(config_file), *extra,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def write_config(tmp_path: Path, url: str | None, **collector: object) -> tuple[Path, dict[str, object]]:
    udc: dict[str, object] = {
        "feedback_enabled": True,
        "feedback_storage": str(tmp_path / "data" / "feedback"),
        "transcripts_enabled": True,
        "transcripts_storage": str(tmp_path / "data" / "transcripts"),
        "data_collector": {
            "ingress_server_url": url,
            "ingress_server_auth_token": "tok",
            "ingress_content_service_name": "lightspeed-test",
            **collector,
        },
    }
    path = tmp_path / "lightspeed-stack.yaml"
    path.write_text(yaml.safe_dump({"user_data_collection": udc, "service": {"log_level": "warning"}}))
    return path, udc


async def fill(udc: dict[str, object], n: int) -> dict[str, bytes]:
    collection = parse_config({"user_data_collection": udc}, env={}).user_data_collection
    async with FilesystemStorage(options={}, collection=collection) as storage:
        return await store_records(storage, n, n)


def uploads(store: Path) -> list[dict[str, object]]:
    import json

    log = store / "uploads.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


async def test_collect_once_ships_everything_and_exits_0(tmp_path: Path) -> None:
    store = tmp_path / "received"
    async with ingress_process(store, "--token", "tok") as url:
        config_file, udc = write_config(tmp_path, url)
        stored = await fill(udc, 4)
        code, out, err = await collect(config_file)
    assert code == 0, err
    assert "uploaded 8 record(s) in 1 archive(s)" in out and "0 still pending" in out
    assert re.search(r"; took \d+\.\d\d s$", out.strip()), out
    assert received(store, uploads(store)) == {n: [d] for n, d in stored.items()}
    assert tree_files(tmp_path / "data" / "feedback") + tree_files(tmp_path / "data" / "transcripts") == []


async def test_collect_once_exits_1_and_keeps_the_data_when_the_upload_fails(tmp_path: Path) -> None:
    store = tmp_path / "received"
    async with ingress_process(store, "--fail-always", "503", "--retry-after", "30") as url:
        config_file, udc = write_config(tmp_path, url)
        await fill(udc, 2)
        code, out, _ = await collect(config_file)
    assert code == 1
    assert "ingress answered 503" in out and "4 still pending" in out
    assert len(tree_files(tmp_path / "data" / "feedback") + tree_files(tmp_path / "data" / "transcripts")) == 4


async def test_collect_without_an_ingress_url_is_a_configuration_error(tmp_path: Path) -> None:
    config_file, _ = write_config(tmp_path, None)
    code, _, err = await collect(config_file)
    assert code == 2
    assert "user_data_collection.data_collector.ingress_server_url: required to collect" in err


def test_the_ingress_command_has_help() -> None:
    result: subprocess.CompletedProcess[str] = subprocess.run(
        [sys.executable, "-m", "lightspeed", "ingress", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "--fail" in result.stdout and "127.0.0.1" in result.stdout


async def test_collect_without_once_runs_until_sigterm_then_exits_0(tmp_path: Path) -> None:
    store = tmp_path / "received"
    async with ingress_process(store) as url:
        config_file, udc = write_config(tmp_path, url, collection_interval=3600)
        stored = await fill(udc, 2)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lightspeed", "collect", "-c", str(config_file),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            for _ in range(1500):
                if len(received(store, uploads(store))) == len(stored):
                    break
                await asyncio.sleep(0.02)
            more = await fill(udc, 1)  # stored after the first cycle: the final collection ships it
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert received(store, uploads(store)) == {n: [d] for n, d in {**stored, **more}.items()}


async def test_collect_ships_what_it_can_when_a_storage_root_cannot_be_created(tmp_path: Path) -> None:
    store = tmp_path / "received"
    async with ingress_process(store, "--token", "tok") as url:
        config_file, udc = write_config(tmp_path, url)
        stored = await fill(udc, 2)
        shutil.rmtree(tmp_path / "data" / "feedback")
        (tmp_path / "data" / "feedback").write_bytes(b"")  # a file where the directory belongs
        code, out, err = await collect(config_file)
    assert code == 0, err
    assert "uploaded 2 record(s)" in out, out
    assert set(received(store, uploads(store))) == {n for n in stored if n.startswith("transcripts/")}
    assert f"feedback_storage {tmp_path / 'data' / 'feedback'} cannot be written: Not a directory" in err, err
    assert "Traceback" not in err


async def test_collect_with_a_state_directory_under_a_file_exits_1_clearly(tmp_path: Path) -> None:
    config_file, udc = write_config(tmp_path, "http://127.0.0.1:9/")
    (tmp_path / "volume").write_bytes(b"")
    udc["storage"] = {"backend": "filesystem", "options": {"state_path": str(tmp_path / "volume" / "state")}}
    config_file.write_text(yaml.safe_dump({"user_data_collection": udc}))
    code, out, err = await collect(config_file)
    assert code == 1
    assert f"storage failed: state_path {tmp_path / 'volume' / 'state'} cannot be written: Not a directory" in out
    assert "Traceback" not in out + err
