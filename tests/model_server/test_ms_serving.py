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
        self.gone = False

    async def is_disconnected(self) -> bool:
        return self.gone

    def leave(self) -> None:
        self.gone = True


@pytest.fixture(scope="module")
def serving(tiny_gguf: Path) -> Iterator[Serving]:
    settings = Settings(
        model_path=tiny_gguf, n_ctx=256, max_concurrency=2, max_queue=1, default_max_tokens=7, n_threads=1
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
        asyncio.run(serving.completions(CompletionRequest(prompt="x" * 2000), Connected()))
    assert exc.value.status == 400 and exc.value.code == "context_length_exceeded"
