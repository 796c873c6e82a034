"""``POST /v1/streaming_query/interrupt``: stop one of the caller's own streams, on any worker.

Every stream is registered in the store when it starts (its request id and owner) and
marked finished when it ends, so any worker answers an interrupt as the Lightspeed Core
Stack does: 404 for an unknown request id, 403 for another user's, 200 with
``interrupted: false`` for one that already ended, and ``interrupted: true`` after marking it.

The stream itself never asks the store per chunk. Its tokens are pumped by a task of its
own; the worker that runs it cancels that task either at once (the interrupt reached the
same worker) or when its :class:`StreamRegistry` poller sees the mark: one read of the
store per ``poll_seconds`` for all of the worker's running streams together, and none
while the worker streams nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Coroutine
from typing import Any, Final

import attrs
from aiohttp import web

from lightspeed.actions import Action
from lightspeed.api.common import authenticate
from lightspeed.api.errors import ApiError, json_response
from lightspeed.api.openapi import operation
from lightspeed.api.validation import BodyChecker, read_json_body
from lightspeed.auth.routes import requires
from lightspeed.records import hash_user_id
from lightspeed.state import config_from, storage_from, streams_from
from lightspeed.storage import StorageBackend, StorageError, StorageUnreachable, StreamInterrupt

__all__ = [
    "INTERRUPTED_RESPONSE_MESSAGE",
    "ROUTE_ACTIONS",
    "StreamRegistry",
    "add_routes",
    "interrupted_suffix",
]

log = logging.getLogger("lightspeed.api.interrupt")

#: The note after a partial answer, as the upstream stores and streams it.
INTERRUPTED_RESPONSE_MESSAGE: Final = "Response stopped by the user."
#: How long a stream can be interrupted at all (a worker that died mid-stream leaves nothing behind longer).
STREAM_TTL_SECONDS: Final = 6 * 3600.0
#: How long an ended stream still answers ``interrupted: false`` (then 404, as an unknown one).
FINISHED_KEEP_SECONDS: Final = 600.0

_FENCE: Final = re.compile(r"^\s*(```|~~~)", re.M)


def interrupted_suffix(partial: str) -> str:
    """What follows a partial answer: a closing code fence when one is open, then the note."""
    fences = len(_FENCE.findall(partial))
    closing = "\n```" if fences % 2 else ""
    return f"{closing}\n\n*{INTERRUPTED_RESPONSE_MESSAGE}*"


@attrs.define
class _Local:
    owner: str
    task: asyncio.Task[None] | None = None
    interrupted: bool = False


class StreamRegistry:
    """This worker's running streams, and the poller that finds their interrupt marks."""

    def __init__(self, storage: StorageBackend, *, poll_seconds: float = 0.25) -> None:
        self.storage = storage
        self.poll_seconds = poll_seconds
        self._local: dict[str, _Local] = {}
        self._poller: asyncio.Task[None] | None = None
        self._warned = False

    async def register(self, request_id: str, *, owner: str) -> str:
        """Record the stream in the store; returns the id it is registered under.

        That is ``request_id`` (the request's ``X-Request-ID``), unless another stream holds
        that id (a client may send any id): then a fresh UUID, so no stream takes over
        another's entry. When the store fails the stream runs without being interruptible
        (logged).
        """
        stream_id = request_id
        for _ in range(2):
            try:
                if await self.storage.register_stream(stream_id, owner=owner, ttl_seconds=STREAM_TTL_SECONDS):
                    self._local[stream_id] = _Local(owner=owner)
                    return stream_id
            except StorageError as exc:
                log.warning("stream %s cannot be interrupted: the store failed to register it: %s", stream_id, exc)
                return stream_id
            stream_id = str(uuid.uuid4())
        log.warning("stream %s cannot be interrupted: its request ids are taken", request_id)
        return stream_id

    async def pump(self, request_id: str, coro: Coroutine[Any, Any, None]) -> bool:
        """Run ``coro`` (the stream's token loop) as a task that an interrupt cancels.

        Returns ``True`` when an interrupt stopped it, ``False`` when it finished. Its
        exceptions propagate; cancelling the caller cancels it too.
        """
        task = asyncio.ensure_future(coro)
        local = self._local.get(request_id)
        if local is None:  # not registered: not interruptible
            await task
            return False
        local.task = task
        if local.interrupted:
            task.cancel()
        self._ensure_poller()
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():  # the caller was cancelled: stop the pump with it
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                raise
            if not local.interrupted:
                raise
            return True
        return False

    async def finish(self, request_id: str) -> None:
        """The stream ended: forget it here, and in the store after :data:`FINISHED_KEEP_SECONDS`."""
        if self._local.pop(request_id, None) is None:
            return
        try:
            await self.storage.finish_stream(request_id, keep_seconds=FINISHED_KEEP_SECONDS)
        except StorageError as exc:
            log.warning("cannot mark stream %s finished in the store: %s", request_id, exc)

    def interrupt_local(self, request_id: str) -> None:
        """Stop the stream now if it runs in this worker (after the store marked it)."""
        local = self._local.get(request_id)
        if local is None or local.interrupted:
            return
        local.interrupted = True
        if local.task is not None and not local.task.done():
            local.task.cancel()

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.ensure_future(self._poll())

    async def _poll(self) -> None:
        while self._local:
            await asyncio.sleep(self.poll_seconds)
            running = [rid for rid, local in self._local.items() if local.task is not None and not local.interrupted]
            if not running:
                continue
            try:
                marked = await self.storage.interrupted_streams(running)
            except StorageError as exc:
                if not self._warned:
                    log.warning("cannot read interrupt marks from the store (will keep trying): %s", exc)
                    self._warned = True
                continue
            self._warned = False
            for rid in marked:
                log.info("streaming request %s interrupted by its user (from another worker)", rid)
                self.interrupt_local(rid)

    async def aclose(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller


def _valid_request_id(value: str) -> bool:
    """A request id the service could have given a stream: the upstream's forms (a UUID, 48
    hexadecimal digits, optionally after ``conv_``) or an ``X-Request-ID`` we echo (printable
    ASCII, at most 128 characters)."""
    hex_part = value.removeprefix("conv_")
    if len(hex_part) == 48 and all(c in "0123456789abcdefABCDEF" for c in hex_part):
        return True
    with contextlib.suppress(ValueError):
        uuid.UUID(value)
        return True
    return 0 < len(value) <= 128 and value.isascii() and value.isprintable()


@operation(
    summary="Stop one of the caller's streaming answers",
    tags=["query"],
    request="StreamingInterruptRequest",
    responses={200: "StreamingInterruptResponse"},
    errors=[400, 401, 403, 404, 413, 422, 500, 503],
)
async def interrupt(request: web.Request) -> web.Response:
    user = await authenticate(request)
    body = await read_json_body(request, limit=config_from(request).service.max_request_body_bytes)
    c = BodyChecker(body, allowed=("request_id",))
    request_id = c.string("request_id", required=True)
    if request_id is not None and not _valid_request_id(request_id):
        c.value_error(["request_id"], f"Improper request ID {request_id}", request_id)
    c.raise_if_errors()
    assert request_id is not None
    try:
        outcome = await storage_from(request).interrupt_stream(request_id, owner=hash_user_id(user.user_id))
    except StorageError as exc:
        status = 503 if isinstance(exc, StorageUnreachable) else 500
        raise ApiError(status, "Unable to interrupt the streaming request", str(exc)) from exc
    if outcome is StreamInterrupt.NOT_FOUND:
        raise ApiError(404, "Streaming Request not found", f"Streaming Request with ID {request_id} does not exist")
    if outcome is StreamInterrupt.FORBIDDEN:
        log.warning("user %s attempted to interrupt request %s owned by another user", user.user_id, request_id)
        raise ApiError(
            403,
            "User does not have permission to interrupt this streaming request",
            f"User {user.user_id} does not own streaming request with ID {request_id}",
        )
    if outcome is StreamInterrupt.ALREADY_DONE:
        return json_response(
            {
                "request_id": request_id,
                "interrupted": False,
                "message": "Streaming request already completed; nothing to interrupt",
            }
        )
    streams_from(request).interrupt_local(request_id)
    return json_response({"request_id": request_id, "interrupted": True, "message": "Streaming request interrupted"})


#: Every route of this module: method, path, handler and the action it requires.
ROUTE_ACTIONS: Final = (("POST", "/v1/streaming_query/interrupt", interrupt, "streaming_query"),)


def add_routes(app: web.Application) -> None:
    for method, path, handler, action in ROUTE_ACTIONS:
        app.router.add_route(method, path, requires(Action(action))(handler))
