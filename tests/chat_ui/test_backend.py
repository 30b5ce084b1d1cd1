"""The UI backend against a real model server (tiny GGUF, real llama.cpp) on 127.0.0.1: streaming, the
error each failure maps to, busy retries, cancellation freeing the slot, and what gets logged.

Protocol states a healthy server cannot be put in on demand (still loading, draining, an error chunk, a cut
stream) are served by httpx.MockTransport with the model server's exact response shapes."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from chat_ui.backend import ChatError, Delta, Finished, ModelClient, Retrying, Turn, answer
from chat_ui.settings import Settings

from .conftest import free_port


def settings(url: str, **kw: object) -> Settings:
    return Settings(model_url=url, **kw)


def collect(client_settings: Settings, messages: list[dict], **kw: object) -> list:
    async def run() -> list:
        client = ModelClient(client_settings, **kw)
        try:
            return [ev async for ev in client.stream_chat(messages)]
        finally:
            await client.aclose()

    return asyncio.run(run())


def turns(
    client_settings: Settings, message: str, history: list[dict] | None = None, **kw: object
) -> list[Turn]:
    """Snapshots of every Turn `answer()` yields."""

    async def run() -> list[Turn]:
        client = ModelClient(client_settings, **kw)
        seen = []
        try:
            async for turn in answer(client, message, history or []):
                seen.append(Turn(turn.text, turn.note, turn.note_detail, turn.note_kind, turn.error))
        finally:
            await client.aclose()
        return seen

    return asyncio.run(run())


def raises(client_settings: Settings, messages: list[dict], **kw: object) -> ChatError:
    with pytest.raises(ChatError) as info:
        collect(client_settings, messages, **kw)
    return info.value


HELLO = [{"role": "user", "content": "hello"}]


# ------------------------------------------------------------------------------------------ real server
def test_streams_deltas_then_finished(tiny_server) -> None:
    events = collect(settings(tiny_server.url, max_tokens=12, temperature=0), HELLO)
    deltas = [e for e in events if isinstance(e, Delta)]
    assert len(deltas) >= 2 and all(d.text for d in deltas)
    assert events[-1] == Finished("length", completion_tokens=12, prompt_tokens=events[-1].prompt_tokens)
    assert events[-1].prompt_tokens > 5
    assert not [e for e in events if isinstance(e, Retrying)]


def test_history_reaches_the_model(tiny_server) -> None:
    """A follow-up carries the earlier turns: the server counts their tokens in the prompt."""
    first = turns(settings(tiny_server.url, max_tokens=8, temperature=0, system_prompt=""), "hello")[-1]
    assert first.error is None and first.text
    history = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": first.text}]
    alone = collect(settings(tiny_server.url, max_tokens=1), [{"role": "user", "content": "and then?"}])
    follow = collect(
        settings(tiny_server.url, max_tokens=1),
        [*history, {"role": "user", "content": "and then?"}],
    )
    assert follow[-1].prompt_tokens > alone[-1].prompt_tokens + 5


def test_model_down_is_a_clear_error() -> None:
    error = raises(settings(f"http://127.0.0.1:{free_port()}"), HELLO)
    assert error.kind == "model_down"
    assert error.message == (
        "The model server is not reachable. It may be starting up or restarting. Try again in a minute."
    )


def test_prompt_too_long(tiny_server) -> None:
    long = " ".join(["word"] * 2000)  # the tiny server has 512 tokens of context per request
    error = raises(settings(tiny_server.url), [{"role": "user", "content": long}])
    assert error.kind == "prompt_too_long" and error.status == 400
    assert error.headline == "The prompt is too long for the model."
    assert "context" in error.hint


def test_message_over_the_ui_limit_is_refused_before_sending(tiny_server) -> None:
    seen = turns(settings(tiny_server.url, max_message_chars=10), "x" * 11)
    assert seen[-1].error is not None and seen[-1].error.kind == "message_too_long"
    assert seen[-1].note_detail == "Shorten it to at most 10 characters."


def test_api_key_sent_and_refusal_explained(start_server, tmp_path) -> None:
    server = start_server(api_key="s3cret")
    error = raises(settings(server.url), HELLO)
    assert error.kind == "auth" and error.status == 401
    assert "CHAT_UI_API_KEY" in error.message
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    events = collect(settings(server.url, api_key_file=key_file, max_tokens=3), HELLO)
    assert isinstance(events[-1], Finished)


def _hold_the_only_slot(url: str, first_token: threading.Event, release: threading.Event) -> threading.Thread:
    """A streaming request that occupies the server's only slot until `release` is set (then disconnects)."""

    def run() -> None:
        body = {"prompt": "hold", "max_tokens": 4000, "temperature": 0, "stream": True}
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as r:
            for _ in r.iter_lines():
                first_token.set()
                if release.is_set():
                    return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_busy_server_is_retried_with_backoff_until_a_slot_frees(start_server) -> None:
    server = start_server(max_concurrency=1, max_queue=0, n_ctx=4096, max_tokens_limit=4000)
    first_token, release = threading.Event(), threading.Event()
    holder = _hold_the_only_slot(server.url, first_token, release)
    assert first_token.wait(30)
    threading.Timer(1.0, release.set).start()  # the slot frees after about a second
    s = settings(server.url, max_tokens=4, retry_attempts=6, retry_backoff_s=0.4, retry_backoff_max_s=1.0)
    seen = turns(s, "hello")
    holder.join(30)
    notes = [t.note for t in seen if t.note_kind == "pending"]
    assert notes and notes[0].startswith("⏳ The model is busy, retrying in ")
    assert "(attempt 2 of 6)" in notes[0]
    # Answered in the end; the busy note gave way to the answer (and the 4-token limit's note).
    assert seen[-1].error is None and seen[-1].text
    assert seen[-1].note == "✂️ The answer reached the token limit."
    assert server.metric('model_server_rejected_requests_total{reason="overloaded"}') >= 1


def test_busy_server_gives_up_after_the_attempts(start_server) -> None:
    server = start_server(max_concurrency=1, max_queue=0, n_ctx=4096, max_tokens_limit=4000)
    first_token, release = threading.Event(), threading.Event()
    holder = _hold_the_only_slot(server.url, first_token, release)
    assert first_token.wait(30)
    try:
        s = settings(server.url, retry_attempts=3, retry_backoff_s=0.05, retry_backoff_max_s=0.1)
        events: list = []

        async def run() -> None:
            client = ModelClient(s)
            try:
                async for ev in client.stream_chat(HELLO):
                    events.append(ev)
            finally:
                await client.aclose()

        with pytest.raises(ChatError) as info:
            asyncio.run(run())
    finally:
        release.set()
        holder.join(30)
    assert info.value.kind == "busy" and info.value.status == 429
    assert [(e.attempt, e.attempts) for e in events] == [(2, 3), (3, 3)]
    assert server.metric('model_server_rejected_requests_total{reason="overloaded"}') == 3


def test_leaving_the_stream_cancels_the_generation_on_the_server(start_server) -> None:
    """What the stop button does: the task is cancelled mid-stream, the response closed, the slot freed."""
    server = start_server(max_concurrency=1, max_queue=0, n_ctx=4096, max_tokens_limit=4000)
    s = settings(server.url, max_tokens=4000)

    async def run() -> int:
        client = ModelClient(s)
        seen = 0

        async def consume() -> None:
            nonlocal seen
            async for ev in client.stream_chat(HELLO):
                seen += isinstance(ev, Delta)
                if seen == 5:
                    await asyncio.sleep(3600)  # cancelled here, as Gradio cancels a stopped event

        task = asyncio.create_task(consume())
        while seen < 5:
            await asyncio.sleep(0.01)
        assert server.metric("llamacpp:requests_processing") == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await client.aclose()
        return seen

    assert asyncio.run(run()) == 5
    deadline = time.monotonic() + 10
    while server.metric("llamacpp:requests_processing") != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.metric("llamacpp:requests_processing") == 0
    assert server.metric("llamacpp:tokens_predicted_total") < 3900


def test_turn_logs_sizes_not_text_unless_asked(tiny_server, caplog) -> None:
    caplog.set_level(logging.INFO, logger="chat_ui.backend")
    turns(settings(tiny_server.url, max_tokens=4), "my secret question")
    records = [r for r in caplog.records if r.getMessage() == "chat turn"]
    assert len(records) == 1
    record = records[0]
    assert record.outcome == "ok" and record.question_chars == len("my secret question")
    assert record.completion_tokens == 4 and record.ttft_ms > 0 and record.request_id
    assert "my secret question" not in json.dumps(vars(record), default=str)

    caplog.clear()
    turns(settings(tiny_server.url, max_tokens=4, log_prompts=True), "my secret question")
    logged = json.dumps([vars(r) for r in caplog.records], default=str)
    assert "my secret question" in logged


def test_request_id_is_forwarded_to_the_model_server(tiny_server) -> None:
    async def run() -> None:
        client = ModelClient(settings(tiny_server.url, max_tokens=2))
        try:
            async for _ in client.stream_chat(HELLO, request_id="ui-req-42"):
                pass
        finally:
            await client.aclose()

    asyncio.run(run())
    assert any(r.get("request_id") == "ui-req-42" for r in tiny_server.log_records())


def test_model_status_from_readyz(tiny_server) -> None:
    async def run(url: str) -> str:
        client = ModelClient(settings(url))
        try:
            return await client.model_status()
        finally:
            await client.aclose()

    assert asyncio.run(run(tiny_server.url)) == "ready"
    assert asyncio.run(run(f"http://127.0.0.1:{free_port()}")) == "down"


# ------------------------------------------------------------------------------------------ protocol edges
def mock(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


def error_body(message: str, code: str | None, type_: str = "server_error") -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def sse(*chunks: dict | str) -> bytes:
    return b"".join(
        b"data: " + (c if isinstance(c, str) else json.dumps(c)).encode() + b"\n\n" for c in chunks
    )


def chunk(text: str | None, finish: str | None = None) -> dict:
    delta = {"content": text} if text else {}
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def test_still_loading_is_told_apart_from_a_failure() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/readyz":
            return httpx.Response(503, json={"status": "loading"})
        return httpx.Response(503, json=error_body("not ready", None))

    error = raises(settings("http://model:5000"), HELLO, transport=mock(handler))
    assert error.kind == "model_loading"
    assert error.message.startswith("The model is still loading.")


def test_draining_replica_is_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) == 1:
            return httpx.Response(
                503,
                json=error_body("the server is shutting down; retry on another replica", "draining"),
                headers={"Retry-After": "1"},
            )
        return httpx.Response(200, content=sse(chunk("Hi"), chunk("", "stop"), "[DONE]"))

    s = settings("http://model:5000", retry_backoff_s=0.01, retry_backoff_max_s=0.02)
    events = collect(s, HELLO, transport=mock(handler))
    assert isinstance(events[0], Retrying) and events[0].delay_s <= 0.02  # Retry-After capped by the max
    assert events[1:] == [Delta("Hi"), Finished("stop")]


@pytest.mark.parametrize(
    ("status", "body", "kind", "shown"),
    [
        (500, error_body("internal error", None), "server_error", "The model server failed to answer."),
        (502, "<html>Bad Gateway</html>", "server_error", "The model server failed to answer."),
        (413, error_body("request body exceeds 1048576 bytes", "too_large"), "prompt_too_long", "too long"),
        (400, error_body("messages: every message is empty", None, "invalid_request_error"), "rejected",
         "The model server refused the request. messages: every message is empty"),
    ],
)  # fmt: skip
def test_http_errors_map_to_messages(status: int, body: dict | str, kind: str, shown: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    error = raises(settings("http://model:5000"), HELLO, transport=mock(handler))
    assert error.kind == kind and error.status == status
    assert shown in error.message
    assert "Traceback" not in error.message


@pytest.mark.parametrize(
    ("stream", "kind"),
    [
        (sse(chunk("Hel"), error_body("decode failed", None)), "server_error"),
        (sse(chunk("Hel"), "[DONE]"), "interrupted"),  # [DONE] without a finish_reason: cancelled
        (sse(chunk("Hel")), "interrupted"),  # closed before [DONE]
        (sse(chunk("Hel"), "{not json"), "server_error"),
    ],
)
def test_broken_streams_keep_the_partial_answer_and_say_why(stream: bytes, kind: str) -> None:
    seen = turns(
        settings("http://model:5000"), "hi", transport=mock(lambda _: httpx.Response(200, content=stream))
    )
    last = seen[-1]
    assert last.text == "Hel"
    assert last.error is not None and last.error.kind == kind
    assert last.note_kind == "error" and last.note.startswith("⚠️ ")


def test_answer_cut_at_the_token_limit_is_noted() -> None:
    stream = sse(chunk("a"), chunk("", "length"), "[DONE]")
    seen = turns(
        settings("http://model:5000"), "hi", transport=mock(lambda _: httpx.Response(200, content=stream))
    )
    assert seen[-1].text == "a" and seen[-1].note == "✂️ The answer reached the token limit."
    assert seen[-1].error is None


def test_request_body_carries_the_settings() -> None:
    bodies = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append((json.loads(request.content), dict(request.headers)))
        return httpx.Response(200, content=sse(chunk("ok", "stop"), "[DONE]"))

    s = settings(
        "http://model:5000/", max_tokens=77, temperature=0.2, model="llama", api_key="k", system_prompt="S"
    )
    turns(
        s,
        "Q",
        [{"role": "user", "content": "Q0"}, {"role": "assistant", "content": "A0"}],
        transport=mock(handler),
    )
    body, headers = bodies[0]
    assert body == {
        "messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "Q0"},
            {"role": "assistant", "content": "A0"},
            {"role": "user", "content": "Q"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 77,
        "temperature": 0.2,
        "model": "llama",
    }
    assert headers["authorization"] == "Bearer k" and headers["x-request-id"]


def test_a_bug_is_a_note_for_the_user_and_a_stack_in_the_log(caplog) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("boom")

    caplog.set_level(logging.INFO, logger="chat_ui.backend")
    seen = turns(settings("http://model:5000"), "hi", transport=mock(handler))
    assert seen[-1].note == "⚠️ Something went wrong in the chat service."
    assert seen[-1].error is not None and seen[-1].error.kind == "internal"
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)
