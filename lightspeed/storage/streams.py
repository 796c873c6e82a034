"""The default stream registry of :class:`~lightspeed.storage.base.StorageBackend`: in this
instance's memory, which serves one process (a backend that supports several processes
overrides the four stream methods with a shared registry)."""

from __future__ import annotations

import time
from collections.abc import Collection

import attrs

from lightspeed.storage.values import StreamInterrupt

__all__ = ["LocalStreams"]


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
