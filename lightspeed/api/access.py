"""Access control on requests: the middleware that authenticates and authorizes every route by its
declaration (:mod:`lightspeed.auth.routes`), and what handlers ask of it afterwards.

The rules themselves (roles, access rules, JWT role rules) are :class:`lightspeed.auth.authorization.Authorizer`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from lightspeed.actions import Action
from lightspeed.auth import AuthError, AuthModule
from lightspeed.auth.authorization import (
    ALL_ACTIONS,
    METRICS_PATHS,
    PROBE_PATHS,
    Authorizer,
    forbidden,
    model_override_forbidden,
)
from lightspeed.auth.routes import AUTHENTICATED_ONLY, PUBLIC, declared_action
from lightspeed.config import AuthenticationConfig
from lightspeed.state import auth_result_from, granted_actions_from, set_auth_result, set_granted_actions

__all__ = ["auth_middleware", "auth_result_from", "authorized_actions_from", "require_model_override"]

log = logging.getLogger("lightspeed.auth.authorization")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def authorized_actions_from(request: web.Request) -> frozenset[Action]:
    """The actions the caller may perform (every one when no access rules are configured)."""
    actions = granted_actions_from(request)
    return ALL_ACTIONS if actions is None else actions


def require_model_override(request: web.Request, *, provider: str | None, model: str | None) -> None:
    """403 (the upstream's body) when a request names its provider or model without ``model_override``."""
    if (provider is None and model is None) or Action.MODEL_OVERRIDE in authorized_actions_from(request):
        return
    raise model_override_forbidden()


def auth_middleware(module: AuthModule, authorizer: Authorizer, auth_config: AuthenticationConfig) -> Any:
    """The middleware that authenticates and authorizes every request by its route's declaration."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        match_info = request.match_info
        if match_info.http_exception is not None:
            return await handler(request)  # the router's own 404/405
        declaration = declared_action(match_info.handler)
        if declaration is None:
            log.error(
                "route %s %s declares no action (decorate its handler with requires/authenticated_only/public)",
                request.method,
                match_info.route.resource.canonical if match_info.route.resource else request.path,
            )
            raise AuthError(500, "Internal server error", "This endpoint is not configured for authorization.")
        if declaration == PUBLIC:
            return await handler(request)
        path = request.path
        if not module.presents_credentials(request) and (
            (auth_config.skip_for_health_probes and path in PROBE_PATHS)
            or (auth_config.skip_for_metrics and path in METRICS_PATHS)
        ):
            return await handler(request)
        caller = await module.authenticate(request)
        set_auth_result(request, caller)
        if declaration == AUTHENTICATED_ONLY:
            return await handler(request)
        assert isinstance(declaration, Action)
        allowed = authorizer.allowed_actions(authorizer.roles(caller))
        if declaration not in allowed:
            log.info("%s %s: user %s lacks the action %s", request.method, path, caller.user_id, declaration.value)
            raise forbidden(caller.user_id)
        set_granted_actions(request, allowed)
        return await handler(request)

    return middleware
