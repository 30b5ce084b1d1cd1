"""The serving layer: request schemas in, OpenAI-shaped results out, without HTTP.

Per request, in this order, so that a refusal costs nothing and the event loop never does CPU work:
1. cheap checks on the validated body (message count, empty conversation) -> 400;
2. admission: a place among the accepted requests, or 429/503 at once (counted here, the one place where
   rejections are counted);
3. prompt work in a worker thread: chat template, size bound, tokenization (user text never parsed for
   special tokens, `model_server.prompt`) -> 400 if it cannot fit;
4. the engine generates; the caller gets the whole completion or a stream of chunks. A client that goes
   away cancels its request at once, also while it waits in the queue.

The router (`model_server.api`) adapts this to HTTP; tests drive it directly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from model_server import metrics
from model_server.chat import CHATML, ChatTemplate, TemplateError
from model_server.engine import (
    CLIENT_DISCONNECTED,
    DRAIN_TIMEOUT,
    AsyncStream,
    Draining,
    Engine,
    EngineError,
    Event,
    GenRequest,
    Overloaded,
    PromptTooLong,
    Reservation,
)
from model_server.errors import ApiError, error_body
from model_server.logs import request_id_var
from model_server.prompt import PromptTokenizer
from model_server.protocol import ChatRequest, CompletionRequest, PredictRequest
from model_server.sampling import DEFAULTS, SamplingParams
from model_server.settings import Settings

log = logging.getLogger("model_server.api")

#: A chunk builder: (text or None for the opening chunk, finish_reason) -> chunk dict (None: no chunk).
ChunkFn = Callable[[str | None, str | None], dict[str, Any] | None]
#: Workers for prompt work (template, tokenization). Admission already bounds how much can be waiting.
PROMPT_WORKERS = 2
#: Prompts up to this many characters are rendered and tokenized on the event loop (tens of microseconds).
INLINE_PROMPT_CHARS = 2048


class Client(Protocol):
    """What the serving layer needs of the connection: a way to notice that the client went away."""

    async def wait_disconnected(self) -> None:
        """Return when the client has disconnected (never returns while it stays)."""
        ...


class Generation:
    """One accepted request in the engine: its events, and a watcher that cancels it when the client
    leaves. `close()` (always, on any exit) stops the watcher and cancels what is still running."""

    def __init__(self, engine: Engine, req: GenRequest, stream: AsyncStream, client: Client) -> None:
        self.engine = engine
        self.req = req
        self.stream = stream
        self._watcher = asyncio.create_task(self._watch(client))

    async def _watch(self, client: Client) -> None:
        await client.wait_disconnected()
        self.engine.cancel(self.req, CLIENT_DISCONNECTED)
        log.info("client disconnected; request cancelled", extra={"completion_id": self.req.completion_id})

    async def events(self) -> AsyncIterator[Event]:
        """Events up to and including the final one (done or error)."""
        while True:
            ev = await self.stream.queue.get()
            yield ev
            if ev.kind != "delta":
                return

    def close(self) -> None:
        self._watcher.cancel()
        self.engine.cancel(self.req)  # no-op when finished; frees the slot or queue place otherwise


class ChunkStream:
    """The chunks of one streamed completion (OpenAI chunk dicts, or one error body at the end).

    Iterate it once; `aclose()` (also on early exit) cancels the generation and frees its slot."""

    def __init__(self, chunks: AsyncIterator[dict[str, Any]], generation: Generation) -> None:
        self._chunks = chunks
        self.generation = generation

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._chunks

    async def aclose(self) -> None:
        self.generation.close()
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
        self.prompts = PromptTokenizer(engine)
        # A prompt of more bytes than this cannot fit: every token covers at most max_piece_bytes.
        self.max_prompt_bytes = engine.n_ctx_seq * self.prompts.max_piece_bytes
        self.created = int(time.time())
        self._cpu = ThreadPoolExecutor(PROMPT_WORKERS, thread_name_prefix="prompt")

    def close(self) -> None:
        self._cpu.shutdown(wait=False, cancel_futures=True)

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
        sampling = dataclasses.replace(DEFAULTS, repeat_penalty=self.settings.default_repeat_penalty)
        gen = await self._start(
            client,
            lambda: self._chat_tokens(messages),
            body.max_tokens,
            sampling,
            [],
            prefix="cmpl",
            prompt_chars=len(body.prompt) + len(body.sys_msg),
        )
        text, ev = await self._collect(gen)
        self._log_text("completion", text)
        return {
            "response": {
                "id": gen.req.completion_id,
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
        gen = await self._start(
            client,
            lambda: self._plain_tokens(prompt),
            body.max_tokens,
            body.sampling(self.settings.default_repeat_penalty),
            body.stops(),
            prefix="cmpl",
            prompt_chars=len(prompt),
        )
        cid, created = gen.req.completion_id, int(time.time())

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
            return self._stream(body, gen, chunk)
        text, ev = await self._collect(gen)
        out = chunk(text, ev.finish_reason)
        assert out is not None
        out["usage"] = usage(ev)
        return out

    async def chat(self, body: ChatRequest, client: Client) -> dict[str, Any] | ChunkStream:
        if len(body.messages) > self.settings.max_messages:
            raise ApiError(
                400,
                f"messages: {len(body.messages)} messages; at most {self.settings.max_messages} "
                "per request (MODEL_SERVER_MAX_MESSAGES)",
                param="messages",
                code="too_many_messages",
            )
        messages = body.template_messages()
        if all(not m["content"] for m in messages):
            raise ApiError(400, "messages: every message is empty", param="messages")
        max_tokens = body.max_completion_tokens or body.max_tokens
        gen = await self._start(
            client,
            lambda: self._chat_tokens(messages),
            max_tokens,
            body.sampling(self.settings.default_repeat_penalty),
            body.stops(),
            prefix="chatcmpl",
            prompt_chars=sum(len(m["content"]) + 16 for m in messages),
        )
        cid, created = gen.req.completion_id, int(time.time())

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
            return self._stream(body, gen, chunk)
        text, ev = await self._collect(gen)
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

    # ------------------------------------------------------------------ prompt work (worker thread)
    def _check_size(self, texts: list[str]) -> None:
        size = sum(len(t.encode("utf-8")) for t in texts)
        if size > self.max_prompt_bytes:
            raise ApiError(
                400,
                f"the prompt has {size} bytes: more than {self.engine.n_ctx_seq} tokens, the context "
                "per request (MODEL_SERVER_N_CTX), can hold",
                param="prompt",
                code="context_length_exceeded",
            )

    def _plain_tokens(self, prompt: str) -> list[int]:
        self._check_size([prompt])
        return self.prompts.plain(prompt)

    def _chat_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        self._check_size([m["content"] for m in messages])
        try:
            return self.prompts.chat(self.template, messages)
        except TemplateError as exc:
            raise ApiError(400, str(exc), param="messages") from exc

    # ------------------------------------------------------------------ admission
    def _reject(self, reason: str, exc: ApiError) -> ApiError:
        """Count a refusal (the one place where rejections are counted) and return its error."""
        metrics.REJECTED.labels(reason=reason).inc()
        return exc

    def _reserve(self) -> Reservation:
        retry = {"Retry-After": str(self.settings.retry_after_s)}
        try:
            return self.engine.reserve()
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
                "draining",
                ApiError(
                    503,
                    "the server is shutting down; retry on another replica",
                    type_="server_error",
                    code="draining",
                    headers=retry,
                ),
            ) from exc
        except EngineError as exc:
            raise ApiError(500, str(exc), type_="server_error") from exc

    def _cap_tokens(self, requested: int | None, n_prompt: int) -> int:
        wanted = requested if requested is not None else self.settings.default_max_tokens
        return max(1, min(wanted, self.settings.max_tokens_limit, self.engine.n_ctx_seq - n_prompt))

    async def _start(
        self,
        client: Client,
        prepare: Callable[[], list[int]],
        max_tokens: int | None,
        sampling: SamplingParams,
        stop: list[str],
        prefix: str,
        prompt_chars: int,
    ) -> Generation:
        """Admit, prepare the prompt (off the event loop unless it is small), queue it; the returned
        generation is running."""
        small = prompt_chars <= INLINE_PROMPT_CHARS
        reservation = self._reserve()
        try:
            loop = asyncio.get_running_loop()
            if small:  # microseconds of work: cheaper than a thread hand-off on a loaded machine
                tokens = prepare()
            else:
                tokens = await loop.run_in_executor(self._cpu, prepare)
            stream = AsyncStream(loop)
            req = GenRequest(
                request_id=request_id_var.get() or uuid.uuid4().hex,
                completion_id=f"{prefix}-{uuid.uuid4().hex}",
                prompt_tokens=tokens,
                max_tokens=self._cap_tokens(max_tokens, len(tokens)),
                sampling=sampling,
                stop=stop,
                emit=stream.emit,
            )
            try:
                reservation.submit(req)
            except PromptTooLong as exc:
                raise ApiError(400, str(exc), param="prompt", code="context_length_exceeded") from exc
            except EngineError as exc:
                raise ApiError(500, str(exc), type_="server_error") from exc
        finally:
            reservation.release()  # no-op once submitted
        log.info(
            "accepted",
            extra={
                "prompt_tokens": len(tokens),
                "max_tokens": req.max_tokens,
                "completion_id": req.completion_id,
            },
        )
        return Generation(self.engine, req, stream, client)

    # ------------------------------------------------------------------ results
    def _engine_error(self, ev: Event) -> ApiError:
        if ev.code == DRAIN_TIMEOUT:
            return ApiError(
                503,
                ev.message,
                type_="server_error",
                code=DRAIN_TIMEOUT,
                headers={"Retry-After": str(self.settings.retry_after_s)},
            )
        return ApiError(500, ev.message, type_="server_error", code=ev.code)

    async def _collect(self, gen: Generation) -> tuple[str, Event]:
        """Wait for the whole completion (the generation's watcher cancels it if the client leaves)."""
        parts: list[str] = []
        try:
            async for ev in gen.events():
                if ev.kind == "delta":
                    parts.append(ev.text)
                elif ev.kind == "error":
                    raise self._engine_error(ev)
                elif ev.finish_reason == "cancelled":
                    # Nobody reads this answer; 499 (nginx's "client closed request") in the access log.
                    raise ApiError(499, "client closed the request", code=CLIENT_DISCONNECTED)
                else:
                    return "".join(parts), ev
            raise ApiError(500, "generation ended without a result", type_="server_error")
        finally:
            gen.close()

    def _stream(self, body: CompletionRequest | ChatRequest, gen: Generation, chunk: ChunkFn) -> ChunkStream:
        """The chunks of a `stream: true` request (a usage chunk if `stream_options` asks for it). An
        engine error or a drain cut-off ends the stream with an OpenAI error object."""
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            try:
                first = chunk(None, None)
                if first is not None:
                    yield first
                async for ev in gen.events():
                    if ev.kind == "delta":
                        if ev.text:
                            out = chunk(ev.text, None)
                            assert out is not None
                            yield out
                    elif ev.kind == "error":
                        err = self._engine_error(ev)
                        yield error_body(err.message, err.type, None, err.code)
                    elif ev.finish_reason != "cancelled":
                        final = chunk("", ev.finish_reason)
                        assert final is not None
                        yield final
                        if include_usage:
                            yield {**final, "choices": [], "usage": usage(ev)}
            finally:
                gen.close()

        return ChunkStream(chunks(), gen)

    def _log_text(self, kind: str, text: str) -> None:
        if self.settings.log_prompts:
            log.info(kind, extra={"text": text})
