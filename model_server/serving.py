"""The serving layer: request schemas in, OpenAI-shaped results out, without HTTP.

It renders chat templates, tokenizes, admits requests into the engine (every rejection is mapped and
counted here, in one place), waits for the whole completion or hands out a stream of chunks, and cancels
the generation when the client goes away. The router (`model_server.api`) only adapts it to HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

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
)
from model_server.errors import ApiError, error_body
from model_server.logs import request_id_var
from model_server.protocol import ChatRequest, CompletionRequest, PredictRequest
from model_server.sampling import DEFAULTS, SamplingParams
from model_server.settings import Settings

log = logging.getLogger("model_server.api")

#: A chunk builder: (text or None for the opening chunk, finish_reason) -> chunk dict (None: no chunk).
ChunkFn = Callable[[str | None, str | None], dict[str, Any] | None]


class Client(Protocol):
    """What the serving layer needs of the connection: whether the client is still there."""

    async def is_disconnected(self) -> bool: ...


class ChunkStream:
    """The chunks of one streamed completion (OpenAI chunk dicts, or one error body at the end).

    Iterate it once; `aclose()` (also on early exit) cancels the generation and frees its slot."""

    def __init__(self, chunks: AsyncIterator[dict[str, Any]], req: GenRequest) -> None:
        self._chunks = chunks
        self.req = req

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._chunks

    async def aclose(self) -> None:
        self.req.cancel()
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()


def usage(ev: Event) -> dict[str, int]:
    return {
        "prompt_tokens": ev.prompt_tokens,
        "completion_tokens": ev.completion_tokens,
        "total_tokens": ev.prompt_tokens + ev.completion_tokens,
    }


class Serving:
    """Generation endpoints over one engine. Methods raise `ApiError` for anything the client did wrong
    or that the server cannot take now."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.model_id = settings.model_id()
        source = settings.chat_template or engine.meta("tokenizer.chat_template") or CHATML
        self.template = ChatTemplate(source, bos_token=engine.bos_text, eos_token=engine.eos_text)
        self.created = int(time.time())

    # ------------------------------------------------------------------ endpoints
    def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": self.model_id,
                    "object": "model",
                    "created": self.created,
                    "owned_by": "model-server",
                    "meta": {"n_ctx_per_request": self.engine.n_ctx_seq, "n_vocab": self.engine.n_vocab},
                }
            ],
        }

    async def predict(self, body: PredictRequest, client: Client) -> dict[str, Any]:
        """The seed's /predict: the prompt and system message through the chat template."""
        messages = []
        if body.sys_msg:
            messages.append({"role": "system", "content": body.sys_msg})
        messages.append({"role": "user", "content": body.prompt})
        self._log_text("prompt", body.prompt)
        tokens = self._chat_tokens(messages)
        req, stream = self._submit(tokens, body.max_tokens, DEFAULTS, [])
        text, ev = await self._collect(client, req, stream)
        self._log_text("completion", text)
        return {
            "response": {
                "id": f"cmpl-{req.request_id}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": self.model_id,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": ev.finish_reason}],
                "usage": usage(ev),
            }
        }

    async def completions(self, body: CompletionRequest, client: Client) -> dict[str, Any] | ChunkStream:
        prompt = body.prompt_text()
        self._log_text("prompt", prompt)
        tokens = self.engine.tokenize(prompt, add_special=True, parse_special=True)
        req, stream = self._submit(tokens, body.max_tokens, body.sampling(), body.stops())
        cid, created = f"cmpl-{req.request_id}", int(time.time())

        def chunk(text: str | None, finish: str | None) -> dict[str, Any] | None:
            if text is None:
                return None
            return {
                "id": cid,
                "object": "text_completion",
                "created": created,
                "model": self.model_id,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
            }

        if body.stream:
            return self._stream(body, req, stream, chunk)
        text, ev = await self._collect(client, req, stream)
        out = chunk(text, ev.finish_reason)
        assert out is not None
        out["usage"] = usage(ev)
        return out

    async def chat(self, body: ChatRequest, client: Client) -> dict[str, Any] | ChunkStream:
        messages = body.template_messages()
        if all(not m["content"] for m in messages):
            raise ApiError(400, "messages: every message is empty", param="messages")
        tokens = self._chat_tokens(messages)
        max_tokens = body.max_completion_tokens or body.max_tokens
        req, stream = self._submit(tokens, max_tokens, body.sampling(), body.stops())
        cid, created = f"chatcmpl-{req.request_id}", int(time.time())

        def chunk(text: str | None, finish: str | None) -> dict[str, Any]:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if text is None else {}
            if text:
                delta["content"] = text
            return {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model_id,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }

        if body.stream:
            return self._stream(body, req, stream, chunk)
        text, ev = await self._collect(client, req, stream)
        return {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": self.model_id,
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

    # ------------------------------------------------------------------ prompt
    def _chat_tokens(self, messages: list[dict[str, Any]]) -> list[int]:
        try:
            text = self.template.render(messages)
        except TemplateError as exc:
            raise ApiError(400, str(exc), param="messages") from exc
        # The template may emit BOS itself; then tokenization must not add another one.
        add_special = not (self.template.bos_token and text.startswith(self.template.bos_token))
        return self.engine.tokenize(text, add_special=add_special, parse_special=True)

    # ------------------------------------------------------------------ admission
    def _reject(self, reason: str, exc: ApiError) -> ApiError:
        """Count a refusal (the one place where rejections are counted) and return its error."""
        metrics.REJECTED.labels(reason=reason).inc()
        return exc

    def _cap_tokens(self, requested: int | None, n_prompt: int) -> int:
        wanted = requested if requested is not None else self.settings.default_max_tokens
        return max(1, min(wanted, self.settings.max_tokens_limit, self.engine.n_ctx_seq - n_prompt))

    def _submit(
        self, tokens: list[int], max_tokens: int | None, sampling: SamplingParams, stop: list[str]
    ) -> tuple[GenRequest, AsyncStream]:
        retry = {"Retry-After": str(self.settings.retry_after_s)}
        if self.engine.draining:
            raise self._reject(
                "draining",
                ApiError(
                    503,
                    "the server is shutting down; retry on another replica",
                    type_="server_error",
                    code="draining",
                    headers=retry,
                ),
            )
        stream = AsyncStream(asyncio.get_running_loop())
        req = GenRequest(
            request_id=request_id_var.get() or uuid.uuid4().hex,
            prompt_tokens=tokens,
            max_tokens=self._cap_tokens(max_tokens, len(tokens)),
            sampling=sampling,
            stop=stop,
            emit=stream.emit,
        )
        try:
            self.engine.submit(req)
        except PromptTooLong as exc:
            raise ApiError(400, str(exc), param="prompt", code="context_length_exceeded") from exc
        except Overloaded as exc:
            raise self._reject(
                "overloaded",
                ApiError(
                    429,
                    f"server overloaded: {exc}; retry later",
                    type_="rate_limit_error",
                    code="overloaded",
                    headers=retry,
                ),
            ) from exc
        except Draining as exc:
            raise self._reject(
                "draining", ApiError(503, str(exc), type_="server_error", headers=retry)
            ) from exc
        except EngineError as exc:
            raise ApiError(500, str(exc), type_="server_error") from exc
        log.info(
            "accepted",
            extra={"prompt_tokens": len(tokens), "max_tokens": req.max_tokens, "stream_id": req.request_id},
        )
        return req, stream

    # ------------------------------------------------------------------ results
    async def _collect(self, client: Client, req: GenRequest, stream: AsyncStream) -> tuple[str, Event]:
        """Wait for the whole completion; a client that goes away cancels the generation."""
        parts: list[str] = []
        next_check = time.monotonic() + 0.5
        try:
            while True:
                ev: Event | None
                try:
                    ev = await asyncio.wait_for(stream.queue.get(), timeout=0.5)
                except TimeoutError:
                    ev = None
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + 0.5
                    if await client.is_disconnected():
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

    def _stream(
        self, body: CompletionRequest | ChatRequest, req: GenRequest, stream: AsyncStream, chunk: ChunkFn
    ) -> ChunkStream:
        """The chunks of a `stream: true` request (a usage chunk if `stream_options` asks for it)."""
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            try:
                first = chunk(None, None)
                if first is not None:
                    yield first
                while True:
                    ev = await stream.queue.get()
                    if ev.kind == "delta":
                        if ev.text:
                            out = chunk(ev.text, None)
                            assert out is not None
                            yield out
                    elif ev.kind == "error":
                        yield error_body(ev.message, "server_error")
                        return
                    else:
                        if ev.finish_reason == "cancelled":
                            return
                        final = chunk("", ev.finish_reason)
                        assert final is not None
                        yield final
                        if include_usage:
                            yield {**final, "choices": [], "usage": usage(ev)}
                        return
            finally:
                req.cancel()

        return ChunkStream(chunks(), req)

    def _log_text(self, kind: str, text: str) -> None:
        if self.settings.log_prompts:
            log.info(kind, extra={"text": text})
