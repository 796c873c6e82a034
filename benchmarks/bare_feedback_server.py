"""The reference servers of the feedback benchmark: one aiohttp handler, no framework of ours.

``POST /v1/feedback`` reads the body, parses it as JSON, serialises it again (as a stored
record would be) and writes it to ``{directory}/{uuid4}.json``; ``GET /health`` answers 200.
``--write`` chooses how the file is written, so the write paths can be compared on equal terms:

``sync``
    ``open``/``write``/``close`` on the event loop itself (it blocks the loop on disk; this is
    the issue's "bare handler", the ceiling every non-blocking path is measured against);
``aiofiles``
    the naive non-blocking path: ``aiofiles.open``/``write``/``close`` per record (three thread
    hops per file);
``executor``
    one ``run_in_executor`` hop per record, doing open/write/close/rename in the worker thread;
``batch``
    one writer thread fed through a queue, writing whatever has queued up in one go and
    settling the waiting requests with one ``call_soon_threadsafe`` per batch (the path
    ``lightspeed.storage.filesystem`` takes).

The ``executor`` and ``batch`` modes write a temporary dot-name and rename it into place, as
the real store does; ``sync`` and ``aiofiles`` write the final name directly, as the issue's
reference handlers did.

Run: ``python benchmarks/bare_feedback_server.py --port 8081 --directory /tmp/fb --write sync``
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import queue
import struct
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import aiofiles
from aiohttp import web

WRITE_MODES = ("sync", "aiofiles", "executor", "batch", "process")

# The writer process of the ``process`` mode: frames (path length, data length, path, data) in
# on stdin; one status byte per frame out on stdout, in order, written once per chunk read.
_CHILD = r"""
import os, struct, sys
HEAD = struct.Struct("!II")
buf = b""
while True:
    chunk = os.read(0, 1 << 20)
    if not chunk:
        break
    buf += chunk
    out = bytearray()
    while len(buf) >= HEAD.size:
        plen, dlen = HEAD.unpack_from(buf)
        end = HEAD.size + plen + dlen
        if len(buf) < end:
            break
        path = buf[HEAD.size : HEAD.size + plen].decode()
        data = buf[HEAD.size + plen : end]
        buf = buf[end:]
        head, _, name = path.rpartition("/")
        tmp = head + "/." + name + ".tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            out += b"\x00"
        except OSError:
            out += b"\x01"
    if out:
        os.write(1, out)
"""


def _dumps(body: object) -> bytes:
    return json.dumps(body, ensure_ascii=False, indent=2).encode("utf-8")


def _write_renamed(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.stem}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class BatchWriter:
    """A minimal copy of the store's writer thread: queue in, one loop wake-up per batch out."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: queue.SimpleQueue[tuple[Path, bytes, asyncio.Future[None]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def submit(self, path: Path, data: bytes) -> asyncio.Future[None]:
        fut = self._loop.create_future()
        self._queue.put((path, data, fut))
        return fut

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            batch = [item]
            while len(batch) < 512:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            done: list[tuple[asyncio.Future[None], BaseException | None]] = []
            for path, data, fut in batch:
                try:
                    _write_renamed(path, data)
                    done.append((fut, None))
                except OSError as exc:
                    done.append((fut, exc))
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_settle, done)


def _settle(done: list[tuple[asyncio.Future[None], BaseException | None]]) -> None:
    for fut, exc in done:
        if fut.done():
            continue
        if exc is None:
            fut.set_result(None)
        else:
            fut.set_exception(exc)


WRITER = web.AppKey("writer", BatchWriter)


class _Acks(asyncio.Protocol):
    def __init__(self, pending: collections.deque[asyncio.Future[None]]) -> None:
        self.pending = pending

    def data_received(self, data: bytes) -> None:
        for status in data:
            fut = self.pending.popleft()
            if not fut.done():
                if status == 0:
                    fut.set_result(None)
                else:
                    fut.set_exception(OSError("the writer process could not write a record"))


class ProcessWriter:
    """A child process that writes the files: no thread in this process competes for the GIL."""

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.proc = subprocess.Popen(  # noqa: ASYNC220 - once, at start-up
            [sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.pending: collections.deque[asyncio.Future[None]] = collections.deque()
        self.out, _ = await loop.connect_write_pipe(asyncio.Protocol, self.proc.stdin)
        await loop.connect_read_pipe(lambda: _Acks(self.pending), self.proc.stdout)

    def submit(self, path: Path, data: bytes) -> asyncio.Future[None]:
        fut = asyncio.get_running_loop().create_future()
        raw = str(path).encode()
        self.pending.append(fut)
        self.out.write(struct.pack("!II", len(raw), len(data)) + raw + data)
        return fut

    def stop(self) -> None:
        self.out.close()
        self.proc.wait()


PROC_WRITER = web.AppKey("proc_writer", ProcessWriter)


def make_app(directory: Path, write: str) -> web.Application:
    directory.mkdir(parents=True, exist_ok=True)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def feedback(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        data = _dumps(body)
        path = directory / f"{uuid.uuid4()}.json"
        if write == "sync":
            with open(path, "wb") as fh:  # noqa: ASYNC230 - blocking on purpose: the reference
                fh.write(data)
        elif write == "aiofiles":
            async with aiofiles.open(path, "wb") as fh:
                await fh.write(data)
        elif write == "executor":
            await asyncio.get_running_loop().run_in_executor(None, _write_renamed, path, data)
        elif write == "batch":
            await asyncio.shield(request.app[WRITER].submit(path, data))
        else:
            await asyncio.shield(request.app[PROC_WRITER].submit(path, data))
        return web.json_response({"response": "feedback received"})

    async def writer_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        if write == "batch":
            app[WRITER] = BatchWriter(asyncio.get_running_loop())
        elif write == "process":
            app[PROC_WRITER] = ProcessWriter()
            await app[PROC_WRITER].start()
        yield
        if write == "batch":
            app[WRITER].stop()
        elif write == "process":
            app[PROC_WRITER].stop()

    app = web.Application()
    app.cleanup_ctx.append(writer_ctx)
    app.router.add_get("/health", health)
    app.router.add_post("/v1/feedback", feedback)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--directory", type=Path, required=True, help="where the records are written")
    parser.add_argument("--write", choices=WRITE_MODES, default="sync", help="how each record is written")
    args = parser.parse_args()
    web.run_app(make_app(args.directory, args.write), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
