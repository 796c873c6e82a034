"""A zygote for collector processes: imports everything once, then forks a collector per command.

Forking from a warm process makes a new collector start in milliseconds, so a test can
kill dozens of them at random points. Protocol on stdin/stdout, one line each:

``spawn {json}`` -> ``{pid}``: a child runs a collector (see :func:`child`).
``wait {pid}``  -> ``{pid} {status}``: reap a child (status as os.waitpid gives it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from typing import Any

import aiohttp
import attrs

from lightspeed.collector import Collector, CollectorTask, IngressClient
from lightspeed.config import parse_config
from lightspeed.storage.filesystem import FilesystemStorage


async def run(spec: dict[str, Any]) -> None:
    config = parse_config({"user_data_collection": spec["udc"]}, env={})
    udc = config.user_data_collection
    udc = attrs.evolve(udc, data_collector=attrs.evolve(udc.data_collector, identity_id=spec["identity"]))
    storage = FilesystemStorage(options=udc.storage.options, collection=udc)
    async with storage, aiohttp.ClientSession() as session:
        collector = Collector(
            storage=storage,
            collection=udc,
            uploader=IngressClient(session=session, config=udc.data_collector),
            batch_records=int(spec.get("batch", 20_000)),
            tmp_dir=spec.get("spool"),
        )
        if spec["mode"] == "busy":  # cycle back to back until killed
            while True:
                report = await collector.run_once()
                if report.records == 0:
                    await asyncio.sleep(0.01)
        task = CollectorTask(collector=collector, shutdown_timeout=udc.data_collector.shutdown_timeout_seconds)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        task.start()
        await stop.wait()
        await task.stop()


def child(spec: dict[str, Any]) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    logging.basicConfig(level="WARNING", stream=sys.stderr, format=f"%(asctime)s {spec['identity']} %(message)s")
    asyncio.run(run(spec))


def main() -> None:
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "spawn":
            spec = json.loads(arg)
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    child(spec)
                except BaseException:
                    logging.exception("collector child failed")
                    code = 1
                finally:
                    os._exit(code)
            print(pid, flush=True)
        elif cmd == "wait":
            pid, status = os.waitpid(int(arg), 0)
            print(f"{pid} {status}", flush=True)


if __name__ == "__main__":
    main()
