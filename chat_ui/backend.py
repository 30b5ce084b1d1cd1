"""The UI's backend: conversation -> OpenAI messages, streaming client, error mapping, busy retries.

No UI library here: the page (`chat_ui.web`) and the benchmark (`bench/chat_ui.py`) drive the same code.

- `build_messages()` turns the page's history (Gradio's message dicts) into the request's `messages`.
- `ModelClient.stream_chat()` streams `/v1/chat/completions` and yields `Delta`s; a 429 (or a 503 while a
  replica drains) is retried with exponential backoff, announced by a `Retrying` event; anything else that
  stops an answer raises `ChatError`, whose `message` is what the user reads (never a stack trace).
- `answer()` is one turn as the page shows it: the text so far plus a status note.

Leaving a `stream_chat()` iteration early (the stop button: the UI library cancels the task) closes the HTTP
response, and the model server cancels the generation and frees the slot when its client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from chat_ui.settings import Settings

log = logging.getLogger("chat_ui.backend")

ErrorKind = Literal[
    "model_down",
    "model_loading",
    "busy",
    "prompt_too_long",
    "message_too_long",
    "auth",
    "rejected",
    "server_error",
    "timeout",
    "interrupted",
    "internal",
]
ModelStatus = Literal["ready", "loading", "draining", "error", "down"]

#: What the user reads for each kind of failure: a headline and what to do. Details go to the log.
MESSAGES: dict[ErrorKind, tuple[str, str]] = {
    "model_down": (
        "The model server is not reachable.",
        "It may be starting up or restarting. Try again in a minute.",
    ),
    "model_loading": (
        "The model is still loading.",
        "The server is up but not ready to answer yet. Try again in a minute.",
    ),
    "busy": (
        "The model is busy.",
        "Every slot stayed taken while retrying. Try again in a moment.",
    ),
    "prompt_too_long": (
        "The prompt is too long for the model.",
        "This conversation no longer fits the model's context window. Clear the chat (the bin icon) "
        "or send a shorter message.",
    ),
    "message_too_long": (
        "The message is too long.",
        "Shorten it to at most {limit} characters.",
    ),
    "auth": (
        "The chat service could not sign in to the model server.",
        "Its API key was refused. Ask the operator to check CHAT_UI_API_KEY.",
    ),
    "rejected": ("The model server refused the request.", "{detail}"),
    "server_error": (
        "The model server failed to answer.",
        "Try again; if it keeps failing, tell the operator.",
    ),
    "timeout": (
        "The model server stopped responding.",
        "No token arrived for {limit:g} s. Try again.",
    ),
    "interrupted": (
        "The answer was cut off.",
        "The connection to the model server was lost before the answer was complete. Try again.",
    ),
    "internal": (
        "Something went wrong in the chat service.",
        "Try again; the operator finds the details in its logs.",
    ),
}


class ChatError(Exception):
    """An answer could not be (completely) produced: `headline` + `hint` for the user, `detail` for logs."""

    def __init__(
        self, kind: ErrorKind, *, detail: str = "", status: int | None = None, **fmt: object
    ) -> None:
        headline, hint = MESSAGES[kind]
        self.kind = kind
        self.status = status
        self.detail = detail
        self.headline = headline
        self.hint = hint.format(detail=detail, **fmt)
        super().__init__(f"{kind}: {detail}" if detail else kind)

    @property
    def message(self) -> str:
        return f"{self.headline} {self.hint}".strip()


@dataclass(frozen=True)
class Delta:
    """Generated text, as streamed."""

    text: str


@dataclass(frozen=True)
class Retrying:
    """The server was busy; the request is sent again after `delay_s` (attempt `attempt` of `attempts`)."""

    attempt: int
    attempts: int
    delay_s: float
    reason: str


@dataclass(frozen=True)
class Finished:
    """The last event of a complete answer."""

    finish_reason: str | None
    completion_tokens: int | None = None
    prompt_tokens: int | None = None


Event = Delta | Retrying | Finished


# ---------------------------------------------------------------------------------------------- history
def message_text(content: Any) -> str:
    """The text of a Gradio / OpenAI message content: a string, a text part, or a list of them."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        return content.get("text", "") if content.get("type", "text") == "text" else ""
    if isinstance(content, Sequence):
        return "".join(message_text(part) for part in content)
    return ""  # files and components: not text the model can read


def is_note(message: Mapping[str, Any]) -> bool:
    """A status or error note of the UI (a titled message), never part of the conversation."""
    metadata = message.get("metadata") or {}
    return bool(metadata.get("title"))


def build_messages(
    system_prompt: str, history: Sequence[Mapping[str, Any]], message: str, max_history: int
) -> list[dict[str, str]]:
    """OpenAI `messages` for a new user `message` after `history` (the page's, oldest first).

    UI notes are skipped; a question left without an answer (an error, a stop before the first token) is
    dropped, so resending it does not ask twice; consecutive answer parts are joined; only the last
    `max_history` messages are kept, starting with a question.
    """
    turns: list[dict[str, str]] = []
    for item in history:
        role = item.get("role")
        if role not in ("user", "assistant") or is_note(item):
            continue
        text = message_text(item.get("content"))
        if not text.strip():
            continue
        if turns and turns[-1]["role"] == role:
            if role == "user":
                turns[-1] = {"role": "user", "content": text}  # the earlier one was never answered
            else:
                turns[-1]["content"] += text
            continue
        turns.append({"role": role, "content": text})
    if turns and turns[-1]["role"] == "user":
        turns.pop()
    turns = turns[len(turns) - max_history :] if max_history else []
    while turns and turns[0]["role"] != "user":
        turns.pop(0)
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*system, *turns, {"role": "user", "content": message}]


# ---------------------------------------------------------------------------------------------- client
def backoff_delay(attempt: int, base_s: float, max_s: float, retry_after: str | None) -> float:
    """Delay before attempt `attempt + 1`: base * 2^(attempt-1), at least Retry-After, capped at max_s,
    with 20 % jitter downwards so that clients refused together do not come back together."""
    delay = base_s * 2 ** (attempt - 1)
    if retry_after:
        with contextlib.suppress(ValueError):  # an HTTP date: keep our own backoff
            delay = max(delay, float(retry_after))
    delay = min(delay, max_s)
    return float(delay * random.uniform(0.8, 1.0))


def _server_error(body: bytes) -> tuple[str, str | None]:
    """(message, code) of an OpenAI-shaped error body; the raw text when it is not one."""
    try:
        error = json.loads(body)["error"]
        return str(error.get("message") or ""), error.get("code")
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", errors="replace")[:300], None


class ModelClient:
    """Talks to one model server (`settings.model_url`). Create and use it inside one event loop."""

    def __init__(self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        headers = {"Accept": "text/event-stream"}
        key = settings.resolved_api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.AsyncClient(
            base_url=settings.base_url(),
            headers=headers,
            timeout=httpx.Timeout(
                connect=settings.connect_timeout_s, read=settings.read_timeout_s, write=30.0, pool=30.0
            ),
            limits=httpx.Limits(max_connections=settings.concurrency_limit + 8, max_keepalive_connections=32),
            transport=transport,
        )
        self._status: tuple[float, ModelStatus] | None = None

    async def aclose(self) -> None:
        await self._client.aclose()

    async def model_status(self, *, fresh: bool = False) -> ModelStatus:
        """The model server's readiness from its /readyz, reused for `model_status_ttl_s`."""
        now = time.monotonic()
        if not fresh and self._status and now - self._status[0] < self.settings.model_status_ttl_s:
            return self._status[1]
        try:
            resp = await self._client.get("/readyz", timeout=min(self.settings.connect_timeout_s, 3.0))
            if resp.status_code == 200:
                status: ModelStatus = "ready"
            else:
                try:
                    reported = resp.json().get("status")
                except ValueError:
                    reported = None
                status = reported if reported in ("loading", "draining") else "error"
        except httpx.TransportError:
            status = "down"
        self._status = (time.monotonic(), status)
        return status

    def request_body(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": self.settings.max_tokens,
            "temperature": self.settings.temperature,
        }
        if self.settings.model:
            body["model"] = self.settings.model
        return body

    async def stream_chat(
        self, messages: list[dict[str, str]], *, request_id: str | None = None
    ) -> AsyncIterator[Event]:
        """Stream one answer: `Delta`s, then one `Finished`; `Retrying` before each retry of a busy server.

        Raises `ChatError`. Retries happen only before the first token: a started answer is never resent.
        """
        request_id = request_id or uuid.uuid4().hex
        body = self.request_body(messages)
        attempts = self.settings.retry_attempts
        for attempt in range(1, attempts + 1):
            retry_after: str | None = None
            try:
                async with self._client.stream(
                    "POST", "/v1/chat/completions", json=body, headers={"X-Request-Id": request_id}
                ) as resp:
                    if resp.status_code == 200:
                        async for event in self._events(resp):
                            yield event
                        return
                    await resp.aread()
                    error, retryable = await self._classify(resp)
                    retry_after = resp.headers.get("retry-after")
            except httpx.ConnectError as exc:
                raise ChatError("model_down", detail=f"connect to {self.settings.base_url()}: {exc}") from exc
            except httpx.ConnectTimeout as exc:
                raise ChatError(
                    "model_down", detail=f"connect timeout to {self.settings.base_url()}"
                ) from exc
            except httpx.ReadTimeout as exc:
                raise ChatError("timeout", detail="read timeout", limit=self.settings.read_timeout_s) from exc
            except httpx.TransportError as exc:  # reset, closed mid-stream, write or pool failure
                raise ChatError("interrupted", detail=repr(exc)) from exc
            if not retryable or attempt == attempts:
                raise error
            delay = backoff_delay(
                attempt, self.settings.retry_backoff_s, self.settings.retry_backoff_max_s, retry_after
            )
            yield Retrying(attempt + 1, attempts, delay, error.detail)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _classify(self, resp: httpx.Response) -> tuple[ChatError, bool]:
        """(the error for a non-200 answer, whether to retry it)."""
        message, code = _server_error(resp.content)
        status = resp.status_code
        detail = f"HTTP {status}: {message}" if message else f"HTTP {status}"
        if status == 429:
            return ChatError("busy", detail=detail, status=status), True
        if status == 503:
            if code == "draining" or "shutting down" in message:
                return ChatError("busy", detail=detail, status=status), True  # another replica takes it
            if await self.model_status(fresh=True) == "loading":
                return ChatError("model_loading", detail=detail, status=status), False
            return ChatError("server_error", detail=detail, status=status), False
        if status in (401, 403):
            return ChatError("auth", detail=detail, status=status), False
        if code == "context_length_exceeded" or (status == 400 and "context" in message.lower()):
            return ChatError("prompt_too_long", detail=detail, status=status), False
        if status == 413:
            return ChatError("prompt_too_long", detail=detail, status=status), False
        if 400 <= status < 500:
            return ChatError("rejected", detail=message or detail, status=status), False
        return ChatError("server_error", detail=detail, status=status), False

    async def _events(self, resp: httpx.Response) -> AsyncIterator[Event]:
        finish: str | None = None
        usage: Mapping[str, Any] = {}
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                if finish is None:  # the server ended the stream without finishing the answer
                    raise ChatError("interrupted", detail="stream ended without a finish_reason")
                yield Finished(finish, usage.get("completion_tokens"), usage.get("prompt_tokens"))
                return
            try:
                chunk = json.loads(data)
            except ValueError as exc:
                raise ChatError("server_error", detail=f"not JSON in the stream: {data[:200]!r}") from exc
            if "error" in chunk:
                message, _ = _server_error(data.encode())
                raise ChatError("server_error", detail=f"error in the stream: {message}")
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                text = (choice.get("delta") or {}).get("content")
                if text:
                    yield Delta(text)
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
        raise ChatError("interrupted", detail="stream closed before [DONE]")


# ---------------------------------------------------------------------------------------------- one turn
@dataclass
class Turn:
    """One answer as the page shows it: `text` so far and an optional note (status or error)."""

    text: str = ""
    note: str | None = None
    note_detail: str = ""
    note_kind: Literal["pending", "error", "info"] | None = None
    error: ChatError | None = None
    retries: int = 0
    stats: dict[str, Any] = field(default_factory=dict)


async def answer(
    client: ModelClient,
    message: str,
    history: Sequence[Mapping[str, Any]],
    *,
    request_id: str | None = None,
) -> AsyncGenerator[Turn, None]:
    """One conversation turn: yields the growing `Turn` (the same object, updated) until the answer is
    complete or failed. Failures end in a `Turn` with an error note, never an exception; a cancellation
    (stop button) propagates after being logged."""
    settings = client.settings
    request_id = request_id or uuid.uuid4().hex
    turn = Turn()
    t0 = time.perf_counter()
    outcome = "cancelled"
    chunks = 0
    try:
        if len(message) > settings.max_message_chars:
            raise ChatError(
                "message_too_long", detail=f"{len(message)} chars", limit=settings.max_message_chars
            )
        messages = build_messages(
            settings.resolved_system_prompt(), history, message, settings.max_history_messages
        )
        if settings.log_prompts:
            log.info("question", extra={"request_id": request_id, "text": message})
        async for event in client.stream_chat(messages, request_id=request_id):
            if isinstance(event, Delta):
                if chunks == 0:
                    turn.stats["ttft_ms"] = round((time.perf_counter() - t0) * 1000, 1)
                    turn.note = turn.note_kind = None
                chunks += 1
                turn.text += event.text
            elif isinstance(event, Retrying):
                turn.retries += 1
                turn.note_kind = "pending"
                turn.note = (
                    f"⏳ The model is busy, retrying in {event.delay_s:.1f} s "
                    f"(attempt {event.attempt} of {event.attempts})…"
                )
            else:
                turn.stats["finish_reason"] = event.finish_reason
                turn.stats["completion_tokens"] = event.completion_tokens
                turn.stats["prompt_tokens"] = event.prompt_tokens
                if event.finish_reason == "length":
                    turn.note_kind = "info"
                    turn.note = "✂️ The answer reached the token limit."
            yield turn
        outcome = "ok"
    except Exception as exc:  # every failure ends as a note; a bug is logged with its stack, not shown
        if not isinstance(exc, ChatError):
            log.exception("unexpected error in a chat turn", extra={"request_id": request_id})
            exc = ChatError("internal", detail=repr(exc))
        outcome = exc.kind
        turn.error = exc
        turn.note_kind = "error"
        turn.note = f"⚠️ {exc.headline}"
        turn.note_detail = exc.hint
        yield turn
    finally:
        extra = {
            "request_id": request_id,
            "outcome": outcome,
            "history_messages": len(history),
            "question_chars": len(message),
            "answer_chars": len(turn.text),
            "chunks": chunks,
            "retries": turn.retries,
            "duration_ms": round((time.perf_counter() - t0) * 1000, 1),
            **turn.stats,
        }
        if turn.error is not None:
            extra["error"] = turn.error.detail
        if settings.log_prompts:
            extra["answer"] = turn.text
        log.log(logging.WARNING if turn.error else logging.INFO, "chat turn", extra=extra)
