"""The stream part of the storage contract (:class:`StreamRegistry`, a base of
:class:`~lightspeed.storage.base.StorageBackend`): which streams are running, so that any
worker can interrupt one; and its default, in this instance's memory (:class:`LocalStreams`),
which serves one process. A backend that supports several processes overrides all four
methods with a registry its processes share."""

from __future__ import annotations

import time
from collections.abc import Collection

import attrs

from lightspeed.storage.values import StreamInterrupt

__all__ = ["LocalStreams", "StreamRegistry"]


@attrs.define
class _LocalStream:
    owner: str
    expires_at: float
    done: bool = False
    interrupted: bool = False


class LocalStreams:
    """Running streams by request id, each forgotten when its time is up (the semantics are the
    docstrings of the stream methods of :class:`~lightspeed.storage.base.StorageBackend`)."""

    def __init__(self) -> None:
        self._streams: dict[str, _LocalStream] = {}
        self._pruned = 0.0

    def register(self, request_id: str, *, owner: str, ttl_seconds: float) -> bool:
        streams = self._streams
        now = time.time()
        if now >= self._pruned + 1.0:  # a full pass at most once a second
            self._pruned = now
            for rid in [rid for rid, s in streams.items() if s.expires_at <= now]:
                del streams[rid]
        current = streams.get(request_id)
        if current is not None and current.expires_at > now:
            return False
        streams[request_id] = _LocalStream(owner=owner, expires_at=now + ttl_seconds)
        return True

    def interrupt(self, request_id: str, *, owner: str) -> StreamInterrupt:
        stream = self._streams.get(request_id)
        if stream is None or stream.expires_at <= time.time():
            return StreamInterrupt.NOT_FOUND
        if stream.owner != owner:
            return StreamInterrupt.FORBIDDEN
        if stream.done or stream.interrupted:
            return StreamInterrupt.ALREADY_DONE
        stream.interrupted = True
        return StreamInterrupt.INTERRUPTED

    def interrupted(self, request_ids: Collection[str]) -> set[str]:
        streams = self._streams
        return {rid for rid in request_ids if (s := streams.get(rid)) is not None and s.interrupted}

    def finish(self, request_id: str, *, keep_seconds: float) -> None:
        stream = self._streams.get(request_id)
        if stream is not None:
            stream.done = True
            stream.expires_at = time.time() + keep_seconds


class StreamRegistry:
    """The running streams, by request id (the conventions of :mod:`lightspeed.storage.base` hold).

    The defaults keep the registry in this instance's memory, which serves one process. A
    backend that supports several processes must override all four, so that a stream running
    in one worker can be interrupted from any other.
    """

    async def register_stream(self, request_id: str, *, owner: str, ttl_seconds: float) -> bool:
        """Record that the stream ``request_id`` of ``owner`` (a user hash) is running.

        The entry is forgotten ``ttl_seconds`` from now unless :meth:`finish_stream`
        shortens it first (a worker that died mid-stream leaves nothing behind for ever).
        Atomic insert-if-absent: returns ``False`` and changes nothing when the id is
        registered already and not forgotten yet (request ids can come from clients, and
        one stream must never take over another's entry).
        """
        return self._local_streams().register(request_id, owner=owner, ttl_seconds=ttl_seconds)

    async def interrupt_stream(self, request_id: str, *, owner: str) -> StreamInterrupt:
        """Mark the running stream ``request_id`` for interruption, if ``owner`` owns it.

        Atomic: of concurrent calls, at most one gets ``INTERRUPTED``; a stream that
        :meth:`finish_stream` ended first is ``ALREADY_DONE``.
        """
        return self._local_streams().interrupt(request_id, owner=owner)

    async def interrupted_streams(self, request_ids: Collection[str]) -> set[str]:
        """Those of ``request_ids`` that are marked for interruption (one cheap read)."""
        return self._local_streams().interrupted(request_ids)

    async def finish_stream(self, request_id: str, *, keep_seconds: float) -> None:
        """The stream ended: later interrupts answer ``ALREADY_DONE`` for ``keep_seconds``,
        then ``NOT_FOUND``. Unknown ids are ignored."""
        self._local_streams().finish(request_id, keep_seconds=keep_seconds)

    def _local_streams(self) -> LocalStreams:
        # Made on first use: a backend's __init__ need not call ours for the defaults to work.
        streams: LocalStreams | None = self.__dict__.get("_lightspeed_streams")
        if streams is None:
            streams = self.__dict__["_lightspeed_streams"] = LocalStreams()
        return streams
