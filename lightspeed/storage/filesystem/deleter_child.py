"""The deleting helper: a child process that unlinks files for the filesystem store.

Run as ``python -I -S deleter_child.py`` by :mod:`.deleter` (the standard library only, so
it starts in milliseconds and imports nothing of the service). Deleting thousands of files
from threads of the service's own process makes each thread wait for the GIL after every
``unlink``, and the event loop holds it most of the time: beside one busy Python thread, 16
deleting threads managed an eighth of their speed alone (decision ``collector-03``). Here
they have a GIL of their own.

Protocol, one request at a time, answered in order. A request is :data:`HEAD` (the
operation, the payload's length) and the payload: paths separated by NUL bytes.
Operations: ``U`` unlinks each path (one already gone is fine), ``P`` removes each path's
folder and then its parent when they are empty. The reply is :data:`LENGTH` and, for each
path that could not be removed, ``errno NUL path NUL``. The helper ignores SIGINT (a Ctrl-C
at the service's terminal is for the service, which closes it) and ends when its standard
input does.

The functions also serve the service's own threads when the helper cannot run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import AnyStr, BinaryIO, Final

#: A request's head: the operation (``U`` or ``P``) and the payload's length in bytes.
HEAD: Final = struct.Struct(">cI")
#: A reply's head: its payload's length in bytes.
LENGTH: Final = struct.Struct(">I")
#: Threads that unlink at once (each unlink waits on the filesystem, so they overlap well).
THREADS: Final = 16
#: Paths below twice this many are not split across threads.
_MIN_PART: Final = 64


def unlink_some(paths: Iterable[AnyStr]) -> list[tuple[int, AnyStr]]:
    """Unlink each path; those already gone are fine. The others: (errno, path)."""
    failed: list[tuple[int, AnyStr]] = []
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            failed.append((exc.errno or 0, path))
    return failed


def parts(paths: Sequence[AnyStr]) -> list[Sequence[AnyStr]]:
    """``paths`` in at most :data:`THREADS` parts of at least :data:`_MIN_PART` paths."""
    step = max(_MIN_PART, -(-len(paths) // THREADS))
    return [paths[i : i + step] for i in range(0, len(paths), step)]


def unlink_all(
    paths: Sequence[AnyStr],
    run: Callable[..., Iterable[list[tuple[int, AnyStr]]]] | None = None,
) -> list[tuple[int, AnyStr]]:
    """:func:`unlink_some` over ``paths``, split across threads by ``run`` (an executor's ``map``)."""
    if run is None or len(paths) < 2 * _MIN_PART:
        return unlink_some(paths)
    return [failure for found in run(unlink_some, parts(paths)) for failure in found]


def remove_empty_parents(paths: Iterable[AnyStr]) -> None:
    """Try each path's folder once, then that folder's parent (a conversation folder, then its
    user folder); a folder that is not empty stays, silently."""
    upper: set[AnyStr] = set()
    for folder in {os.path.dirname(p) for p in paths}:
        with contextlib.suppress(OSError):
            os.rmdir(folder)
            upper.add(os.path.dirname(folder))
    for folder in upper:
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def _serve(source: BinaryIO, sink: BinaryIO) -> None:
    read, write, flush = source.read, sink.write, sink.flush
    with ThreadPoolExecutor(THREADS, thread_name_prefix="unlink") as pool:
        while True:
            head = read(HEAD.size)
            if len(head) < HEAD.size:
                return  # the service closed our input: done
            op, size = HEAD.unpack(head)
            payload = read(size)
            if len(payload) < size:
                return
            paths = payload.split(b"\0") if payload else []
            reply = b""
            if op == b"U":
                reply = b"".join(b"%d\0%s\0" % failure for failure in unlink_all(paths, pool.map))
            elif op == b"P":
                remove_empty_parents(paths)
            else:
                sys.stderr.write(f"deleting helper: unknown operation {op!r}\n")
                return
            write(LENGTH.pack(len(reply)) + reply)
            flush()


if __name__ == "__main__":  # pragma: no cover
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _serve(sys.stdin.buffer, sys.stdout.buffer)
