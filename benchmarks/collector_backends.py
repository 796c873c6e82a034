"""Collector throughput on each storage backend: records per second of one collection cycle.

For each backend (default filesystem, sqlite, postgres) and each size (default 10,000
records: half feedback of about 400 B, half transcripts of about 2 KB), in a fresh
temporary directory that it removes afterwards, this script:

1. stores the records through the storage interface (not timed);
2. starts the local ingress (``python -m lightspeed.ingress``) in its own process;
3. runs ``python -m lightspeed collect --once`` and times the whole process (claim, read,
   archive, upload over loopback, ack with deletion), with its peak RSS;
4. checks that every record arrived exactly once and that nothing is left pending.

PostgreSQL is a throwaway server started for the run (``lightspeed_storage_postgres.testing``).
Run from the repository root::

    .venv/bin/python benchmarks/collector_backends.py [--records 10000] [--backends filesystem,sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from lightspeed.config import parse_config
from lightspeed.records import FeedbackRecord, Transcript, TranscriptMetadata, hash_user_id
from lightspeed.storage import create_backend

BACKENDS = ("filesystem", "sqlite", "postgres")


def records(n: int, rnd: random.Random) -> list[FeedbackRecord | Transcript]:
    words = ["".join(rnd.choices("abcdefghijklmnopqrstuvwxyz", k=rnd.randint(2, 10))) for _ in range(2000)]

    def text(length: int) -> str:
        return " ".join(rnd.choices(words, k=length // 6))[:length]

    out: list[FeedbackRecord | Transcript] = []
    users = [hash_user_id(f"user-{i}") for i in range(20)]
    convs = [str(uuid.uuid4()) for _ in range(200)]
    for i in range(n):
        if i % 2:
            out.append(
                FeedbackRecord(
                    user_id=users[i % 20],
                    conversation_id=convs[i % 200],
                    user_question=text(80),
                    llm_response=text(200),
                    sentiment=1,
                    user_feedback=text(40),
                )
            )
        else:
            meta = TranscriptMetadata(
                provider="echo",
                model="echo",
                query_provider=None,
                query_model=None,
                user_id=users[i % 20],
                conversation_id=convs[i % 200],
            )
            out.append(Transcript(metadata=meta, redacted_query=text(120), llm_response=text(1600)))
    return out


def storage_section(backend: str, root: Path, dsn: str | None) -> dict[str, Any]:
    if backend == "sqlite":
        return {"backend": "sqlite", "options": {"path": str(root / "store.db")}}
    if backend == "postgres":
        return {"backend": "postgres", "options": {"dsn": dsn, "schema": "bench_" + uuid.uuid4().hex[:12]}}
    return {"backend": "filesystem", "options": {"state_path": str(root / "state")}}


async def fill(config: dict[str, Any], items: list[FeedbackRecord | Transcript]) -> int:
    storage = create_backend(parse_config(config, env={}).user_data_collection)
    async with storage:
        total = 0
        for start in range(0, len(items), 200):
            stored = await asyncio.gather(*(storage.put(r) for r in items[start : start + 200]))
            total += sum(s.size for s in stored)
        return total


async def pending(config: dict[str, Any]) -> int:
    storage = create_backend(parse_config(config, env={}).user_data_collection)
    async with storage:
        return sum((await storage.pending_stats()).records.values())


def run_child(cmd: list[str]) -> tuple[float, float, int]:
    """Run cmd; return (wall seconds, peak RSS in MB, exit status)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - started, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def bench(backend: str, n: int, dsn: str | None, base: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="lightspeed-bench-", dir=base) as tmp:
        root = Path(tmp)
        store = root / "ingress"
        ingress = subprocess.Popen(
            [sys.executable, "-m", "lightspeed.ingress", "--port", "0", "--store", str(store)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert ingress.stdout is not None
            url = re.search(r"http://\S+", ingress.stdout.readline())
            assert url, "the ingress did not say where it listens"
            config = {
                "service": {"log_level": "warning"},
                "user_data_collection": {
                    "feedback_enabled": True,
                    "feedback_storage": str(root / "data" / "feedback"),
                    "transcripts_enabled": True,
                    "transcripts_storage": str(root / "data" / "transcripts"),
                    "storage": storage_section(backend, root, dsn),
                    "data_collector": {
                        "ingress_server_url": url.group(0),
                        "ingress_server_auth_token": "bench",
                        "ingress_content_service_name": "lightspeed-bench",
                    },
                },
            }
            raw = asyncio.run(fill(config, records(n, random.Random(n))))
            cfg = root / "config.yaml"
            cfg.write_text(yaml.safe_dump(config))
            seconds, rss, code = run_child([sys.executable, "-m", "lightspeed", "collect", "--once", "-c", str(cfg)])
            assert code == 0, f"collect exited {code}"
            left = asyncio.run(pending(config))
        finally:
            ingress.send_signal(signal.SIGINT)
            ingress.wait(30)
        names: list[str] = []
        for line in (store / "uploads.jsonl").read_text().splitlines():
            with tarfile.open(store / json.loads(line)["file"], "r:gz") as tar:
                names += tar.getnames()
        assert len(names) == len(set(names)) == n and left == 0, (len(names), len(set(names)), n, left)
    print(
        f"  {backend:<11} {n:>7} records {raw / 1e6:6.1f} MB  collect --once {seconds:6.2f} s"
        f"  {n / seconds:8.0f} rec/s  {raw / 1e6 / seconds:6.1f} MB/s  peak RSS {rss:6.1f} MB",
        flush=True,
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, nargs="+", default=[10_000])
    p.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated, from {', '.join(BACKENDS)}")
    p.add_argument("--dir", help="where to make the temporary data (default: the system temp dir)")
    args = p.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    if set(backends) - set(BACKENDS):
        p.error(f"unknown backend(s); choose from {', '.join(BACKENDS)}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    cluster: Any = None
    try:
        if "postgres" in backends:
            from lightspeed_storage_postgres.testing import TemporaryCluster

            cluster = TemporaryCluster().start()
        for n in args.records:
            for backend in backends:
                bench(backend, n, cluster.dsn if cluster else None, args.dir)
    finally:
        if cluster is not None:
            cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
