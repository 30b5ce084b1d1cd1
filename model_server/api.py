"""HTTP API: the seed's POST /predict, OpenAI-compatible /v1/*, probes and metrics (FastAPI).

Errors are JSON in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model_server import metrics
from model_server.chat import CHATML, ChatTemplate, TemplateError
from model_server.engine import (
    AsyncStream,
    Draining,
    Engine,
    EngineError,
    Event,
    GenRequest,
    Overloaded,
    PromptTooLong,
    SamplingParams,
)
from model_server.logs import request_id_var
from model_server.settings import Settings

log = logging.getLogger("model_server.api")
access_log = logging.getLogger("model_server.access")


# ---------------------------------------------------------------------------------------------- errors
class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = headers or {}


def _error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(
        _error_body(exc.message, exc.type, exc.param, exc.code), status_code=exc.status, headers=exc.headers
    )


# ---------------------------------------------------------------------------------------------- schemas
class _Req(BaseModel):
    # OpenAI clients send fields we do not use (user, logit_bias=None, ...): ignore unknown keys.
    model_config = ConfigDict(extra="ignore")


class _Sampling(_Req):
    max_tokens: int | None = Field(
        None, ge=1, description="Capped by MODEL_SERVER_MAX_TOKENS_LIMIT and context."
    )
    temperature: float = Field(0.8, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(40, ge=0, le=100_000)
    min_p: float = Field(0.05, ge=0.0, le=1.0)
    repeat_penalty: float = Field(1.0, gt=0.0, le=10.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    stop: str | list[Annotated[str, Field(min_length=1)]] | None = Field(None, max_length=16)
    n: int = Field(1, ge=1, le=1, description="Only n=1 is supported.")

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            seed=self.seed,
        )

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class StreamOptions(_Req):
    include_usage: bool = False


class PredictRequest(_Req):
    """The seed's contract (chapter 2): prompt + system message, optional max_tokens."""

    prompt: str = Field(..., max_length=1_000_000)
    sys_msg: str = ""
    max_tokens: int | None = Field(None, ge=1)


class CompletionRequest(_Sampling):
    model: str | None = None
    prompt: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=1)]
    )
    stream: bool = False
    stream_options: StreamOptions | None = None


class TextPart(_Req):
    type: Literal["text"]
    text: str


class ChatMessage(_Req):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None


class ChatRequest(_Sampling):
    model: str | None = None
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None


# ------------------------------------------------------------------------------------- ASGI middleware
class _BodyTooLarge(BaseException):
    """Not an Exception: FastAPI's body parser must not turn it into a generic 400."""


class EdgeMiddleware:
    """Request ids, request-body size limit (413), access log and per-route request counter."""

    ROUTES = frozenset(
        {
            "/predict",
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/models",
            "/healthz",
            "/readyz",
            "/metrics",
        }
    )

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or uuid.uuid4().hex
        token = request_id_var.set(rid)
        t0 = time.perf_counter()
        status = 500
        started = False

        declared = headers.get(b"content-length")
        too_large = False
        if declared is not None:
            try:
                too_large = int(declared) > self.max_body
            except ValueError:
                too_large = True

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.max_body:
                    raise _BodyTooLarge
            return msg

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        try:
            if too_large:
                await self._reject_large(send_wrapper)
            else:
                try:
                    await self.app(scope, limited_receive, send_wrapper)
                except _BodyTooLarge:
                    if started:
                        raise
                    await self._reject_large(send_wrapper)
        finally:
            path = scope.get("path", "")
            route = path if path in self.ROUTES else "other"
            metrics.REQUESTS.labels(route=route, status=str(status)).inc()
            if path not in ("/healthz", "/readyz", "/metrics"):
                access_log.info(
                    "request",
                    extra={
                        "method": scope.get("method"),
                        "path": path,
                        "status": status,
                        "duration_ms": round((time.perf_counter() - t0) * 1000, 1),
                    },
                )
            request_id_var.reset(token)

    async def _reject_large(self, send: Send) -> None:
        body = json.dumps(
            _error_body(
                f"request body exceeds {self.max_body} bytes", "invalid_request_error", None, "too_large"
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------------------------- app
class State:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.ready = False
        self.model_id = settings.model_id()
        self.api_key = settings.resolved_api_key()
        source = settings.chat_template or engine.meta("tokenizer.chat_template") or CHATML
        self.template = ChatTemplate(source, bos_token=engine.bos_text, eos_token=engine.eos_text)
        self.created = int(time.time())


def create_app(settings: Settings, engine: Engine) -> FastAPI:
    """Build the FastAPI app around a loaded engine. Readiness is set by the caller after warm-up."""
    state = State(settings, engine)
    app = FastAPI(
        title="llama.cpp model server",
        version="1.0.0",
        description="Seed-compatible POST /predict plus an OpenAI-compatible API over llama.cpp, "
        "with continuous batching.",
    )
    app.state.ms = state

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        if first.get("type") == "json_invalid":
            message = "request body is not valid JSON"
        else:
            message = f"{param or 'body'}: {first.get('msg', 'invalid value')}"
        return JSONResponse(_error_body(message, "invalid_request_error", param, first.get("type")), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            _error_body(str(exc.detail), "invalid_request_error"), exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(_error_body("internal server error", "server_error"), 500)

    async def require_key(request: Request) -> None:
        if state.api_key is None:
            return
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
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
        if engine._fatal:
            return JSONResponse({"status": "error", "detail": engine._fatal}, 500)
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", tags=["ops"], summary="Readiness: model loaded and warmed up, not draining.")
    async def readyz() -> JSONResponse:
        if engine.draining:
            return JSONResponse({"status": "draining"}, 503)
        if not state.ready or engine._fatal:
            return JSONResponse({"status": "loading" if not engine._fatal else "error"}, 503)
        active, queued = engine.stats()
        return JSONResponse({"status": "ready", "active": active, "queued": queued})

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics.", response_class=PlainTextResponse)
    async def prom() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", tags=["openai"], dependencies=auth)
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": state.model_id,
                    "object": "model",
                    "created": state.created,
                    "owned_by": "model-server",
                    "meta": {"n_ctx_per_request": engine.n_ctx_seq, "n_vocab": engine.n_vocab},
                }
            ],
        }

    # ------------------------------------------------------------------ generation helpers
    def cap_tokens(requested: int | None, n_prompt: int) -> int:
        wanted = requested if requested is not None else settings.default_max_tokens
        return max(1, min(wanted, settings.max_tokens_limit, engine.n_ctx_seq - n_prompt))

    def chat_tokens(messages: list[dict[str, Any]]) -> list[int]:
        try:
            text = state.template.render(messages)
        except TemplateError as exc:
            raise ApiError(400, str(exc), param="messages") from exc
        # The template may emit BOS itself; then tokenization must not add another one.
        add_special = not (state.template.bos_token and text.startswith(state.template.bos_token))
        return engine.tokenize(text, add_special=add_special, parse_special=True)

    def submit(tokens: list[int], max_tokens: int | None, sampling: SamplingParams, stop: list[str]):
        if engine.draining:
            metrics.REJECTED.labels(reason="draining").inc()
            raise ApiError(
                503,
                "the server is shutting down; retry on another replica",
                type_="server_error",
                code="draining",
                headers={"Retry-After": str(settings.retry_after_s)},
            )
        stream = AsyncStream(asyncio.get_running_loop())
        req = GenRequest(
            request_id=request_id_var.get() or uuid.uuid4().hex,
            prompt_tokens=tokens,
            max_tokens=cap_tokens(max_tokens, len(tokens)),
            sampling=sampling,
            stop=stop,
            emit=stream.emit,
        )
        try:
            engine.submit(req)
        except PromptTooLong as exc:
            raise ApiError(400, str(exc), param="prompt", code="context_length_exceeded") from exc
        except Overloaded as exc:
            raise ApiError(
                429,
                f"server overloaded: {exc}; retry later",
                type_="rate_limit_error",
                code="overloaded",
                headers={"Retry-After": str(settings.retry_after_s)},
            ) from exc
        except Draining as exc:
            metrics.REJECTED.labels(reason="draining").inc()
            raise ApiError(
                503, str(exc), type_="server_error", headers={"Retry-After": str(settings.retry_after_s)}
            ) from exc
        except EngineError as exc:
            raise ApiError(500, str(exc), type_="server_error") from exc
        log.info(
            "accepted",
            extra={"prompt_tokens": len(tokens), "max_tokens": req.max_tokens, "stream_id": req.request_id},
        )
        return req, stream

    async def collect(request: Request, req: GenRequest, stream: AsyncStream) -> tuple[str, Event]:
        """Wait for the whole completion; a client that goes away cancels the generation."""
        parts: list[str] = []
        next_check = time.monotonic() + 0.5
        try:
            while True:
                try:
                    ev = await asyncio.wait_for(stream.queue.get(), timeout=0.5)
                except TimeoutError:
                    ev = None
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + 0.5
                    if await request.is_disconnected():
                        req.cancel()
                        log.info("client disconnected; generation cancelled")
                if ev is None:
                    continue
                if ev.kind == "delta":
                    parts.append(ev.text)
                elif ev.kind == "error":
                    raise ApiError(500, ev.message, type_="server_error")
                else:
                    return "".join(parts), ev
        finally:
            req.cancel()  # no-op when finished; frees the slot on any exit path

    def usage(ev: Event) -> dict[str, int]:
        return {
            "prompt_tokens": ev.prompt_tokens,
            "completion_tokens": ev.completion_tokens,
            "total_tokens": ev.prompt_tokens + ev.completion_tokens,
        }

    def log_text(kind: str, text: str) -> None:
        if settings.log_prompts:
            log.info(kind, extra={"text": text})

    def sse(obj: Any) -> bytes:
        return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"

    async def stream_events(
        req: GenRequest, stream: AsyncStream, chunk: Any, include_usage: bool
    ) -> AsyncIterator[bytes]:
        """SSE body. `chunk(text, finish_reason)` builds one OpenAI chunk. Closing the body cancels."""
        try:
            first = chunk(None, None)
            if first is not None:
                yield sse(first)
            while True:
                ev = await stream.queue.get()
                if ev.kind == "delta":
                    if ev.text:
                        yield sse(chunk(ev.text, None))
                elif ev.kind == "error":
                    yield sse(_error_body(ev.message, "server_error"))
                    break
                else:
                    if ev.finish_reason == "cancelled":
                        break
                    final = chunk("", ev.finish_reason)
                    yield sse(final)
                    if include_usage:
                        yield sse({**final, "choices": [], "usage": usage(ev)})
                    break
            yield b"data: [DONE]\n\n"
        finally:
            req.cancel()

    def stream_response(body: Any, req: GenRequest, stream: AsyncStream, chunk: Any) -> StreamingResponse:
        """The SSE response of a `stream: true` OpenAI request (usage chunk if `stream_options` asks)."""
        include = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            stream_events(req, stream, chunk, include),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # ------------------------------------------------------------------ /predict (seed contract)
    @app.post("/predict", tags=["seed"], dependencies=auth, summary="The original chapter-2 endpoint.")
    async def predict(body: PredictRequest, request: Request) -> dict[str, Any]:
        messages = []
        if body.sys_msg:
            messages.append({"role": "system", "content": body.sys_msg})
        messages.append({"role": "user", "content": body.prompt})
        log_text("prompt", body.prompt)
        tokens = chat_tokens(messages)
        req, stream = submit(tokens, body.max_tokens, SamplingParams(), [])
        text, ev = await collect(request, req, stream)
        log_text("completion", text)
        return {
            "response": {
                "id": f"cmpl-{req.request_id}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": state.model_id,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": ev.finish_reason}],
                "usage": usage(ev),
            }
        }

    # ------------------------------------------------------------------ /v1/completions
    @app.post("/v1/completions", tags=["openai"], dependencies=auth, response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
        log_text("prompt", prompt)
        tokens = engine.tokenize(prompt, add_special=True, parse_special=True)
        req, stream = submit(tokens, body.max_tokens, body.sampling(), body.stops())
        cid, created = f"cmpl-{req.request_id}", int(time.time())

        def chunk(text: str | None, finish: str | None) -> dict[str, Any] | None:
            if text is None:
                return None
            return {
                "id": cid,
                "object": "text_completion",
                "created": created,
                "model": state.model_id,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
            }

        if body.stream:
            return stream_response(body, req, stream, chunk)
        text, ev = await collect(request, req, stream)
        out = chunk(text, ev.finish_reason)
        assert out is not None
        out["usage"] = usage(ev)
        return out

    # ------------------------------------------------------------------ /v1/chat/completions
    @app.post("/v1/chat/completions", tags=["openai"], dependencies=auth, response_model=None)
    async def chat_completions(body: ChatRequest, request: Request) -> Any:
        messages = []
        for m in body.messages:
            content = m.content
            if isinstance(content, list):
                content = "".join(p.text for p in content)
            messages.append({"role": "system" if m.role == "developer" else m.role, "content": content or ""})
        if all(not m["content"] for m in messages):
            raise ApiError(400, "messages: every message is empty", param="messages")
        tokens = chat_tokens(messages)
        max_tokens = body.max_completion_tokens or body.max_tokens
        req, stream = submit(tokens, max_tokens, body.sampling(), body.stops())
        cid, created = f"chatcmpl-{req.request_id}", int(time.time())

        def chunk(text: str | None, finish: str | None) -> dict[str, Any]:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if text is None else {}
            if text:
                delta["content"] = text
            return {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": state.model_id,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }

        if body.stream:
            return stream_response(body, req, stream, chunk)
        text, ev = await collect(request, req, stream)
        return {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": state.model_id,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": ev.finish_reason,
                }
            ],
            "usage": usage(ev),
        }

    return app


def wrap(app: FastAPI, settings: Settings) -> ASGIApp:
    return EdgeMiddleware(app, settings.max_body_bytes)
