"""Keeping secrets and forged lines out of what we print: URLs, upstream texts and log lines.

* :func:`public_url` is a URL as a client may see it: no user, password, query or fragment.
* :func:`masked_url` is a URL as ``check-config`` prints it: the password and the values of
  query parameters masked (but for :data:`PUBLIC_QUERY_PARAMETERS`, such as ``api-version``).
* :class:`Masker` replaces, anywhere in a text, every secret it was given and every value that
  looks like a credential (an ``Authorization`` header, a bearer token, an ``api-key=``
  parameter, an OpenAI-style ``sk-`` key, a JWT). The log formatter runs every line through
  one (:data:`LOG_SECRETS`); the LLM providers run upstream texts through it before they log them.
* :func:`escape_controls` makes a text one printable line: control characters (newline,
  carriage return, ANSI escapes...) become backslash escapes.

Nothing here imports the rest of the package, so every layer can use it.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterable
from typing import Final
from urllib.parse import parse_qsl

from yarl import URL

__all__ = [
    "LOG_SECRETS",
    "MASK",
    "MIN_SECRET_LENGTH",
    "PUBLIC_QUERY_PARAMETERS",
    "Masker",
    "escape_controls",
    "masked_url",
    "public_url",
    "url_secrets",
]

MASK: Final = "********"

#: Query parameters whose values are shown and not treated as secrets (Azure's ``api-version``).
PUBLIC_QUERY_PARAMETERS: Final = frozenset({"api-version", "api_version", "version"})

#: Shorter values are not masked wherever they appear (they would mangle every line).
MIN_SECRET_LENGTH: Final = 4

_SCHEMES: Final = r"(?:Bearer|Basic|Token|Digest|Negotiate|ApiKey)"
_VALUE: Final = r"[^\s\"',;&<>}\]]+"
# A credential-looking name, a separator (header colon, =, JSON quote-colon), then the value
# (with its scheme word kept: ``Authorization: Bearer ********``).
_KEY_VALUE: Final = re.compile(
    r"(?i)(\b(?:proxy-)?authorization|\bx-api-key|\bapi[-_]?key|\bx-auth-token|\b(?:access|auth|refresh|id)[-_]?token"
    r"|\bclient[-_]?secret|\bpassword|\bpasswd|\bsecret|\bcookie|\bset-cookie)"
    rf"(\\?[\"']?\s*[:=]\s*\\?[\"']?\s*)((?:{_SCHEMES}\s+)?)({_VALUE})"
)
# A token after a scheme word: at least 8 characters, one of them a digit or a symbol (not a word of prose).
_SCHEME_TOKEN: Final = re.compile(
    r"\b(Bearer|Basic|Digest)(\s+)(?=[A-Za-z0-9._~+/=-]*[0-9._~+/=-])[A-Za-z0-9._~+/=-]{8,}"
)
_OPENAI_KEY: Final = re.compile(r"\bsk-[A-Za-z0-9_*.-]{4,}")
_JWT: Final = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_URL_PASSWORD: Final = re.compile(r"(://[^/:@\s]*:)[^@/\s]+@")
_QUERY_SECRET: Final = re.compile(
    r"(?i)([?&](?:key|code|sig|signature|token|access_token|api[-_]?key|secret|password|auth)=)[^&\s\"'#]+"
)


def public_url(url: str | URL) -> str:
    """``url`` without user, password, query and fragment: what an error body may name."""
    u = url if isinstance(url, URL) else URL(url)
    if not u.absolute:
        return u.path
    return str(u.with_user(None).with_query(None).with_fragment(None))


def masked_url(url: str) -> str:
    """``url`` with its password and non-public query values masked (the rest kept, to recognise it)."""
    try:
        u = URL(url)
    except (TypeError, ValueError):
        return _URL_PASSWORD.sub(rf"\1{MASK}@", url)
    if u.password is not None:
        u = u.with_password(MASK)
    if u.query_string:
        u = u.with_query([(k, v if k.lower() in PUBLIC_QUERY_PARAMETERS else MASK) for k, v in u.query.items()])
    # yarl percent-encodes the mask's asterisks; show them as typed.
    return str(u).replace("%2A", "*")


def url_secrets(url: str | None) -> list[str]:
    """The secrets a URL carries: its password and its non-public query values."""
    if not url:
        return []
    try:
        u = URL(url)
    except (TypeError, ValueError):
        return []
    found: list[str] = []
    if u.password:
        # As given, decoded, and as the Basic credentials aiohttp makes of it.
        basic = base64.b64encode(f"{u.user or ''}:{u.password}".encode()).decode()
        found += [u.password, u.raw_password or "", basic]
    for pair in u.raw_query_string.split("&"):
        raw_key, _, raw_value = pair.partition("=")
        [(key, value)] = parse_qsl(pair, keep_blank_values=True) or [(raw_key, raw_value)]
        if key.lower() not in PUBLIC_QUERY_PARAMETERS and value:
            found += [value, raw_value]  # as given and decoded: a log may show either
    return [s for s in dict.fromkeys(found) if s]


_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\x1b"}


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    return _NAMED.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")


def escape_controls(text: str, *, limit: int | None = None, backslashes: bool = True) -> str:
    """``text`` as one printable line: control characters as ``\\n``, ``\\x1b``...; backslashes
    doubled (unless ``backslashes`` is false: the log formatter, which sees texts escaped before).

    With ``limit``, a longer text is cut and says how many characters were left out.
    """
    if limit is not None and len(text) > limit:
        text = f"{text[:limit]}...({len(text) - limit} more characters)"
    if backslashes and "\\" in text:
        text = text.replace("\\", "\\\\")
    return _CONTROL.sub(_escape, text)


class Masker:
    """Masks given secrets and credential-looking values in texts; thread-safe, secrets may be added any time."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        """Mask these values from now on (``None``, empty and very short ones are ignored)."""
        new = {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH} - self._secrets
        if not new:
            return
        with self._lock:
            self._secrets = self._secrets | new
            # Longest first, so a secret that contains another is masked whole.
            alternatives = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(s) for s in alternatives))

    def __contains__(self, secret: str) -> bool:
        return secret in self._secrets

    def mask(self, text: str) -> str:
        """``text`` with every known secret and credential-looking value replaced by :data:`MASK`."""
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(MASK, text)
        text = _KEY_VALUE.sub(_mask_value, text)
        text = _SCHEME_TOKEN.sub(rf"\1\2{MASK}", text)
        text = _OPENAI_KEY.sub(MASK, text)
        text = _JWT.sub(MASK, text)
        text = _URL_PASSWORD.sub(rf"\1{MASK}@", text)
        return _QUERY_SECRET.sub(rf"\1{MASK}", text)


def _mask_value(match: re.Match[str]) -> str:
    name, sep, scheme, value = match.groups()
    if value == MASK or value.startswith("*"):
        return match.group()
    return f"{name}{sep}{scheme}{MASK}"


#: The secrets of this process's configuration, masked in every log line by the log formatter
#: (:mod:`lightspeed.logs`); components that learn a secret later (a key file re-read) add it here.
LOG_SECRETS: Final = Masker()
