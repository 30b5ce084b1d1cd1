"""HTTP router: the seed's POST /predict, OpenAI-compatible /v1/*, probes and metrics (FastAPI).

Thin by design: each route validates its body (`model_server.protocol`), calls the serving layer
(`model_server.serving`) and adapts the result to HTTP (JSON, or SSE for `stream: true`). Errors are JSON in
OpenAI's shape (`model_server.errors`); request ids, the body limit and timeouts and the access log are the
edge's (`model_server.middleware`). /openapi.json documents every status and content type served.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp

from model_server import metrics
from model_server.embeddings import Embedder
from model_server.engine import Engine
from model_server.errors import ApiError, install_handlers
from model_server.middleware import EdgeMiddleware
from model_server.protocol import (
    ChatCompletion,
    ChatRequest,
    Completion,
    CompletionRequest,
    DetokenizeRequest,
    DetokenizeResponse,
    EmbeddingList,
    EmbeddingRequest,
    ErrorResponse,
    ModelList,
    PredictRequest,
    PredictResponse,
    Status,
    TokenizeRequest,
    TokenizeResponse,
)
from model_server.serving import ChunkStream, Serving
from model_server.settings import Settings


class State:
    """Per-app state: the serving layer and readiness (set by the caller after warm-up)."""

    def __init__(self, settings: Settings, engine: Engine, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.serving = Serving(settings, engine, embedder)
        self.model_id = self.serving.model_id
        self.api_key = settings.resolved_api_key()
        self.ready = False


class HttpClient:
    """The serving layer's view of an HTTP connection: the ASGI `http.disconnect` message."""

    def __init__(self, request: Request) -> None:
        self._receive = request.receive

    async def wait_disconnected(self) -> None:
        # The body has been read: the server's receive() now returns only when the client is gone.
        while (await self._receive())["type"] != "http.disconnect":
            pass


# --------------------------------------------------------------------------- OpenAPI documentation
def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


_GENERATION_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error(
        "Invalid request: malformed JSON, wrong types (booleans are not numbers), out-of-range values, "
        "invalid Unicode, unsupported parameters (named), too many messages, a prompt over the context."
    ),
    401: _error("API key configured and the Authorization: Bearer token missing or wrong."),
    408: _error("Headers or body not received within MODEL_SERVER_HEADER/BODY_TIMEOUT_S."),
    413: _error("Request body over MODEL_SERVER_MAX_BODY_BYTES."),
    429: _error("All slots busy and the queue full; retry after Retry-After seconds."),
    500: _error("Engine failure."),
    503: _error(
        "Loading (code loading, before warm-up finished), draining after SIGTERM (code draining), or cut off "
        "by the drain timeout (code drain_timeout); retry after Retry-After seconds."
    ),
}
_SSE = {
    "text/event-stream": {
        # OpenAPI 3.1 without itemSchema: `schema` describes one server-sent event.
        "schema": {
            "type": "object",
            "required": ["data"],
            "properties": {
                "data": {
                    "type": "string",
                    "description": "A chunk as JSON (the non-streaming object's shape, with `delta` for chat "
                    "and a `usage` chunk last when stream_options.include_usage), or `[DONE]` last. An error "
                    "after the stream started (drain timeout, engine failure) is an OpenAI error object "
                    "before `[DONE]`.",
                },
                "event": {"type": "string", "enum": ["message"]},
            },
        }
    }
}


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


async def _sse_body(stream: ChunkStream) -> AsyncIterator[bytes]:
    """SSE framing of a chunk stream, ending with `data: [DONE]`; closing the body cancels generation."""
    try:
        async for chunk in stream:
            yield _sse(chunk)
        yield b"data: [DONE]\n\n"
    finally:
        await stream.aclose()


def _respond(result: dict[str, Any] | ChunkStream) -> Any:
    if isinstance(result, ChunkStream):
        return StreamingResponse(
            _sse_body(result),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return JSONResponse(result)


def create_app(settings: Settings, engine: Engine, embedder: Embedder | None = None) -> FastAPI:
    """Build the FastAPI app around a loaded engine. Readiness is set by the caller after warm-up; until
    then the model endpoints answer 503 with code `loading`."""
    state = State(settings, engine, embedder)
    serving = state.serving
    app = FastAPI(
        title="llama.cpp model server",
        version="1.0.0",
        description="Seed-compatible POST /predict plus an OpenAI-compatible API over llama.cpp, "
        "with continuous batching.",
    )
    app.state.ms = state
    install_handlers(app)

    async def require_key(request: Request) -> None:
        if state.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), state.api_key.encode()
        ):
            raise ApiError(
                401,
                "missing or invalid API key (Authorization: Bearer <key>)",
                type_="authentication_error",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def require_ready(request: Request) -> None:
        if not state.ready and not engine.draining:
            raise ApiError(
                503,
                "the model is loading; retry shortly",
                type_="server_error",
                code="loading",
                headers={"Retry-After": str(settings.retry_after_s)},
            )

    auth = [Depends(require_key)]
    model = [Depends(require_key), Depends(require_ready)]

    # ------------------------------------------------------------------ probes & metrics
    @app.api_route(
        "/healthz",
        methods=["GET", "HEAD"],
        tags=["ops"],
        summary="Liveness: the process and its engine thread are alive.",
        response_model=Status,
        responses={500: {"model": Status, "description": "The engine failed."}},
    )
    async def healthz() -> JSONResponse:
        health = engine.health()
        if not health.ok:
            return JSONResponse({"status": "error", "detail": health.detail}, 500)
        return JSONResponse({"status": "ok"})

    @app.api_route(
        "/readyz",
        methods=["GET", "HEAD"],
        tags=["ops"],
        summary="Readiness: model loaded and warmed up, not draining.",
        response_model=Status,
        responses={503: {"model": Status, "description": "Loading, draining or failed."}},
    )
    async def readyz() -> JSONResponse:
        if engine.draining:
            return JSONResponse({"status": "draining"}, 503)
        healthy = engine.health().ok
        if not state.ready or not healthy:
            return JSONResponse({"status": "loading" if healthy else "error"}, 503)
        active, queued = engine.stats()
        return JSONResponse({"status": "ready", "active": active, "queued": queued})

    @app.get(
        "/metrics",
        tags=["ops"],
        summary="Prometheus metrics (classic text format 0.0.4).",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def prom() -> Response:
        return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)

    @app.get(
        "/v1/models",
        tags=["openai"],
        dependencies=auth,
        response_model=ModelList,
        responses={401: _GENERATION_ERRORS[401]},
    )
    async def models() -> JSONResponse:
        return JSONResponse(serving.models())

    # ------------------------------------------------------------------ generation
    @app.post(
        "/predict",
        tags=["seed"],
        dependencies=model,
        summary="The original chapter-2 endpoint.",
        response_model=PredictResponse,
        responses=_GENERATION_ERRORS,
    )
    async def predict(body: PredictRequest, request: Request) -> JSONResponse:
        return JSONResponse(await serving.predict(body, HttpClient(request)))

    @app.post(
        "/v1/completions",
        tags=["openai"],
        dependencies=model,
        response_model=Completion,
        responses={200: {"content": _SSE}, **_GENERATION_ERRORS},
    )
    async def completions(body: CompletionRequest, request: Request) -> Any:
        return _respond(await serving.completions(body, HttpClient(request)))

    async def chat_completions(body: ChatRequest, request: Request) -> Any:
        return _respond(await serving.chat(body, HttpClient(request)))

    # The body's schema carries MODEL_SERVER_MAX_MESSAGES (set here: annotations are strings).
    chat_completions.__annotations__["body"] = ChatRequest.limited(settings.max_messages)
    app.post(
        "/v1/chat/completions",
        tags=["openai"],
        dependencies=model,
        response_model=ChatCompletion,
        responses={200: {"content": _SSE}, **_GENERATION_ERRORS},
    )(chat_completions)

    _add_embeddings_and_utilities(app, serving, auth, model)
    _document_400_not_422(app)
    return app


def _add_embeddings_and_utilities(app: FastAPI, serving: Serving, auth: list[Any], model: list[Any]) -> None:
    """/v1/embeddings (needs the model ready) and llama-server's /tokenize, /detokenize, /props."""

    @app.post(
        "/v1/embeddings",
        tags=["openai"],
        dependencies=model,
        response_model=EmbeddingList,
        responses={
            **_GENERATION_ERRORS,
            429: _error("MODEL_SERVER_EMBEDDINGS_MAX_INFLIGHT embedding requests in flight; retry later."),
        },
    )
    async def embeddings(body: EmbeddingRequest) -> JSONResponse:
        return JSONResponse(await serving.embeddings(body))

    # ------------------------------------------------------------------ llama-server's utilities
    @app.post(
        "/tokenize",
        tags=["llama.cpp"],
        dependencies=auth,
        response_model=TokenizeResponse,
        responses={400: _GENERATION_ERRORS[400], 401: _GENERATION_ERRORS[401]},
    )
    async def tokenize(body: TokenizeRequest) -> JSONResponse:
        return JSONResponse(serving.tokenize(body))

    @app.post(
        "/detokenize",
        tags=["llama.cpp"],
        dependencies=auth,
        response_model=DetokenizeResponse,
        responses={400: _GENERATION_ERRORS[400], 401: _GENERATION_ERRORS[401]},
    )
    async def detokenize(body: DetokenizeRequest) -> JSONResponse:
        return JSONResponse(serving.detokenize(body))

    @app.get(
        "/props",
        tags=["llama.cpp"],
        dependencies=auth,
        summary="The model, its context and slots, default sampling settings (llama-server's /props).",
        responses={401: _GENERATION_ERRORS[401]},
    )
    async def props() -> JSONResponse:
        return JSONResponse(serving.props())


def _document_400_not_422(app: FastAPI) -> None:
    """FastAPI documents 422 for every validated body; this server answers 400 (as OpenAI does)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def wrap(app: FastAPI, settings: Settings) -> ASGIApp:
    """The ASGI app uvicorn serves: the edge middleware around the FastAPI app."""
    return EdgeMiddleware(app, settings.max_body_bytes, settings.body_timeout_s)
