"""Tokens, API keys and identity headers never appear in logs (any level), error bodies or ``/v1/config``."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.auth.auth_support import JwksServer, claims, ec_key, rh_header, rh_user
from tests.kube_api import KubeApiStandIn

API_KEY = "ak-5ecret-0f-the-service-7c1e"
K8S_TOKEN = "sha256~k8s-user-token-9f3b2a"
PROXY_TOKEN = "sa-proxy-token-1d7e44"


async def exercise(client: Any, headers_list: list[dict[str, str]]) -> list[str]:
    """Every endpoint with every header set; the bodies of all answers."""
    bodies = []
    for headers in headers_list:
        for method, path, body in (
            ("POST", "/authorized", None),
            ("GET", "/v1/info", None),
            ("POST", "/v1/query", {"query": "hi"}),
            ("PUT", "/v1/feedback/status", {"status": True}),
            ("GET", "/v1/config", None),
            ("GET", "/metrics", None),
        ):
            resp = await client.request(method, path, json=body, headers=headers)
            bodies.append(await resp.text())
    return bodies


def assert_absent(secret: str, caplog: pytest.LogCaptureFixture, bodies: list[str]) -> None:
    logged = "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    assert caplog.records, "nothing was logged: the test would prove nothing"
    assert secret not in logged
    for body in bodies:
        assert secret not in body
    # Also no telling fragment (a prefix long enough to narrow a guess).
    assert secret[:12] not in logged and all(secret[:12] not in b for b in bodies)


async def test_api_key(make_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = await make_client(authentication={"module": "api-key-token", "api_key_config": {"api_key": API_KEY}})
    bodies = await exercise(
        client,
        [{"Authorization": f"Bearer {API_KEY}"}, {"Authorization": f"Bearer {API_KEY}x"}, {"Authorization": API_KEY}],
    )
    assert_absent(API_KEY, caplog, bodies)


@pytest.mark.parametrize("fault", [None, "error", "hang"])
async def test_k8s_and_trusted_proxy_tokens(
    in_cluster: KubeApiStandIn, make_client: Any, caplog: pytest.LogCaptureFixture, fault: str | None
) -> None:
    caplog.set_level(logging.DEBUG)
    in_cluster.add_user(K8S_TOKEN, username="alice", uid="uid-a", groups=["devs"])
    in_cluster.add_user(PROXY_TOKEN, username="system:serviceaccount:gw:proxy", uid="sa")
    in_cluster.allow("group:devs")
    in_cluster.fault = fault
    k8s = await make_client(authentication={"module": "k8s", "k8s_timeout_seconds": 0.3})
    bodies = await exercise(k8s, [{"Authorization": f"Bearer {K8S_TOKEN}"}, {"Authorization": f"Bearer {K8S_TOKEN}0"}])
    proxy = await make_client(authentication={"module": "trusted-proxy", "k8s_timeout_seconds": 0.3})
    bodies += await exercise(proxy, [{"Authorization": f"Bearer {PROXY_TOKEN}", "X-Forwarded-User": "carol"}])
    assert_absent(K8S_TOKEN, caplog, bodies)
    assert_absent(PROXY_TOKEN, caplog, bodies)
    assert "sa-token-of-lightspeed" not in caplog.text  # lightspeed's own service-account token


async def test_jwt(jwks: JwksServer, make_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key = ec_key()
    jwks.keys = [key.jwk()]
    token = key.sign(claims())
    expired = key.sign(claims(exp=1))
    client = await make_client(authentication={"module": "jwk-token", "jwk_config": {"url": jwks.url}})
    bodies = await exercise(client, [{"Authorization": f"Bearer {token}"}, {"Authorization": f"Bearer {expired}"}])
    for secret in (token, expired, token.split(".")[2], expired.split(".")[2]):
        assert_absent(secret, caplog, bodies)


async def test_rh_identity_header(make_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    header = rh_header(rh_user("user-77", "secretive"))
    bad = rh_header({"type": "User", "user": {"user_id": "u"}})
    client = await make_client(authentication={"module": "rh-identity", "rh_identity_config": {"max_header_size": 100}})
    bodies = await exercise(client, [{"x-rh-identity": header}, {"x-rh-identity": bad}])
    client = await make_client(authentication={"module": "rh-identity"})
    bodies += await exercise(client, [{"x-rh-identity": header}, {"x-rh-identity": bad}])
    assert_absent(header, caplog, bodies)
    assert_absent(bad, caplog, bodies)
