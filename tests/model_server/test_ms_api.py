"""HTTP API against a real server (tiny random llama GGUF, real llama.cpp) on 127.0.0.1."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest


def greedy(server, prompt: str, max_tokens: int, **extra) -> dict:
    r = server.client.post(
        "/v1/completions",
        json={"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, **extra},
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_probes_models_openapi(tiny_server):
    c = tiny_server.client
    assert c.get("/healthz").json() == {"status": "ok"}
    ready = c.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    models = c.get("/v1/models").json()
    assert models["object"] == "list"
    assert models["data"][0]["id"] == "tiny-llama"
    assert models["data"][0]["meta"]["n_ctx_per_request"] == 512
    paths = c.get("/openapi.json").json()["paths"]
    for path in ("/predict", "/v1/chat/completions", "/v1/completions", "/v1/models", "/healthz", "/readyz"):
        assert path in paths


def test_predict_seed_contract_shape(tiny_server):
    r = tiny_server.client.post("/predict", json={"prompt": "hello", "sys_msg": "be brief", "max_tokens": 5})
    assert r.status_code == 200, r.text
    resp = r.json()["response"]
    assert resp["object"] == "text_completion"
    choice = resp["choices"][0]
    assert isinstance(choice["text"], str) and choice["text"]
    assert choice["finish_reason"] == "length"
    assert resp["usage"]["completion_tokens"] == 5
    # Rendered through the model's (ChatML) template: system + user + generation prompt, one BOS.
    assert resp["usage"]["prompt_tokens"] > 10
    assert r.headers["x-request-id"]


def test_predict_default_max_tokens_from_config(tiny_server):
    r = tiny_server.client.post("/predict", json={"prompt": "hello", "sys_msg": ""})
    assert r.status_code == 200
    assert r.json()["response"]["usage"]["completion_tokens"] == 16  # MODEL_SERVER_DEFAULT_MAX_TOKENS


def test_greedy_is_deterministic_and_max_tokens_capped(tiny_server):
    a = greedy(tiny_server, "the llama server", 12)
    b = greedy(tiny_server, "the llama server", 12)
    assert a["choices"][0]["text"] == b["choices"][0]["text"]
    assert a["usage"]["completion_tokens"] == 12
    capped = greedy(tiny_server, "the llama server", 100_000)  # capped by MODEL_SERVER_MAX_TOKENS_LIMIT=256
    assert capped["usage"]["completion_tokens"] == 256
    assert capped["choices"][0]["finish_reason"] == "length"
    # The greedy continuation is a prefix-stable sequence: 12 tokens of it equal the first 12 of 256.
    assert capped["choices"][0]["text"].startswith(a["choices"][0]["text"][:5])


def test_batched_equals_alone(tiny_server):
    """Greedy output of each request is identical whether it runs alone or batched with others."""
    prompts = ["hello world", "the poem and the model", "é ü 你好 token", "a" * 150, "Z"]
    alone = [greedy(tiny_server, p, 24)["choices"][0]["text"] for p in prompts]
    steps_before = tiny_server.metric("llamacpp:n_decode_total")
    with ThreadPoolExecutor(len(prompts)) as pool:
        batched = list(pool.map(lambda p: greedy(tiny_server, p, 24)["choices"][0]["text"], prompts))
    steps = tiny_server.metric("llamacpp:n_decode_total") - steps_before
    assert batched == alone
    # Proof of batching: 5 requests x (24 tokens + prefill) took far fewer than 5 x 25 decode steps.
    assert steps < 0.6 * len(prompts) * 25, steps


def test_stop_strings(tiny_server):
    full = greedy(tiny_server, "hello", 40)["choices"][0]["text"]
    stop = full[10:13]
    assert stop and stop not in full[:10]
    cut = greedy(tiny_server, "hello", 40, stop=[stop, "\x00never"])
    assert cut["choices"][0]["text"] == full[: full.index(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"
    # Streaming honours the same stop, including one split across tokens (held back, never leaked).
    with tiny_server.client.stream(
        "POST",
        "/v1/completions",
        json={"prompt": "hello", "max_tokens": 40, "temperature": 0, "stop": stop, "stream": True},
    ) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert "".join(c["choices"][0]["text"] for c in chunks) == full[: full.index(stop)]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_sampling_seed_reproducible(tiny_server):
    body = {"prompt": "hello", "max_tokens": 16, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0}
    a = tiny_server.client.post("/v1/completions", json={**body, "seed": 7}).json()["choices"][0]["text"]
    b = tiny_server.client.post("/v1/completions", json={**body, "seed": 7}).json()["choices"][0]["text"]
    c = tiny_server.client.post("/v1/completions", json={**body, "seed": 8}).json()["choices"][0]["text"]
    g = greedy(tiny_server, "hello", 16)["choices"][0]["text"]
    assert a == b
    assert a != c or a != g  # different seeds / greedy do not all collapse to one output


def test_chat_stream_usage_and_roles(tiny_server):
    body = {
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ],
        "max_tokens": 6,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with tiny_server.client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 6
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    non_stream = tiny_server.client.post("/v1/chat/completions", json={**body, "stream": False}).json()
    assert non_stream["choices"][0]["message"]["content"] == text
    assert non_stream["usage"] == events[-1]["usage"]


BAD_REQUESTS = [
    ("/predict", b"{not json", "malformed json"),
    ("/predict", b"\xff\xfe\xfa{}", "invalid utf-8"),
    ("/predict", json.dumps({"sys_msg": "x"}).encode(), "missing prompt"),
    ("/predict", json.dumps({"prompt": 5}).encode(), "prompt wrong type"),
    ("/predict", json.dumps({"prompt": "x", "max_tokens": -1}).encode(), "negative max_tokens"),
    ("/predict", json.dumps({"prompt": "x", "max_tokens": "many"}).encode(), "max_tokens wrong type"),
    ("/predict", json.dumps(["prompt"]).encode(), "array body"),
    ("/predict", b"", "empty body"),
    ("/v1/completions", json.dumps({"prompt": "x", "max_tokens": 0}).encode(), "zero max_tokens"),
    ("/v1/completions", json.dumps({"prompt": "x", "temperature": -1}).encode(), "negative temperature"),
    ("/v1/completions", json.dumps({"prompt": "x", "temperature": 1e309}).encode(), "huge temperature"),
    ("/v1/completions", json.dumps({"prompt": "x", "top_p": 0}).encode(), "top_p zero"),
    ("/v1/completions", json.dumps({"prompt": "x", "n": 17}).encode(), "n over its limit"),
    ("/v1/completions", json.dumps({"prompt": "x", "seed": 2**70}).encode(), "huge seed"),
    ("/v1/completions", json.dumps({"prompt": "x", "stop": [""]}).encode(), "empty stop"),
    ("/v1/completions", json.dumps({"prompt": ""}).encode(), "empty prompt"),
    ("/v1/completions", json.dumps({"prompt": []}).encode(), "empty prompt list"),
    ("/v1/completions", json.dumps({"prompt": "x" * 3000}).encode(), "prompt over the context"),
    ("/v1/completions", b"x" * 70_000, "body over the limit"),
    ("/v1/chat/completions", json.dumps({"messages": []}).encode(), "no messages"),
    (
        "/v1/chat/completions",
        json.dumps({"messages": [{"role": "user", "content": ""}]}).encode(),
        "empty msg",
    ),
    (
        "/v1/chat/completions",
        json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(),
        "bad role",
    ),
    ("/v1/chat/completions", json.dumps({"messages": [{"content": "x"}]}).encode(), "role missing"),
    ("/v1/chat/completions", json.dumps({"messages": "hello"}).encode(), "messages wrong type"),
    (
        "/v1/chat/completions",
        json.dumps(
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}
        ).encode(),
        "image part",
    ),
]


@pytest.mark.parametrize(("path", "body", "case"), BAD_REQUESTS, ids=[c for _, _, c in BAD_REQUESTS])
def test_bad_input_gets_4xx_json(tiny_server, path, body, case):
    r = tiny_server.client.post(path, content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, (case, r.status_code, r.text)
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert tiny_server.client.get("/healthz").status_code == 200


def test_bad_input_messages_are_clear(tiny_server):
    c = tiny_server.client
    r = c.post("/v1/completions", json={"prompt": "x" * 3000})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"
    assert "the context holds 512 tokens per request" in r.json()["error"]["message"]
    r = c.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert r.json()["error"]["message"] == "request body is not valid JSON"
    r = c.post("/predict", json={"prompt": "x", "max_tokens": -1})
    assert r.json()["error"]["param"] == "max_tokens"
    r = c.post("/v1/completions", content=b"x" * 70_000)
    assert r.status_code == 413
    # Chunked upload (no Content-Length) is limited too.
    r = c.post("/v1/completions", content=iter([b"x" * 40_000, b"y" * 40_000]))
    assert r.status_code == 413
    # After the whole battery the server still serves.
    assert greedy(tiny_server, "hello", 3)["usage"]["completion_tokens"] == 3


def test_unknown_route_and_method_are_json(tiny_server):
    r = tiny_server.client.get("/nope")
    assert r.status_code == 404 and "error" in r.json()
    r = tiny_server.client.get("/predict")
    assert r.status_code == 405 and "error" in r.json()


def test_metrics_exposed(tiny_server):
    greedy(tiny_server, "hello", 4)
    text = tiny_server.client.get("/metrics").text
    for name in (
        "llamacpp:requests_processing",
        "llamacpp:requests_deferred",
        "llamacpp:prompt_tokens_total",
        "llamacpp:tokens_predicted_total",
        "model_server_time_to_first_token_seconds_bucket",
        "model_server_inter_token_latency_seconds_bucket",
        "model_server_e2e_request_latency_seconds_bucket",
        "model_server_queue_time_seconds_bucket",
        'model_server_requests_total{route="/v1/completions",status="200"}',
    ):
        assert name in text, name
    assert tiny_server.metric("llamacpp:tokens_predicted_total") >= 4
    assert tiny_server.metric("llamacpp:requests_processing") == 0


def test_json_logs_with_request_ids_and_no_prompt_text(tiny_server):
    secret = "tokenSECRET-do-not-log"
    r = tiny_server.client.post(
        "/predict", json={"prompt": secret, "max_tokens": 2}, headers={"x-request-id": "req-abc-123"}
    )
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "req-abc-123"
    records = tiny_server.log_records()
    assert records, "server logs are not JSON lines"
    mine = [rec for rec in records if rec.get("request_id") == "req-abc-123"]
    assert any(rec["msg"] == "accepted" and rec["prompt_tokens"] > 0 for rec in mine)
    assert any(rec["msg"] == "request" and rec["status"] == 200 for rec in mine)
    assert secret not in tiny_server.logs()


def test_api_key(start_server, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    server = start_server(api_key_file=key_file, warmup="false")
    c = server.client
    assert c.get("/readyz").status_code == 200  # probes stay open
    r = c.post("/v1/completions", json={"prompt": "x", "max_tokens": 1})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = c.post(
        "/v1/completions", json={"prompt": "x", "max_tokens": 1}, headers={"Authorization": "Bearer nope"}
    )
    assert r.status_code == 401
    r = c.post(
        "/v1/completions", json={"prompt": "x", "max_tokens": 1}, headers={"Authorization": "Bearer s3cret"}
    )
    assert r.status_code == 200
    assert httpx.get(f"{server.url}/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_startup_log_says_threads_and_how_to_change_them(tiny_server):
    line = next(rec for rec in tiny_server.log_records() if rec["msg"].startswith("llama.cpp uses"))
    assert line["n_threads"] == 1 and "MODEL_SERVER_N_THREADS" in line["msg"] and "THREADS=N" in line["msg"]
