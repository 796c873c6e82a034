"""A local stand-in for Red Hat's insights ingress, for trying the data collector out.

``lightspeed ingress`` (or ``python -m lightspeed.ingress``) listens on 127.0.0.1 and
enforces the upload contract as the real ingress does: ``POST /api/ingress/v1/upload``,
``multipart/form-data`` with one part named ``file`` whose content type matches
``application/vnd.redhat.{service}.{category}...`` (else 415, empty body), at most
100 MiB (else 413), and, when a token is required, ``Authorization: Bearer {token}``
(else 401). Accepted uploads are stored as ``{request_id}.tar.gz`` in a directory, listed
in ``uploads.jsonl`` beside them, and answered with 202 and
``{"request_id": ..., "upload": {...}}`` labelled ``text/plain``, as the real one does.

It can be told to fail, for testing: each *fault* answers one upload (or every upload,
with ``repeat``) with a status code, a ``Retry-After`` header, a delay, or a connection
reset in the middle of the upload; or it accepts and stores the upload and only then waits
(``delay_after_store``), so a client whose timeout is shorter gives up on an upload the
ingress has, and sends it again: the duplicate that at-least-once delivery allows.
Faults come from the command line (``--fail 503``) or from the control endpoint::

    curl -X POST localhost:8000/control -d '{"faults": [{"status": 503, "retry_after": "2"}]}'
    curl localhost:8000/control            # the faults left and every upload received
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import re
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import attrs
from aiohttp import BodyPartReader, web

__all__ = ["DEFAULT_MAX_BYTES", "UPLOAD_PATH", "Fault", "IngressEmulator", "main"]

log = logging.getLogger("lightspeed.ingress")

UPLOAD_PATH: Final = "/api/ingress/v1/upload"
DEFAULT_MAX_BYTES: Final = 100 * 1024 * 1024
_CONTENT_TYPE_RE: Final = re.compile(r"application/vnd\.redhat\.([a-z0-9-]+)\.([a-z0-9-]+).*")
_CHUNK: Final = 256 * 1024


@attrs.frozen(kw_only=True)
class Fault:
    """How to answer one upload instead of accepting it."""

    status: int | None = None
    retry_after: str | None = None
    #: Seconds to wait before answering (a client with a shorter timeout gives up).
    delay: float = 0.0
    #: Accept and store the upload, then wait this many seconds before answering 202.
    delay_after_store: float = 0.0
    #: Read part of the upload, then drop the connection.
    reset: bool = False
    body: str | None = None
    #: Answer every upload this way until the faults are cleared.
    repeat: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fault:
        unknown = set(data) - {a.name for a in attrs.fields(cls)}
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        status = data.get("status")
        if status is not None and not (isinstance(status, int) and 100 <= status <= 599):
            raise ValueError(f"status must be an HTTP status code, got {status!r}")
        retry_after = data.get("retry_after")
        delay = _seconds(data, "delay")
        delay_after_store = _seconds(data, "delay_after_store")
        if delay_after_store and (status is not None or data.get("reset")):
            raise ValueError("delay_after_store accepts the upload: it goes without status and reset")
        return cls(
            status=status,
            retry_after=None if retry_after is None else str(retry_after),
            delay=delay,
            delay_after_store=delay_after_store,
            reset=bool(data.get("reset", False)),
            body=data.get("body"),
            repeat=bool(data.get("repeat", False)),
        )


def _seconds(data: dict[str, Any], key: str) -> float:
    value = data.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 3600:
        raise ValueError(f"{key} must be a number of seconds from 0 to 3600, got {value!r}")
    return float(value)


@attrs.define(kw_only=True, eq=False)
class IngressEmulator:
    """The emulator's state and its aiohttp application (:meth:`make_app`)."""

    store: Path
    token: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    faults: collections.deque[Fault] = attrs.field(factory=collections.deque)
    #: Every accepted upload: request_id, file, size, user_agent, service, received_at.
    uploads: list[dict[str, Any]] = attrs.field(factory=list)
    #: Every upload attempt, accepted or not: status (None for a reset) and time.
    attempts: list[dict[str, Any]] = attrs.field(factory=list)

    def make_app(self) -> web.Application:
        self.store.mkdir(parents=True, exist_ok=True)
        app = web.Application()
        app.router.add_post(UPLOAD_PATH, self.handle_upload)
        app.router.add_get("/control", self.handle_get_control)
        app.router.add_post("/control", self.handle_post_control)
        return app

    def add_fault(self, fault: Fault) -> None:
        self.faults.append(fault)

    def _next_fault(self) -> Fault | None:
        if not self.faults:
            return None
        fault = self.faults[0]
        if not fault.repeat:
            self.faults.popleft()
        return fault

    def _attempt(self, request: web.Request, status: int | None) -> None:
        self.attempts.append({"status": status, "at": time.time(), "user_agent": request.headers.get("User-Agent", "")})

    def _answer(
        self, request: web.Request, status: int, text: str = "", headers: dict[str, str] | None = None
    ) -> web.Response:
        self._attempt(request, status)
        log.info("upload answered %d%s", status, f": {text}" if text else "")
        return web.Response(status=status, text=text, headers=headers)

    async def handle_upload(self, request: web.Request) -> web.StreamResponse:
        fault = self._next_fault()
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.reset:
                with contextlib.suppress(Exception):
                    await request.content.read(1024)
                self._attempt(request, None)
                log.info("upload: connection reset on purpose")
                assert request.transport is not None
                request.transport.abort()
                return web.Response(status=500)  # never sent: the connection is gone
            if fault.status is not None:
                await request.read()
                headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
                return self._answer(request, fault.status, fault.body or "", headers)
        length = request.content_length
        if length is not None and length > self.max_bytes + 64 * 1024:
            return self._answer(request, 413, "Payload too large")
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._answer(request, 401, '{"errors":[{"status":401,"detail":"Unauthorized"}]}')
        if request.content_type != "multipart/form-data":
            return self._answer(request, 400, "Unable to parse multipart form: not multipart/form-data")
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                return self._answer(request, 400, "File or data is missing: no part named 'file'")
            if isinstance(part, BodyPartReader) and part.name == "file":
                break
            await part.release()
        ctype = part.headers.get("Content-Type", "")
        match = _CONTENT_TYPE_RE.fullmatch(ctype)
        if match is None:
            return self._answer(request, 415)
        request_id = uuid.uuid4().hex
        path = self.store / f"{request_id}.tar.gz"
        size = 0
        with path.open("wb") as fh:
            while chunk := await part.read_chunk(_CHUNK):
                size += len(chunk)
                if size > self.max_bytes:
                    break
                fh.write(chunk)
        if size > self.max_bytes:
            path.unlink()
            return self._answer(request, 413, "Payload too large")
        entry = {
            "request_id": request_id,
            "file": path.name,
            "filename": part.filename,
            "size": size,
            "service": match.group(1),
            "content_type": ctype,
            "user_agent": request.headers.get("User-Agent", ""),
            "received_at": time.time(),
        }
        with (self.store / "uploads.jsonl").open("a", encoding="utf-8") as log_fh:
            log_fh.write(json.dumps(entry) + "\n")
        self.uploads.append(entry)
        body = json.dumps({"request_id": request_id, "upload": {"account_number": "0000000", "org_id": "0000000"}})
        if fault is not None and fault.delay_after_store:
            log.info("upload %s stored; answering in %g s", request_id, fault.delay_after_store)
            await asyncio.sleep(fault.delay_after_store)
        return self._answer(request, 202, body)

    async def handle_get_control(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"faults": [attrs.asdict(f) for f in self.faults], "uploads": self.uploads, "attempts": self.attempts}
        )

    async def handle_post_control(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            if data.get("clear"):
                self.faults.clear()
            faults = [Fault.from_dict(f) for f in data.get("faults", [])]
            if "token" in data:
                self.token = data["token"]
        except (ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.faults.extend(faults)
        return web.json_response({"faults": [attrs.asdict(f) for f in self.faults]})


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lightspeed ingress",
        description=f"A local stand-in for Red Hat's ingress: POST archives to http://HOST:PORT{UPLOAD_PATH}.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000; 0 picks a free one)")
    p.add_argument("--store", default="ingress-uploads", help="directory for received archives (default: %(default)s)")
    p.add_argument("--token", help="require Authorization: Bearer TOKEN (otherwise any or no token is accepted)")
    p.add_argument(
        "--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help="largest accepted archive (default 100 MiB)"
    )
    p.add_argument(
        "--fail",
        type=int,
        action="append",
        default=[],
        metavar="STATUS",
        help="answer the next upload with STATUS (repeatable, in order)",
    )
    p.add_argument("--fail-always", type=int, metavar="STATUS", help="answer every upload with STATUS")
    p.add_argument("--retry-after", help="Retry-After header sent with --fail/--fail-always answers")
    p.add_argument("--delay", type=float, default=0.0, help="seconds to wait before each --fail answer")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)-7s %(name)s %(message)s", stream=sys.stderr)
    emulator = IngressEmulator(store=Path(args.store), token=args.token, max_bytes=args.max_bytes)
    for status in args.fail:
        emulator.add_fault(Fault(status=status, retry_after=args.retry_after, delay=args.delay))
    if args.fail_always is not None:
        emulator.add_fault(Fault(status=args.fail_always, retry_after=args.retry_after, delay=args.delay, repeat=True))
    asyncio.run(_serve(emulator.make_app(), args.host, args.port, emulator))
    return 0


async def _serve(app: web.Application, host: str, port: int, emulator: IngressEmulator) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    # One line on stdout once listening, with the real port (useful with --port 0).
    print(f"ingress listening on http://{host}:{bound}{UPLOAD_PATH} (storing uploads in {emulator.store})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
