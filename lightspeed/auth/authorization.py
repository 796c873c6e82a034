"""Authorization: which actions a caller may perform.

Every route declares the action it needs (:mod:`lightspeed.auth.routes`);
:func:`lightspeed.api.access.auth_middleware` checks it against :class:`Authorizer`.

Roles: every caller has ``*``, plus ``group:<name>`` for each group its module reports
(``k8s``, ``trusted-proxy``), plus the roles of the JWT role rules that match its verified
claims (``jwk-token``). ``authorization.access_rules`` grant actions to roles; ``admin``
grants every action. Without rules every caller may do everything, ``admin`` and the
``*_other_conversations`` actions included: the upstream's default (its ``NoopAccessResolver``),
kept for compatibility and announced by a start-up warning (:func:`authorization_warnings`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from lightspeed.actions import Action
from lightspeed.auth.base import AuthError, AuthResult
from lightspeed.config import AuthorizationConfig, Config, JwtRoleRule, authorization_warnings

__all__ = [
    "ALL_ACTIONS",
    "METRICS_PATHS",
    "PROBE_PATHS",
    "Authorizer",
    "authorization_warnings",
    "forbidden",
    "model_override_forbidden",
]

log = logging.getLogger("lightspeed.auth.authorization")


PROBE_PATHS: Final = frozenset({"/readiness", "/liveness", "/v1/readiness", "/v1/liveness"})
METRICS_PATHS: Final = frozenset({"/metrics"})
ALL_ACTIONS: Final = frozenset(Action)


def forbidden(user_id: str) -> AuthError:
    """The upstream's 403 for a caller whose roles lack the route's action."""
    return AuthError(
        403,
        "User does not have permission to access this endpoint",
        f"User {user_id} is not authorized to access this endpoint.",
    )


def model_override_forbidden() -> AuthError:
    """The upstream's 403 for a query that names its provider or model without ``model_override``."""
    return AuthError(
        403,
        "This instance does not permit overriding model/provider in the query request (missing permission:"
        " model_override). Please remove the model and provider fields from your request.",
        "User lacks model_override permission required to override model/provider.",
    )


class _RoleRule:
    """A compiled JWT role rule: a JSONPath over the claims, an operator, a value, roles."""

    def __init__(self, rule: JwtRoleRule) -> None:
        from jsonpath_ng.ext import parse  # type: ignore[attr-defined]

        self.rule = rule
        self.path = parse(rule.jsonpath)
        self.regex = re.compile(rule.value) if rule.operator == "match" else None

    def roles_for(self, claims: Mapping[str, Any]) -> tuple[str, ...]:
        found = [m.value for m in self.path.find(claims)]
        value = self.rule.value
        try:
            match self.rule.operator:
                case "equals":
                    hit = found == value
                case "contains":
                    hit = value in found
                case "in":
                    hit = isinstance(value, list | tuple | str | dict) and found in value
                case "match":
                    assert self.regex is not None
                    hit = any(isinstance(v, str) and self.regex.search(v) is not None for v in found)
                case _:
                    hit = False
        except TypeError:
            hit = False
        if self.rule.negate:
            hit = not hit
        return self.rule.roles if hit else ()


class Authorizer:
    """Roles and allowed actions of a caller, from ``authorization`` and the JWT role rules."""

    def __init__(self, authorization: AuthorizationConfig | None, role_rules: Iterable[JwtRoleRule] = ()) -> None:
        self.enforcing = authorization is not None and bool(authorization.access_rules)
        self._grants: dict[str, frozenset[Action]] = {}
        for rule in authorization.access_rules if authorization is not None else ():
            self._grants[rule.role] = self._grants.get(rule.role, frozenset()) | {Action(a) for a in rule.actions}
        self._role_rules = [_RoleRule(r) for r in role_rules]

    @classmethod
    def from_config(cls, config: Config) -> Authorizer:
        jwk = config.authentication.jwk_config
        rules = (
            jwk.jwt_configuration.role_rules if jwk is not None and config.authentication.module == "jwk-token" else ()
        )
        return cls(config.authorization, rules)

    def roles(self, caller: AuthResult) -> frozenset[str]:
        roles = {"*"} | {f"group:{g}" for g in caller.groups}
        if caller.claims is not None:
            for rule in self._role_rules:
                roles.update(rule.roles_for(caller.claims))
        return frozenset(roles)

    def allowed_actions(self, roles: Iterable[str]) -> frozenset[Action]:
        if not self.enforcing:
            return ALL_ACTIONS
        granted: set[Action] = set()
        for role in roles:
            granted |= self._grants.get(role, frozenset())
        return ALL_ACTIONS if Action.ADMIN in granted else frozenset(granted)
