"""What the query path's file operations cost on this disk, without lightspeed (issue 9).

A stored query writes one transcript the way the filesystem store does: create a temporary file
in the conversation's folder, write about 3 KB, close, rename to its final name; a new
conversation first makes its folder. This script does exactly that in one thread, in folders
of the seed's layout, for ``--files`` transcripts over ``--conversations`` folders, in rounds,
and prints per file the wall time and the CPU time the kernel and the process spent (from
``os.times``), and how many files a second one core sustains. Between rounds it removes what
it made and, before the next, waits for the disk to settle (:func:`settle_disk`).

Creating a file or a folder is where the cost lies, and on an ext4 file system **without a
journal** it depends on what was deleted lately: ext4 then does not reuse an inode deleted
less than 60 seconds ago (300 more while its inode table block is not written back), and
every new inode of the group is found by walking past each of those (``recently_deleted`` in
the kernel's ``fs/ext4/ialloc.c``). ``--after-deletes N`` measures that: it deletes ``N``
files and folders, then probes the cost of a new inode at intervals until ``--watch``
seconds have passed. ``--unlinks N`` times deleting ``N`` record files from 1, 4, 16 and 64
threads, alone and beside a busy Python thread (the event loop answering queries), and
through the store's deleting helper process (decision ``collector-03``).

:func:`inode_cost_us`, :func:`journal_state` and :func:`settle_disk` are used by the other
benchmarks to say in what state the disk was when they ran, and to wait for it to be quiet.

Run from the repository root::

    .venv/bin/python benchmarks/disk_ops.py                 # 20,000 files, 3 rounds, in a temporary directory
    .venv/bin/python benchmarks/disk_ops.py --tmpdir /dev/shm
    .venv/bin/python benchmarks/disk_ops.py --after-deletes 20000   # the cost of a new inode after deletions
    .venv/bin/python benchmarks/disk_ops.py --unlinks 100000        # deleting records, as the collector does
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from lightspeed.storage.filesystem import deleter_child

BODY = b'{"metadata": {}, "redacted_query": "q", "llm_response": "' + b"a" * 3000 + b'"}'

#: A probe's new inodes cost more than this (µs of CPU each) only on a disk busy with recent
#: deletions (on this machine kind: 30 to 90 µs quiet, 300 to 1,300 µs in the minutes after many deletions).
QUIET_US = 100.0


def one_round(root: Path, files: int, conversations: int) -> tuple[float, float, float]:
    """Seconds of wall, user and system time for ``files`` transcripts."""
    folders = [root / "transcripts" / uuid.uuid4().hex[:16] / str(uuid.uuid4()) for _ in range(conversations)]
    per_folder = files // conversations
    start, t0 = time.perf_counter(), os.times()
    for folder in folders:
        folder.mkdir(parents=True, mode=0o700)
        for _ in range(per_folder):
            name = str(uuid.uuid4())
            tmp = folder / f".{name}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, BODY)
            finally:
                os.close(fd)
            os.rename(tmp, folder / f"{name}.json")
    t1 = os.times()
    return time.perf_counter() - start, t1.user - t0.user, t1.system - t0.system


def inode_cost_us(directory: Path | str, inodes: int = 250) -> float:
    """CPU microseconds (this thread's) per new inode, now, in a new folder under ``directory``:
    one folder per four empty files, as conversations and transcripts come. What it makes is
    left in place (deleting it would raise the next probe's cost); the caller's cleanup removes it."""
    root = Path(tempfile.mkdtemp(prefix="probe-", dir=directory))
    start = time.thread_time()
    for i in range(inodes * 4 // 5):
        folder = root / str(i // 4)
        if i % 4 == 0:
            folder.mkdir()
        os.close(os.open(folder / str(i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return (time.thread_time() - start) / inodes * 1e6


def journal_state(path: Path | str) -> str:
    """``ext4, no journal`` / ``ext4 with a journal`` / the file system's type, for ``path``."""
    path = os.path.realpath(path)
    best = ("", "", "")
    with open("/proc/mounts") as mounts:
        for line in mounts:
            device, point, kind = line.split()[:3]
            if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) > len(best[1]):
                best = (device, point, kind)
    device, _, kind = best
    if kind != "ext4":
        return kind or "unknown"
    name = os.path.basename(device)
    journals = os.listdir("/proc/fs/jbd2") if os.path.isdir("/proc/fs/jbd2") else []
    return "ext4 with a journal" if any(j.startswith(f"{name}-") for j in journals) else "ext4, no journal"


def settle_disk(
    directory: Path | str, *, quiet_us: float = QUIET_US, rounds: int = 6, log: Callable[[str], None] | None = None
) -> float:
    """Wait until creating an inode under ``directory`` costs at most ``quiet_us`` (µs of CPU),
    at most ``rounds`` times 65 s: after a ``sync``, inodes deleted before it stop costing
    anything 60 s later (``rounds`` 0: probe once, no wait). Logs each probe (default: printed at
    once); returns the last cost measured."""
    if log is None:
        log = functools.partial(print, flush=True)
    os.sync()
    cost = inode_cost_us(directory)
    log(f"disk ({journal_state(directory)}): a new inode costs {cost:.0f} us of CPU")
    for _ in range(rounds):
        if cost <= quiet_us:
            break
        log(f"  above {quiet_us:.0f} us (files deleted lately, see disk_ops.py): waiting 65 s for the disk to settle")
        time.sleep(65)
        os.sync()
        cost = inode_cost_us(directory)
        log(f"disk: a new inode costs {cost:.0f} us of CPU")
    return cost


def after_deletes(files: int, watch: float, base: str | None) -> None:
    """Delete ``files`` files (and a folder per four), then probe the cost of new inodes."""
    work = Path(tempfile.mkdtemp(prefix="lightspeed-diskops-", dir=base))
    try:
        print(f"{journal_state(work)}; load average {os.getloadavg()[0]:.2f}")
        print(f"before: a new inode costs {inode_cost_us(work):6.0f} us of CPU", flush=True)
        doomed = work / "doomed"
        doomed.mkdir()
        for i in range(files):
            folder = doomed / str(i // 4)
            if i % 4 == 0:
                folder.mkdir()
            fd = os.open(folder / f"{i}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, BODY)
            os.close(fd)
        os.sync()
        shutil.rmtree(doomed)
        deleted = time.monotonic()
        print(f"deleted {files} files and {files // 4} folders", flush=True)
        for at in (0, 10, 20, 40, 60, 90, 120, 180, 240, 300, 360, 420, 480):
            if at > watch:
                break
            time.sleep(max(0.0, deleted + at - time.monotonic()))
            print(f"{at:4d} s later: a new inode costs {inode_cost_us(work):6.0f} us of CPU", flush=True)
    finally:
        shutil.rmtree(work)


def _delete(paths: list[str]) -> None:
    for path in paths:
        os.unlink(path)


def _spin(stop: threading.Event) -> None:
    """A busy Python thread, as the event loop is while the service answers queries."""
    while not stop.is_set():
        sum(range(1000))


def _helper_unlink(paths: list[str]) -> None:
    """One request to the filesystem store's deleting helper process (decision collector-03),
    started for it (in the service it is started once and kept)."""
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", deleter_child.__file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    payload = "\0".join(paths).encode()
    proc.stdin.write(deleter_child.HEAD.pack(b"U", len(payload)) + payload)
    proc.stdin.flush()
    (size,) = deleter_child.LENGTH.unpack(proc.stdout.read(deleter_child.LENGTH.size))
    failed = proc.stdout.read(size)
    proc.stdin.close()
    proc.wait()
    assert not failed, failed[:200]


def unlinks(files: int, threads: list[int], base: str | None) -> None:
    """Delete ``files`` record files (half of 400 B in one folder, half of 3 KB in folders of 20,
    as the collector benchmark lays them out) from each count of ``threads``, alone and beside a
    busy Python thread, then through the deleting helper process beside that busy thread:
    deletions a second and CPU per deletion (of this process and its helper)."""
    small = BODY[:400]
    ways = [(f"{n:3d} thread(s)", n, False) for n in threads]
    ways += [(f"{n:3d} thread(s) beside a busy Python thread", n, True) for n in threads]
    ways += [("the helper process beside a busy Python thread", 0, True)]
    for label, count, busy in ways:
        work = Path(tempfile.mkdtemp(prefix="lightspeed-diskops-", dir=base))
        try:
            paths = []
            (work / "feedback").mkdir()
            for i in range(files):
                if i % 2 == 0:
                    path, body = work / "feedback" / f"{uuid.uuid4()}.json", small
                else:
                    folder = work / "transcripts" / str(i // 40)
                    folder.mkdir(parents=True, exist_ok=True)
                    path, body = folder / f"{uuid.uuid4()}.json", BODY
                path.write_bytes(body)
                paths.append(str(path))
            os.sync()
            stop = threading.Event()
            spinner = threading.Thread(target=_spin, args=(stop,))
            if busy:
                spinner.start()
            start, t0 = time.perf_counter(), os.times()
            try:
                if count:
                    with concurrent.futures.ThreadPoolExecutor(count) as pool:
                        list(pool.map(_delete, [paths[k::count] for k in range(count)]))
                else:
                    _helper_unlink(paths)
            finally:
                wall, t1 = time.perf_counter() - start, os.times()
                stop.set()
                if busy:
                    spinner.join()
            cpu = (t1.system - t0.system + t1.children_system - t0.children_system) / files * 1e6
            if not busy:  # the spinner's CPU is not the deletions'
                cpu += (t1.user - t0.user) / files * 1e6
            what = "kernel CPU" if busy else "CPU"
            print(f"{label}: {files / wall:7.0f} deletions/s; {what} {cpu:5.0f} us per deletion", flush=True)
        finally:
            shutil.rmtree(work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--conversations", type=int, default=5_700, help="folders, the files split evenly among them")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tmpdir", default=None)
    parser.add_argument(
        "--after-deletes", type=int, default=0, metavar="N", help="delete N files, then probe new inodes' cost"
    )
    parser.add_argument("--watch", type=float, default=420.0, help="seconds to probe for, with --after-deletes")
    parser.add_argument(
        "--unlinks", type=int, default=0, metavar="N", help="time deleting N record files (see --threads)"
    )
    parser.add_argument("--threads", default="1,4,16,64", help="thread counts for --unlinks (default 1,4,16,64)")
    args = parser.parse_args()
    if args.after_deletes:
        after_deletes(args.after_deletes, args.watch, args.tmpdir)
        return
    if args.unlinks:
        print(f"{journal_state(args.tmpdir or tempfile.gettempdir())}; load average {os.getloadavg()[0]:.2f}")
        unlinks(args.unlinks, [int(t) for t in args.threads.split(",")], args.tmpdir)
        return
    files = args.files // args.conversations * args.conversations
    print(f"load average {os.getloadavg()[0]:.2f}; {files} files in {args.conversations} folders per round")
    results = []
    probes = Path(tempfile.mkdtemp(prefix="lightspeed-diskops-probes-", dir=args.tmpdir))
    try:
        for n in range(args.rounds):
            # Each round after the first follows the deletion of the last one's files.
            settle_disk(probes)
            root = Path(tempfile.mkdtemp(prefix="lightspeed-diskops-", dir=args.tmpdir))
            try:
                wall, user, system = one_round(root, files, args.conversations)
            finally:
                shutil.rmtree(root)
            results.append((wall, user, system))
            print(
                f"round {n + 1}: {files / wall:8.0f} files/s  wall {wall / files * 1e6:6.1f} us/file"
                f"  user {user / files * 1e6:6.1f}  system {system / files * 1e6:6.1f} us/file",
                flush=True,
            )
    finally:
        shutil.rmtree(probes)
    wall = statistics.median(r[0] for r in results)
    system = statistics.median(r[2] for r in results)
    print(
        f"median: {files / wall:.0f} files/s on one core; {wall / files * 1e6:.1f} us wall and "
        f"{system / files * 1e6:.1f} us of kernel CPU per file (folder, create, write, close, rename)"
    )
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
