"""A throwaway PostgreSQL server for tests: ``initdb`` in a temporary directory, a Unix
socket only (no TCP port), ``trust`` authentication, removed on :meth:`TemporaryCluster.stop`.

Used by this plugin's tests and by lightspeed's scale-out test::

    with TemporaryCluster() as cluster:
        options = {"dsn": cluster.dsn}

The server binaries come from ``$PG_BIN`` if set, else ``pg_config --bindir``, the newest
``/usr/lib/postgresql/*/bin`` (Debian's ``postgresql`` package), or ``pg_ctl`` on ``PATH``.
PostgreSQL refuses to run as root; as root the server runs as the ``postgres`` user
(which Debian's package creates) through ``runuser``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["PostgresNotFound", "TemporaryCluster", "find_pg_bin"]


class PostgresNotFound(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_pg_bin() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``; raises :class:`PostgresNotFound`."""
    candidates: list[Path] = []
    if os.environ.get("PG_BIN"):
        candidates.append(Path(os.environ["PG_BIN"]))
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out:
            candidates.append(Path(out))
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(versions)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for directory in candidates:
        if (directory / "pg_ctl").is_file() and (directory / "initdb").is_file():
            return directory
    raise PostgresNotFound(
        "PostgreSQL server binaries (pg_ctl, initdb) were not found: install them (Debian: "
        "apt-get install -y postgresql) or point PG_BIN at their directory"
    )


class TemporaryCluster:
    """A PostgreSQL server of its own, on a Unix socket in a temporary directory."""

    def __init__(self, *, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir or find_pg_bin()
        self.base = Path(tempfile.mkdtemp(prefix="lightspeed-pg-"))
        self.data = self.base / "data"
        self.socket_dir = self.base
        self.port = 5432
        self._user: str | None = None
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            try:
                pwd.getpwnam("postgres")
            except KeyError as exc:
                raise PostgresNotFound("running as root needs a 'postgres' user to run the server") from exc
            self._user = "postgres"
            shutil.chown(self.base, user="postgres")
        self.running = False

    @property
    def dsn(self) -> str:
        """A DSN for the ``postgres`` database as the ``postgres`` superuser, over the socket."""
        return f"postgresql://postgres@/postgres?host={self.socket_dir}&port={self.port}"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self._user:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            log = self.base / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{tail}")

    def start(self) -> Self:
        """Create the cluster on first use, then start the server and wait until it accepts connections."""
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        options = f"-k {self.socket_dir} -p {self.port} -c listen_addresses='' -F -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.base / "server.log"), "-w", "start")
        self.running = True
        return self

    def stop(self, *, remove: bool = True) -> None:
        """Stop the server (immediately) and, unless ``remove`` is false, delete the cluster."""
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            self.running = False
        if remove:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
