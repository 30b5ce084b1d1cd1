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
import base64
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from model_server import metrics, tools
from model_server.chat import CHATML, ChatTemplate, TemplateError
from model_server.embeddings import Embedder, EmbeddingsBusy, InputTooLong
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
from model_server.grammar import JSON_OBJECT_SCHEMA, SchemaError, schema_grammar
from model_server.logs import request_id_var
from model_server.prompt import PromptTokenizer
from model_server.protocol import (
    ChatRequest,
    CompletionRequest,
    DetokenizeRequest,
    EmbeddingRequest,
    PredictRequest,
    TokenizeRequest,
)
from model_server.sampling import DEFAULTS, GrammarError, SamplingParams, TokenLogprob, check_grammar
from model_server.settings import Settings

log = logging.getLogger("model_server.api")

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
    """One accepted request in the engine (n choices: n engine requests), their events, and a watcher that
    cancels them when the client leaves. `close()` (always, on any exit) stops the watcher and cancels
    what is still running."""

    def __init__(self, engine: Engine, reqs: list[GenRequest], stream: AsyncStream, client: Client) -> None:
        self.engine = engine
        self.reqs = reqs
        self.req = reqs[0]
        self.stream = stream
        self.finals: list[Event] = []  # each choice's `done` event, as they arrive
        self._watcher = asyncio.create_task(self._watch(client))

    async def _watch(self, client: Client) -> None:
        await client.wait_disconnected()
        for req in self.reqs:
            self.engine.cancel(req, CLIENT_DISCONNECTED)
        log.info("client disconnected; request cancelled", extra={"completion_id": self.req.completion_id})

    async def events(self) -> AsyncIterator[Event]:
        """Events (`index`: the choice) up to and including every choice's final one (done or error)."""
        left = len(self.reqs)
        while left:
            ev = await self.stream.queue.get()
            if ev.kind == "done":
                self.finals.append(ev)
            yield ev
            if ev.kind != "delta":
                left -= 1

    def close(self) -> None:
        self._watcher.cancel()
        for req in self.reqs:
            self.engine.cancel(req)  # no-op when finished; frees the slot or queue place otherwise


@dataclass
class Choice:
    """One finished choice: its text, log-probabilities and final event."""

    index: int
    text: str
    logprobs: list[TokenLogprob]
    final: Event


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


def usage(choices: list[Choice]) -> dict[str, int]:
    """Prompt tokens once (the choices share the prompt), completion tokens of every choice."""
    prompt = choices[0].final.prompt_tokens if choices else 0
    completion = sum(c.final.completion_tokens for c in choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class Serving:
    """Generation endpoints over one engine. Methods raise `ApiError` for anything the client did wrong
    or that the server cannot take now."""

    def __init__(self, settings: Settings, engine: Engine, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.embedder = embedder
        self.model_id = settings.model_id()
        source = settings.chat_template or engine.meta("tokenizer.chat_template") or CHATML
        self.template = ChatTemplate(source, bos_token=engine.bos_text, eos_token=engine.eos_text)
        self.tool_format = tools.template_tool_format(source)
        self.prompts = PromptTokenizer(engine)
        # A prompt of more bytes than this cannot fit: every token covers at most max_piece_bytes.
        self.max_prompt_bytes = engine.n_ctx_seq * self.prompts.max_piece_bytes
        self.created = int(time.time())
        self._cpu = ThreadPoolExecutor(PROMPT_WORKERS, thread_name_prefix="prompt")
        self._grammars_ok: set[str] = set()  # grammars llama.cpp has parsed already

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

    def props(self) -> dict[str, Any]:
        """llama-server's GET /props: the model, its context and slots, default sampling."""
        d = DEFAULTS
        return {
            "model_alias": self.model_id,
            "model_path": str(self.engine.model_path),
            "n_ctx": self.engine.n_ctx_seq,
            "n_vocab": self.engine.n_vocab,
            "total_slots": self.engine.max_concurrency,
            "max_queue": self.engine.max_queue,
            "chat_template": self.template.source,
            "tool_format": self.tool_format,
            "bos_token": self.engine.bos_text,
            "eos_token": self.engine.eos_text,
            "default_generation_settings": {
                "n_ctx": self.engine.n_ctx_seq,
                "params": {
                    "temperature": d.temperature,
                    "top_k": d.top_k,
                    "top_p": d.top_p,
                    "min_p": d.min_p,
                    "repeat_penalty": self.settings.default_repeat_penalty,
                    "max_tokens": self.settings.default_max_tokens,
                    "max_tokens_limit": self.settings.max_tokens_limit,
                },
            },
            "embeddings": None
            if self.embedder is None
            else {
                "n_embd": self.embedder.n_embd,
                "pooling": self.embedder.pooling,
                "n_ctx": self.embedder.n_ctx,
            },
        }

    def tokenize(self, body: TokenizeRequest) -> dict[str, Any]:
        """llama-server's POST /tokenize: ids, or {id, piece} with `with_pieces`."""
        self._check_size([body.content])
        tokens = self.engine.tokenize(
            body.content, add_special=body.add_special, parse_special=body.parse_special
        )
        if not body.with_pieces:
            return {"tokens": tokens}
        pieces: list[dict[str, Any]] = []
        for tok in tokens:
            raw = self.engine.token_bytes(tok, special=True)
            try:
                pieces.append({"id": tok, "piece": raw.decode("utf-8")})
            except UnicodeDecodeError:
                pieces.append({"id": tok, "piece": list(raw)})
        return {"tokens": pieces}

    def detokenize(self, body: DetokenizeRequest) -> dict[str, Any]:
        """llama-server's POST /detokenize: the text of token ids (special tokens as their text)."""
        bad = [t for t in body.tokens if t >= self.engine.n_vocab]
        if bad:
            raise ApiError(
                400, f"tokens: {bad[0]} is not a token id (0..{self.engine.n_vocab - 1})", param="tokens"
            )
        raw = b"".join(self.engine.token_bytes(t, special=True) for t in body.tokens)
        return {"content": raw.decode("utf-8", errors="replace")}

    async def embeddings(self, body: EmbeddingRequest) -> dict[str, Any]:
        """POST /v1/embeddings on the embedding context (its own thread and admission limit)."""
        embedder = self.embedder
        if embedder is None:
            raise ApiError(
                400,
                "embeddings are off on this server (MODEL_SERVER_EMBEDDINGS=false)",
                code="embeddings_disabled",
            )
        try:
            embedder.admit()
        except EmbeddingsBusy as exc:
            raise self._reject(
                "embeddings_busy",
                ApiError(
                    429,
                    f"embeddings overloaded: {exc} (MODEL_SERVER_EMBEDDINGS_MAX_INFLIGHT); retry later",
                    type_="rate_limit_error",
                    code="overloaded",
                    headers={"Retry-After": str(self.settings.retry_after_s)},
                ),
            ) from exc
        inputs = body.inputs()
        try:

            def work() -> tuple[np.ndarray, int]:
                token_lists = []
                for i, item in enumerate(inputs):
                    if isinstance(item, str):
                        self._check_size([item])
                        token_lists.append(self.prompts.plain(item))
                    else:
                        if any(t >= self.engine.n_vocab for t in item):
                            raise ApiError(
                                400, f"input[{i}]: token ids are 0..{self.engine.n_vocab - 1}", param="input"
                            )
                        token_lists.append(item)
                return embedder.embed(token_lists), sum(len(t) for t in token_lists)

            try:
                vectors, n_tokens = await asyncio.get_running_loop().run_in_executor(embedder.executor, work)
            except InputTooLong as exc:
                raise ApiError(400, str(exc), param="input", code="context_length_exceeded") from exc
        finally:
            embedder.done()
        data = []
        for i, vec in enumerate(vectors):
            value: Any = (
                base64.b64encode(vec.astype("<f4").tobytes()).decode()
                if body.encoding_format == "base64"
                else vec.tolist()
            )
            data.append({"object": "embedding", "index": i, "embedding": value})
        return {
            "object": "list",
            "data": data,
            "model": self.model_id,
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
        }

    async def predict(self, body: PredictRequest, client: Client) -> dict[str, Any]:
        """The seed's /predict: the prompt and system message through the chat template."""
        messages: list[dict[str, Any]] = []
        if body.sys_msg:
            messages.append({"role": "system", "content": body.sys_msg})
        messages.append({"role": "user", "content": body.prompt})
        self._log_text("prompt", body.prompt)
        sampling = dataclasses.replace(DEFAULTS, repeat_penalty=self.settings.default_repeat_penalty)
        gen = await self._start(
            client,
            lambda: self._chat_tokens(messages, None),
            body.max_tokens,
            sampling,
            [],
            prefix="cmpl",
            prompt_chars=len(body.prompt) + len(body.sys_msg),
        )
        (choice,) = await self._collect(gen)
        self._log_text("completion", choice.text)
        return {
            "response": {
                "id": gen.req.completion_id,
                "object": "text_completion",
                "created": int(time.time()),
                "model": self.model_id,
                "choices": [
                    {
                        "text": choice.text,
                        "index": 0,
                        "logprobs": None,
                        "finish_reason": choice.final.finish_reason,
                    }
                ],
                "usage": usage([choice]),
            }
        }

    async def completions(self, body: CompletionRequest, client: Client) -> dict[str, Any] | ChunkStream:
        prompt = body.prompt_text()
        if body.echo and body.logprobs is not None:
            raise ApiError(
                400,
                "echo: not with logprobs (the prompt's log-probabilities are not computed)",
                param="echo",
                code="unsupported_parameter",
            )
        self._log_text("prompt", prompt)
        sampling = self._sampling(body, body.logprobs)
        gen = await self._start(
            client,
            lambda: self._plain_tokens(prompt),
            body.max_tokens,
            sampling,
            body.stops(),
            prefix="cmpl",
            prompt_chars=len(prompt),
            n=body.n,
        )
        cid, created = gen.req.completion_id, int(time.time())
        want_lp = body.logprobs is not None
        offsets = [len(prompt) if body.echo else 0] * body.n

        def chunk(
            index: int, text: str, finish: str | None, lps: list[TokenLogprob] | None
        ) -> dict[str, Any]:
            logprobs = None
            if want_lp:
                logprobs = self._completion_logprobs(lps or [], offsets[index])
                offsets[index] += len(text)
            return {
                "id": cid,
                "object": "text_completion",
                "created": created,
                "model": self.model_id,
                "choices": [{"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}],
            }

        if body.stream:

            async def stream() -> AsyncIterator[dict[str, Any]]:
                if body.echo:
                    for i in range(body.n):
                        yield chunk(i, prompt, None, None)
                async for ev in self._events(gen):
                    if ev.kind == "delta":
                        if ev.text or ev.logprobs:
                            yield chunk(ev.index, ev.text, None, ev.logprobs)
                    else:
                        yield chunk(ev.index, "", ev.finish_reason, None)

            return self._stream(body, gen, stream())
        choices = await self._collect(gen)
        out = {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": self.model_id,
            "choices": [
                {
                    "text": (prompt if body.echo else "") + c.text,
                    "index": c.index,
                    "logprobs": self._completion_logprobs(c.logprobs, 0) if want_lp else None,
                    "finish_reason": c.final.finish_reason,
                }
                for c in choices
            ],
            "usage": usage(choices),
        }
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
        if all(not m["content"] and not m.get("tool_calls") for m in messages):
            raise ApiError(400, "messages: every message is empty", param="messages")
        if body.top_logprobs is not None and not body.logprobs:
            raise ApiError(400, "top_logprobs: needs logprobs: true", param="top_logprobs")
        plan = self._tool_plan(body, messages)
        template_tools = None
        if plan is not None:
            messages, template_tools = plan.messages, plan.template_tools
        elif self.tool_format == "generic":
            messages = tools.generic_history(messages)
        n_logprobs = (body.top_logprobs or 0) if body.logprobs else None
        sampling = self._sampling(body, n_logprobs, tool_grammar=plan.grammar if plan else None)
        max_tokens = body.max_completion_tokens or body.max_tokens
        gen = await self._start(
            client,
            lambda: self._chat_tokens(messages, template_tools),
            max_tokens,
            sampling,
            body.stops(),
            prefix="chatcmpl",
            prompt_chars=sum(len(m["content"]) + 16 for m in messages)
            + len(json.dumps(template_tools) if template_tools else ""),
            n=body.n,
        )
        cid, created = gen.req.completion_id, int(time.time())
        names = {f.name for f in body.tool_functions()}

        def chunk(index: int, delta: dict[str, Any], finish: str | None, lps: Any = None) -> dict[str, Any]:
            return {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model_id,
                "choices": [{"index": index, "delta": delta, "logprobs": lps, "finish_reason": finish}],
            }

        if body.stream:
            return self._stream(body, gen, self._chat_chunks(gen, body.n, plan, names, chunk))
        choices = await self._collect(gen)
        out_choices = []
        for c in choices:
            message: dict[str, Any] = {"role": "assistant", "content": c.text}
            finish = c.final.finish_reason
            if plan is not None:
                content, calls = tools.parse(c.text, plan, names)
                message["content"] = content
                if calls:
                    message["tool_calls"] = calls
                    finish = "tool_calls"
            out_choices.append(
                {
                    "index": c.index,
                    "message": message,
                    "logprobs": self._chat_logprobs(c.logprobs) if n_logprobs is not None else None,
                    "finish_reason": finish,
                }
            )
        return {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": self.model_id,
            "choices": out_choices,
            "usage": usage(choices),
        }

    async def _chat_chunks(
        self,
        gen: Generation,
        n: int,
        plan: tools.ToolPlan | None,
        names: set[str],
        chunk: Callable[..., dict[str, Any]],
    ) -> AsyncIterator[dict[str, Any]]:
        """A chat stream's chunks. Text streams token by token; a tool-using answer is parsed when it is
        complete and then streamed as OpenAI streams calls (a delta with id and name, one with the
        arguments)."""
        for i in range(n):
            yield chunk(i, {"role": "assistant", "content": ""}, None)
        held: dict[int, list[str]] = {i: [] for i in range(n)}
        async for ev in self._events(gen):
            lps = self._chat_logprobs(ev.logprobs) if ev.logprobs else None
            if ev.kind == "delta":
                if plan is not None:
                    held[ev.index].append(ev.text)
                elif ev.text or lps:
                    yield chunk(ev.index, {"content": ev.text} if ev.text else {}, None, lps)
                continue
            finish = ev.finish_reason
            if plan is not None:
                content, calls = tools.parse("".join(held[ev.index]), plan, names)
                if content:
                    yield chunk(ev.index, {"content": content}, None)
                for k, call in enumerate(calls):
                    head = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
                    yield chunk(ev.index, {"tool_calls": [{"index": k, **head}]}, None)
                    args = {"index": k, "function": {"arguments": call["function"]["arguments"]}}
                    yield chunk(ev.index, {"tool_calls": [args]}, None)
                if calls:
                    finish = "tool_calls"
            yield chunk(ev.index, {}, finish)

    # ------------------------------------------------------------------ request options -> sampling
    def _tool_plan(self, body: ChatRequest, messages: list[dict[str, Any]]) -> tools.ToolPlan | None:
        functions = body.tool_functions()
        mode = body.tool_mode()
        if mode == "none":
            return None
        param = "tool_choice" if body.tool_choice is not None else "function_call"
        if not functions:
            raise ApiError(400, f"{param}: {mode!r} needs tools", param=param)
        if body.response_format is not None and body.response_format.type != "text":
            raise ApiError(
                400,
                "response_format: not together with tools (both would constrain the answer); "
                "use tool_choice none or drop response_format",
                param="response_format",
            )
        try:
            return tools.plan(messages, functions, mode, self.template.source)
        except SchemaError as exc:
            raise ApiError(400, f"tools: {exc}", param="tools", code="invalid_schema") from exc
        except ValueError as exc:
            raise ApiError(400, f"{param}: {exc}", param=param) from exc

    def _sampling(
        self, body: ChatRequest | CompletionRequest, n_logprobs: int | None, tool_grammar: str | None = None
    ) -> SamplingParams:
        """The request's sampling: its options, the grammar of its output, log-probabilities."""
        for token, _ in (body.logit_bias or {}).items():
            if not token.isdigit() or int(token) >= self.engine.n_vocab:
                raise ApiError(
                    400,
                    f"logit_bias: {token!r} is not a token id (0..{self.engine.n_vocab - 1})",
                    param="logit_bias",
                )
        if body.n > self.settings.max_concurrency:
            raise ApiError(
                400,
                f"n: {body.n} choices; at most {self.settings.max_concurrency} "
                "(MODEL_SERVER_MAX_CONCURRENCY: every choice takes a slot)",
                param="n",
            )
        grammar = tool_grammar
        param, source = self._output_grammar(body)
        if source is not None:
            grammar = source
        if grammar is not None and grammar not in self._grammars_ok:
            try:
                check_grammar(self.engine.vocab, grammar)
            except GrammarError as exc:
                raise ApiError(400, f"{param}: {exc}", param=param, code="invalid_grammar") from exc
            if len(self._grammars_ok) > 1024:
                self._grammars_ok.clear()
            self._grammars_ok.add(grammar)
        return dataclasses.replace(
            body.sampling(self.settings.default_repeat_penalty), grammar=grammar, n_logprobs=n_logprobs
        )

    def _output_grammar(self, body: ChatRequest | CompletionRequest) -> tuple[str, str | None]:
        """(parameter, grammar) from response_format, json_schema or grammar (at most one of them)."""
        given: list[tuple[str, Any]] = []
        rf = body.response_format
        if rf is not None and rf.type == "json_object":
            given.append(("response_format", rf.schema_ or JSON_OBJECT_SCHEMA))
        elif rf is not None and rf.type == "json_schema":
            given.append(("response_format.json_schema.schema", rf.json_schema.schema_ or JSON_OBJECT_SCHEMA))
        if body.json_schema is not None:
            given.append(("json_schema", body.json_schema))
        if body.grammar is not None:
            given.append(("grammar", body.grammar))
        if not given:
            return "", None
        if len(given) > 1:
            names = ", ".join(name.split(".")[0] for name, _ in given)
            raise ApiError(400, f"{names}: at most one of them constrains the output", param=given[1][0])
        param, value = given[0]
        if param == "grammar":
            return param, str(value)
        try:
            return param, schema_grammar(value)
        except SchemaError as exc:
            raise ApiError(400, f"{param}: {exc}", param=param.split(".")[0], code="invalid_schema") from exc

    # ------------------------------------------------------------------ log-probabilities in OpenAI's shapes
    def _token_str(self, token: int) -> tuple[str, list[int]]:
        raw = self.engine.token_bytes(token)
        return raw.decode("utf-8", errors="replace"), list(raw)

    def _chat_logprobs(self, lps: list[TokenLogprob]) -> dict[str, Any]:
        content = []
        for lp in lps:
            text, raw = self._token_str(lp.token)
            top = []
            for tok, value in lp.top:
                t, b = self._token_str(tok)
                top.append({"token": t, "logprob": value, "bytes": b})
            content.append({"token": text, "logprob": lp.logprob, "bytes": raw, "top_logprobs": top})
        return {"content": content}

    def _completion_logprobs(self, lps: list[TokenLogprob], offset: int) -> dict[str, Any]:
        tokens, values, tops, offsets = [], [], [], []
        for lp in lps:
            text, _ = self._token_str(lp.token)
            tokens.append(text)
            values.append(lp.logprob)
            tops.append({self._token_str(tok)[0]: value for tok, value in lp.top})
            offsets.append(offset)
            offset += len(text)
        return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}

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

    def _chat_tokens(
        self, messages: list[dict[str, Any]], template_tools: list[dict[str, Any]] | None
    ) -> list[int]:
        self._check_size([m["content"] for m in messages])
        try:
            return self.prompts.chat(self.template, messages, template_tools)
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
        n: int = 1,
    ) -> Generation:
        """Admit (n places, all or none), prepare the prompt once (off the event loop unless it is small),
        queue one engine request per choice (choice i seeded with seed + i; they share the prompt's KV
        through prefix reuse); the returned generation is running."""
        small = prompt_chars <= INLINE_PROMPT_CHARS
        reservations: list[Reservation] = []
        reqs: list[GenRequest] = []
        try:
            for _ in range(n):
                reservations.append(self._reserve())
            loop = asyncio.get_running_loop()
            if small:  # microseconds of work: cheaper than a thread hand-off on a loaded machine
                tokens = prepare()
            else:
                tokens = await loop.run_in_executor(self._cpu, prepare)
            stream = AsyncStream(loop)
            completion_id = f"{prefix}-{uuid.uuid4().hex}"
            request_id = request_id_var.get() or uuid.uuid4().hex
            for i, reservation in enumerate(reservations):
                choice_sampling = sampling
                if i and sampling.seed is not None:
                    choice_sampling = dataclasses.replace(sampling, seed=sampling.seed + i)
                req = GenRequest(
                    request_id=request_id,
                    completion_id=completion_id,
                    prompt_tokens=tokens,
                    max_tokens=self._cap_tokens(max_tokens, len(tokens)),
                    sampling=choice_sampling,
                    stop=stop,
                    emit=_emitter(stream, i),
                )
                try:
                    reservation.submit(req)
                except PromptTooLong as exc:
                    raise ApiError(400, str(exc), param="prompt", code="context_length_exceeded") from exc
                except EngineError as exc:
                    raise ApiError(500, str(exc), type_="server_error") from exc
                reqs.append(req)
        except BaseException:
            for req in reqs:  # choices queued before one failed
                self.engine.cancel(req)
            raise
        finally:
            for reservation in reservations:
                reservation.release()  # no-op once submitted
        log.info(
            "accepted",
            extra={
                "prompt_tokens": len(tokens),
                "max_tokens": reqs[0].max_tokens,
                "completion_id": completion_id,
                "n": n,
            },
        )
        return Generation(self.engine, reqs, stream, client)

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

    async def _collect(self, gen: Generation) -> list[Choice]:
        """Wait for every choice (the generation's watcher cancels them if the client leaves)."""
        n = len(gen.reqs)
        parts: list[list[str]] = [[] for _ in range(n)]
        lps: list[list[TokenLogprob]] = [[] for _ in range(n)]
        finals: list[Event | None] = [None] * n
        try:
            async for ev in gen.events():
                if ev.kind == "delta":
                    parts[ev.index].append(ev.text)
                    if ev.logprobs:
                        lps[ev.index].extend(ev.logprobs)
                elif ev.kind == "error":
                    raise self._engine_error(ev)
                elif ev.finish_reason == "cancelled":
                    # Nobody reads this answer; 499 (nginx's "client closed request") in the access log.
                    raise ApiError(499, "client closed the request", code=CLIENT_DISCONNECTED)
                else:
                    finals[ev.index] = ev
            choices = []
            for i, final in enumerate(finals):
                if final is None:
                    raise ApiError(500, "generation ended without a result", type_="server_error")
                choices.append(Choice(i, "".join(parts[i]), lps[i], final))
            return choices
        finally:
            gen.close()

    async def _events(self, gen: Generation) -> AsyncIterator[Event]:
        """A stream's events: deltas and each choice's `done`; an engine error is raised as ApiError,
        a cancelled choice ends silently."""
        async for ev in gen.events():
            if ev.kind == "error":
                raise self._engine_error(ev)
            if ev.kind == "delta" or ev.finish_reason != "cancelled":
                yield ev

    def _stream(
        self, body: CompletionRequest | ChatRequest, gen: Generation, chunks: AsyncIterator[dict[str, Any]]
    ) -> ChunkStream:
        """The chunks of a `stream: true` request (a usage chunk last if `stream_options` asks for it). An
        engine error or a drain cut-off ends the stream with an OpenAI error object."""
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        async def framed() -> AsyncIterator[dict[str, Any]]:
            last: dict[str, Any] | None = None
            try:
                async for chunk in chunks:
                    last = chunk
                    yield chunk
                if include_usage and last is not None and len(gen.finals) == len(gen.reqs):
                    choices = [Choice(i, "", [], ev) for i, ev in enumerate(gen.finals)]
                    yield {**last, "choices": [], "usage": usage(choices)}
            except ApiError as err:
                yield error_body(err.message, err.type, None, err.code)
            finally:
                gen.close()

        return ChunkStream(framed(), gen)

    def _log_text(self, kind: str, text: str) -> None:
        if self.settings.log_prompts:
            log.info(kind, extra={"text": text})


def _emitter(stream: AsyncStream, index: int) -> Callable[[Event], None]:
    """The engine's callback for choice `index`: tags each event with its choice."""

    def emit(ev: Event) -> None:
        ev.index = index
        stream.emit(ev)

    return emit
