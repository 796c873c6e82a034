"""``GET /openapi.json``: a valid OpenAPI 3.1 document of every route, and the live handlers
answer as it says (schemathesis against a real server on 127.0.0.1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hypothesis
import pytest
import schemathesis
import yaml
from openapi_spec_validator import validate
from schemathesis import checks

from lightspeed import create_app
from lightspeed.api.openapi import build_document, undocumented_routes
from lightspeed.config import Config, parse_config

if TYPE_CHECKING:
    # The alias schemathesis declares for an OpenAPI operation's case (for type checkers only).
    from schemathesis.specs.openapi.schemas import OpenApiCase

ROOT = Path(__file__).parent.parent

#: A configuration with every endpoint on: echo providers, feedback and transcripts on.
SECTIONS: dict[str, Any] = {
    "name": "openapi-test",
    "llm_providers": [{"name": "echo", "type": "echo", "models": ["echo", "other"]}],
    "inference": {"default_provider": "echo", "default_model": "echo"},
}


def _config(data_dir: Path) -> dict[str, Any]:
    return {
        **SECTIONS,
        "user_data_collection": {
            "feedback_enabled": True,
            "feedback_storage": str(data_dir / "feedback"),
            "transcripts_enabled": True,
            "transcripts_storage": str(data_dir / "transcripts"),
        },
    }


def _app_config(tmp: Path) -> Config:
    return parse_config(_config(tmp), env={})


async def test_the_document_is_valid_openapi_31_and_served(make_client: Any, tmp_path: Path) -> None:
    client = await make_client(**SECTIONS)
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # raises on anything that is not valid OpenAPI 3.1
    assert doc == build_document(create_app(_app_config(tmp_path)))


def test_every_route_of_the_app_is_documented(tmp_path: Path) -> None:
    """A route added without ``@operation`` fails here: declare it (lightspeed/api/openapi.py)."""
    app = create_app(_app_config(tmp_path))
    assert undocumented_routes(app) == []
    doc = build_document(app)
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert served == documented
    for path in ("/v1/query", "/v1/streaming_query", "/v1/feedback", "/v1/conversations/{conversation_id}"):
        assert path in doc["paths"]
    # Every schema a document refers to exists.
    text = yaml.safe_dump(doc)
    for name in doc["components"]["schemas"]:
        assert f"#/components/schemas/{name}" in text or name in ("ErrorDetail", "ValidationError")


def test_docs_link_the_document() -> None:
    assert "/openapi.json" in (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert "docs/api.md" in (ROOT / "README.md").read_text(encoding="utf-8")


# ------------------------------------------------------------------ schemathesis on a live server


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``lightspeed serve`` in a subprocess on 127.0.0.1 (the real command, the real server)."""
    tmp = tmp_path_factory.mktemp("openapi-live")
    port = _free_port()
    config = {**_config(tmp), "service": {"host": "127.0.0.1", "port": port, "access_log": False}}
    # A backend with every operation (the conversations too), so every endpoint answers for real.
    config["user_data_collection"]["storage"] = {"backend": "sqlite", "options": {"path": str(tmp / "store.db")}}
    path = tmp / "lightspeed-stack.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    log = (tmp / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lightspeed", "serve", "-c", str(path)], stdout=log, stderr=subprocess.STDOUT, cwd=tmp
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/liveness", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp / "server.log").read_text()) from None
                time.sleep(0.05)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        finally:
            log.close()
        server_log = (tmp / "server.log").read_text()
        assert "Traceback" not in server_log, server_log


_SCHEMA = schemathesis.openapi.from_dict(build_document(create_app(parse_config(SECTIONS, env={}))))
#: Enough generated requests per operation to reach every branch of the validation, few enough
#: that the whole run stays within seconds (CI sets LIGHTSPEED_SCHEMATHESIS_EXAMPLES higher).
_EXAMPLES = int(os.environ.get("LIGHTSPEED_SCHEMATHESIS_EXAMPLES", "25"))


@_SCHEMA.parametrize()
@hypothesis.settings(
    max_examples=_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(hypothesis.HealthCheck),
    database=None,
)
def test_the_live_server_answers_as_documented(case: OpenApiCase, live_server: str) -> None:
    """No 5xx, and every answer's status, content type and body are the document's."""
    case.call_and_validate(
        base_url=live_server,
        checks=[
            checks.not_a_server_error,
            checks.status_code_conformance,
            checks.content_type_conformance,
            checks.response_schema_conformance,
        ],
        timeout=30,
    )
