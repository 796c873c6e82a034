"""``lightspeed serve`` as a real process on 127.0.0.1, for tests that kill it, run it with
several workers, or run it without root's capabilities (so file modes bind)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import yaml

#: Run as ``nobody`` without capabilities: file modes bind (root would ignore them).
UNPRIVILEGED = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all"]
NOBODY = 65534
ECHO = {
    "llm_providers": [{"name": "echo", "type": "echo", "models": ["echo"]}],
    "inference": {"default_provider": "echo", "default_model": "echo"},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def command() -> list[str]:
    script = Path(sys.executable).parent / "lightspeed"
    return [str(script)] if script.exists() else [sys.executable, "-m", "lightspeed"]


class Service:
    """One ``lightspeed serve`` process with the configuration ``config`` (``service.port`` is set here)."""

    def __init__(self, workdir: Path, config: dict[str, Any], *, unprivileged: bool = False) -> None:
        self.workdir = workdir
        self.port = free_port()
        config = {**config, "service": {**config.get("service", {}), "host": "127.0.0.1", "port": self.port}}
        self.config_path = workdir / f"lightspeed-{self.port}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.prefix = UNPRIVILEGED if unprivileged else []
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"lightspeed-{self.port}.log"

    def spawn(self) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if k != "LIGHTSPEED_CONFIG"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, *command(), "serve", "-c", str(self.config_path)],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a SIGKILL of the group reaches the workers too
            )
        return self.proc

    async def start(self, http: aiohttp.ClientSession, *, within: float = 20) -> None:
        """Spawn the service (returns quickly) and wait until it answers ``/liveness``."""
        self.proc = self.spawn()
        deadline = asyncio.get_running_loop().time() + within
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"lightspeed serve exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                async with http.get(f"{self.base}/liveness") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"lightspeed serve did not answer within {within} s")
            await asyncio.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL, to the service and every worker: no cleanup of any kind runs."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, then wait (the service must exit 0)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(40)
        assert code == 0, f"lightspeed serve exited {code}: {self.log.read_text()[-3000:]}"
