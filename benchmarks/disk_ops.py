"""What the query path's file operations cost on this disk, without lightspeed (issue 9).

A stored query writes one transcript the way the filesystem store does: create a temporary file
in the conversation's folder, write about 3 KB, close, rename to its final name; a new
conversation first makes its folder. This script does exactly that in one thread, in folders
of the seed's layout, for ``--files`` transcripts over ``--conversations`` folders, in rounds,
and prints per file the wall time and the CPU time the kernel and the process spent (from
``os.times``), and how many files a second one core sustains. It removes what it made between
rounds, then waits ``--settle`` seconds: on some ext4 setups creating files right after many
deletions costs more.

Run from the repository root::

    .venv/bin/python benchmarks/disk_ops.py                 # 20,000 files, 3 rounds, in a temporary directory
    .venv/bin/python benchmarks/disk_ops.py --tmpdir /dev/shm
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

BODY = b'{"metadata": {}, "redacted_query": "q", "llm_response": "' + b"a" * 3000 + b'"}'


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--conversations", type=int, default=5_700, help="folders, the files split evenly among them")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds to wait after removing a round's files")
    parser.add_argument("--tmpdir", default=None)
    args = parser.parse_args()
    files = args.files // args.conversations * args.conversations
    print(f"load average {os.getloadavg()[0]:.2f}; {files} files in {args.conversations} folders per round")
    results = []
    for n in range(args.rounds):
        root = Path(tempfile.mkdtemp(prefix="lightspeed-diskops-", dir=args.tmpdir))
        try:
            os.sync()
            wall, user, system = one_round(root, files, args.conversations)
        finally:
            shutil.rmtree(root)
            os.sync()
        results.append((wall, user, system))
        print(
            f"round {n + 1}: {files / wall:8.0f} files/s  wall {wall / files * 1e6:6.1f} us/file"
            f"  user {user / files * 1e6:6.1f}  system {system / files * 1e6:6.1f} us/file"
        )
        time.sleep(args.settle)
    wall = statistics.median(r[0] for r in results)
    system = statistics.median(r[2] for r in results)
    print(
        f"median: {files / wall:.0f} files/s on one core; {wall / files * 1e6:.1f} us wall and "
        f"{system / files * 1e6:.1f} us of kernel CPU per file (folder, create, write, close, rename)"
    )
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
