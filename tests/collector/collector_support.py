"""Fixtures for the collector tests: the real ingress emulator on 127.0.0.1, a store with
records, and a reader of what arrived."""

from __future__ import annotations

import os
import random
import tarfile
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from lightspeed.collector import Collector, IngressClient
from lightspeed.config import Config, parse_config
from lightspeed.ingress import UPLOAD_PATH, IngressEmulator
from lightspeed.metrics import Metrics
from lightspeed.records import FeedbackRecord, Transcript, hash_user_id
from lightspeed.storage.filesystem import FilesystemStorage
from lightspeed.testing import make_feedback, make_transcript


class Ingress:
    """A running emulator: ``url`` to upload to, ``emulator`` to inspect and steer."""

    def __init__(self, emulator: IngressEmulator, server: TestServer) -> None:
        self.emulator = emulator
        self.server = server

    @property
    def url(self) -> str:
        return str(self.server.make_url(UPLOAD_PATH))

    def received(self) -> dict[str, list[bytes]]:
        return received(self.emulator.store, self.emulator.uploads)


def received(store: Path, uploads: list[dict[str, Any]]) -> dict[str, list[bytes]]:
    """Every member of every accepted archive: name -> the contents, once per arrival."""
    out: dict[str, list[bytes]] = defaultdict(list)
    for entry in uploads:
        with tarfile.open(store / entry["file"], "r:gz") as tar:
            for member in tar:
                assert member.isfile(), member.name
                fh = tar.extractfile(member)
                assert fh is not None
                out[member.name].append(fh.read())
    return dict(out)


@pytest.fixture
async def ingress(tmp_path: Path) -> Any:
    emulator = IngressEmulator(store=tmp_path / "ingress")
    server = TestServer(emulator.make_app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield Ingress(emulator, server)
    finally:
        await server.close()


MakeCollectorConfig = Callable[..., Config]


@pytest.fixture
def collector_config(tmp_path: Path, ingress: Ingress) -> MakeCollectorConfig:
    """A Config with storage under tmp_path and the collector pointed at the emulator."""

    def make(udc: dict[str, Any] | None = None, **collector: Any) -> Config:
        dc: dict[str, Any] = {
            "enabled": False,
            "ingress_server_url": ingress.url,
            "ingress_server_auth_token": "secret-token",
            "ingress_content_service_name": "lightspeed-test",
            "retry_base_seconds": 0.05,
            "connection_timeout_seconds": 5,
        }
        dc.update(collector)
        section: dict[str, Any] = {
            "feedback_enabled": True,
            "feedback_storage": str(tmp_path / "data" / "feedback"),
            "transcripts_enabled": True,
            "transcripts_storage": str(tmp_path / "data" / "transcripts"),
            "data_collector": dc,
        }
        section.update(udc or {})
        return parse_config({"user_data_collection": section}, env={})

    return make


def feedback(i: int = 0, size: int = 0) -> FeedbackRecord:
    """Feedback number ``i`` (of one of three users), its answer padded by ``size`` bytes."""
    return make_feedback(
        user_id=hash_user_id(f"user-{i % 3}"),
        user_question=f"question {i}?",
        llm_response="answer " + "x" * size,
        user_feedback=f"feedback {i} \u00e9",
        categories=(),
    )


def transcript(i: int = 0, *, user: str | None = None, conversation: str | None = None) -> Transcript:
    """Transcript number ``i`` (of one of three users unless ``user``), in a new conversation
    unless ``conversation``."""
    return make_transcript(
        user=user or hash_user_id(f"user-{i % 3}"),
        conversation_id=conversation,
        redacted_query=f"what is {i}?",
        llm_response=f"it is {i} " + "\u2603" * (i % 7),
    )


async def store_records(storage: FilesystemStorage, n_feedback: int, n_transcripts: int) -> dict[str, bytes]:
    """Write records; return archive name -> the exact stored bytes."""
    out: dict[str, bytes] = {}
    convs = [str(uuid.uuid4()) for _ in range(4)]
    for i in range(n_feedback):
        rec = feedback(i)
        stored = await storage.put(rec)
        out[stored.name] = rec.to_json()
    for i in range(n_transcripts):
        t = transcript(i, conversation=convs[i % len(convs)])
        stored = await storage.put(t)
        out[stored.name] = t.to_json()
    return out


def random_text(n: int, seed: int = 0) -> str:
    """Text that barely compresses."""
    rnd = random.Random(seed)
    return "".join(rnd.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(n))


def tree_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def tree_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_dir()) if root.exists() else []


class Harness:
    """A storage, a client session and a collector on one config (all closed by the fixture)."""

    def __init__(self, config: Config, storage: FilesystemStorage, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.storage = storage
        self.session = session
        self.metrics = Metrics()
        udc = config.user_data_collection
        self.collector = Collector(
            storage=storage,
            collection=udc,
            uploader=IngressClient(session=session, config=udc.data_collector),
            metrics=self.metrics.collector,
        )
        self.feedback_root = Path(str(udc.feedback_storage))
        self.transcripts_root = Path(str(udc.transcripts_storage))

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels or None)
        return 0.0 if value is None else value


MakeHarness = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def harness(collector_config: MakeCollectorConfig) -> Any:
    opened: list[tuple[FilesystemStorage, aiohttp.ClientSession]] = []

    async def make(udc: dict[str, Any] | None = None, **collector: Any) -> Harness:
        config = collector_config(udc, **collector)
        udc_cfg = config.user_data_collection
        storage = FilesystemStorage(options=udc_cfg.storage.options, collection=udc_cfg)
        await storage.open()
        session = aiohttp.ClientSession()
        opened.append((storage, session))
        return Harness(config, storage, session)

    yield make
    for storage, session in opened:
        await session.close()
        await storage.aclose()


def chmod_tree_readable(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for f in files:
            os.chmod(os.path.join(dirpath, f), 0o644)
