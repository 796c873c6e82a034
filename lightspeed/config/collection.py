"""``user_data_collection``: the seed's section (feedback, transcripts, the data collector and
its credentials) plus the storage backend, and their checks."""

from __future__ import annotations

import math
import re
from typing import Any, Final

import attrs

from lightspeed.config.values import has_userinfo

__all__ = [
    "CREDENTIAL_MODES",
    "DEFAULT_FEEDBACK_CATEGORIES",
    "CollectorAuthConfig",
    "DataCollectorConfig",
    "StorageConfig",
    "UserDataCollectionConfig",
    "collection_problems",
    "collector_auth_problems",
]

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
    #: Transcripts keep image attachments' bytes (base64); otherwise only their type and size.
    transcripts_include_images: bool = False
    data_collector: DataCollectorConfig = attrs.field(factory=DataCollectorConfig)
    storage: StorageConfig = attrs.field(factory=StorageConfig)


def collection_problems(udc: UserDataCollectionConfig) -> list[str]:
    """Every problem of the ``user_data_collection`` section, its data collector's included."""
    problems: list[str] = []
    add = problems.append
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
        and has_userinfo(dc.ingress_server_url)
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
