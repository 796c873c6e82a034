"""Values of the configuration file that are more than YAML gives: ``${env.NAME}`` references
(:class:`EnvText`), octal permissions (:class:`OctalMode`), and the small helpers every section's
checks share."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, NewType
from urllib.parse import urlsplit

__all__ = ["EnvText", "OctalMode", "has_userinfo", "match_has_operator", "substitute_env", "type_name"]

#: A permission such as ``0o640``, given as an integer or an octal string (``"0640"``).
OctalMode = NewType("OctalMode", int)

#: ``${env.NAME}``; ``${env.NAME:=default}`` (the default when NAME is unset or empty);
#: ``${env.NAME:+value}`` (value when NAME is set and not empty, else nothing), as the upstream.
_ENV_RE: Final = re.compile(r"\$\{env\.([A-Za-z_][A-Za-z0-9_]*)(?::([=+])([^}]*))?\}")


class EnvText(str):
    """A value that came whole from ``${env.NAME}``: the converter reads it as the field's type
    (``"8080"`` as an integer, ``"true"`` as a boolean), as the upstream's loader does."""


def substitute_env(value: Any, path: str, env: Mapping[str, str], problems: list[str]) -> Any:
    """``value`` (parsed YAML) with every ``${env.NAME}`` replaced; an unset variable is a problem
    appended to ``problems`` (at its dotted ``path``)."""
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
        return {k: substitute_env(v, f"{path}.{k}" if path else str(k), env, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, f"{path}[{i}]", env, problems) for i, v in enumerate(value)]
    return value


def match_has_operator(value: str) -> bool:
    """Whether ``value`` is one ``${env.NAME:=...}`` or ``${env.NAME:+...}`` reference."""
    match = _ENV_RE.fullmatch(value)
    return match is not None and match.group(2) is not None


def type_name(value: Any) -> str:
    """How a problem names the type of a YAML value ("a string", "null")."""
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


def has_userinfo(url: str) -> bool:
    """``https://user:secret@host``: aiohttp refuses such a URL beside an Authorization header."""
    return "@" in urlsplit(url).netloc
