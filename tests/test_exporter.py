"""``lightspeed-exporter``: the upstream exporter's configuration, flags and environment run our
collector; files laid out as the upstream service writes them arrive byte for byte and are
deleted only after a 202."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from lightspeed.collector.status import CollectorStatus
from lightspeed.errors import ConfigError
from lightspeed.exporter import DirectorySource, parse_exporter_args
from lightspeed.exporter.command import main as exporter_main
from lightspeed.exporter.probes import make_probe_app
from lightspeed.ingress import UPLOAD_PATH, Fault, IngressEmulator
from lightspeed.masking import MASK
from lightspeed.metrics import Metrics
from lightspeed.storage import Claim

TOKEN = "upstream-style-token"


class Ingress:
    def __init__(self, emulator: IngressEmulator, server: TestServer) -> None:
        self.emulator, self.server = emulator, server

    @property
    def url(self) -> str:
        return str(self.server.make_url(UPLOAD_PATH))

    def members(self) -> dict[str, list[bytes]]:
        out: dict[str, list[bytes]] = {}
        for entry in self.emulator.uploads:
            with tarfile.open(self.emulator.store / entry["file"], "r:gz") as tar:
                for m in tar:
                    fh = tar.extractfile(m)
                    assert fh is not None
                    out.setdefault(m.name, []).append(fh.read())
        return out


@pytest.fixture
async def ingress(tmp_path: Path) -> AsyncIterator[Ingress]:
    emulator = IngressEmulator(store=tmp_path / "ingress", token=TOKEN)
    server = TestServer(emulator.make_app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield Ingress(emulator, server)
    finally:
        await server.close()


def old(path: Path, seconds: float = 60) -> None:
    """Make ``path`` look written ``seconds`` ago (past any settle time)."""
    t = time.time() - seconds
    os.utime(path, (t, t))


def upstream_layout(data: Path, *, n_feedback: int = 3, n_transcripts: int = 2) -> dict[str, bytes]:
    """Files as the upstream Lightspeed Core Stack writes them (in place, raw user ids and all);
    returns the archive member name -> the exact bytes."""
    out: dict[str, bytes] = {}
    for i in range(n_feedback):
        body = {
            "user_id": f"raw-user-{i}",
            "timestamp": "2025-07-24 13:16:49.140050+00:00",
            "conversation_id": str(uuid.uuid4()),
            "user_question": f"What is {i}?",
            "llm_response": "Some elaborate answer \u00e9",
            "sentiment": 1,
            "user_feedback": "",
        }
        name = f"feedback/{uuid.uuid4()}.json"
        out[name] = json.dumps(body, indent=None).encode()
    for i in range(n_transcripts):
        user = hashlib.sha256(f"raw-user-{i}".encode()).hexdigest()
        name = f"transcripts/{user}/{uuid.uuid4()}/{uuid.uuid4()}.json"
        out[name] = json.dumps({"metadata": {"user_id": user}, "redacted_query": f"q{i}", "llm_response": "a"}).encode()
    for name, content in out.items():
        path = data / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        old(path)
    return out


def upstream_config(tmp_path: Path, url: str, **over: Any) -> Path:
    """The upstream exporter's example configuration, in our words, pointed at the local ingress."""
    config: dict[str, Any] = {
        "service_id": "lightspeed-test",
        "ingress_server_url": url,
        "allowed_subdirs": ["feedback", "transcripts"],
        "collection_interval": 7200,
        "cleanup_after_send": True,
        "ingress_connection_timeout": 30,
        "log_level": "INFO",
        "rich_logs": False,
    }
    config.update(over)
    path = tmp_path / "exporter-config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def run_exporter(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lightspeed", "exporter", *args,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def files(root: Path) -> list[str]:
    """The files under ``root``, without the exporter's own state."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).parts[0] != ".lightspeed-exporter"
    )


async def test_upstream_config_and_flags_ship_the_upstream_files_byte_for_byte(
    tmp_path: Path, ingress: Ingress
) -> None:
    data = tmp_path / "data"
    expected = upstream_layout(data)
    (data / "logs").mkdir()
    (data / "logs" / "debug.json").write_text("{}")  # not an allowed subdirectory
    old(data / "logs" / "debug.json")
    config = upstream_config(tmp_path, ingress.url)

    code, out, err = await run_exporter(
        "--mode", "manual", "--config", str(config), "--data-dir", str(data),
        "--collection-interval", "0", "--log-level", "DEBUG",
        env={"INGRESS_SERVER_AUTH_TOKEN": TOKEN},
    )  # fmt: skip

    assert code == 0, err
    assert ingress.members() == {name: [body] for name, body in expected.items()}
    [upload] = ingress.emulator.uploads
    assert upload["service"] == "lightspeed-test"
    assert upload["user_agent"] == "openshift-lightspeed-operator/user-data-collection cluster/lightspeed-exporter"
    # Sent files are gone, and the folders they emptied below the top-level ones; the rest stays.
    assert files(data) == ["logs/debug.json"]
    assert sorted(p.name for p in data.iterdir()) == [".lightspeed-exporter", "feedback", "logs", "transcripts"]
    assert list((data / "transcripts").iterdir()) == []
    # Our state is where no *.json glob sees it.
    assert [p for p in data.rglob("*.json")] == [data / "logs" / "debug.json"]
    assert TOKEN not in out + err


async def test_files_are_deleted_only_after_a_202(tmp_path: Path, ingress: Ingress) -> None:
    data = tmp_path / "data"
    expected = upstream_layout(data, n_feedback=2, n_transcripts=1)
    config = upstream_config(tmp_path, ingress.url, ingress_server_auth_token=TOKEN, data_dir=str(data))
    ingress.emulator.add_fault(Fault(status=503))

    code, _, err = await run_exporter("--config", str(config), "--collection-interval", "0")
    assert code == 1
    assert "503" in err
    assert sorted(files(data)) == sorted(expected)  # a failed upload deletes nothing

    code, _, err = await run_exporter("--config", str(config), "--collection-interval", "0")
    assert code == 0, err
    assert files(data) == []
    assert ingress.members() == {name: [body] for name, body in expected.items()}


async def test_no_cleanup_keeps_files_and_never_sends_them_twice_unless_they_change(
    tmp_path: Path, ingress: Ingress
) -> None:
    data = tmp_path / "data"
    expected = upstream_layout(data, n_feedback=2, n_transcripts=0)
    config = upstream_config(tmp_path, ingress.url, ingress_server_auth_token=TOKEN, data_dir=str(data))
    for _ in range(2):
        code, _, err = await run_exporter("--config", str(config), "--collection-interval", "0", "--no-cleanup")
        assert code == 0, err
    assert sorted(files(data)) == sorted(expected)
    assert len(ingress.emulator.uploads) == 1
    # A file rewritten in place is a new version: sent again.
    name = sorted(expected)[0]
    (data / name).write_bytes(b'{"rewritten": true}')
    old(data / name, 30)
    code, _, err = await run_exporter("--config", str(config), "--collection-interval", "0", "--no-cleanup")
    assert code == 0, err
    assert ingress.members()[name] == [expected[name], b'{"rewritten": true}']


async def test_files_being_written_in_place_wait_for_the_settle_time(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "feedback").mkdir(parents=True)
    fresh = data / "feedback" / "fresh.json"
    fresh.write_text('{"complete": true}')  # just written: may still grow
    half = data / "feedback" / "half.json"
    half.write_text('{"user_question": "what is')  # the writer died mid-write
    old(half)
    done = data / "feedback" / "done.json"
    done.write_text('{"complete": true}')
    old(done)
    source = DirectorySource(
        data_dir=data, collection=parse_exporter_settings(data).config.user_data_collection, settle_seconds=2
    )
    await source.open()
    try:
        claim = await claim_all(source)
        assert [r.name for r in claim.records] == ["feedback/done.json"]
        await source.release(claim)
        old(fresh, 3)  # settled now
        claim = await claim_all(source)
        assert sorted(r.name for r in claim.records) == ["feedback/done.json", "feedback/fresh.json"]
        await source.release(claim)
    finally:
        await source.aclose()
    assert half.exists()  # never deleted, never sent


async def test_a_file_rewritten_after_its_claim_is_neither_sent_in_its_new_form_nor_deleted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "feedback").mkdir(parents=True)
    path = data / "feedback" / "a.json"
    path.write_text('{"v": 1}')
    old(path)
    source = DirectorySource(
        data_dir=data, collection=parse_exporter_settings(data).config.user_data_collection, settle_seconds=1
    )
    await source.open()
    try:
        claim = await claim_all(source)
        [record] = claim.records
        path.write_text('{"v": 2, "longer": true}')  # the writer changed it after we looked
        assert await source.read_many([record]) == [None]
        await source.ack(claim, records=[record], delete=True)
        assert path.read_text() == '{"v": 2, "longer": true}'  # not deleted: that version was never sent
        old(path)
        again = await claim_all(source)
        assert [r.name for r in again.records] == ["feedback/a.json"]
        assert await source.read_many(again.records) == [b'{"v": 2, "longer": true}']
        await source.ack(again, delete=True)
        assert not path.exists()
    finally:
        await source.aclose()


async def test_two_exporters_on_one_volume_never_claim_the_same_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    upstream_layout(data, n_feedback=6, n_transcripts=4)
    collection = parse_exporter_settings(data).config.user_data_collection
    a = DirectorySource(data_dir=data, collection=collection, settle_seconds=1)
    b = DirectorySource(data_dir=data, collection=collection, settle_seconds=1)
    await a.open()
    await b.open()
    try:
        first = await a.claim(owner="a", kinds=_kinds(), max_records=5, max_bytes=10**6, lease_seconds=30)
        second = await b.claim(owner="b", kinds=_kinds(), max_records=50, max_bytes=10**6, lease_seconds=30)
        assert len(first.records) == 5 and len(second.records) == 5
        assert not {r.name for r in first.records} & {r.name for r in second.records}
        stats = await a.pending_stats()
        assert sum(stats.records.values()) == 10
    finally:
        await a.aclose()
        await b.aclose()


def _kinds() -> tuple[Any, ...]:
    from lightspeed.records import RecordKind

    return tuple(RecordKind)


async def claim_all(source: DirectorySource) -> Claim:
    return await source.claim(owner="t", kinds=_kinds(), max_records=100, max_bytes=10**6, lease_seconds=30)


def parse_exporter_settings(data: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    base = ["--data-dir", str(data), "--service-id", "svc", "--ingress-server-url", "http://127.0.0.1:9/u"]
    settings, _ = parse_exporter_args([*base, *args], env={"INGRESS_SERVER_AUTH_TOKEN": "t", **(env or {})})
    return settings


# --------------------------------------------------------------------------- settings


def test_precedence_is_the_upstreams(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(data),
                "service_id": "from-file",
                "ingress_server_url": "http://127.0.0.1:9/file",
                "ingress_server_auth_token": "file-token",
                "identity_id": "file-identity",
                "collection_interval": 60,
                "retry_interval": 42,
                "log_level": "debug",
                "allowed_subdirs": ["feedback"],
            }
        )
    )
    s, printing = parse_exporter_args(["--config", str(config)], env={})
    assert not printing
    assert (s.service_id, s.ingress_server_auth_token, s.identity_id) == ("from-file", "file-token", "file-identity")
    assert (s.collection_interval, s.retry_interval, s.log_level, s.allowed_subdirs) == (60, 42, "DEBUG", ("feedback",))
    assert s.cleanup_after_send is True and s.ingress_connection_timeout == 30

    env_wins, _ = parse_exporter_args(["--config", str(config)], env={"INGRESS_SERVER_AUTH_TOKEN": "env-token"})
    assert env_wins.ingress_server_auth_token == "env-token"

    flags, _ = parse_exporter_args(
        [
            "--config", str(config), "--service-id", "from-flag", "--ingress-server-auth-token", "flag-token",
            "--identity-id", "flag-identity", "--collection-interval", "0", "--retry-interval", "7",
            "--no-cleanup", "--allowed-subdirs", "a", "b", "--log-level", "WARNING",
        ],
        env={"INGRESS_SERVER_AUTH_TOKEN": "env-token"},
    )  # fmt: skip
    assert (flags.service_id, flags.ingress_server_auth_token, flags.identity_id) == (
        "from-flag",
        "flag-token",
        "flag-identity",
    )
    assert flags.one_shot and flags.cleanup_after_send is False and flags.allowed_subdirs == ("a", "b")
    dc = flags.config.user_data_collection.data_collector
    assert dc.retry_max_seconds == 7  # --retry-interval: the ceiling of our backoff
    assert (dc.ingress_content_service_name, dc.cleanup_after_send, dc.identity_id) == (
        "from-flag",
        False,
        "flag-identity",
    )
    assert flags.config.service.log_level == "warning"


def test_modes_map_to_credential_providers(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    osh = parse_exporter_settings(data, "--mode", "openshift", "--identity-id", "ignored")
    dc = osh.config.user_data_collection.data_collector
    assert dc.auth.mode == "openshift" and dc.identity_id is None and dc.ingress_server_auth_token is None

    sso = parse_exporter_settings(
        data, "--mode", "sso", env={"CLIENT_ID": "env-id", "CLIENT_SECRET": "env-secret", "USE_SSO_STAGE": ""}
    )
    auth = sso.config.user_data_collection.data_collector.auth
    assert (auth.mode, auth.client_id, auth.client_secret, auth.sso_stage) == ("sso", "env-id", "env-secret", True)
    flag = parse_exporter_settings(
        data, "--mode", "sso", "--client-id", "flag-id", "--client-secret", "s", env={"CLIENT_ID": "env-id"}
    )
    assert flag.config.user_data_collection.data_collector.auth.client_id == "flag-id"
    assert flag.config.user_data_collection.data_collector.auth.sso_stage is False


def test_problems_are_listed_in_the_exporters_own_terms(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"collection_intervall": 5, "service_id": "Bad_Name", "retry_interval": "5"}))
    with pytest.raises(ConfigError) as info:
        parse_exporter_args(["--config", str(config)], env={})
    assert info.value.problems[0].startswith("collection_intervall: unknown key")

    config.write_text(yaml.safe_dump({"service_id": "Bad_Name", "retry_interval": "5", "data_dir": str(tmp_path)}))
    with pytest.raises(ConfigError) as info:
        parse_exporter_args(["--config", str(config), "--mode", "sso"], env={})
    problems = info.value.problems
    assert "retry_interval: expected an integer, got '5'" in problems
    assert "ingress_server_url: required (--ingress-server-url or ingress_server_url in the file)" in problems
    assert "client_id: required in sso mode (--client-id or $CLIENT_ID)" in problems

    config.write_text(yaml.safe_dump({"service_id": "Bad_Name", "data_dir": str(tmp_path)}))
    with pytest.raises(ConfigError) as info:
        parse_exporter_args(
            ["--config", str(config), "--ingress-server-url", "http://h/u"], env={"INGRESS_SERVER_AUTH_TOKEN": "t"}
        )
    assert any(p.startswith("service_id: must match [a-z0-9-]+") for p in info.value.problems)


def test_print_config_and_exit_masks_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.delenv("INGRESS_SERVER_AUTH_TOKEN", raising=False)
    code = exporter_main(
        [
            "--data-dir", str(data), "--service-id", "svc", "--ingress-server-url", "http://127.0.0.1:9/u",
            "--ingress-server-auth-token", "very-secret-token", "--print-config-and-exit",
        ]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    printed = json.loads(out)
    assert "very-secret-token" not in out
    assert printed["ingress_server_auth_token"] == MASK
    assert printed["data_dir"] == str(data) and printed["collection_interval"] == 7200
    assert printed["state_dir"] == str(data / ".lightspeed-exporter")


async def test_probes_serve_metrics_and_credentials_status(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    settings = parse_exporter_settings(data)
    source = DirectorySource(data_dir=data, collection=settings.config.user_data_collection)
    await source.open()
    metrics = Metrics()
    status = CollectorStatus(enabled=True)
    from lightspeed.collector.credentials import ManualProvider

    provider = ManualProvider(config=settings.config.user_data_collection.data_collector, metrics=metrics.collector)
    status.credentials = provider.status
    await provider.get()
    client = TestClient(TestServer(make_probe_app(source=source, status=status, metrics=metrics), host="127.0.0.1"))
    await client.start_server()
    try:
        text = await (await client.get("/metrics")).text()
        assert 'lightspeed_credentials_available{mode="manual"} 1.0' in text
        assert "lightspeed_uploads_total" in text
        ready = await client.get("/readiness")
        body = await ready.json()
        assert ready.status == 200 and body["data_collector"]["credentials"]["status"] == "ok"
        assert (await client.get("/liveness")).status == 200
    finally:
        await client.close()
        await source.aclose()


async def test_the_sidecar_loop_serves_metrics_and_collects_once_more_on_sigterm(
    tmp_path: Path, ingress: Ingress
) -> None:
    import signal
    import socket

    import aiohttp

    data = tmp_path / "data"
    first = upstream_layout(data, n_feedback=2, n_transcripts=1)
    config = upstream_config(tmp_path, ingress.url, ingress_server_auth_token=TOKEN, data_dir=str(data))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lightspeed", "exporter", "--config", str(config), "--settle-seconds", "0.2",
        "--metrics-port", str(port), "--metrics-host", "127.0.0.1",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        metrics = ""
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                        metrics = await resp.text()
                except aiohttp.ClientError:
                    metrics = ""
                if 'lightspeed_records_uploaded_total{kind="feedback"} 2.0' in metrics:
                    break
                await asyncio.sleep(0.05)
            assert 'lightspeed_uploads_total{outcome="success"} 1.0' in metrics
            assert 'lightspeed_credentials_available{mode="manual"} 1.0' in metrics
            async with session.get(f"http://127.0.0.1:{port}/readiness") as resp:
                assert resp.status == 200
                assert (await resp.json())["data_collector"]["status"] == "ok"
        # Written while it waits for the next interval: shipped by the final collection on SIGTERM.
        late = data / "feedback" / "late.json"
        late.write_text('{"late": true}')
        old(late)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert ingress.members() == {**{n: [b] for n, b in first.items()}, "feedback/late.json": [b'{"late": true}']}
    assert files(data) == []
