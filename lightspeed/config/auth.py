"""``authentication`` (who the caller is) and ``authorization`` (what each role may do), and
their checks."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

if TYPE_CHECKING:
    from lightspeed.config.model import Config

__all__ = [
    "AUTH_MODULES",
    "JSONPATH_OPERATORS",
    "AccessRule",
    "ApiKeyConfig",
    "AuthenticationConfig",
    "AuthorizationConfig",
    "JwkConfig",
    "JwtConfig",
    "JwtRoleRule",
    "RhIdentityConfig",
    "TrustedProxyConfig",
    "TrustedProxyServiceAccount",
    "auth_problems",
    "authorization_warnings",
]

AUTH_MODULES: Final = ("noop", "noop-with-token", "k8s", "jwk-token", "api-key-token", "rh-identity", "trusted-proxy")
JSONPATH_OPERATORS: Final = ("equals", "contains", "in", "match")


@attrs.frozen(kw_only=True)
class JwtRoleRule:
    """One entry of ``jwt_configuration.role_rules``: roles given when a JSONPath over the claims matches."""

    jsonpath: str
    operator: str
    value: Any
    roles: tuple[str, ...]
    negate: bool = False


@attrs.frozen(kw_only=True)
class JwtConfig:
    """``authentication.jwk_config.jwt_configuration``: which claims name the user, and role rules."""

    user_id_claim: str = "user_id"
    username_claim: str = "username"
    role_rules: tuple[JwtRoleRule, ...] = ()


@attrs.frozen(kw_only=True)
class JwkConfig:
    """``authentication.jwk_config``: where the signing keys are; issuer and audience are ours."""

    url: str
    jwt_configuration: JwtConfig = attrs.field(factory=JwtConfig)
    #: Lightspeed extensions (the upstream has none of these).
    issuer: str | None = None
    audience: tuple[str, ...] | None = None
    algorithms: tuple[str, ...] = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
    leeway_seconds: float = 0
    jwks_cache_ttl_seconds: float = 3600
    timeout_seconds: float = 5


@attrs.frozen(kw_only=True)
class ApiKeyConfig:
    """``authentication.api_key_config``: the key (``${env.NAME}`` works), or ``api_key_path`` (ours)."""

    api_key: str | None = attrs.field(default=None, repr=False)
    api_key_path: str | None = None


@attrs.frozen(kw_only=True)
class RhIdentityConfig:
    """``authentication.rh_identity_config``."""

    required_entitlements: tuple[str, ...] | None = None
    max_header_size: int = 8192


@attrs.frozen(kw_only=True)
class TrustedProxyServiceAccount:
    """One entry of ``trusted_proxy_config.allowed_service_accounts``."""

    namespace: str
    name: str


@attrs.frozen(kw_only=True)
class TrustedProxyConfig:
    """``authentication.trusted_proxy_config``; ``groups_header`` is ours."""

    user_header: str = "X-Forwarded-User"
    allowed_service_accounts: tuple[TrustedProxyServiceAccount, ...] | None = None
    groups_header: str | None = None


@attrs.frozen(kw_only=True)
class AuthenticationConfig:
    """``authentication``: which module tells who the caller is, and its settings (the upstream's keys).

    ``k8s_cache_ttl_seconds``, ``k8s_cache_max_entries`` and ``k8s_timeout_seconds`` are
    lightspeed's: how long a TokenReview/SubjectAccessReview outcome is reused, how many are
    kept, and how long one Kubernetes API call may take (``k8s`` and ``trusted-proxy``).
    """

    module: str = "noop"
    skip_tls_verification: bool = False
    skip_for_health_probes: bool = False
    skip_for_metrics: bool = False
    k8s_cluster_api: str | None = None
    k8s_ca_cert_path: str | None = None
    jwk_config: JwkConfig | None = None
    api_key_config: ApiKeyConfig | None = None
    rh_identity_config: RhIdentityConfig | None = None
    trusted_proxy_config: TrustedProxyConfig | None = None
    k8s_cache_ttl_seconds: float = 30
    k8s_cache_max_entries: int = 1024
    k8s_timeout_seconds: float = 5


@attrs.frozen(kw_only=True)
class AccessRule:
    """One entry of ``authorization.access_rules``: a role and the actions it may perform."""

    role: str
    actions: tuple[str, ...]


@attrs.frozen(kw_only=True)
class AuthorizationConfig:
    """``authorization``: role-based access rules. Absent: every caller may do everything."""

    access_rules: tuple[AccessRule, ...] = ()


def auth_problems(auth: AuthenticationConfig, authz: AuthorizationConfig | None) -> list[str]:
    """The ``authentication`` and ``authorization`` sections' checks."""
    from lightspeed.actions import Action

    problems: list[str] = []
    add = problems.append
    base = "authentication"
    if auth.module not in AUTH_MODULES:
        add(f"{base}.module: must be one of {', '.join(AUTH_MODULES)}, got {auth.module!r}")
    required = {"jwk-token": "jwk_config", "api-key-token": "api_key_config"}
    if auth.module in required and getattr(auth, required[auth.module]) is None:
        add(f"{base}.{required[auth.module]}: required when module is {auth.module}")
    if auth.k8s_cluster_api is not None and not re.match(r"https?://[^/\s]+", auth.k8s_cluster_api):
        add(f"{base}.k8s_cluster_api: must be an https:// URL, got {auth.k8s_cluster_api!r}")
    if auth.k8s_ca_cert_path is not None and not Path(auth.k8s_ca_cert_path).is_file():
        add(f"{base}.k8s_ca_cert_path: file {auth.k8s_ca_cert_path!r} does not exist")
    for key in ("k8s_cache_ttl_seconds", "k8s_timeout_seconds"):
        val = getattr(auth, key)
        if not (math.isfinite(val) and val >= (0 if key == "k8s_cache_ttl_seconds" else 0.001)):
            add(f"{base}.{key}: must be a finite number{' of 0 or more' if 'ttl' in key else ' greater than 0'}")
    if auth.k8s_cache_max_entries < 1:
        add(f"{base}.k8s_cache_max_entries: must be at least 1, got {auth.k8s_cache_max_entries}")

    jwk = auth.jwk_config
    if jwk is not None:
        jb = f"{base}.jwk_config"
        if not re.match(r"https?://[^/\s]+", jwk.url):
            add(f"{jb}.url: must be an http:// or https:// URL, got {jwk.url!r}")
        for key in ("leeway_seconds", "jwks_cache_ttl_seconds", "timeout_seconds"):
            val = getattr(jwk, key)
            if not (math.isfinite(val) and val >= 0) or (key == "timeout_seconds" and val <= 0):
                add(f"{jb}.{key}: must be a finite number {'greater than 0' if key == 'timeout_seconds' else '>= 0'}")
        allowed_algs = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
        for alg in jwk.algorithms:
            if alg not in allowed_algs:
                add(
                    f"{jb}.algorithms: {alg!r} is not supported (asymmetric algorithms only: {', '.join(allowed_algs)})"
                )
        if not jwk.algorithms:
            add(f"{jb}.algorithms: list at least one algorithm")
        if jwk.audience is not None and not jwk.audience:
            add(f"{jb}.audience: list at least one audience, or leave it out")
        jwt_cfg = jwk.jwt_configuration
        for key in ("user_id_claim", "username_claim"):
            if not getattr(jwt_cfg, key):
                add(f"{jb}.jwt_configuration.{key}: must not be empty")
        for i, rule in enumerate(jwt_cfg.role_rules):
            problems.extend(_role_rule_problems(rule, f"{jb}.jwt_configuration.role_rules[{i}]"))

    key_cfg = auth.api_key_config
    if key_cfg is not None:
        kb = f"{base}.api_key_config"
        if key_cfg.api_key is not None and key_cfg.api_key_path is not None:
            add(f"{kb}.api_key_path: give either api_key or api_key_path, not both")
        elif key_cfg.api_key is None and key_cfg.api_key_path is None:
            add(f"{kb}.api_key: required (or give api_key_path)")
        elif key_cfg.api_key is not None and not key_cfg.api_key.strip():
            add(f"{kb}.api_key: must not be empty")
        elif key_cfg.api_key_path is not None and not Path(key_cfg.api_key_path).is_file():
            add(f"{kb}.api_key_path: file {key_cfg.api_key_path!r} does not exist")

    rh = auth.rh_identity_config
    if rh is not None and rh.max_header_size < 1:
        add(f"{base}.rh_identity_config.max_header_size: must be greater than 0, got {rh.max_header_size}")

    tp = auth.trusted_proxy_config
    if tp is not None:
        header_re = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
        if not header_re.fullmatch(tp.user_header):
            add(f"{base}.trusted_proxy_config.user_header: not a valid header name: {tp.user_header!r}")
        if tp.groups_header is not None and not header_re.fullmatch(tp.groups_header):
            add(f"{base}.trusted_proxy_config.groups_header: not a valid header name: {tp.groups_header!r}")

    if authz is not None:
        names = {a.value for a in Action}
        for i, access in enumerate(authz.access_rules):
            rb = f"authorization.access_rules[{i}]"
            if not access.role:
                add(f"{rb}.role: must not be empty")
            for j, action in enumerate(access.actions):
                if action not in names:
                    add(f"{rb}.actions[{j}]: unknown action {action!r} (one of {', '.join(sorted(names))})")
            if "admin" in access.actions and len(access.actions) > 1:
                add(f"{rb}.actions: 'admin' grants every action; list it alone")
            if not access.actions:
                add(f"{rb}.actions: list at least one action")
    return problems


def _role_rule_problems(rule: JwtRoleRule, path: str) -> list[str]:
    from jsonpath_ng.ext import parse as parse_jsonpath  # type: ignore[attr-defined]

    problems: list[str] = []
    try:
        parse_jsonpath(rule.jsonpath)
    except Exception as exc:  # noqa: BLE001 - jsonpath-ng raises several unrelated types
        problems.append(f"{path}.jsonpath: invalid JSONPath {rule.jsonpath!r}: {exc}")
    if rule.operator not in JSONPATH_OPERATORS:
        problems.append(f"{path}.operator: must be one of {', '.join(JSONPATH_OPERATORS)}, got {rule.operator!r}")
    elif rule.operator == "match":
        if not isinstance(rule.value, str):
            problems.append(f"{path}.value: the match operator needs a regular expression string")
        else:
            try:
                re.compile(rule.value)
            except re.error as exc:
                problems.append(f"{path}.value: invalid regular expression: {exc}")
    if not rule.roles:
        problems.append(f"{path}.roles: list at least one role")
    elif len(set(rule.roles)) != len(rule.roles):
        problems.append(f"{path}.roles: roles must be unique")
    if "*" in rule.roles:
        problems.append(f"{path}.roles: '*' is not allowed (every caller has it already)")
    return problems


def authorization_warnings(config: Config) -> list[str]:
    """What an operator should hear at start-up (and from ``check-config``) about access control."""
    warnings: list[str] = []
    if config.authorization is None or not config.authorization.access_rules:
        warnings.append(
            "no authorization.access_rules are configured, so every caller may perform every action (the"
            " Lightspeed Core Stack's default): list, read, continue, rename and delete other users'"
            " conversations (the *_other_conversations actions), and admin (PUT /v1/feedback/status turns feedback"
            " collection off for everyone); to restrict it, grant actions to roles in the authorization section,"
            ' for instance access_rules: [{role: "*", actions: [query, streaming_query, feedback, list_conversations,'
            " get_conversation, delete_conversation, update_conversation, get_models, info]},"
            " {role: <admin role>, actions: [admin]}] (see docs/authentication.md, Authorization)"
        )
    auth = config.authentication
    if auth.skip_tls_verification and auth.module in ("k8s", "trusted-proxy", "jwk-token"):
        warnings.append(
            "authentication.skip_tls_verification is true: the identity of the Kubernetes API or key server is"
            " not checked; use it only for development"
        )
    return warnings
