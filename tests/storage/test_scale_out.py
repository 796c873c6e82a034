"""Scale-out: three service processes on their own ports share one PostgreSQL store, each with
its collector on, while a load generator posts queries and feedback to all three.

The local ingress must receive every record, byte for byte: exactly once when nothing
fails, at least once when one process is killed with SIGKILL in the middle of the load
(its leases run out and the other collectors take its records over). The PostgreSQL
server is a throwaway one the test starts (``lightspeed_storage_postgres.testing``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
import tarfile
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
import yaml
from aiohttp.test_utils import TestServer, unused_port
from lightspeed_storage_postgres.testing import TemporaryCluster

from lightspeed.ingress import UPLOAD_PATH, Fault, IngressEmulator

SERVICES = 3
QUERIES = 36  # and one feedback for each answered query
LEASE_SECONDS = 2


@pytest.fixture(scope="module")
def postgres() -> Iterator[TemporaryCluster]:
    with TemporaryCluster() as cluster:
        yield cluster


@pytest_asyncio.fixture
async def ingress(tmp_path: Path) -> AsyncIterator[tuple[IngressEmulator, str]]:
    emulator = IngressEmulator(store=tmp_path / "ingress")
    server = TestServer(emulator.make_app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield emulator, str(server.make_url(UPLOAD_PATH))
    finally:
        await server.close()


class Service:
    """One ``lightspeed serve`` process."""

    def __init__(self, index: int, port: int, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.index, self.port, self.proc, self.log = index, port, proc, log
        self.base = f"http://127.0.0.1:{port}"
        self.alive = True


def service_config(index: int, port: int, *, dsn: str, schema: str, ingress_url: str) -> dict[str, Any]:
    return {
        "name": f"scale-{index}",
        "service": {"host": "127.0.0.1", "port": port, "log_level": "warning", "access_log": False},
        "authentication": {"module": "noop"},
        "llm_providers": [{"name": "echo", "type": "echo", "models": ["echo"]}],
        "inference": {"default_provider": "echo", "default_model": "echo"},
        "user_data_collection": {
            "feedback_enabled": True,
            "transcripts_enabled": True,
            "storage": {"backend": "postgres", "options": {"dsn": dsn, "schema": schema, "pool_max_size": 4}},
            "data_collector": {
                "enabled": True,
                "ingress_server_url": ingress_url,
                "ingress_server_auth_token": "token",
                "ingress_content_service_name": "lightspeed-test",
                "identity_id": f"replica-{index}",
                "collection_interval": 1,
                "lease_seconds": LEASE_SECONDS,
                "retry_base_seconds": 0.1,
                "connection_timeout_seconds": 5,
                "shutdown_timeout_seconds": 5,
                # Keep delivered records (marked exported) so the test can compare every byte.
                "cleanup_after_send": False,
            },
        },
    }


async def start_services(tmp_path: Path, *, dsn: str, schema: str, ingress_url: str) -> list[Service]:
    services = []
    for i in range(SERVICES):
        port = unused_port()
        cfg = tmp_path / f"service-{i}.yaml"
        cfg.write_text(yaml.safe_dump(service_config(i, port, dsn=dsn, schema=schema, ingress_url=ingress_url)))
        log = tmp_path / f"service-{i}.log"
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "lightspeed", "serve", "-c", str(cfg), stdout=err, stderr=err
            )
        services.append(Service(i, port, proc, log))
    async with aiohttp.ClientSession() as session:
        for service in services:
            for _ in range(300):
                if service.proc.returncode is not None:
                    pytest.fail(f"service {service.index} exited: {service.log.read_text()[-3000:]}")
                try:
                    async with session.get(f"{service.base}/readiness") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                pytest.fail(f"service {service.index} never became ready: {service.log.read_text()[-3000:]}")
    return services


async def stop_services(services: list[Service]) -> None:
    for service in services:
        if service.proc.returncode is None:
            service.proc.send_signal(signal.SIGTERM)
    for service in services:
        try:
            await asyncio.wait_for(service.proc.wait(), 30)
        except TimeoutError:
            service.proc.kill()
            await service.proc.wait()


class Load:
    """Queries to one replica, feedback on the answer's conversation to the next one."""

    def __init__(self, services: list[Service]) -> None:
        self.services = services
        self.queries_ok = 0
        self.feedback_ok = 0

    def pick(self, i: int) -> Service | None:
        alive = [s for s in self.services if s.alive]
        return alive[i % len(alive)] if alive else None

    async def one(self, session: aiohttp.ClientSession, i: int) -> None:
        user = f"user-{i % 4}"
        target = self.pick(i)
        assert target is not None
        try:
            async with session.post(f"{target.base}/v1/query?user_id={user}", json={"query": f"q{i}?"}) as resp:
                if resp.status != 200:
                    return
                cid = (await resp.json())["conversation_id"]
            self.queries_ok += 1
            other = self.pick(i + 1)
            assert other is not None
            body = {"conversation_id": cid, "user_question": f"q{i}?", "llm_response": "a", "sentiment": 1}
            async with session.post(f"{other.base}/v1/feedback?user_id={user}", json=body) as resp:
                if resp.status == 200:
                    self.feedback_ok += 1
        except aiohttp.ClientError:
            return  # the replica was killed under this request

    async def run(self, session: aiohttp.ClientSession, indices: range) -> None:
        for start in range(indices.start, indices.stop, 6):
            await asyncio.gather(*(self.one(session, i) for i in range(start, min(start + 6, indices.stop))))


def arrivals(emulator: IngressEmulator) -> list[tuple[str, bytes]]:
    """(member name, bytes) for every member of every accepted upload."""
    out = []
    for entry in list(emulator.uploads):
        with tarfile.open(emulator.store / entry["file"], "r:gz") as tar:
            for member in tar:
                fh = tar.extractfile(member)
                assert fh is not None
                out.append((member.name, fh.read()))
    return out


async def stored(dsn: str, schema: str) -> tuple[dict[str, bytes], int]:
    """Every record in the store (name -> bytes) and how many are still pending."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(f'SELECT name, data, state FROM "{schema}".records')
    finally:
        await conn.close()
    return {r["name"]: bytes(r["data"]) for r in rows}, sum(1 for r in rows if r["state"] == "pending")


async def holds_a_claim(dsn: str, schema: str, pid: int) -> bool:
    """Whether the process ``pid``'s collector holds a live lease (its owner names the pid)."""
    conn = await asyncpg.connect(dsn)
    try:
        return bool(
            await conn.fetchval(
                f'SELECT count(*) FROM "{schema}".records WHERE claim_owner LIKE $1 AND lease_until > now()',
                f"%:{pid}:%",
            )
        )
    finally:
        await conn.close()


async def run_scale_out(tmp_path: Path, postgres: TemporaryCluster, ingress: Any, *, kill: bool) -> None:
    emulator, url = ingress
    schema = "scale_" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16]
    services = await start_services(tmp_path, dsn=postgres.dsn, schema=schema, ingress_url=url)
    load = Load(services)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            await load.run(session, range(0, QUERIES // 2))
            if kill:
                # Slow uploads, then keep the load going until the victim's collector holds records
                # in the middle of one: killing it then leaves a lease for the others to take over.
                emulator.add_fault(Fault(delay=0.5, repeat=True))
                victim = services[1]
                extra = QUERIES
                while not await holds_a_claim(postgres.dsn, schema, victim.proc.pid):
                    assert extra < 20 * QUERIES, "the victim's collector never claimed anything"
                    await load.run(session, range(extra, extra + 2))
                    extra += 2
                    await asyncio.sleep(0.05)
                os.kill(victim.proc.pid, signal.SIGKILL)
                victim.alive = False
                await victim.proc.wait()
                emulator.faults.clear()
            await load.run(session, range(QUERIES // 2, QUERIES))
        # Every record reaches the ingress: the dead replica's leases expire and are taken over.
        for _ in range(300):
            records, pending = await stored(postgres.dsn, schema)
            if pending == 0 and set(records) <= {name for name, _ in arrivals(emulator)}:
                break
            await asyncio.sleep(0.1)
    finally:
        await stop_services(services)

    records, pending = await stored(postgres.dsn, schema)
    got = arrivals(emulator)
    logs = "\n".join(s.log.read_text()[-1500:] for s in services)
    assert pending == 0, logs
    kinds = Counter(name.split("/", 1)[0] for name in records)
    if kill:
        assert kinds["feedback"] >= load.feedback_ok and kinds["transcripts"] >= load.queries_ok
    else:
        assert kinds == {"feedback": load.feedback_ok, "transcripts": load.queries_ok}, logs
    assert load.queries_ok >= QUERIES // 2 and load.feedback_ok >= QUERIES // 2
    assert {name for name, _ in got} == set(records), "a stored record never reached the ingress"
    for name, data in got:
        assert data == records[name], f"{name} arrived changed"
    counts = Counter(name for name, _ in got)
    if not kill:
        assert max(counts.values()) == 1, f"uploaded twice: {[n for n, c in counts.items() if c > 1]}"


async def test_three_replicas_deliver_every_record_exactly_once(
    tmp_path: Path, postgres: TemporaryCluster, ingress: Any
) -> None:
    await run_scale_out(tmp_path, postgres, ingress, kill=False)


async def test_a_replica_killed_midway_loses_nothing(tmp_path: Path, postgres: TemporaryCluster, ingress: Any) -> None:
    await run_scale_out(tmp_path, postgres, ingress, kill=True)
