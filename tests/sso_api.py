"""A stand-in for Red Hat SSO and the access-token exchange, on 127.0.0.1 (the real ones cannot be reached).

It speaks their wire protocol as the credential providers use it:

* ``POST {TOKEN_PATH}``, an OAuth 2.0 token endpoint taking a form: the client-credentials
  grant (``client_id``, ``client_secret``, ``scope``) and the refresh-token grant (client
  ``rhsm-api``, ``refresh_token`` = an offline token). It issues short-lived JWT access tokens
  (``expires_in`` as set) with ``preferred_username`` and ``sub``; bad credentials get the
  OAuth error answer (``401 {"error": "unauthorized_client", ...}``, or ``400 invalid_grant``).
* ``POST {EXCHANGE_PATH}`` with ``Authorization: Bearer <access token>``: 401 unless the token
  is one it issued and has not expired; else ``{"auths": {"cloud.openshift.com": {"auth": ...}}}``
  with the ingress token of the moment (``ingress_token``, which tests rotate).

Every call is recorded (``calls``), and faults can be queued per endpoint (``fail_token``,
``fail_exchange``: a status to answer the next calls with).
"""

from __future__ import annotations

import collections
import time
import uuid
from typing import Any, Final

import attrs
import jwt
from aiohttp import web
from aiohttp.test_utils import TestServer

TOKEN_PATH: Final = "/auth/realms/redhat-external/protocol/openid-connect/token"
EXCHANGE_PATH: Final = "/api/accounts_mgmt/v1/access_token"
_KEY: Final = "sso-stand-in-signing-key-not-a-secret"


@attrs.define(kw_only=True, eq=False)
class SSOStandIn:
    client_id: str = "svc-client"
    client_secret: str = "svc-secret"
    offline_token: str = "offline-token-value"
    username: str = "service-account-svc-client"
    expires_in: float = 300.0
    ingress_token: str = "ingress-token-1"
    #: Whether tokens carry preferred_username (else only sub).
    with_username: bool = True
    calls: list[dict[str, Any]] = attrs.field(factory=list)
    fail_token: collections.deque[int] = attrs.field(factory=collections.deque)
    fail_exchange: collections.deque[int] = attrs.field(factory=collections.deque)
    #: Access tokens issued: jti -> expiry (Unix time).
    issued: dict[str, float] = attrs.field(factory=dict)
    server: TestServer | None = None

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(TOKEN_PATH, self.token)
        app.router.add_post(EXCHANGE_PATH, self.exchange)
        return app

    @property
    def token_url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url(TOKEN_PATH))

    @property
    def exchange_url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url(EXCHANGE_PATH))

    def of(self, endpoint: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["endpoint"] == endpoint]

    def _issue(self) -> str:
        now = time.time()
        jti = uuid.uuid4().hex
        claims: dict[str, Any] = {"sub": "f2b7c1d0-sub", "iat": int(now), "jti": jti, "scope": "api.console"}
        if self.with_username:
            claims["preferred_username"] = self.username
        self.issued[jti] = now + self.expires_in
        return jwt.encode(claims, _KEY, algorithm="HS256")

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        grant = str(form.get("grant_type", ""))
        call: dict[str, Any] = {"endpoint": "token", "grant_type": grant, "at": time.time()}
        call.update({k: str(form[k]) for k in ("client_id", "scope") if k in form})
        self.calls.append(call)
        if self.fail_token:
            call["status"] = status = self.fail_token.popleft()
            return web.json_response({"error": "temporarily_unavailable"}, status=status)
        if grant == "client_credentials":
            if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
                call["status"] = 401
                answer = {"error": "unauthorized_client", "error_description": "Invalid client credentials"}
                return web.json_response(answer, status=401)
        elif grant == "refresh_token":
            if form.get("client_id") != "rhsm-api" or form.get("refresh_token") != self.offline_token:
                call["status"] = 400
                return web.json_response(
                    {"error": "invalid_grant", "error_description": "Invalid refresh token"}, status=400
                )
        else:
            call["status"] = 400
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        call["status"] = 200
        granted = {"access_token": self._issue(), "expires_in": self.expires_in, "token_type": "Bearer"}
        return web.json_response({**granted, "scope": "api.console"})

    async def exchange(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        call: dict[str, Any] = {"endpoint": "exchange", "at": time.time(), "expired": None, "jti": None}
        self.calls.append(call)
        if self.fail_exchange:
            call["status"] = status = self.fail_exchange.popleft()
            return web.json_response({"kind": "Error", "reason": "fault"}, status=status)
        try:
            claims = jwt.decode(header.removeprefix("Bearer "), _KEY, algorithms=["HS256"])
        except jwt.PyJWTError:
            call["status"] = 401
            return web.json_response({"kind": "Error", "reason": "bad token"}, status=401)
        jti = claims.get("jti")
        call["jti"] = jti
        expiry = self.issued.get(str(jti))
        call["expired"] = expiry is None or time.time() >= expiry
        if call["expired"]:
            call["status"] = 401
            return web.json_response({"kind": "Error", "reason": "token expired"}, status=401)
        call["status"] = 200
        return web.json_response(
            {"auths": {"cloud.openshift.com": {"auth": self.ingress_token, "email": "svc@example.com"}}}
        )


async def start_sso(**kwargs: Any) -> SSOStandIn:
    sso = SSOStandIn(**kwargs)
    sso.server = TestServer(sso.make_app(), host="127.0.0.1")
    await sso.server.start_server()
    return sso
