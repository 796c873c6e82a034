"""``GET /openapi.json``: an OpenAPI 3.1 document of every route, assembled from the routes.

Each handler declares its operation with :func:`operation` (summary, request body, the
responses it gives, with the schemas of :mod:`lightspeed.api.schemas`); :func:`build_document`
walks the application's router, so a route is in the document exactly when it is served.
A handler without an operation is left out and named by :func:`undocumented_routes`, which
the tests require to be empty: a new route cannot ship undocumented. The schemas are kept
beside the validation code and checked against the live handlers by the tests (schemathesis
sends generated requests to a real server and checks every answer against the document).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final, TypeVar

import attrs
from aiohttp import web

from lightspeed import __version__
from lightspeed.api import schemas
from lightspeed.api.errors import json_response
from lightspeed.auth.routes import public

__all__ = [
    "Operation",
    "Response",
    "build_document",
    "add_routes",
    "operation",
    "operation_of",
    "undocumented_routes",
]

_ATTR: Final = "__lightspeed_openapi__"
H = TypeVar("H", bound=Callable[..., Awaitable[web.StreamResponse]])

#: What most errors look like (``{"detail": {"response", "cause"}}``) and the 422 list.
ERROR_REF: Final = {"$ref": "#/components/schemas/ErrorResponse"}
VALIDATION_REF: Final = {"$ref": "#/components/schemas/HTTPValidationError"}

_ERROR_TEXTS: Final = {
    400: "Bad request (a malformed id or a body that cannot be read)",
    401: "Missing or invalid credentials",
    403: "Not allowed (another user's resource, or the action is not granted)",
    404: "Not found",
    409: "Conflict",
    413: "Request body too large",
    422: "Validation error: every problem with the request, in FastAPI's shape",
    429: "Rate limited (by the LLM provider)",
    500: "Internal error (the store failed)",
    501: "Not supported by the storage backend",
    502: "The LLM provider sent an invalid answer or refused the service's credentials",
    503: "A dependency (store, LLM provider) is unavailable",
    504: "The LLM provider did not answer in time",
}


@attrs.frozen(kw_only=True)
class Response:
    """One response: its description and a body per media type (a JSON schema, or None for none)."""

    description: str
    content: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"description": self.description}
        if self.content:
            out["content"] = {media: {"schema": dict(schema)} for media, schema in self.content.items()}
        return out


def ok(schema: str, description: str = "Success") -> Response:
    """A JSON response whose body is the component ``schema``."""
    return Response(description=description, content={"application/json": {"$ref": f"#/components/schemas/{schema}"}})


@attrs.frozen(kw_only=True)
class Operation:
    """An operation as a handler declares it; see :func:`operation`."""

    summary: str
    tags: tuple[str, ...]
    responses: Mapping[int, Response]
    request: str | None = None
    parameters: tuple[Mapping[str, Any], ...] = ()
    description: str | None = None

    def to_dict(self, operation_id: str, path_parameters: Iterable[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"summary": self.summary, "operationId": operation_id, "tags": list(self.tags)}
        if self.description:
            out["description"] = self.description
        params = [dict(p) for p in self.parameters]
        named = {p["name"] for p in params if p.get("in") == "path"}
        for name in path_parameters:
            if name not in named:
                params.append({"name": name, "in": "path", "required": True, "schema": {"type": "string"}})
        if params:
            out["parameters"] = params
        if self.request is not None:
            out["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{self.request}"}}},
            }
        out["responses"] = {str(status): r.to_dict() for status, r in sorted(self.responses.items())}
        return out


def operation(
    *,
    summary: str,
    tags: Iterable[str],
    responses: Mapping[int, Response | str],
    request: str | None = None,
    errors: Iterable[int] = (),
    parameters: Iterable[Mapping[str, Any]] = (),
    description: str | None = None,
) -> Callable[[H], H]:
    """Declare a handler's operation for ``/openapi.json``.

    ``responses`` maps statuses to a :class:`Response` (or a component schema name for a
    JSON body); ``errors`` lists the error statuses the handler gives (422 gets the
    validation list, the others ``{"detail": {"response", "cause"}}``); ``request`` names
    the component schema of the JSON body.
    """
    resolved: dict[int, Response] = {s: ok(r) if isinstance(r, str) else r for s, r in responses.items()}
    for status in errors:
        # 422 is the validation list, or (attachment types, as upstream) {detail: {response, cause}}.
        ref = {"anyOf": [VALIDATION_REF, ERROR_REF]} if status == 422 else ERROR_REF
        resolved[status] = Response(description=_ERROR_TEXTS[status], content={"application/json": ref})
    op = Operation(
        summary=summary,
        tags=tuple(tags),
        responses=resolved,
        request=request,
        parameters=tuple(parameters),
        description=description,
    )

    def declare(handler: H) -> H:
        setattr(handler, _ATTR, op)
        return handler

    return declare


def operation_of(handler: object) -> Operation | None:
    op = getattr(handler, _ATTR, None)
    return op if isinstance(op, Operation) else None


_PARAM: Final = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


def _routes(app: web.Application) -> Iterable[tuple[str, str, Any]]:
    """``(method, path template, handler)`` of every route but the HEAD twins aiohttp adds."""
    for route in app.router.routes():
        if route.method in ("HEAD", "*") or route.resource is None:
            continue
        path = _PARAM.sub(r"{\1}", route.resource.canonical)
        yield route.method, path, route.handler


def undocumented_routes(app: web.Application) -> list[str]:
    """``METHOD /path`` of every route whose handler declares no operation."""
    return [f"{m} {p}" for m, p, h in _routes(app) if operation_of(h) is None]


def build_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app``'s routes."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path, handler in _routes(app):
        op = operation_of(handler)
        if op is None:
            continue
        slug = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "root"
        operation_id = f"{method.lower()}_{slug}"
        paths.setdefault(path, {})[method.lower()] = op.to_dict(operation_id, _PARAM.findall(path))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "lightspeed",
            "version": __version__,
            "summary": "LLM questions answered and stored; feedback and transcripts collected",
            "description": (
                "Wire-compatible with the Lightspeed Core Stack v1 API for the endpoints it serves. "
                "Errors are {detail: {response, cause}}; validation errors are 422 {detail: [...]}."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": schemas.COMPONENTS},
    }


@public
@operation(
    summary="This document: the OpenAPI 3.1 description of every endpoint",
    tags=["service"],
    responses={200: Response(description="The OpenAPI document", content={"application/json": {"type": "object"}})},
)
async def openapi_json(request: web.Request) -> web.Response:
    return json_response(build_document(request.app))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/openapi.json", openapi_json)
