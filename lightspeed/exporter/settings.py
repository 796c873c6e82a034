"""The upstream exporter's command line, configuration file and environment, read as it reads them.

Precedence, as ``lightspeed-to-dataverse-exporter`` resolves it (first given wins):

====================== ===============================================================
``data_dir``           ``--data-dir``, the file
``service_id``         ``--service-id``, the file
``ingress_server_url`` ``--ingress-server-url``, the file
token                  the ``openshift``/``sso`` provider, ``--ingress-server-auth-token``,
                       ``$INGRESS_SERVER_AUTH_TOKEN``, the file
``identity_id``        the provider (cluster id, or the SSO token's user), ``--identity-id``,
                       the file, ``lightspeed-exporter``
``collection_interval`` ``--collection-interval``, the file, 7200 (0: one collection, then exit)
``ingress_connection_timeout`` ``--ingress-connection-timeout``, the file, 30
``retry_interval``     ``--retry-interval``, the file, 300 (here: the ceiling of the backoff)
``cleanup_after_send`` ``--no-cleanup`` (false), the file, true
``allowed_subdirs``    ``--allowed-subdirs``, the file, ``[]`` (everything)
``log_level``          ``--log-level``, the file (upper-cased), ``INFO``
``rich_logs``          ``--rich-logs`` or the file
client id / secret     ``--client-id`` / ``--client-secret``, ``$CLIENT_ID`` / ``$CLIENT_SECRET``
stage endpoints        ``$USE_SSO_STAGE`` set to anything
====================== ===============================================================

lightspeed adds, in the file and as flags: ``settle_seconds`` (``--settle-seconds``),
``state_dir`` (``--state-dir``), ``metrics_port`` and ``metrics_host`` (``--metrics-port``,
``--metrics-host``). Unknown keys in the
file are an error that names them (the upstream ignores them).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import yaml

from lightspeed import __version__
from lightspeed.config import Config, parse_config
from lightspeed.errors import ConfigError
from lightspeed.exporter.directory import DEFAULT_SETTLE_SECONDS, STATE_DIR_NAME
from lightspeed.masking import MASK

__all__ = ["ExporterSettings", "FILE_KEYS", "MODES", "parse_exporter_args", "parser"]

MODES: Final = ("manual", "openshift", "sso")
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
#: The upstream's configuration file keys, then lightspeed's.
UPSTREAM_KEYS: Final = (
    "data_dir",
    "service_id",
    "ingress_server_url",
    "ingress_server_auth_token",
    "identity_id",
    "collection_interval",
    "cleanup_after_send",
    "ingress_connection_timeout",
    "retry_interval",
    "allowed_subdirs",
    "log_level",
    "rich_logs",
)
OUR_KEYS: Final = ("settle_seconds", "state_dir", "metrics_port", "metrics_host")
FILE_KEYS: Final = UPSTREAM_KEYS + OUR_KEYS
DEFAULT_IDENTITY: Final = "lightspeed-exporter"
DEFAULT_COLLECTION_INTERVAL: Final = 7200
DEFAULT_CONNECTION_TIMEOUT: Final = 30
DEFAULT_RETRY_INTERVAL: Final = 300

#: Where each of our configuration keys came from, for messages in the exporter's own terms.
_OUR_PATHS: Final = {
    "user_data_collection.data_collector.ingress_content_service_name": "service_id",
    "user_data_collection.data_collector.ingress_server_url": "ingress_server_url",
    "user_data_collection.data_collector.ingress_server_auth_token": "ingress_server_auth_token",
    "user_data_collection.data_collector.identity_id": "identity_id",
    "user_data_collection.data_collector.collection_interval": "collection_interval",
    "user_data_collection.data_collector.connection_timeout_seconds": "ingress_connection_timeout",
    "user_data_collection.data_collector.retry_max_seconds": "retry_interval",
    "user_data_collection.data_collector.auth.client_id": "client id (--client-id or $CLIENT_ID)",
    "user_data_collection.data_collector.auth.client_secret": "client secret (--client-secret or $CLIENT_SECRET)",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lightspeed-exporter",
        description="Ship the JSON files another program writes under a data directory to Red Hat's ingress"
        " (a drop-in for the lightspeed-to-dataverse-exporter sidecar).",
    )
    p.add_argument("--version", action="version", version=f"lightspeed-exporter (lightspeed {__version__})")
    p.add_argument(
        "--mode",
        choices=MODES,
        default="manual",
        help="where the ingress token comes from: manual (given), openshift (the cluster's pull secret),"
        " sso (a service account's client id and secret) (default: manual)",
    )
    p.add_argument("--config", type=Path, help="the exporter's YAML configuration file")
    p.add_argument("--data-dir", type=Path, help="the directory whose *.json files are shipped")
    p.add_argument("--service-id", help="the ingress service name (content type application/vnd.redhat.ID...)")
    p.add_argument("--ingress-server-url", help="where to upload")
    p.add_argument("--ingress-server-auth-token", help="the token (manual mode; also $INGRESS_SERVER_AUTH_TOKEN)")
    p.add_argument("--identity-id", help="the identity in the User-Agent (manual and sso modes)")
    p.add_argument("--collection-interval", type=int, help="seconds between collections; 0: one, then exit")
    p.add_argument("--ingress-connection-timeout", type=int, help="seconds to connect and for each answer")
    p.add_argument("--retry-interval", type=int, help="longest wait before retrying a failed collection (seconds)")
    p.add_argument("--no-cleanup", action="store_true", help="keep files after they were sent (never re-sent)")
    p.add_argument("--allowed-subdirs", nargs="+", metavar="DIR", help="collect only from these subdirectories")
    p.add_argument("--log-level", choices=LOG_LEVELS, default=None, help="default: the file's, else INFO")
    p.add_argument("--rich-logs", action="store_true", help="accepted for compatibility; logs stay plain text")
    p.add_argument("--client-id", help="SSO client id (sso mode; also $CLIENT_ID)")
    p.add_argument("--client-secret", help="SSO client secret (sso mode; also $CLIENT_SECRET)")
    p.add_argument(
        "--print-config-and-exit", action="store_true", help="print the resolved configuration (secrets masked)"
    )
    p.add_argument(
        "--settle-seconds",
        type=float,
        help=f"a file unchanged this long (and valid JSON) is complete (default {DEFAULT_SETTLE_SECONDS:g})",
    )
    p.add_argument("--state-dir", type=Path, help=f"claims and leases (default: DATA_DIR/{STATE_DIR_NAME})")
    p.add_argument("--metrics-port", type=int, help="serve /metrics, /liveness and /readiness on this port")
    p.add_argument("--metrics-host", help="the address of --metrics-port (default 0.0.0.0: every interface)")
    return p


@attrs.frozen(kw_only=True)
class ExporterSettings:
    """The resolved settings of one ``lightspeed-exporter`` run."""

    mode: str
    data_dir: Path
    service_id: str
    ingress_server_url: str
    ingress_server_auth_token: str | None = attrs.field(repr=False)
    identity_id: str | None
    collection_interval: int
    cleanup_after_send: bool
    ingress_connection_timeout: int
    retry_interval: int
    allowed_subdirs: tuple[str, ...]
    log_level: str
    rich_logs: bool
    client_id: str | None
    client_secret: str | None = attrs.field(repr=False)
    sso_stage: bool
    settle_seconds: float
    state_dir: Path | None
    metrics_port: int | None
    metrics_host: str
    config: Config = attrs.field(repr=False)

    @property
    def one_shot(self) -> bool:
        return self.collection_interval == 0

    def to_dict(self) -> dict[str, Any]:
        """What ``--print-config-and-exit`` prints: the upstream's keys, then ours; secrets masked."""
        return {
            "mode": self.mode,
            "data_dir": str(self.data_dir),
            "service_id": self.service_id,
            "ingress_server_url": self.ingress_server_url,
            "ingress_server_auth_token": MASK if self.ingress_server_auth_token else None,
            "identity_id": self.identity_id
            or ("(the cluster id)" if self.mode == "openshift" else "(the SSO token's user)"),
            "collection_interval": self.collection_interval,
            "cleanup_after_send": self.cleanup_after_send,
            "ingress_connection_timeout": self.ingress_connection_timeout,
            "retry_interval": self.retry_interval,
            "allowed_subdirs": list(self.allowed_subdirs),
            "client_id": self.client_id,
            "client_secret": MASK if self.client_secret else None,
            "sso_stage": self.sso_stage,
            "settle_seconds": self.settle_seconds,
            "state_dir": str(self.state_dir or self.data_dir / STATE_DIR_NAME),
            "metrics_port": self.metrics_port,
            "metrics_host": self.metrics_host,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _first(*values: Any) -> Any:
    for value in values:
        if value is not None:
            return value
    return None


def _load_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read the configuration file: {exc}"], source=str(path)) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], source=str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(["(top level): expected a mapping"], source=str(path))
    unknown = sorted(str(k) for k in data if k not in FILE_KEYS)
    if unknown:
        raise ConfigError([f"{k}: unknown key (known: {', '.join(FILE_KEYS)})" for k in unknown], source=str(path))
    return data


def _typed(data: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    """The file's values with their types checked (a string where a number belongs is named)."""
    kinds: dict[str, tuple[type, ...]] = {
        "data_dir": (str,),
        "service_id": (str,),
        "ingress_server_url": (str,),
        "ingress_server_auth_token": (str,),
        "identity_id": (str,),
        "collection_interval": (int,),
        "cleanup_after_send": (bool,),
        "ingress_connection_timeout": (int,),
        "retry_interval": (int,),
        "allowed_subdirs": (list,),
        "log_level": (str,),
        "rich_logs": (bool,),
        "settle_seconds": (int, float),
        "state_dir": (str,),
        "metrics_port": (int,),
        "metrics_host": (str,),
    }
    out: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            continue
        wanted = kinds[key]
        if (isinstance(value, bool) and bool not in wanted) or not isinstance(value, wanted):
            names: dict[type, str] = {
                str: "a string",
                int: "an integer",
                bool: "true or false",
                list: "a list",
                float: "a number",
            }
            problems.append(f"{key}: expected {names[wanted[0]]}, got {value!r}")
            continue
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            problems.append(f"{key}: expected a list of directory names")
            continue
        out[key] = value
    return out


def parse_exporter_args(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> tuple[ExporterSettings, bool]:
    """Resolve flags, file and environment; return the settings and whether to print and exit.

    Raises :class:`~lightspeed.errors.ConfigError` listing every problem (argparse itself
    exits with status 2 for malformed flags, as the upstream's does).
    """
    env = os.environ if env is None else env
    args = parser().parse_args(list(argv))
    source = str(args.config) if args.config else None
    file = _load_file(args.config) if args.config else {}
    problems: list[str] = []
    f = _typed(file, problems)

    level = _first(args.log_level, f["log_level"].upper() if "log_level" in f else None, "INFO")
    if level not in LOG_LEVELS:
        problems.append(f"log_level: must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    data_dir = _first(args.data_dir, Path(f["data_dir"]) if "data_dir" in f else None)
    state_dir = _first(args.state_dir, Path(f["state_dir"]) if "state_dir" in f else None)
    settings: dict[str, Any] = {
        "mode": args.mode,
        "service_id": _first(args.service_id, f.get("service_id")),
        "ingress_server_url": _first(args.ingress_server_url, f.get("ingress_server_url")),
        "identity_id": _first(args.identity_id, f.get("identity_id")),
        "collection_interval": _first(
            args.collection_interval, f.get("collection_interval"), DEFAULT_COLLECTION_INTERVAL
        ),
        "ingress_connection_timeout": _first(
            args.ingress_connection_timeout, f.get("ingress_connection_timeout"), DEFAULT_CONNECTION_TIMEOUT
        ),
        "retry_interval": _first(args.retry_interval, f.get("retry_interval"), DEFAULT_RETRY_INTERVAL),
        "cleanup_after_send": _first(False if args.no_cleanup else None, f.get("cleanup_after_send"), True),
        "allowed_subdirs": tuple(_first(args.allowed_subdirs, f.get("allowed_subdirs"), [])),
        "log_level": level,
        "rich_logs": bool(args.rich_logs or f.get("rich_logs", False)),
        "settle_seconds": float(_first(args.settle_seconds, f.get("settle_seconds"), DEFAULT_SETTLE_SECONDS)),
        "metrics_port": _first(args.metrics_port, f.get("metrics_port")),
        "metrics_host": _first(args.metrics_host, f.get("metrics_host"), "0.0.0.0"),
        "sso_stage": env.get("USE_SSO_STAGE") is not None,
        "client_id": None,
        "client_secret": None,
        "ingress_server_auth_token": None,
    }
    if args.mode == "manual":
        settings["ingress_server_auth_token"] = _first(
            args.ingress_server_auth_token or None,
            env.get("INGRESS_SERVER_AUTH_TOKEN") or None,
            f.get("ingress_server_auth_token"),
        )
    if args.mode == "sso":
        settings["client_id"] = args.client_id or env.get("CLIENT_ID") or None
        settings["client_secret"] = args.client_secret or env.get("CLIENT_SECRET") or None
    if args.mode == "openshift":
        settings["identity_id"] = None  # the cluster id, as the upstream does

    if data_dir is None:
        problems.append("data_dir: required (--data-dir or data_dir in the file)")
    elif not data_dir.is_dir():
        problems.append(f"data_dir: {str(data_dir)!r} is not a directory")
    for key, flag in (("service_id", "--service-id"), ("ingress_server_url", "--ingress-server-url")):
        if not settings[key]:
            problems.append(f"{key}: required ({flag} or {key} in the file)")
    if args.mode == "manual" and not settings["ingress_server_auth_token"]:
        problems.append(
            "ingress_server_auth_token: required in manual mode (--ingress-server-auth-token,"
            " $INGRESS_SERVER_AUTH_TOKEN or the file)"
        )
    if args.mode == "sso":
        for key, flag, var in (
            ("client_id", "--client-id", "CLIENT_ID"),
            ("client_secret", "--client-secret", "CLIENT_SECRET"),
        ):
            if not settings[key]:
                problems.append(f"{key}: required in sso mode ({flag} or ${var})")
    if settings["collection_interval"] < 0:
        problems.append(
            f"collection_interval: must be 0 (one collection) or more, got {settings['collection_interval']}"
        )
    for key in ("ingress_connection_timeout", "retry_interval"):
        if settings[key] <= 0:
            problems.append(f"{key}: must be greater than 0, got {settings[key]}")
    if not (settings["settle_seconds"] >= 0 and math.isfinite(settings["settle_seconds"])):
        problems.append(f"settle_seconds: must be 0 or more, got {settings['settle_seconds']}")
    port = settings["metrics_port"]
    if port is not None and not 0 <= port <= 65535:
        problems.append(f"metrics_port: must be between 0 and 65535, got {port}")
    for sub in settings["allowed_subdirs"]:
        if not sub or "/" in sub or sub in (".", ".."):
            problems.append(f"allowed_subdirs: {sub!r} is not a directory name")
    if problems:
        raise ConfigError(problems, source=source)

    assert data_dir is not None
    config = _our_config(settings, data_dir, source)
    resolved = ExporterSettings(data_dir=data_dir, state_dir=state_dir, config=config, **settings)
    return resolved, bool(args.print_config_and_exit)


def _our_config(s: Mapping[str, Any], data_dir: Path, source: str | None) -> Config:
    """The settings as lightspeed's own configuration, validated by the same rules (the
    storage roots are the upstream's folders; the exporter reads through its own source)."""
    auth: dict[str, Any] = {"mode": s["mode"]}
    if s["mode"] == "sso":
        auth.update(client_id=s["client_id"], client_secret=s["client_secret"], sso_stage=s["sso_stage"])
    dc: dict[str, Any] = {
        "enabled": True,
        "ingress_server_url": s["ingress_server_url"],
        "ingress_content_service_name": s["service_id"],
        "collection_interval": max(1, s["collection_interval"]),
        "cleanup_after_send": s["cleanup_after_send"],
        "connection_timeout_seconds": s["ingress_connection_timeout"],
        "retry_max_seconds": float(s["retry_interval"]),
        "auth": auth,
    }
    if s["ingress_server_auth_token"]:
        dc["ingress_server_auth_token"] = s["ingress_server_auth_token"]
    if s["identity_id"]:
        dc["identity_id"] = s["identity_id"]
    data = {
        "service": {"log_level": s["log_level"].lower()},
        "user_data_collection": {
            "feedback_enabled": True,
            "feedback_storage": str(data_dir / "feedback"),
            "transcripts_enabled": True,
            "transcripts_storage": str(data_dir / "transcripts"),
            "data_collector": dc,
        },
    }
    try:
        # Values are literal here: nothing in them is an ${env.NAME} reference to substitute.
        return parse_config(_escape_env(data), env={}, source=source)
    except ConfigError as exc:
        raise ConfigError([_in_exporter_terms(p) for p in exc.problems], source=source) from None


_ENV_REF: Final = re.compile(r"\$\{env\.")


def _escape_env(value: Any) -> Any:
    if isinstance(value, str) and _ENV_REF.search(value):
        raise ConfigError([f"a value may not contain '${{env.': {value[:20]!r}..."])
    if isinstance(value, dict):
        return {k: _escape_env(v) for k, v in value.items()}
    return value


def _in_exporter_terms(problem: str) -> str:
    path, _, message = problem.partition(": ")
    return f"{_OUR_PATHS.get(path, path)}: {message}"
