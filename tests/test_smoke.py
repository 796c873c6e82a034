from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lightspeed import create_app
from lightspeed.config import Config


async def test_liveness(aiohttp_client: Any, make_config: Callable[..., Config]) -> None:
    client = await aiohttp_client(create_app(make_config()))
    resp = await client.get("/liveness")
    assert resp.status == 200
    assert await resp.json() == {"alive": True}


def test_commands_that_do_not_serve_do_not_import_the_web_application() -> None:
    """``lightspeed collect`` (a CronJob, started often) and ``check-config`` load only what
    they use; ``from lightspeed import create_app`` still works for embedders."""
    import subprocess
    import sys

    code = (
        "import sys, lightspeed, lightspeed.cli, lightspeed.collector.run\n"
        "assert 'lightspeed.app' not in sys.modules and 'aiohttp.web' not in sys.modules, sorted(sys.modules)\n"
        "from lightspeed import create_app\n"
        "assert create_app.__module__ == 'lightspeed.app'\n"
        "try:\n"
        "    lightspeed.no_such_name\n"
        "except AttributeError as exc:\n"
        "    assert 'no_such_name' in str(exc)\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
