"""Every route declares what it needs, and the authorization matrix: each endpoint against a caller
with and without its action, for every authentication module (lightspeed enforces access rules for all)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from lightspeed import create_app
from lightspeed.actions import Action
from lightspeed.auth.routes import AUTHENTICATED_ONLY, PUBLIC, declared_action
from tests.auth.auth_support import JwksServer, claims, ec_key, rh_header, rh_user
from tests.fakes import MakeConfig
from tests.kube_api import DEFAULT_CLIENT_TOKEN, KubeApiStandIn

#: The Lightspeed Core Stack's action for each endpoint (routes not served yet are checked once they are).
EXPECTED: dict[tuple[str, str], Action | str] = {
    ("GET", "/liveness"): Action.INFO,
    ("GET", "/readiness"): Action.INFO,
    ("GET", "/v1/liveness"): Action.INFO,
    ("GET", "/v1/readiness"): Action.INFO,
    ("GET", "/v1/info"): Action.INFO,
    ("GET", "/metrics"): Action.GET_METRICS,
    ("POST", "/v1/feedback"): Action.FEEDBACK,
    ("POST", "/feedback"): Action.FEEDBACK,
    ("GET", "/v1/feedback/status"): PUBLIC,
    ("GET", "/feedback/status"): PUBLIC,
    ("PUT", "/v1/feedback/status"): Action.ADMIN,
    ("PUT", "/feedback/status"): Action.ADMIN,
    ("POST", "/v1/query"): Action.QUERY,
    ("POST", "/query"): Action.QUERY,
    ("POST", "/v1/streaming_query"): Action.STREAMING_QUERY,
    ("POST", "/streaming_query"): Action.STREAMING_QUERY,
    ("POST", "/v1/streaming_query/interrupt"): Action.STREAMING_QUERY,
    ("POST", "/authorized"): AUTHENTICATED_ONLY,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/v1/models"): Action.GET_MODELS,
    ("GET", "/v1/config"): Action.GET_CONFIG,
    ("GET", "/v1/conversations"): Action.LIST_CONVERSATIONS,
    ("GET", "/v1/conversations/{conversation_id}"): Action.GET_CONVERSATION,
    ("DELETE", "/v1/conversations/{conversation_id}"): Action.DELETE_CONVERSATION,
    ("PUT", "/v1/conversations/{conversation_id}"): Action.UPDATE_CONVERSATION,
    ("GET", "/v2/conversations"): Action.LIST_CONVERSATIONS,
    ("GET", "/v2/conversations/{conversation_id}"): Action.GET_CONVERSATION,
    ("DELETE", "/v2/conversations/{conversation_id}"): Action.DELETE_CONVERSATION,
    ("PUT", "/v2/conversations/{conversation_id}"): Action.UPDATE_CONVERSATION,
}

FORBIDDEN_RESPONSE = "User does not have permission to access this endpoint"


def routes(app: web.Application) -> list[tuple[str, str, Any]]:
    """``(method, path template, declaration)`` of every route the application serves."""
    out = []
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        out.append((route.method, route.resource.canonical, declared_action(route.handler)))
    return out


def test_every_route_declares_what_it_needs(make_config: MakeConfig) -> None:
    """A route added without requires/authenticated_only/public fails here (and answers 500 at run time)."""
    app = create_app(make_config())
    served = routes(app)
    assert len(served) >= 15
    missing = [(m, p) for m, p, d in served if d is None]
    assert missing == [], f"routes without a declared action: {missing}"
    wrong = {(m, p): (d, EXPECTED[(m, p)]) for m, p, d in served if (m, p) in EXPECTED and d != EXPECTED[(m, p)]}
    assert wrong == {}, f"routes whose action differs from the upstream's (declared, expected): {wrong}"
    unknown = [(m, p, d) for m, p, d in served if (m, p) not in EXPECTED and d == PUBLIC]
    assert unknown == [], f"public routes the upstream protects? add them to EXPECTED if deliberate: {unknown}"


async def test_a_route_without_declaration_answers_500(aiohttp_client: Any, make_config: MakeConfig) -> None:
    app = create_app(make_config())

    async def undeclared(request: web.Request) -> web.Response:
        raise AssertionError("must not run")

    app.router.add_get("/undeclared", undeclared)
    client = await aiohttp_client(app)
    resp = await client.get("/undeclared")
    assert resp.status == 500
    assert (await resp.json())["detail"]["cause"] == "This endpoint is not configured for authorization."


# --------------------------------------------------------------------------- the matrix

Caller = dict[str, str]


def _actions(app: web.Application) -> list[tuple[str, str, Action]]:
    return [(m, p, d) for m, p, d in routes(app) if isinstance(d, Action)]


async def _check(client: TestClient[web.Request, web.Application], method: str, template: str, headers: Caller) -> bool:
    """True when the route let the caller through (anything but the authorization 403)."""
    path = template.replace("{conversation_id}", str(uuid.uuid4()))
    resp = await client.request(method, path, json={}, headers=headers)
    body = await resp.read()
    if resp.status == 403 and FORBIDDEN_RESPONSE.encode() in body:
        assert resp.content_type == "application/json"
        return False
    assert resp.status not in (401, 500), (method, path, resp.status, body[:300])
    return True


async def _matrix(
    make_app_client: Callable[[dict[str, Any]], Awaitable[TestClient[web.Request, web.Application]]],
    auth: dict[str, Any],
    caller: Callable[[Action], Caller],
    role_prefix: str | None,
    make_config: MakeConfig,
) -> None:
    """``role_prefix``: callers of a module that tells them apart have the role ``{prefix}role-{action}``;
    ``None``: every caller has only ``*`` (one application per action)."""
    actions = sorted({a for _, _, a in _actions(create_app(make_config()))})
    assert Action.ADMIN in actions and Action.QUERY in actions and Action.INFO in actions
    if role_prefix is not None:
        rules = [{"role": f"{role_prefix}role-{a.value}", "actions": [a.value]} for a in actions]
        rules.append({"role": "*", "actions": ["get_tools"]})  # something no route needs
        client = await make_app_client({"authentication": auth, "authorization": {"access_rules": rules}})
        clients = dict.fromkeys(actions, client)
    else:
        clients = {}
        for a in actions:
            clients[a] = await make_app_client(
                {"authentication": auth, "authorization": {"access_rules": [{"role": "*", "actions": [a.value]}]}}
            )
    for granted in actions:
        client = clients[granted]
        for method, template, needed in _actions(client.app):
            through = await _check(client, method, template, caller(granted))
            expected = needed == granted or granted == Action.ADMIN
            assert through == expected, (auth["module"], granted.value, method, template, needed.value)


@pytest.fixture
def make_app_client(aiohttp_client: Any, make_config: MakeConfig) -> Any:
    async def make(sections: dict[str, Any]) -> TestClient[web.Request, web.Application]:
        cfg = make_config(**sections, llm_providers=[{"name": "echo", "type": "echo", "models": ["echo"]}])
        client: TestClient[web.Request, web.Application] = await aiohttp_client(create_app(cfg))
        return client

    return make


@pytest.mark.parametrize("module", ["noop", "noop-with-token", "api-key-token", "rh-identity"])
async def test_matrix_for_modules_without_roles(module: str, make_app_client: Any, make_config: MakeConfig) -> None:
    auth: dict[str, Any] = {"module": module}
    headers: Caller = {}
    if module == "noop-with-token":
        headers = {"Authorization": "Bearer anything"}
    elif module == "api-key-token":
        auth["api_key_config"] = {"api_key": "k-123"}
        headers = {"Authorization": "Bearer k-123"}
    elif module == "rh-identity":
        headers = {"x-rh-identity": rh_header(rh_user())}
    await _matrix(make_app_client, auth, lambda a: headers, None, make_config)


async def test_matrix_for_jwk_token_role_rules(jwks: JwksServer, make_app_client: Any, make_config: MakeConfig) -> None:
    key = ec_key()
    jwks.keys = [key.jwk()]
    auth = {
        "module": "jwk-token",
        "jwk_config": {
            "url": jwks.url,
            "jwt_configuration": {
                "role_rules": [
                    {"jsonpath": "$.grants[*]", "operator": "contains", "value": a.value, "roles": [f"role-{a.value}"]}
                    for a in Action
                ]
            },
        },
    }

    def caller(action: Action) -> Caller:
        return {"Authorization": f"Bearer {key.sign(claims(grants=[action.value]))}"}

    await _matrix(make_app_client, auth, caller, "", make_config)


async def test_matrix_for_k8s_groups(in_cluster: KubeApiStandIn, make_app_client: Any, make_config: MakeConfig) -> None:
    in_cluster.allow("group:system:authenticated")
    for a in Action:
        in_cluster.add_user(
            f"tok-{a.value}",
            username=f"u-{a.value}",
            uid=f"uid-{a.value}",
            groups=["system:authenticated", f"role-{a.value}"],
        )
    auth = {"module": "k8s"}

    def caller(action: Action) -> Caller:
        return {"Authorization": f"Bearer tok-{action.value}"}

    await _matrix(make_app_client, auth, caller, "group:", make_config)


async def test_matrix_for_trusted_proxy_groups(
    in_cluster: KubeApiStandIn, make_app_client: Any, make_config: MakeConfig
) -> None:
    in_cluster.add_user("proxy-token", username="system:serviceaccount:gateway:proxy", uid="sa-1")
    auth = {"module": "trusted-proxy", "trusted_proxy_config": {"groups_header": "X-Forwarded-Groups"}}

    def caller(action: Action) -> Caller:
        return {
            "Authorization": "Bearer proxy-token",
            "X-Forwarded-User": f"user-{action.value}",
            "X-Forwarded-Groups": f"devs, role-{action.value}",
        }

    await _matrix(make_app_client, auth, caller, "group:", make_config)


def test_in_cluster_fixture_uses_the_stand_in(in_cluster: KubeApiStandIn, tmp_path: Path) -> None:
    from lightspeed.kube import KubeCredentials

    creds = KubeCredentials.discover()
    assert creds.in_cluster and creds.server == in_cluster.url
    assert (Path(creds.token_file or "").read_text().strip()) == DEFAULT_CLIENT_TOKEN
