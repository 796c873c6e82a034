"""Request bodies: size-limited reading, JSON parsing, and pydantic-shaped 422 errors.

A body whose text JSON can carry but UTF-8 cannot (a lone surrogate escape such as
``"\\ud800"``, in any field of any endpoint) is refused with a 422 when it is read, so
nothing that cannot be stored ever reaches a handler.

The Lightspeed Core Stack is a FastAPI service, so its clients know pydantic's error
objects (``type``, ``loc``, ``msg``, ``input``, sometimes ``ctx``). :class:`BodyChecker`
produces the same objects for the subset of pydantic's rules our request models use,
and collects every problem before failing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

from aiohttp import web

from lightspeed.api.errors import ApiError, ValidationFailed

__all__ = ["BodyChecker", "read_json_body"]

_MISSING: Final = object()


async def read_json_body(request: web.Request, *, limit: int) -> Any:
    """Read the body (at most ``limit`` bytes, else 413) and parse it as JSON (else 422)."""
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    body = bytearray()
    try:
        async for chunk in request.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > limit:
                raise _too_large(limit)
    except web.RequestPayloadError as exc:  # a Content-Encoding that does not decode, a body cut short
        # The rest cannot be read either: mark the body finished, so aiohttp does not try to
        # drain it (and log the error again), and close the connection after the answer.
        request.content.feed_eof()
        raise _unreadable(exc) from None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _json_invalid(exc.start, f"request body is not valid UTF-8: {exc.reason}") from None
    try:
        if text.startswith("\ufeff"):  # as json.loads says it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise _json_invalid(exc.pos, exc.msg) from None
    except (ValueError, RecursionError) as exc:  # NaN/Infinity, integers over 4300 digits, nesting too deep
        raise _json_invalid(0, str(exc)) from None
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        errors: list[dict[str, Any]] = []
        _find_lone_surrogates(value, ["body"], errors)
        if errors:
            raise ValidationFailed(errors)
    return value


#: A JSON escape of a UTF-16 surrogate; a string holds one alone only if the JSON escaped it.
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89abcdefABCDEF]")
_NOT_UNICODE: Final = "Input should be a valid string, unable to parse raw data as a unicode string"


def _find_lone_surrogates(value: Any, loc: list[str | int], errors: list[dict[str, Any]]) -> None:
    """Every string (key or value) holding a lone surrogate such as ``"\\ud800"``: JSON can
    carry it, UTF-8 cannot, so nothing could store it. A 422 in pydantic's words, whatever
    the field (pydantic refuses such a string wherever its model wants text)."""
    if isinstance(value, str):
        if not _is_utf8(value):
            errors.append({"type": "string_unicode", "loc": loc, "msg": _NOT_UNICODE, "input": value})
    elif isinstance(value, dict):
        for key, item in value.items():
            if not _is_utf8(key):
                errors.append({"type": "string_unicode", "loc": [*loc, key], "msg": _NOT_UNICODE, "input": key})
            else:
                _find_lone_surrogates(item, [*loc, key], errors)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _find_lone_surrogates(item, [*loc, i], errors)


def _is_utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unreadable(exc: web.RequestPayloadError) -> ApiError:
    reason = " ".join(str(exc).split()).removeprefix("400, message: ")
    cause = f"The request body could not be read: {reason}"
    return ApiError(400, "Invalid request body", cause, headers={"Connection": "close"})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


#: ``json.loads(text, parse_constant=...)`` builds a decoder per call; this one is built once.
_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "Request body too large",
        f"The request body exceeds the limit of {limit} bytes (service.max_request_body_bytes).",
    )


def _json_invalid(pos: int, error: str) -> ValidationFailed:
    return ValidationFailed(
        [
            {
                "type": "json_invalid",
                "loc": ["body", pos],
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": error},
            }
        ]
    )


def _literal_list(values: Sequence[Any]) -> str:
    quoted = [repr(v) if isinstance(v, str) else json.dumps(v) for v in values]
    if len(quoted) == 1:
        return quoted[0]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


class BodyChecker:
    """Checks one JSON object field by field, collecting pydantic-shaped errors.

    Use: ``c = BodyChecker(body, allowed=...)``; read fields with the typed getters;
    finally ``c.raise_if_errors()``. Getters return ``None`` for absent or invalid values.
    """

    def __init__(self, body: Any, *, allowed: Iterable[str]) -> None:
        self.errors: list[dict[str, Any]] = []
        self.body: dict[str, Any]
        if not isinstance(body, dict):
            self.add(
                "model_attributes_type",
                [],
                "Input should be a valid dictionary or object to extract fields from",
                body,
            )
            self.body = {}
            self.raise_if_errors()
        self.body = body
        allowed_set = set(allowed)
        for key, value in body.items():
            if key not in allowed_set:
                self.add("extra_forbidden", [key], "Extra inputs are not permitted", value)

    def add(
        self, type_: str, loc: Sequence[str | int], msg: str, input_: Any, ctx: dict[str, Any] | None = None
    ) -> None:
        err: dict[str, Any] = {"type": type_, "loc": ["body", *loc], "msg": msg, "input": input_}
        if ctx is not None:
            err["ctx"] = ctx
        self.errors.append(err)

    def value_error(self, loc: Sequence[str | int], message: str, input_: Any) -> None:
        self.add("value_error", loc, f"Value error, {message}", input_, {"error": message})

    def _get(self, name: str, required: bool) -> Any:
        value = self.body.get(name, _MISSING)
        if value is _MISSING and required:
            self.add("missing", [name], "Field required", self.body)
        return value

    def string(
        self, name: str, *, required: bool = False, min_length: int | None = None, max_length: int | None = None
    ) -> str | None:
        value = self._get(name, required)
        if value is _MISSING or (value is None and not required):
            return None
        if not isinstance(value, str):
            self.add("string_type", [name], "Input should be a valid string", value)
            return None
        if min_length is not None and len(value) < min_length:
            plural = "character" if min_length == 1 else "characters"
            self.add(
                "string_too_short",
                [name],
                f"String should have at least {min_length} {plural}",
                value,
                {"min_length": min_length},
            )
            return None
        if max_length is not None and len(value) > max_length:
            self.add(
                "string_too_long",
                [name],
                f"String should have at most {max_length} characters",
                value,
                {"max_length": max_length},
            )
            return None
        return value

    def integer(self, name: str, *, required: bool = False) -> int | None:
        value = self._get(name, required)
        if value is _MISSING or (value is None and not required):
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.add("int_type", [name], "Input should be a valid integer", value)
            return None
        if isinstance(value, float):
            if not value.is_integer():
                self.add(
                    "int_from_float",
                    [name],
                    "Input should be a valid integer, got a number with a fractional part",
                    value,
                )
                return None
            return int(value)
        return value

    def boolean(self, name: str, *, required: bool = False) -> bool | None:
        value = self._get(name, required)
        if value is _MISSING or (value is None and not required):
            return None
        if not isinstance(value, bool):
            self.add("bool_type", [name], "Input should be a valid boolean", value)
            return None
        return value

    def string_list(self, name: str, *, choices: Sequence[str] | None = None) -> list[str] | None:
        """An optional list of strings, each (when ``choices`` is given) one of ``choices``."""
        value = self._get(name, False)
        if value is _MISSING or value is None:
            return None
        if not isinstance(value, list):
            self.add("list_type", [name], "Input should be a valid list", value)
            return None
        ok = True
        for i, item in enumerate(value):
            if choices is not None and item not in choices:
                expected = _literal_list(choices) if choices else "(no categories are configured)"
                self.add("enum", [name, i], f"Input should be {expected}", item, {"expected": expected})
                ok = False
            elif not isinstance(item, str):
                self.add("string_type", [name, i], "Input should be a valid string", item)
                ok = False
        return list(value) if ok else None

    def raise_if_errors(self) -> None:
        if self.errors:
            raise ValidationFailed(self.errors)
