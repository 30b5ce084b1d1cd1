"""The serving layer without HTTP: a real engine (tiny GGUF, real llama.cpp) driven by direct calls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from model_server.engine import Engine
from model_server.errors import ApiError
from model_server.protocol import ChatRequest, CompletionRequest, PredictRequest
from model_server.serving import ChunkStream, Serving
from model_server.settings import Settings


class Connected:
    """A client that stays connected until `leave()`."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()

    async def wait_disconnected(self) -> None:
        await self.gone.wait()

    def leave(self) -> None:
        self.gone.set()


@pytest.fixture(scope="module")
def serving(tiny_gguf: Path) -> Iterator[Serving]:
    settings = Settings(
        model_path=tiny_gguf, n_ctx=2048, max_concurrency=2, max_queue=1, default_max_tokens=7, n_threads=1
    )
    engine = Engine(
        tiny_gguf,
        n_ctx=settings.n_ctx,
        n_batch=settings.n_batch,
        n_threads=1,
        n_gpu_layers=0,
        max_concurrency=settings.max_concurrency,
        max_queue=settings.max_queue,
    )
    engine.start()
    yield Serving(settings, engine)
    engine.stop()
    engine.close()


def test_engine_health(serving):
    assert serving.engine.health().ok


def test_predict_and_completions_without_http(serving):
    out = asyncio.run(serving.predict(PredictRequest(prompt="hello"), Connected()))["response"]
    assert out["usage"]["completion_tokens"] == 7  # default_max_tokens
    assert out["choices"][0]["finish_reason"] == "length"
    body = CompletionRequest(prompt="the llama", max_tokens=5, temperature=0)
    a = asyncio.run(serving.completions(body, Connected()))
    b = asyncio.run(serving.completions(body, Connected()))
    assert isinstance(a, dict) and isinstance(b, dict)
    assert a["choices"][0]["text"] == b["choices"][0]["text"] and a["usage"]["completion_tokens"] == 5


def test_chat_stream_without_http(serving):
    body = ChatRequest.model_validate(
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0, "stream": True}
    )

    async def run() -> list[dict]:
        stream = await serving.chat(body, Connected())
        assert isinstance(stream, ChunkStream)
        return [chunk async for chunk in stream]

    chunks = asyncio.run(run())
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    whole = asyncio.run(serving.chat(body.model_copy(update={"stream": False}), Connected()))
    assert isinstance(whole, dict)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert whole["choices"][0]["message"]["content"] == text


def test_errors_are_api_errors(serving):
    with pytest.raises(ApiError) as exc:
        asyncio.run(serving.completions(CompletionRequest(prompt="x" * 5000), Connected()))
    assert exc.value.status == 400 and exc.value.code == "context_length_exceeded"


def _cancelled(reason: str) -> float:
    from model_server import metrics

    return (
        metrics.REGISTRY.get_sample_value("model_server_cancelled_requests_total", {"reason": reason}) or 0.0
    )


def test_drain_cut_off_is_an_error_and_counted(serving):
    """A request cut off by the drain timeout: 503 (non-streaming), an error chunk (streaming), counted."""
    before = _cancelled("drain_timeout")
    long = {"prompt": "drain", "max_tokens": 2000, "temperature": 0}

    async def run() -> tuple[ApiError, list[dict]]:
        plain = asyncio.create_task(serving.completions(CompletionRequest(**long), Connected()))
        stream = await serving.completions(CompletionRequest(**long, stream=True), Connected())
        assert isinstance(stream, ChunkStream)
        chunks = [await anext(aiter(stream))]  # generating
        serving.engine.cancel_all()  # what the drain timeout does
        chunks += [chunk async for chunk in stream]
        with pytest.raises(ApiError) as exc:
            await plain
        return exc.value, chunks

    err, chunks = asyncio.run(run())
    assert err.status == 503 and err.code == "drain_timeout" and "Retry-After" in err.headers
    assert chunks[-1]["error"]["code"] == "drain_timeout"
    assert not any(c.get("choices") and c["choices"][0]["finish_reason"] for c in chunks)
    assert _cancelled("drain_timeout") == before + 2


def test_a_queued_client_that_leaves_frees_its_place_at_once(serving):
    before = _cancelled("client_disconnected")
    body = {"prompt": "busy", "max_tokens": 2000, "temperature": 0}

    async def run() -> None:
        busy = [Connected(), Connected()]
        tasks = [asyncio.create_task(serving.completions(CompletionRequest(**body), c)) for c in busy]
        while serving.engine.stats()[0] < 2:
            await asyncio.sleep(0.01)
        waiting = Connected()
        queued = asyncio.create_task(serving.completions(CompletionRequest(**body), waiting))
        while serving.engine.stats()[1] < 1:
            await asyncio.sleep(0.01)
        with pytest.raises(ApiError) as full:  # 2 slots + a queue of 1: full
            await serving.completions(CompletionRequest(**body), Connected())
        assert full.value.status == 429
        waiting.leave()
        for _ in range(50):
            if serving.engine.stats()[1] == 0:
                break
            await asyncio.sleep(0.01)
        assert serving.engine.stats() == (2, 0)  # dropped from the queue while both slots still run
        with pytest.raises(ApiError) as gone:
            await queued
        assert gone.value.status == 499
        for c in busy:
            c.leave()
        for t in tasks:
            with pytest.raises(ApiError):
                await t

    asyncio.run(run())
    assert _cancelled("client_disconnected") == before + 3


def test_model_endpoints_answer_503_loading_until_ready(serving):
    """Before the warm-up finished, the model endpoints say `loading` (JSON, Retry-After); then they serve."""
    from fastapi.testclient import TestClient

    from model_server.api import create_app

    app = create_app(serving.settings, serving.engine)
    with TestClient(app) as client:
        for path, body in [
            ("/v1/completions", {"prompt": "x", "max_tokens": 1}),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 1}),
            ("/predict", {"prompt": "x"}),
        ]:
            r = client.post(path, json=body)
            assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
            assert r.json()["error"]["code"] == "loading"
        assert client.get("/readyz").json() == {"status": "loading"}
        assert client.post("/tokenize", json={"content": "x"}).status_code == 200  # no model work
        app.state.ms.ready = True
        assert client.post("/v1/completions", json={"prompt": "x", "max_tokens": 1}).status_code == 200
