"""``GET /v1/models`` (the configured and discovered models, in the Lightspeed Core Stack's
shape) and ``GET /v1/config`` (the effective configuration, every secret masked)."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from lightspeed.actions import Action
from lightspeed.api.common import authenticate
from lightspeed.api.errors import ValidationFailed, json_response
from lightspeed.api.openapi import operation
from lightspeed.auth.routes import requires
from lightspeed.config import config_to_dict
from lightspeed.state import config_from, llm_from

__all__ = ["add_routes"]

#: Every model a provider answers queries with is a language model.
MODEL_TYPE_LLM: Final = "llm"


def _model(provider: str, model: str) -> dict[str, Any]:
    return {
        "identifier": f"{provider}/{model}",
        "metadata": {},
        "api_model_type": MODEL_TYPE_LLM,
        "provider_id": provider,
        "type": "model",
        "provider_resource_id": model,
        "model_type": MODEL_TYPE_LLM,
    }


@operation(
    summary="The models queries may name: every configured provider's, and those a Llama Stack lists",
    tags=["models"],
    responses={200: "ModelsResponse"},
    parameters=[
        {
            "name": "model_type",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "examples": ["llm", "embedding"]},
            "description": "Only models of this type (every model lightspeed offers is an llm)",
        }
    ],
    errors=[401, 403, 422],
)
@requires(Action.GET_MODELS)
async def list_models(request: web.Request) -> web.Response:
    await authenticate(request)
    wanted = request.query.getall("model_type", [])
    if len(wanted) > 1:
        raise ValidationFailed(
            [{"type": "string_type", "loc": ["query", "model_type"], "msg": "Input should be a valid string",
              "input": wanted}]
        )  # fmt: skip
    registry = llm_from(request)
    models = [_model(provider, model) for provider, model in registry.models()]
    if wanted:
        models = [m for m in models if m["model_type"] == wanted[0]]
    return json_response({"models": models})


@operation(
    summary="The effective configuration, every secret masked",
    tags=["service"],
    responses={200: "ConfigurationResponse"},
    errors=[401, 403],
)
@requires(Action.GET_CONFIG)
async def get_config(request: web.Request) -> web.Response:
    await authenticate(request)
    return json_response({"configuration": config_to_dict(config_from(request))})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/config", get_config)
