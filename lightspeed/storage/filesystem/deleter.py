"""Deleting record files after an upload, in a helper process (decision ``collector-03``).

A collection cycle deletes every file it uploaded: 100,000 files in the benchmark's run.
Threads of the service's process do that slowly while the event loop is busy, because each
gives up the GIL at every ``unlink`` and waits to get it back; :mod:`.deleter_child` does it
in a process of its own, started at the first deletion and kept for the next ones.

When the helper cannot be started, or ends, the next request starts a new one, up to
:data:`MAX_STARTS` times in the process's life; after that (or without a Python to start)
the unlink lane's threads delete, as they did before the helper existed. Nothing is lost
either way: a request the helper had not answered is sent again (unlinking a file already
gone is fine), and the claim lists its records until the deletions are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sys
from collections import deque
from collections.abc import Sequence
from typing import Any, Final

from lightspeed.storage.filesystem.deleter_child import HEAD, LENGTH, parts, remove_empty_parents, unlink_some
from lightspeed.storage.filesystem.lanes import Lane

__all__ = ["MAX_STARTS", "Deleter"]

log = logging.getLogger("lightspeed.storage.filesystem")

#: Helpers started at most in a process's life before the unlink lane takes over for good.
MAX_STARTS: Final = 3
#: Seconds a closing helper has to finish what it was asked before it is killed.
_CLOSE_SECONDS: Final = 30.0
_CHILD: Final = os.path.join(os.path.dirname(os.path.abspath(__file__)), "deleter_child.py")


class _Gone(Exception):
    """The helper ended before it answered."""


class _Helper:
    """One running helper process and the requests it has not answered yet (in order)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.waiting: deque[asyncio.Future[bytes]] = deque()
        self.gone = False
        self.reader = asyncio.get_running_loop().create_task(self._read(), name="lightspeed-deleter-replies")

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            while True:
                (size,) = LENGTH.unpack(await self.proc.stdout.readexactly(LENGTH.size))
                body = await self.proc.stdout.readexactly(size) if size else b""
                future = self.waiting.popleft()
                if not future.done():  # its caller may have been cancelled
                    future.set_result(body)
        except (asyncio.IncompleteReadError, OSError, IndexError):
            pass  # the helper ended (or answered what nobody asked: it is no use)
        finally:
            self.gone = True
            while self.waiting:
                future = self.waiting.popleft()
                if not future.done():
                    future.set_exception(_Gone())

    async def ask(self, op: bytes, payload: bytes) -> bytes:
        if self.gone:
            raise _Gone
        assert self.proc.stdin is not None
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        with contextlib.suppress(OSError):  # a broken pipe: the reader sees the end and fails the future
            self.proc.stdin.write(HEAD.pack(op, len(payload)))
            self.proc.stdin.write(payload)
            await self.proc.stdin.drain()
        return await future


def _failures(reply: bytes) -> list[tuple[int, str]]:
    items = reply.split(b"\0")
    return [(int(items[i]), os.fsdecode(items[i + 1])) for i in range(0, len(items) - 1, 2)]


class Deleter:
    """Unlinks files and removes emptied folders, through the helper process when it runs and
    on ``lane``'s threads when it cannot."""

    def __init__(self, *, lane: Lane[Any]) -> None:
        self._lane = lane
        self._helper: _Helper | None = None
        self._starts = 0
        self._closed = False
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        """The running helper's process id, if one runs."""
        helper = self._helper
        return None if helper is None or helper.gone else helper.proc.pid

    async def _running(self) -> _Helper | None:
        """The helper, started when needed; ``None`` when it cannot be (the lane deletes then)."""
        helper = self._helper
        if helper is not None and not helper.gone:
            return helper
        async with self._lock:
            helper = self._helper
            if helper is not None and not helper.gone:
                return helper
            if helper is not None:
                self._helper = None
                await self._reap(helper, "it ended")
            if self._closed or self._starts >= MAX_STARTS:
                return None
            self._starts += 1
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-I", "-S", _CHILD, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
                )
            except (OSError, ValueError) as exc:
                log.warning("deleting helper: cannot start it: %s%s", exc, self._next_step())
                return None
            self._helper = _Helper(proc)
            return self._helper

    def _next_step(self) -> str:
        if self._starts < MAX_STARTS:
            return "; trying again at the next deletion, meanwhile the service's threads delete"
        return f"; no more tries ({MAX_STARTS} starts), the service's threads delete from now on"

    async def _reap(self, helper: _Helper, what: str) -> None:
        code = await _ended(helper, 5.0)
        log.warning("deleting helper: %s (pid %d, exit code %s)%s", what, helper.proc.pid, code, self._next_step())

    async def _ask(self, op: bytes, payload: bytes) -> bytes | None:
        """The helper's reply, asking again of a new helper when one ends first; ``None``
        when no helper can run."""
        while (helper := await self._running()) is not None:
            try:
                return await helper.ask(op, payload)
            except _Gone:
                continue
        return None

    async def unlink(self, paths: Sequence[str]) -> None:
        """Unlink each path (one already gone is fine). Raises ``OSError`` for the first path
        that could not be removed, saying how many others could not either; the rest are gone."""
        if not paths:
            return
        reply = await self._ask(b"U", b"\0".join(map(os.fsencode, paths)))
        if reply is not None:
            failed = _failures(reply)
        else:
            found = await asyncio.gather(
                *(self._lane.run(functools.partial(_unlink_part, part)) for part in parts(paths))
            )
            failed = [failure for part in found for failure in part]
        if failed:
            code, name = failed[0]
            more = f" (and {len(failed) - 1} other file(s))" if len(failed) > 1 else ""
            raise OSError(code, (os.strerror(code) if code else "cannot delete") + more, name)

    async def remove_empty_parents(self, paths: Sequence[str]) -> None:
        """Remove each path's folder, then its parent, where they are empty."""
        if not paths:
            return
        if await self._ask(b"P", b"\0".join(map(os.fsencode, paths))) is None:
            await self._lane.run(lambda _: remove_empty_parents(paths))

    async def aclose(self) -> None:
        """Let the helper finish what it was asked (its input closed), then let it go; killed
        after :data:`_CLOSE_SECONDS`."""
        async with self._lock:
            self._closed = True
            helper, self._helper = self._helper, None
        if helper is None:
            return
        assert helper.proc.stdin is not None
        helper.proc.stdin.close()
        await _ended(helper, _CLOSE_SECONDS)


async def _ended(helper: _Helper, seconds: float) -> int:
    """The helper's exit code, once it ended (killed after ``seconds``) and its replies are read."""
    try:
        code = await asyncio.wait_for(helper.proc.wait(), seconds)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            helper.proc.kill()
        code = await helper.proc.wait()
    await helper.reader
    return code


def _unlink_part(part: Sequence[str], _: object) -> list[tuple[int, str]]:
    return unlink_some(part)
