"""A small bounded, expiring cache keyed by a token's SHA-256, with one lookup in flight per key.

The token itself is never a key or a value: only its digest is kept, so a memory dump or a
debugger shows no credential. Concurrent requests with the same token share one lookup.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["TokenCache", "token_digest"]

T = TypeVar("T")


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class TokenCache(Generic[T]):
    """Up to ``max_entries`` outcomes, each reused for ``ttl`` seconds (0: no reuse, lookups still shared).

    Only what ``lookup`` returns is cached; an exception (the API was unavailable) is not, so
    the next request asks again.
    """

    def __init__(self, *, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, T]] = OrderedDict()
        self._pending: dict[bytes, asyncio.Future[T]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    async def get(self, token: str, lookup: Callable[[], Awaitable[T]]) -> T:
        key = token_digest(token)
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0] > now:
                self._entries.move_to_end(key)
                return entry[1]
            del self._entries[key]
        while (pending := self._pending.get(key)) is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if pending.cancelled() and task is not None and not task.cancelling():
                    continue  # the request doing the lookup went away; this one does it
                raise
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            value = await lookup()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # marked retrieved: waiters re-raise it, nobody else needs to
            raise
        else:
            future.set_result(value)
            if self.ttl > 0:
                self._entries[key] = (self._clock() + self.ttl, value)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
            return value
        finally:
            del self._pending[key]
