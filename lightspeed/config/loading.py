"""Reading the file: which file (``-c``, ``$LIGHTSPEED_CONFIG``, ``./lightspeed-stack.yaml``),
YAML, the Lightspeed Core Stack's keys lightspeed does not implement, ``${env.NAME}``, the
converter, every section's checks; and the effective configuration back as data, secrets masked."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml

from lightspeed.config.converter import converter, walk_errors
from lightspeed.config.inference import llama_stack_problems, with_llama_stack_provider
from lightspeed.config.model import Config, semantic_problems
from lightspeed.config.values import EnvText, substitute_env, type_name
from lightspeed.errors import ConfigError
from lightspeed.lcs_keys import split_lcs_keys
from lightspeed.masking import MASK, masked_url, url_secrets

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_CONFIG_FILE",
    "LCS_KEY_IGNORED",
    "config_secrets",
    "config_to_dict",
    "load_config",
    "parse_config",
    "resolve_config_path",
]

DEFAULT_CONFIG_FILE: Final = "lightspeed-stack.yaml"
CONFIG_ENV_VAR: Final = "LIGHTSPEED_CONFIG"
#: The warning for each upstream key lightspeed accepts without implementing it.
LCS_KEY_IGNORED: Final = (
    "a Lightspeed Core Stack key that lightspeed does not implement: accepted and ignored"
    " (README: 'Running a Lightspeed Core Stack configuration')"
)


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
        raise ConfigError([f"(top level): expected a mapping, got {type_name(data)}"], source=source)
    # Before the environment is read: a variable only an ignored key uses need not be set.
    data, ignored, problems = split_lcs_keys(data, Config)
    if warnings is not None:
        warnings.extend(f"{key}: {LCS_KEY_IGNORED}" for key in ignored)
    data = substitute_env(data, "", env, problems)
    unset = {p.split(": ", 1)[0] for p in problems}  # one problem for a value whose variable is unset
    try:
        config = converter.structure(data, Config)
    except Exception as exc:  # noqa: BLE001 - every structuring failure is a config problem
        problems.extend(p for p in walk_errors(exc, "") if p.split(": ", 1)[0] not in unset)
        # Check the values too, with the bad keys left out, so every problem is listed at once.
        bad = {p.split(": ", 1)[0] for p in problems}
        try:
            config = converter.structure(_without(data, bad), Config)
        except Exception:  # noqa: BLE001 - a required key was bad: the structural problems must do
            raise ConfigError(problems, source=source) from None
    # A value that was bad (or whose variable is unset, substituted with "") gets one problem, not two.
    bad = {p.split(": ", 1)[0] for p in problems}
    llama = llama_stack_problems(config.llama_stack)
    problems.extend(p for p in llama if p.split(": ", 1)[0] not in bad)
    if not llama and config.llama_stack.url:
        config = with_llama_stack_provider(config)
    problems.extend(p for p in semantic_problems(config) if p.split(": ", 1)[0] not in bad)
    if problems:
        raise ConfigError(problems, source=source)
    return config


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
    raw = converter.unstructure(config)

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
