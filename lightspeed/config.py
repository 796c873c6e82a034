"""The configuration file: attrs classes, loading, ``${env.NAME}`` substitution, validation.

The file is the Lightspeed Core Stack's ``lightspeed-stack.yaml``. It is structured with a
private cattrs converter that rejects unknown keys and wrong types; every problem is
reported at once, each prefixed with the full dotted path of the offending key.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Literal, NewType, TypeVar, get_args, get_origin
from urllib.parse import urlsplit

import attrs
import cattrs
import yaml
from cattrs.errors import (
    AttributeValidationNote,
    BaseValidationError,
    ForbiddenExtraKeysError,
    IterableValidationNote,
)

from lightspeed.errors import ConfigError
from lightspeed.lcs_keys import split_lcs_keys
from lightspeed.masking import MASK, masked_url, url_secrets

__all__ = [
    "AccessRule",
    "ApiKeyConfig",
    "AuthenticationConfig",
    "CollectorAuthConfig",
    "CREDENTIAL_MODES",
    "AuthorizationConfig",
    "authorization_warnings",
    "JwkConfig",
    "JwtConfig",
    "JwtRoleRule",
    "RhIdentityConfig",
    "TrustedProxyConfig",
    "TrustedProxyServiceAccount",
    "Config",
    "DataCollectorConfig",
    "DEFAULT_CONFIG_FILE",
    "DEFAULT_FEEDBACK_CATEGORIES",
    "InferenceConfig",
    "LLMProviderConfig",
    "LLAMA_STACK_OPENAI_PATH",
    "LlamaStackConfig",
    "OctalMode",
    "QueryFilter",
    "ServiceConfig",
    "StorageConfig",
    "UserDataCollectionConfig",
    "config_secrets",
    "config_to_dict",
    "load_config",
    "parse_config",
    "resolve_config_path",
    "structure_section",
]

T = TypeVar("T")

#: A permission such as ``0o640``, given as an integer or an octal string (``"0640"``).
OctalMode = NewType("OctalMode", int)

DEFAULT_CONFIG_FILE: Final = "lightspeed-stack.yaml"
CONFIG_ENV_VAR: Final = "LIGHTSPEED_CONFIG"

LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
AUTH_MODULES: Final = ("noop", "noop-with-token", "k8s", "jwk-token", "api-key-token", "rh-identity", "trusted-proxy")
JSONPATH_OPERATORS: Final = ("equals", "contains", "in", "match")
PROVIDER_TYPES: Final = ("openai", "echo")
#: Where the data collector gets its ingress token (``data_collector.auth.mode``).
CREDENTIAL_MODES: Final = ("manual", "openshift", "sso", "offline-token")

#: The upstream's categories plus ``helpful``, which the seed's example uses.
DEFAULT_FEEDBACK_CATEGORIES: Final = (
    "incorrect",
    "not_relevant",
    "incomplete",
    "outdated_information",
    "unsafe",
    "other",
    "helpful",
)

_SERVICE_NAME_RE: Final = re.compile(r"[a-z0-9-]+")
#: ``${env.NAME}``; ``${env.NAME:=default}`` (the default when NAME is unset or empty);
#: ``${env.NAME:+value}`` (value when NAME is set and not empty, else nothing), as the upstream.
_ENV_RE: Final = re.compile(r"\$\{env\.([A-Za-z_][A-Za-z0-9_]*)(?::([=+])([^}]*))?\}")
#: Where a Llama Stack server serves the OpenAI-compatible API, below ``llama_stack.url``.
LLAMA_STACK_OPENAI_PATH: Final = "/v1/openai/v1"


@attrs.frozen(kw_only=True)
class ServiceConfig:
    """``service``: where and how the HTTP service listens."""

    host: str = "localhost"
    port: int = 8080
    log_level: str = "info"
    workers: int = 1
    access_log: bool = True
    #: Largest accepted request body, in bytes; larger bodies get 413.
    max_request_body_bytes: int = 1024 * 1024
    #: Open client connections at most (lowered to fit the open-files limit); beyond it the oldest
    #: idle connection is closed, or, when none is idle, the newcomer gets 503.
    max_connections: int = 10000
    #: An idle connection (between requests, or before its first) is closed after this many seconds.
    keepalive_timeout_seconds: float = 15
    #: A client that reads nothing of an answer waiting for it this long is cut off (a stream's
    #: truncated transcript is stored).
    write_timeout_seconds: float = 30
    #: Bytes of an answer buffered per connection: the kernel's send buffer and asyncio's, each.
    write_buffer_bytes: int = 256 * 1024


@attrs.frozen(kw_only=True)
class StorageConfig:
    """``user_data_collection.storage``: which backend stores records, and its options."""

    backend: str = "filesystem"
    options: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class CollectorAuthConfig:
    """``user_data_collection.data_collector.auth``: where the ingress token and identity come from.

    ``manual`` is the token (or token file) of ``data_collector`` itself; ``openshift`` reads
    the cluster's pull secret and cluster id from the Kubernetes API; ``sso`` trades a service
    account's client id and secret at Red Hat SSO; ``offline-token`` trades an offline token.
    """

    mode: str = "manual"
    #: Seconds between re-reads of the pull secret, or re-exchanges of the SSO token for an
    #: ingress token (which carries no expiry); a 401 from the ingress also forces one.
    refresh_seconds: float = 3600
    #: Bound on each request to the Kubernetes API or to SSO.
    timeout_seconds: float = 10
    # openshift
    kubeconfig: str | None = None
    pull_secret_namespace: str = "openshift-config"
    pull_secret_name: str = "pull-secret"
    # sso
    client_id: str | None = None
    client_id_path: str | None = None
    client_secret: str | None = None
    client_secret_path: str | None = None
    # offline-token
    offline_token: str | None = None
    offline_token_path: str | None = None
    # sso and offline-token
    #: Red Hat's stage SSO and API endpoints instead of production (the upstream's ``USE_SSO_STAGE``).
    sso_stage: bool = False
    #: Overrides of the token endpoint and of the access-token exchange (default: by ``sso_stage``).
    sso_token_url: str | None = None
    access_token_url: str | None = None


@attrs.frozen(kw_only=True)
class DataCollectorConfig:
    """``user_data_collection.data_collector``: the seed's keys, then ours."""

    enabled: bool = False
    ingress_server_url: str | None = None
    ingress_server_auth_token: str | None = None
    ingress_content_service_name: str | None = None
    collection_interval: int = 7200
    cleanup_after_send: bool = True
    connection_timeout_seconds: int = 30
    #: In the User-Agent (``cluster/{identity_id}``). ``None``: the cluster id in ``openshift``
    #: mode, the SSO token's user in ``sso`` and ``offline-token`` modes, else ``lightspeed-exporter``.
    identity_id: str | None = None
    ingress_server_auth_token_path: str | None = None
    max_payload_bytes: int = 104857600
    lease_seconds: int = 600
    retry_base_seconds: float = 10
    shutdown_timeout_seconds: float = 30
    max_pending_bytes: int | None = None
    compression_level: int = 1
    #: Longest wait between retries of a failed collection (default: ``collection_interval``).
    retry_max_seconds: float | None = None
    auth: CollectorAuthConfig = attrs.field(factory=CollectorAuthConfig)


@attrs.frozen(kw_only=True)
class UserDataCollectionConfig:
    """``user_data_collection``: exactly the seed's section, plus categories and storage."""

    feedback_enabled: bool = False
    feedback_storage: str | None = None
    transcripts_enabled: bool = False
    transcripts_storage: str | None = None
    feedback_categories: tuple[str, ...] = DEFAULT_FEEDBACK_CATEGORIES
    #: Deleting a conversation also deletes its transcripts and feedback not collected yet.
    delete_pending_with_conversation: bool = True
    data_collector: DataCollectorConfig = attrs.field(factory=DataCollectorConfig)
    storage: StorageConfig = attrs.field(factory=StorageConfig)


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


@attrs.frozen(kw_only=True)
class LLMProviderConfig:
    """One entry of ``llm_providers``."""

    name: str
    type: str
    url: str | None = None
    api_key: str | None = None
    api_key_path: str | None = None
    models: tuple[str, ...] = ()
    timeout_seconds: float = 60
    #: Put before each model name sent to the provider (a Llama Stack names its models ``provider/model``).
    model_prefix: str = ""
    #: Also offer the models the provider lists (``GET {url}/models``), asked at start-up and
    #: again when a query names a model not known yet (at most every ``timeout_seconds``).
    discover_models: bool = False


@attrs.frozen(kw_only=True)
class LlamaStackConfig:
    """``llama_stack``: the upstream's Llama Stack connection, run as an OpenAI-compatible provider."""

    url: str | None = None
    api_key: str | None = None
    use_as_library_client: bool | None = None
    library_client_config_path: str | None = None
    timeout: int = 180


@attrs.frozen(kw_only=True)
class InferenceConfig:
    """``inference``: the provider and model used when a query names none."""

    default_provider: str | None = None
    default_model: str | None = None
    #: Previous turns of a conversation sent to the LLM as history.
    max_history_turns: int = 10


@attrs.frozen(kw_only=True)
class QueryFilter:
    """One entry of ``query_filters``: a regular expression redacted before use or storage."""

    name: str
    pattern: str
    replace_with: str = ""


@attrs.frozen(kw_only=True)
class Config:
    """The whole ``lightspeed-stack.yaml``."""

    name: str = "lightspeed"
    service: ServiceConfig = attrs.field(factory=ServiceConfig)
    user_data_collection: UserDataCollectionConfig = attrs.field(factory=UserDataCollectionConfig)
    authentication: AuthenticationConfig = attrs.field(factory=AuthenticationConfig)
    #: ``None`` when the section is absent: every caller may do everything (with a warning).
    authorization: AuthorizationConfig | None = None
    inference: InferenceConfig = attrs.field(factory=InferenceConfig)
    llm_providers: tuple[LLMProviderConfig, ...] = ()
    query_filters: tuple[QueryFilter, ...] = ()
    llama_stack: LlamaStackConfig = attrs.field(factory=LlamaStackConfig)

    @classmethod
    def embedded_defaults(cls, data_dir: str = "./data") -> Config:
        """The configuration used when no file is given or found.

        Feedback and transcripts on, stored by the filesystem backend under ``data_dir``;
        the offline ``echo`` LLM provider; the data collector off.
        """
        return cls(
            user_data_collection=UserDataCollectionConfig(
                feedback_enabled=True,
                feedback_storage=f"{data_dir}/feedback",
                transcripts_enabled=True,
                transcripts_storage=f"{data_dir}/transcripts",
            ),
            inference=InferenceConfig(default_provider="echo", default_model="echo"),
            llm_providers=(LLMProviderConfig(name="echo", type="echo", models=("echo",)),),
        )


# --------------------------------------------------------------------------- converter


def _strict(kind: type, label: str) -> Callable[[Any, type], Any]:
    def hook(value: Any, _: type) -> Any:
        if isinstance(value, EnvText):
            return _from_env(value, kind, label)
        # bool is an int subclass; never accept it where a number is wanted.
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {label}, got a boolean")
        if kind is float and isinstance(value, int):
            return float(value)  # YAML writes 10 for 10.0
        if not isinstance(value, kind):
            raise TypeError(f"expected {label}, got {_type_name(value)}")
        return value

    return hook


def _from_env(value: EnvText, kind: type, label: str) -> Any:
    text = str(value)
    if kind is str:
        return text
    if kind is bool and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    raise TypeError(f"expected {label}, got {text!r} from an environment variable")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(str, _strict(str, "a string"))
    conv.register_structure_hook(int, _strict(int, "an integer"))
    conv.register_structure_hook(float, _strict(float, "a number"))
    conv.register_structure_hook(bool, _strict(bool, "a boolean (true or false)"))

    def structure_options(value: Any, _: type) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise TypeError(f"expected a mapping, got {_type_name(value)}")
        return dict(value)

    conv.register_structure_hook_func(lambda t: t == dict[str, Any], structure_options)

    def structure_str_tuple(value: Any, _: type) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise TypeError(f"expected a list, got {_type_name(value)}")
        bad = [i for i, v in enumerate(value) if not isinstance(v, str)]
        if bad:
            raise TypeError(f"expected a list of strings; item {bad[0]} is {_type_name(value[bad[0]])}")
        return tuple(value)

    conv.register_structure_hook_func(lambda t: t == tuple[str, ...], structure_str_tuple)

    def structure_literal(value: Any, t: Any) -> Any:
        choices = get_args(t)
        if isinstance(value, bool) or value not in choices:
            raise ValueError(f"must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value

    def is_literal(t: Any) -> bool:
        origin: Any = get_origin(t)
        return origin is Literal

    conv.register_structure_hook_func(is_literal, structure_literal)

    def structure_mode(value: Any, _: type) -> OctalMode:
        mode = -1
        if isinstance(value, int) and not isinstance(value, bool):
            mode = value
        elif isinstance(value, str):
            with contextlib.suppress(ValueError):
                mode = int(value, 8)
        if not 0 <= mode <= 0o777:
            raise ValueError(f"must be an octal permission such as '0600', got {value!r}")
        return OctalMode(mode)

    conv.register_structure_hook(OctalMode, structure_mode)

    def before_class(value: Any, cls: type) -> Any:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise TypeError(f"expected a mapping, got {_type_name(value)}")
        return value

    def structure_seq(item: type) -> Callable[[Any, type], Any]:
        def hook(value: Any, _: type) -> Any:
            if value is None:
                return ()
            if not isinstance(value, list):
                raise TypeError(f"expected a list, got {_type_name(value)}")
            out: list[Any] = []
            errors: list[Exception] = []
            for i, v in enumerate(value):
                try:
                    out.append(conv.structure(v, item))
                except Exception as exc:  # noqa: BLE001 - collected and re-raised as a group
                    exc.__notes__ = [*getattr(exc, "__notes__", []), IterableValidationNote(f"item {i}", i, item)]
                    errors.append(exc)
            if errors:
                raise cattrs.IterableValidationError(f"While structuring a list of {item.__name__}", errors, list)
            return tuple(out)

        return hook

    def is_providers(t: Any) -> bool:
        return bool(t == tuple[LLMProviderConfig, ...])

    def is_filters(t: Any) -> bool:
        return bool(t == tuple[QueryFilter, ...])

    conv.register_structure_hook_func(is_providers, structure_seq(LLMProviderConfig))
    conv.register_structure_hook_func(is_filters, structure_seq(QueryFilter))

    def is_seq_of(item_cls: type) -> Callable[[Any], bool]:
        return lambda t: bool(t == tuple[item_cls, ...])  # type: ignore[valid-type]

    for item_cls in (JwtRoleRule, AccessRule, TrustedProxyServiceAccount):
        conv.register_structure_hook_func(is_seq_of(item_cls), structure_seq(item_cls))
    conv.register_structure_hook(Any, lambda value, _: value)

    # Generated class hooks bind their fields' hooks now, so every hook above must exist first.
    for cls in (
        ServiceConfig,
        StorageConfig,
        CollectorAuthConfig,
        DataCollectorConfig,
        UserDataCollectionConfig,
        JwtRoleRule,
        JwtConfig,
        JwkConfig,
        ApiKeyConfig,
        RhIdentityConfig,
        TrustedProxyServiceAccount,
        TrustedProxyConfig,
        AuthenticationConfig,
        AccessRule,
        AuthorizationConfig,
        LLMProviderConfig,
        LlamaStackConfig,
        InferenceConfig,
        QueryFilter,
        Config,
    ):
        inner = conv.gen_structure_attrs_fromdict(cls)
        conv.register_structure_hook(cls, _checked(inner, before_class))
    return conv


def _checked(inner: Callable[[Any, Any], Any], before: Callable[[Any, type], Any]) -> Callable[[Any, type], Any]:
    def hook(value: Any, cls: type) -> Any:
        return inner(before(value, cls), cls)

    return hook


_converter: Final = _make_converter()


def _walk_errors(exc: BaseException, path: str) -> Iterator[str]:
    """Turn a cattrs exception tree into ``path: message`` lines."""

    def join(base: str, name: str | int) -> str:
        if isinstance(name, int):
            return f"{base}[{name}]"
        return f"{base}.{name}" if base else name

    if isinstance(exc, ForbiddenExtraKeysError):
        for key in sorted(exc.extra_fields):
            yield f"{join(path, key)}: unknown key"
        return
    if isinstance(exc, BaseValidationError):
        for sub in exc.exceptions:
            sub_path = path
            for note in getattr(sub, "__notes__", []):
                if isinstance(note, AttributeValidationNote):
                    sub_path = join(path, note.name)
                    break
                if isinstance(note, IterableValidationNote):
                    sub_path = join(path, int(note.index))
                    break
            yield from _walk_errors(sub, sub_path)
        return
    if isinstance(exc, KeyError):
        yield f"{path}: required key missing"
        return
    message = str(exc)
    yield f"{path or '(top level)'}: {message}"


def structure_section(data: Mapping[str, Any], cls: type[T]) -> tuple[T | None, list[str]]:
    """Structure one section of the file (such as a storage backend's ``options``) into the
    attrs class ``cls`` with the same rules as the whole file: unknown keys, wrong types and
    missing required keys are problems, each ``key: message`` relative to the section.

    Returns the instance and no problems, or ``None`` and every problem found.
    """
    try:
        return _converter.structure(dict(data), cls), []
    except Exception as exc:  # noqa: BLE001 - every structuring failure is a problem to report
        return None, list(_walk_errors(exc, ""))


# --------------------------------------------------------------------------- env substitution


class EnvText(str):
    """A value that came whole from ``${env.NAME}``: the converter reads it as the field's type
    (``"8080"`` as an integer, ``"true"`` as a boolean), as the upstream's loader does."""


def _substitute_env(value: Any, path: str, env: Mapping[str, str], problems: list[str]) -> Any:
    if isinstance(value, str):
        where = path or "(top level)"

        def replace(match: re.Match[str]) -> str:
            name, operator, operand = match.group(1), match.group(2), match.group(3)
            current = env[name] if name in env else None  # noqa: SIM401 - a mapping may compute values in __missing__
            if operator == "=":
                return current if current else operand
            if operator == "+":
                return operand if current else ""
            if current is None:
                problems.append(f"{where}: environment variable {name} is not set")
                return ""
            return current

        result = _ENV_RE.sub(replace, value)
        if result is value or _ENV_RE.fullmatch(value) is None:
            return result
        # The whole value was one reference: typed by its field; empty means "not given", as upstream.
        return None if result == "" and match_has_operator(value) else EnvText(result)
    if isinstance(value, dict):
        return {k: _substitute_env(v, f"{path}.{k}" if path else str(k), env, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_env(v, f"{path}[{i}]", env, problems) for i, v in enumerate(value)]
    return value


def match_has_operator(value: str) -> bool:
    match = _ENV_RE.fullmatch(value)
    return match is not None and match.group(2) is not None


# --------------------------------------------------------------------------- semantic checks


def _has_userinfo(url: str) -> bool:
    """``https://user:secret@host``: aiohttp refuses such a URL beside an Authorization header."""
    return "@" in urlsplit(url).netloc


def _semantic_problems(config: Config) -> list[str]:
    problems: list[str] = []
    add = problems.append
    svc = config.service
    if not 1 <= svc.port <= 65535:
        add(f"service.port: must be between 1 and 65535, got {svc.port}")
    if svc.log_level.lower() not in LOG_LEVELS:
        add(f"service.log_level: must be one of {', '.join(LOG_LEVELS)}, got {svc.log_level!r}")
    if svc.workers < 1:
        add(f"service.workers: must be at least 1, got {svc.workers}")
    if svc.max_request_body_bytes < 1024:
        add(f"service.max_request_body_bytes: must be at least 1024, got {svc.max_request_body_bytes}")
    if not svc.host:
        add("service.host: must not be empty")
    if svc.max_connections < 1:
        add(f"service.max_connections: must be at least 1, got {svc.max_connections}")
    if not (svc.write_timeout_seconds > 0 and math.isfinite(svc.write_timeout_seconds)):
        add(f"service.write_timeout_seconds: must be a finite number greater than 0, got {svc.write_timeout_seconds}")
    if not 1024 <= svc.write_buffer_bytes <= 64 * 1024 * 1024:
        add(f"service.write_buffer_bytes: must be from 1024 to 67108864, got {svc.write_buffer_bytes}")
    keepalive = svc.keepalive_timeout_seconds
    if not (keepalive > 0 and math.isfinite(keepalive)):
        add(f"service.keepalive_timeout_seconds: must be a finite number greater than 0, got {keepalive}")

    udc = config.user_data_collection
    if udc.feedback_enabled and not udc.feedback_storage and udc.storage.backend == "filesystem":
        add("user_data_collection.feedback_storage: required when feedback_enabled is true")
    if udc.transcripts_enabled and not udc.transcripts_storage and udc.storage.backend == "filesystem":
        add("user_data_collection.transcripts_storage: required when transcripts_enabled is true")
    for i, cat in enumerate(udc.feedback_categories):
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", cat):
            add(f"user_data_collection.feedback_categories[{i}]: {cat!r} is not a valid category name")
    if not udc.storage.backend:
        add("user_data_collection.storage.backend: must not be empty")

    dc = udc.data_collector
    base = "user_data_collection.data_collector"
    if dc.enabled:
        if not dc.ingress_server_url:
            add(f"{base}.ingress_server_url: required when the data collector is enabled")
        if not dc.ingress_content_service_name:
            add(f"{base}.ingress_content_service_name: required when the data collector is enabled")
        if dc.auth.mode == "manual" and not dc.ingress_server_auth_token and not dc.ingress_server_auth_token_path:
            add(
                f"{base}.ingress_server_auth_token: required when the data collector is enabled"
                " (or give ingress_server_auth_token_path, or another auth.mode)"
            )
    if dc.ingress_server_url and not re.match(r"https?://[^/\s]+", dc.ingress_server_url):
        add(f"{base}.ingress_server_url: must be an http:// or https:// URL, got {dc.ingress_server_url!r}")
    elif (
        dc.ingress_server_url
        and _has_userinfo(dc.ingress_server_url)
        and (dc.ingress_server_auth_token or dc.ingress_server_auth_token_path)
    ):
        add(f"{base}.ingress_server_url: must not contain a user or password beside the token (aiohttp sends only one)")
    if dc.ingress_content_service_name is not None and not _SERVICE_NAME_RE.fullmatch(dc.ingress_content_service_name):
        add(
            f"{base}.ingress_content_service_name: must match [a-z0-9-]+ (ingress rejects other names"
            f" with 415), got {dc.ingress_content_service_name!r}"
        )
    if dc.ingress_server_auth_token and dc.ingress_server_auth_token_path:
        add(f"{base}.ingress_server_auth_token_path: give either the token or its path, not both")
    for key in ("collection_interval", "connection_timeout_seconds", "lease_seconds", "max_payload_bytes"):
        val = getattr(dc, key)
        if val <= 0:
            add(f"{base}.{key}: must be greater than 0, got {val}")
    for key in ("retry_base_seconds", "shutdown_timeout_seconds"):
        val = getattr(dc, key)
        if not (val > 0 and math.isfinite(val)):
            add(f"{base}.{key}: must be a finite number greater than 0, got {val}")
    if dc.retry_max_seconds is not None and not (dc.retry_max_seconds > 0 and math.isfinite(dc.retry_max_seconds)):
        add(f"{base}.retry_max_seconds: must be a finite number greater than 0 (or null), got {dc.retry_max_seconds}")
    if dc.max_pending_bytes is not None and dc.max_pending_bytes <= 0:
        add(f"{base}.max_pending_bytes: must be greater than 0 (or null for no limit), got {dc.max_pending_bytes}")
    if not 1 <= dc.compression_level <= 9:
        level = dc.compression_level
        add(f"{base}.compression_level: must be a gzip level from 1 (fastest) to 9 (smallest), got {level}")
    if dc.identity_id is not None and not re.fullmatch(r"[\x21-\x7e]+", dc.identity_id):
        add(f"{base}.identity_id: must be printable ASCII without spaces, got {dc.identity_id!r}")
    problems.extend(collector_auth_problems(dc, base))

    problems.extend(_auth_problems(config))

    names: set[str] = set()
    for i, prov in enumerate(config.llm_providers):
        p = f"llm_providers[{i}]"
        if prov.name in names:
            also = " (llama_stack.url adds a provider of that name)" if prov.discover_models else ""
            add(f"{p}.name: duplicate provider name {prov.name!r}{also}")
        names.add(prov.name)
        if prov.type not in PROVIDER_TYPES:
            add(f"{p}.type: must be one of {', '.join(PROVIDER_TYPES)}, got {prov.type!r}")
        if prov.type == "openai" and not prov.url:
            add(f"{p}.url: required for type openai")
        elif prov.url and not re.match(r"https?://[^/\s]+", prov.url):
            add(f"{p}.url: must be an http:// or https:// URL, got {prov.url!r}")
        elif prov.url and _has_userinfo(prov.url) and (prov.api_key or prov.api_key_path):
            add(f"{p}.url: must not contain a user or password beside an api_key (aiohttp sends only one)")
        if prov.api_key and prov.api_key_path:
            add(f"{p}.api_key_path: give either api_key or api_key_path, not both")
        if not prov.models and not prov.discover_models:
            add(f"{p}.models: list at least one model (or set discover_models: true)")
        if prov.discover_models and prov.type != "openai":
            add(f"{p}.discover_models: only an openai provider can list its models")
        if not (prov.timeout_seconds > 0 and math.isfinite(prov.timeout_seconds)):
            add(f"{p}.timeout_seconds: must be a finite number greater than 0, got {prov.timeout_seconds}")
    inf = config.inference
    if (inf.default_provider is None) != (inf.default_model is None):
        add("inference: give both default_provider and default_model, or neither")
    elif inf.default_provider is not None:
        match = [p for p in config.llm_providers if p.name == inf.default_provider]
        if not match:
            add(f"inference.default_provider: {inf.default_provider!r} is not in llm_providers")
        elif inf.default_model not in match[0].models:
            add(f"inference.default_model: {inf.default_model!r} is not a model of provider {inf.default_provider!r}")
    if inf.max_history_turns < 0:
        add(f"inference.max_history_turns: must be 0 or more, got {inf.max_history_turns}")

    for i, flt in enumerate(config.query_filters):
        try:
            re.compile(flt.pattern)
        except re.error as exc:
            add(f"query_filters[{i}].pattern: invalid regular expression: {exc}")
        if flt.pattern == "":
            add(f"query_filters[{i}].pattern: must not be empty")
    return problems


_SSO_KEYS: Final = ("sso_stage", "sso_token_url", "access_token_url")


def collector_auth_problems(dc: DataCollectorConfig, base: str) -> list[str]:
    """Every problem of ``data_collector.auth`` (beside the token keys it governs)."""
    problems: list[str] = []
    add = problems.append
    auth = dc.auth
    at = f"{base}.auth"
    if auth.mode not in CREDENTIAL_MODES:
        add(f"{at}.mode: must be one of {', '.join(CREDENTIAL_MODES)}, got {auth.mode!r}")
        return problems
    for key in ("refresh_seconds", "timeout_seconds"):
        val = getattr(auth, key)
        if not (val > 0 and math.isfinite(val)):
            add(f"{at}.{key}: must be a finite number greater than 0, got {val}")
    for key in ("sso_token_url", "access_token_url"):
        url = getattr(auth, key)
        if url is not None and not re.match(r"https?://[^/\s]+", url):
            add(f"{at}.{key}: must be an http:// or https:// URL, got {url!r}")
    for value, path in (
        ("client_id", "client_id_path"),
        ("client_secret", "client_secret_path"),
        ("offline_token", "offline_token_path"),
    ):
        if getattr(auth, value) and getattr(auth, path):
            add(f"{at}.{path}: give either {value} or {path}, not both")
    wants: dict[str, tuple[str, ...]] = {
        "manual": (),
        "openshift": ("kubeconfig", "pull_secret_namespace", "pull_secret_name"),
        "sso": ("client_id", "client_id_path", "client_secret", "client_secret_path", *_SSO_KEYS),
        "offline-token": ("offline_token", "offline_token_path", *_SSO_KEYS),
    }
    if auth.mode != "manual":
        for key in ("ingress_server_auth_token", "ingress_server_auth_token_path"):
            if getattr(dc, key):
                add(f"{base}.{key}: not used in auth.mode {auth.mode} (the token comes from the provider); remove it")
    if auth.mode == "openshift" and dc.identity_id is not None:
        add(f"{base}.identity_id: not used in auth.mode openshift (the cluster id is the identity); remove it")
    if auth.mode == "sso":
        for key in ("client_id", "client_secret"):
            if not getattr(auth, key) and not getattr(auth, f"{key}_path"):
                add(f"{at}.{key}: required in auth.mode sso (or give {key}_path)")
    if auth.mode == "offline-token" and not auth.offline_token and not auth.offline_token_path:
        add(f"{at}.offline_token: required in auth.mode offline-token (or give offline_token_path)")
    defaults = CollectorAuthConfig()
    others = {k for keys in wants.values() for k in keys} - set(wants[auth.mode])
    for key in sorted(others):
        if getattr(auth, key) != getattr(defaults, key):
            add(f"{at}.{key}: not used in auth.mode {auth.mode}")
    return problems


def _auth_problems(config: Config) -> list[str]:
    """The ``authentication`` and ``authorization`` sections' checks."""
    from lightspeed.actions import Action

    problems: list[str] = []
    add = problems.append
    auth = config.authentication
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

    authz = config.authorization
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
            "no authorization.access_rules are configured: every caller may perform every action, admin"
            " included (PUT /v1/feedback/status switches feedback off for everyone); add an authorization section,"
            ' for instance access_rules: [{role: "*", actions: [query, streaming_query, feedback, info]},'
            " {role: <admins>, actions: [admin]}]"
        )
    auth = config.authentication
    if auth.skip_tls_verification and auth.module in ("k8s", "trusted-proxy", "jwk-token"):
        warnings.append(
            "authentication.skip_tls_verification is true: the identity of the Kubernetes API or key server is"
            " not checked; use it only for development"
        )
    return warnings


# --------------------------------------------------------------------------- loading


def parse_config(
    data: Any,
    *,
    env: Mapping[str, str] | None = None,
    source: str | None = None,
    warnings: list[str] | None = None,
) -> Config:
    """Build a :class:`Config` from the parsed YAML ``data``.

    Raises :class:`~lightspeed.errors.ConfigError` listing every problem found. Keys of the
    Lightspeed Core Stack that lightspeed does not implement are accepted and left out; one
    line per such key is appended to ``warnings`` (when given) for the caller to log.
    """
    env = os.environ if env is None else env
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"(top level): expected a mapping, got {_type_name(data)}"], source=source)
    # Before the environment is read: a variable only an ignored key uses need not be set.
    data, ignored, problems = split_lcs_keys(data, Config)
    if warnings is not None:
        warnings.extend(f"{key}: {LCS_KEY_IGNORED}" for key in ignored)
    data = _substitute_env(data, "", env, problems)
    unset = {p.split(": ", 1)[0] for p in problems}  # one problem for a value whose variable is unset
    try:
        config = _converter.structure(data, Config)
    except Exception as exc:  # noqa: BLE001 - every structuring failure is a config problem
        problems.extend(p for p in _walk_errors(exc, "") if p.split(": ", 1)[0] not in unset)
        # Check the values too, with the bad keys left out, so every problem is listed at once.
        bad = {p.split(": ", 1)[0] for p in problems}
        try:
            config = _converter.structure(_without(data, bad), Config)
        except Exception:  # noqa: BLE001 - a required key was bad: the structural problems must do
            raise ConfigError(problems, source=source) from None
    # A value that was bad (or whose variable is unset, substituted with "") gets one problem, not two.
    bad = {p.split(": ", 1)[0] for p in problems}
    llama = _llama_stack_problems(config.llama_stack)
    problems.extend(p for p in llama if p.split(": ", 1)[0] not in bad)
    if not llama and config.llama_stack.url:
        config = _with_llama_stack_provider(config)
    problems.extend(p for p in _semantic_problems(config) if p.split(": ", 1)[0] not in bad)
    if problems:
        raise ConfigError(problems, source=source)
    return config


#: The warning for each upstream key lightspeed accepts without implementing it.
LCS_KEY_IGNORED: Final = (
    "a Lightspeed Core Stack key that lightspeed does not implement: accepted and ignored"
    " (README: 'Running a Lightspeed Core Stack configuration')"
)
#: The provider name a Llama Stack gets when ``inference.default_provider`` does not name one.
LLAMA_STACK_PROVIDER: Final = "llama_stack"


def _llama_stack_problems(ls: LlamaStackConfig) -> list[str]:
    if ls.use_as_library_client:
        return [
            "llama_stack.use_as_library_client: lightspeed cannot run Llama Stack inside its own process;"
            " run Llama Stack as a server and give its address in llama_stack.url (with"
            " use_as_library_client: false), or configure llm_providers"
        ]
    if ls.use_as_library_client is False and not ls.url:
        return ["llama_stack.url: required when use_as_library_client is false (the Llama Stack server's address)"]
    if ls.url is not None and not re.match(r"https?://[^/\s]+", ls.url):
        return [f"llama_stack.url: must be an http:// or https:// URL, got {ls.url!r}"]
    if ls.timeout <= 0:
        return [f"llama_stack.timeout: must be greater than 0, got {ls.timeout}"]
    return []


def _with_llama_stack_provider(config: Config) -> Config:
    """``llama_stack.url`` as an OpenAI-compatible provider at ``{url}/v1/openai/v1``.

    Named after ``inference.default_provider`` (its models are named ``provider/model`` there,
    as the upstream sends them), with ``inference.default_model`` as its model; it also offers
    the models the Llama Stack lists.
    """
    ls = config.llama_stack
    assert ls.url is not None
    inf = config.inference
    default_is_llama = inf.default_provider is not None and all(
        p.name != inf.default_provider for p in config.llm_providers
    )
    name = inf.default_provider if default_is_llama and inf.default_provider else LLAMA_STACK_PROVIDER
    provider = LLMProviderConfig(
        name=name,
        type="openai",
        url=ls.url.rstrip("/") + LLAMA_STACK_OPENAI_PATH,
        api_key=ls.api_key or None,
        models=(inf.default_model,) if default_is_llama and inf.default_model else (),
        timeout_seconds=float(ls.timeout),
        model_prefix=f"{name}/" if default_is_llama else "",
        discover_models=True,
    )
    return attrs.evolve(config, llm_providers=(*config.llm_providers, provider))


_PATH_PART: Final = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _without(data: dict[str, Any], paths: set[str]) -> dict[str, Any]:
    """A deep copy of ``data`` without the keys at the dotted ``paths`` (``a.b[0].c``)."""

    def copy(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: copy(v) for k, v in value.items()}
        if isinstance(value, list):
            return [copy(v) for v in value]
        return value

    result: dict[str, Any] = copy(data)
    for path in paths:
        parts: list[str | int] = [m[0] if m[0] else int(m[1]) for m in _PATH_PART.findall(path)]
        node: Any = result
        for part in parts[:-1]:
            if isinstance(part, int):
                node = node[part] if isinstance(node, list) and part < len(node) else None
            else:
                node = node.get(part) if isinstance(node, dict) else None
        if parts and isinstance(node, dict) and isinstance(parts[-1], str):
            node.pop(parts[-1], None)
    return result


def resolve_config_path(
    cli_path: str | os.PathLike[str] | None, *, env: Mapping[str, str] | None = None
) -> Path | None:
    """Which file to read: ``-c/--config``, else ``$LIGHTSPEED_CONFIG``, else ``./lightspeed-stack.yaml``.

    A named file (by flag or variable) that does not exist is an error; ``None`` means
    no file was named and none was found, so the embedded defaults apply.
    """
    env = os.environ if env is None else env
    named = cli_path if cli_path else env.get(CONFIG_ENV_VAR) or None
    if named:
        path = Path(named)
        if not path.exists() or path.is_dir():  # a pipe is fine: -c <(vault read ...)
            how = "--config" if cli_path else f"${CONFIG_ENV_VAR}"
            raise ConfigError([f"configuration file {str(path)!r} (from {how}) does not exist or is not a file"])
        return path
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def load_config(
    path: str | os.PathLike[str] | None,
    *,
    env: Mapping[str, str] | None = None,
    warnings: list[str] | None = None,
) -> Config:
    """Read and validate a YAML configuration file (``None``: the embedded defaults)."""
    if path is None:
        return Config.embedded_defaults()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read configuration file: {exc}"], source=str(p)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], source=str(p)) from None
    return parse_config(data, env=env, source=str(p), warnings=warnings)


#: Keys that name a secret rather than hold one (a URL's own password is masked anyway).
_NOT_SECRET: Final = ("_path", "_url", "_name", "_namespace")
_SECRET_KEYS: Final = re.compile(r"(token|password|passwd|secret|api_key|dsn|credential)", re.IGNORECASE)


def config_to_dict(config: Config, *, mask_secrets: bool = True) -> dict[str, Any]:
    """The effective configuration as plain data, secrets masked unless told otherwise."""
    raw = _converter.unstructure(config)

    def mask(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: mask(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [mask(v, key) for v in value]
        if mask_secrets and value is not None and _SECRET_KEYS.search(key) and not key.endswith(_NOT_SECRET):
            return MASK
        if mask_secrets and isinstance(value, str) and "://" in value:
            return masked_url(str(value))  # https://user:secret@host/v1?api-key=secret
        return str(value) if isinstance(value, EnvText) else value

    result: dict[str, Any] = mask(raw)
    return result


def config_secrets(config: Config) -> list[str]:
    """Every secret the configuration holds: keys, tokens, passwords and query values inside URLs,
    and the values of secret-named storage options (what :func:`config_to_dict` masks)."""
    found: list[str] = []
    dc = config.user_data_collection.data_collector
    found += [dc.ingress_server_auth_token or "", *url_secrets(dc.ingress_server_url)]
    found += [dc.auth.client_secret or "", dc.auth.offline_token or ""]
    for prov in config.llm_providers:
        found += [prov.api_key or "", *url_secrets(prov.url)]

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, str(k))
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v, key)
        elif isinstance(value, str):
            if _SECRET_KEYS.search(key) and not key.endswith("_path"):
                found.append(value)
            found.extend(url_secrets(value) if "://" in value else ())

    walk(config.user_data_collection.storage.options, "")
    return [s for s in dict.fromkeys(found) if s]
