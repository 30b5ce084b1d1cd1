"""HTTP router: the seed's POST /predict, OpenAI-compatible /v1/*, probes and metrics (FastAPI).

Thin by design: each route validates its body (`model_server.protocol`), calls the serving layer
(`model_server.serving`) and adapts the result to HTTP (JSON, or SSE for `stream: true`). Errors are JSON in
OpenAI's shape (`model_server.errors`); request ids, the body limit and the access log are ASGI middleware
(`model_server.middleware`).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp

from model_server import metrics
from model_server.engine import Engine
from model_server.errors import ApiError, install_handlers
from model_server.middleware import EdgeMiddleware
from model_server.protocol import ChatRequest, CompletionRequest, PredictRequest
from model_server.serving import ChunkStream, Serving
from model_server.settings import Settings


class State:
    """Per-app state: the serving layer and readiness (set by the caller after warm-up)."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.serving = Serving(settings, engine)
        self.model_id = self.serving.model_id
        self.api_key = settings.resolved_api_key()
        self.ready = False


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
    return result


def create_app(settings: Settings, engine: Engine) -> FastAPI:
    """Build the FastAPI app around a loaded engine. Readiness is set by the caller after warm-up."""
    state = State(settings, engine)
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

    auth = [Depends(require_key)]

    # ------------------------------------------------------------------ probes & metrics
    @app.get("/healthz", tags=["ops"], summary="Liveness: the process and its engine thread are alive.")
    async def healthz() -> JSONResponse:
        health = engine.health()
        if not health.ok:
            return JSONResponse({"status": "error", "detail": health.detail}, 500)
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", tags=["ops"], summary="Readiness: model loaded and warmed up, not draining.")
    async def readyz() -> JSONResponse:
        if engine.draining:
            return JSONResponse({"status": "draining"}, 503)
        healthy = engine.health().ok
        if not state.ready or not healthy:
            return JSONResponse({"status": "loading" if healthy else "error"}, 503)
        active, queued = engine.stats()
        return JSONResponse({"status": "ready", "active": active, "queued": queued})

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics.", response_class=PlainTextResponse)
    async def prom() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", tags=["openai"], dependencies=auth)
    async def models() -> dict[str, Any]:
        return serving.models()

    # ------------------------------------------------------------------ generation
    @app.post("/predict", tags=["seed"], dependencies=auth, summary="The original chapter-2 endpoint.")
    async def predict(body: PredictRequest, request: Request) -> dict[str, Any]:
        return await serving.predict(body, request)

    @app.post("/v1/completions", tags=["openai"], dependencies=auth, response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        return _respond(await serving.completions(body, request))

    @app.post("/v1/chat/completions", tags=["openai"], dependencies=auth, response_model=None)
    async def chat_completions(body: ChatRequest, request: Request) -> Any:
        return _respond(await serving.chat(body, request))

    return app


def wrap(app: FastAPI, settings: Settings) -> ASGIApp:
    """The ASGI app uvicorn serves: the edge middleware around the FastAPI app."""
    return EdgeMiddleware(app, settings.max_body_bytes)
