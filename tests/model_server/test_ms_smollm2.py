"""Realistic checks with the embedded SmolLM2-135M-Instruct: the seed's curl body and the openai SDK."""

from __future__ import annotations

import httpx
import openai
import pytest

# The exact body of the book's curl (chapter 2).
SEED_BODY = (
    '{"prompt":"Create a poem about humanity?","sys_msg":"You are a helpful, respectful, and honest '
    "assistant. Always provide safe, unbiased, and positive responses. "
    "Avoid harmful, unethical, or illegal content. "
    'If a question is unclear or incorrect, explain why. If unsure, do not provide false information."}'
)


@pytest.fixture(scope="module")
def sdk(smol_server):
    client = openai.OpenAI(base_url=f"{smol_server.url}/v1", api_key="unused", timeout=60, max_retries=0)
    yield client
    client.close()


def test_seed_curl_body_on_predict(smol_server):
    r = httpx.post(
        f"{smol_server.url}/predict",
        content=SEED_BODY.encode(),
        headers={"Content-Type": "application/json"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    resp = r.json()["response"]
    text = resp["choices"][0]["text"]
    assert len(text.split()) >= 5, text
    assert resp["choices"][0]["finish_reason"] in ("stop", "length")
    assert 0 < resp["usage"]["completion_tokens"] <= 48  # MODEL_SERVER_DEFAULT_MAX_TOKENS of this server
    # The template's special tokens never leak into the answer.
    assert "<|im_start|>" not in text and "<|im_end|>" not in text


def test_chat_template_single_bos(smol_server):
    """SmolLM2's template has no BOS of its own; usage shows exactly the template's tokens."""
    r = httpx.post(
        f"{smol_server.url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "temperature": 0},
        timeout=60,
    )
    # <|im_start|>system ... <|im_end|> (template default system) + user turn + assistant prompt.
    assert r.json()["usage"]["prompt_tokens"] < 40


def test_openai_sdk_chat_non_streaming(sdk, smol_server):
    out = sdk.chat.completions.create(
        model="SmolLM2-135M-Instruct.Q4_1",
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        max_tokens=24,
        temperature=0,
    )
    assert out.object == "chat.completion"
    msg = out.choices[0].message
    assert msg.role == "assistant"
    assert "Paris" in msg.content
    assert out.choices[0].finish_reason in ("stop", "length")
    assert out.usage.completion_tokens > 0
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_openai_sdk_chat_streaming_matches_non_streaming(sdk):
    kwargs = {
        "model": "any",
        "messages": [{"role": "user", "content": "Name three colours."}],
        "max_tokens": 24,
        "temperature": 0,
    }
    whole = sdk.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(sdk.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_openai_sdk_completions(sdk):
    out = sdk.completions.create(model="any", prompt="The capital of France is", max_tokens=8, temperature=0)
    assert out.object == "text_completion"
    assert "Paris" in out.choices[0].text
    assert out.usage.completion_tokens <= 8
    stream = sdk.completions.create(
        model="any", prompt="The capital of France is", max_tokens=8, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in stream) == out.choices[0].text
    stopped = sdk.completions.create(
        model="any", prompt="The capital of France is", max_tokens=8, temperature=0, stop=["Paris"]
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert "Paris" not in stopped.choices[0].text


def test_openai_sdk_errors_are_typed(sdk):
    with pytest.raises(openai.BadRequestError) as exc:
        sdk.chat.completions.create(model="any", messages=[], max_tokens=1)
    assert "messages" in str(exc.value)
    assert sdk.models.list().data[0].id == "SmolLM2-135M-Instruct.Q4_1"
