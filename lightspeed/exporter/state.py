"""The exporter's state directory: the lock, the live claims, the files exported without
deletion, and the files set aside (see :mod:`lightspeed.exporter.directory` for its layout).
Blocking; the caller runs it off the event loop."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lightspeed.exporter.files import Fingerprint

__all__ = ["ExporterState"]

log = logging.getLogger("lightspeed.exporter")


class ExporterState:
    """The files of ``state_dir``; every read-modify-write of them runs under :meth:`locked`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    @property
    def aside_dir(self) -> Path:
        """Where files too large to upload are moved."""
        return self.state_dir / "aside"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the state directory's lock (flock(2), shared by every exporter on the volume)."""
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.state_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def load_claims(self) -> dict[str, dict[str, Any]]:
        """The live claims: ``{claim_id: {owner, expires_at, records: {name: fingerprint}}}``."""
        try:
            data = json.loads((self.state_dir / "claims").read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError:
            log.error("the exporter's claims file in %s is corrupt: starting with no claims", self.state_dir)
            return {}
        return data if isinstance(data, dict) else {}

    def save_claims(self, claims: Mapping[str, Any]) -> None:
        """Replace the claims file atomically."""
        path = self.state_dir / "claims"
        tmp = path.with_name(f".claims.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(json.dumps(claims).encode())
        os.replace(tmp, path)

    @staticmethod
    def held(claims: Mapping[str, Any], now: float, *, but: str = "") -> set[str]:
        """The names held by a lease that runs at ``now``, except claim ``but``'s."""
        held: set[str] = set()
        for cid, data in claims.items():
            if cid != but and float(data["expires_at"]) > now:
                held.update(data["records"])
        return held

    def load_exported(self) -> set[tuple[str, Fingerprint]]:
        """The files (by name and fingerprint) acked without deletion."""
        out: set[tuple[str, Fingerprint]] = set()
        try:
            text = (self.state_dir / "exported.log").read_text(encoding="utf-8")
        except FileNotFoundError:
            return out
        for line in text.splitlines():
            parts = line.split("\t")
            if len(parts) == 4 and all(p.isdigit() for p in parts[1:]):
                out.add((parts[0], (int(parts[1]), int(parts[2]), int(parts[3]))))
        return out

    def mark_exported(self, files: dict[str, Fingerprint]) -> None:
        """Append ``files`` to ``exported.log``."""
        if not files:
            return
        lines = "".join(f"{n}\t{fp[0]}\t{fp[1]}\t{fp[2]}\n" for n, fp in files.items() if "\t" not in n)
        fd = os.open(self.state_dir / "exported.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(lines)
