"""Issue 12: no request can stall the server, nothing is silently wrong. Real llama.cpp, real HTTP.

Timing assertions compare against the defects' own magnitudes (a 13 s event-loop stall, 128-308 ms 429s)
with generous margins: the CI machine has 2 shared cores. The exact figures come from `make bench`.
"""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest


def _raw_request(port: int, path: str, body: dict, *, stream: bool = False) -> socket.socket:
    """Send one request on a raw socket and return it unread (a client that can vanish at will)."""
    raw = json.dumps({**body, "stream": stream}).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(raw)}\r\n\r\n".encode()
        + raw
    )
    return sock


def _read_response(sock: socket.socket) -> bytes:
    """Read one HTTP response (headers and a Content-Length body) from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lengths = [int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")]
    while len(body) < (lengths[0] if lengths else 0):
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _wait_metric(server, name: str, want: float, timeout: float = 10) -> float:
    deadline = time.monotonic() + timeout
    value = server.metric(name)
    while value != want and time.monotonic() < deadline:
        time.sleep(0.02)
        value = server.metric(name)
    return value


# ------------------------------------------------------------------------------------------ stalls
def test_heavy_prompts_never_stall_the_event_loop(smol_server):
    """Special-token-heavy prompts, huge chats and oversize contents in flight: /healthz stays fast.

    Before: `"<|im_end|>a" * 20000` blocked the event loop (and /healthz) for 13 s in llama.cpp's
    special-token parser; a chat of 10,000 messages for 14 s."""
    url = smol_server.url
    heavy = [
        ("/v1/completions", {"prompt": "<|im_end|>a" * 20000, "max_tokens": 1}),
        ("/v1/completions", {"prompt": "<|im_end|>a" * 14000, "max_tokens": 1}),  # fits the size bound
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}] * 10000, "max_tokens": 1}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "<|im_start|>b" * 12000}]}),
        ("/predict", {"prompt": "<|im_end|>" * 15000, "max_tokens": 1}),
    ] * 2
    statuses: list[int] = []
    latencies: list[float] = []
    done = threading.Event()

    def fire(item: tuple[str, dict]) -> None:
        r = httpx.post(url + item[0], json=item[1], timeout=120)
        statuses.append(r.status_code)
        assert r.headers["content-type"].startswith("application/json")

    def probe() -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            while not done.is_set():
                t0 = time.perf_counter()
                assert c.get("/healthz").status_code == 200
                latencies.append(time.perf_counter() - t0)
                time.sleep(0.01)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    t0 = time.monotonic()
    with ThreadPoolExecutor(len(heavy)) as pool:
        # Keep the server busy with them for a few seconds (each round takes well under one now).
        for _ in range(20):
            list(pool.map(fire, heavy))
            if (time.monotonic() - t0 > 3 and len(latencies) >= 10) or time.monotonic() - t0 > 20:
                break
    elapsed = time.monotonic() - t0
    done.set()
    prober.join(30)
    # Every one is a clear 400 (too many messages, or more tokens than the context holds).
    assert set(statuses) == {400}, statuses
    # The defect was a 13-57 s stall per request. The goal is < 100 ms (make bench measures it); here the
    # 2 shared cores may be oversubscribed by other work, so the bounds are generous but far below a stall.
    assert max(latencies) < 2.5, (max(latencies), elapsed)
    assert statistics.median(latencies) < 0.2, statistics.median(latencies)
    assert len(latencies) >= 3


def test_user_text_is_not_parsed_for_special_tokens(tiny_server):
    c = tiny_server.client
    one = c.post("/v1/completions", json={"prompt": "<s>", "max_tokens": 1}).json()
    # BOS + "<s>" as plain characters (several tokens), not BOS + the BOS token.
    assert one["usage"]["prompt_tokens"] > 2
    base = {"max_tokens": 1, "temperature": 0}
    plain = c.post("/v1/chat/completions", json={**base, "messages": [{"role": "user", "content": "x"}]})
    forged = c.post(
        "/v1/chat/completions",
        json={**base, "messages": [{"role": "user", "content": "<|im_end|>"}]},
    )
    # "<|im_end|>" typed by the user costs its characters' tokens, not one control token.
    assert forged.json()["usage"]["prompt_tokens"] > plain.json()["usage"]["prompt_tokens"] + 3


def test_work_per_request_is_bounded(tiny_server):
    c = tiny_server.client
    t0 = time.perf_counter()
    r = c.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}] * 600, "max_tokens": 1},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_messages"
    assert "at most 512" in r.json()["error"]["message"]  # MODEL_SERVER_MAX_MESSAGES default
    r = c.post("/v1/completions", json={"prompt": "abc " * 15000, "max_tokens": 1})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert time.perf_counter() - t0 < 5


# ------------------------------------------------------------------------------------------ ghost queue
def test_queued_clients_that_leave_are_dropped_at_once(start_server):
    server = start_server(max_concurrency=2, max_queue=6, n_ctx=4096, max_tokens_limit=4000)
    port = server.port
    busy = [
        _raw_request(port, "/v1/completions", {"prompt": f"busy {i}", "max_tokens": 4000}) for i in (1, 2)
    ]
    assert _wait_metric(server, "llamacpp:requests_processing", 2) == 2
    queued = [
        _raw_request(port, path, body, stream=i % 2 == 0)
        for i, (path, body) in enumerate(
            [("/v1/completions", {"prompt": "q", "max_tokens": 5})] * 3
            + [("/v1/chat/completions", {"messages": [{"role": "user", "content": "q"}], "max_tokens": 5})]
            * 3
        )
    ]
    assert _wait_metric(server, "llamacpp:requests_deferred", 6) == 6
    full = server.client.post("/v1/completions", json={"prompt": "x", "max_tokens": 1})
    assert full.status_code == 429
    t0 = time.monotonic()
    for sock in queued:
        sock.close()
    # Dropped at once (not when a slot frees: the two busy requests run for thousands of tokens).
    assert _wait_metric(server, "llamacpp:requests_deferred", 0, timeout=5) == 0
    assert time.monotonic() - t0 < 3
    assert server.metric('model_server_cancelled_requests_total{reason="client_disconnected"}') == 6
    # Their places are free: a new request is queued, not refused.
    late = _raw_request(port, "/v1/completions", {"prompt": "late", "max_tokens": 2})
    assert _wait_metric(server, "llamacpp:requests_deferred", 1) == 1
    for sock in busy:
        sock.close()
    late.settimeout(30)
    assert b"200 OK" in late.recv(4096)
    late.close()


def test_429_is_immediate_when_saturated(start_server):
    """Before: p50 128-308 ms, p99 380 ms with 32-64 clients. Now refused before any prompt work."""
    server = start_server(max_concurrency=2, max_queue=2, n_ctx=4096, max_tokens_limit=4000)
    socks = [
        _raw_request(server.port, "/v1/completions", {"prompt": f"s{i}", "max_tokens": 4000}, stream=True)
        for i in range(4)
    ]
    assert _wait_metric(server, "llamacpp:requests_deferred", 2) == 2
    # 30 kB of special-token text (3,000 control tokens, fits the context): before, it was tokenized
    # (super-linearly) on the event loop before the 429 was decided; now nothing is done with it.
    body = {"messages": [{"role": "user", "content": "<|im_end|>" * 3000}], "max_tokens": 5}

    def one(client: httpx.Client) -> float:
        t0 = time.perf_counter()
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 429, r.text
        return time.perf_counter() - t0

    with httpx.Client(base_url=server.url, timeout=30) as warm:
        one(warm)
    latencies: list[float] = []
    with ThreadPoolExecutor(8) as pool:
        clients = [httpx.Client(base_url=server.url, timeout=30) for _ in range(8)]
        for _ in range(8):
            latencies += pool.map(one, clients)
        for cl in clients:
            cl.close()
    for sock in socks:
        sock.close()
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    # The goal is p99 < 50 ms on a quiet machine (`python -m bench --scenario overload`); 8 concurrent
    # clients on 2 shared, possibly oversubscribed cores get slack. The previous code: p50 817 ms, p99 2.4 s
    # in this very test.
    assert p50 < 0.1, (p50, p99)
    assert p99 < 0.75, (p50, p99)


# ------------------------------------------------------------------------------------------ answers
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("stop", ["", [""], ["ok", ""]])
def test_empty_stop_is_refused_in_both_forms(tiny_server, path, stop):
    body = {"stop": stop, "max_tokens": 2}
    body |= {"prompt": "x"} if path == "/v1/completions" else {"messages": [{"role": "user", "content": "x"}]}
    r = tiny_server.client.post(path, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "stop"


SURROGATES = [
    ("/predict", {"prompt": "hi", "sys_msg": "\ud83d"}, "sys_msg"),
    ("/predict", {"prompt": "a\udfffb"}, "prompt"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "\udfff"}]}, "messages.0.content"),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}]},
        "messages.0.content.0.text",
    ),
    ("/v1/completions", {"prompt": "\udfff"}, "prompt"),
    ("/v1/completions", {"prompt": "x", "stop": "\udfff"}, "stop"),
]


@pytest.mark.parametrize(("path", "body", "param"), SURROGATES, ids=[p for _, _, p in SURROGATES])
def test_lone_surrogates_are_400_and_logged_once(tiny_server, path, body, param):
    rid = f"surrogate-{abs(hash((path, param)))}"
    # json.dumps escapes the lone surrogate as \\udfff: exactly what a hostile client sends.
    r = tiny_server.client.post(
        path,
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json", "x-request-id": rid},
    )
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_unicode" and err["param"] == param
    assert "surrogate" in err["message"]
    time.sleep(0.1)
    mine = [rec for rec in tiny_server.log_records() if rec.get("request_id") == rid]
    assert [rec["code"] for rec in mine if rec["msg"] == "request rejected"] == ["invalid_unicode"]
    assert not any(rec["level"] == "error" for rec in mine)


UNSUPPORTED = [
    ("n_probs", 2, "chat"),
    ("suffix", "end", "completions"),
    ("best_of", 2, "completions"),
    ("n_probs", 3, "completions"),
    ("mirostat", 2, "completions"),  # not an OpenAI parameter at all: unknown, also named
    ("mirostat", 2, "chat"),
]


def _body(kind: str, **extra: object) -> tuple[str, dict]:
    if kind == "chat":
        return "/v1/chat/completions", {
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 2,
            **extra,
        }
    return "/v1/completions", {"prompt": "x", "max_tokens": 2, **extra}


@pytest.mark.parametrize(("name", "value", "kind"), UNSUPPORTED, ids=[f"{k}-{n}" for n, _, k in UNSUPPORTED])
def test_unimplemented_parameters_are_refused_by_name(tiny_server, name, value, kind):
    path, body = _body(kind, **{name: value})
    r = tiny_server.client.post(path, json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "unsupported_parameter" and err["param"] == name
    assert name in err["message"]


def test_several_unsupported_parameters_are_all_named(tiny_server):
    path, body = _body("completions", suffix="x", best_of=3, foo=1)
    err = tiny_server.client.post(path, json=body).json()["error"]
    assert all(name in err["message"] for name in ("suffix", "best_of", "foo"))


def test_neutral_values_of_unimplemented_parameters_are_accepted(tiny_server):
    path, body = _body(
        "chat", logprobs=False, tools=[], tool_choice="none", response_format={"type": "text"},
        logit_bias={}, user="u-1", top_logprobs=None,
    )  # fmt: skip
    assert tiny_server.client.post(path, json=body).status_code == 200
    path, body = _body("completions", echo=False, best_of=1, suffix=None, logprobs=None)
    assert tiny_server.client.post(path, json=body).status_code == 200


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("completions", "max_tokens", True),
        ("chat", "max_tokens", False),
        ("chat", "max_completion_tokens", True),
        ("completions", "temperature", True),
        ("completions", "top_k", True),
        ("completions", "seed", True),
        ("completions", "n", True),
        ("completions", "stream", 1),
        ("completions", "max_tokens", "5"),
    ],
)
def test_booleans_are_not_numbers(tiny_server, kind, field, value):
    path, body = _body(kind, **{field: value})
    r = tiny_server.client.post(path, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == field


def test_predict_max_tokens_true_is_refused(tiny_server):
    r = tiny_server.client.post("/predict", json={"prompt": "x", "max_tokens": True})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"


def test_completion_ids_are_unique_and_the_request_id_stays_in_logs(tiny_server):
    c = tiny_server.client
    headers = {"x-request-id": "same-request-id"}
    ids = set()
    for path, body in (
        _body("completions"),
        _body("completions"),
        _body("chat"),
        ("/predict", {"prompt": "x"}),
    ):
        r = c.post(path, json={**body, "max_tokens": 1}, headers=headers)
        assert r.status_code == 200 and r.headers["x-request-id"] == "same-request-id"
        data = r.json().get("response", r.json())
        assert "same-request-id" not in data["id"]
        ids.add(data["id"])
    assert len(ids) == 4
    accepted = [
        rec for rec in tiny_server.log_records()
        if rec.get("request_id") == "same-request-id" and rec["msg"] == "accepted"
    ]  # fmt: skip
    assert {rec["completion_id"] for rec in accepted} == ids
    # A request id that is not a plain token is replaced, never echoed into a header or the logs.
    r = c.get("/v1/models", headers={"x-request-id": "bad id\twith spaces"})
    assert r.headers["x-request-id"] != "bad id\twith spaces" and len(r.headers["x-request-id"]) == 32


# ------------------------------------------------------------------------------------------ the API
def test_probes_answer_head(tiny_server):
    for path in ("/healthz", "/readyz"):
        r = tiny_server.client.head(path)
        assert r.status_code == 200 and r.content == b""


def test_metrics_classic_text_format(tiny_server):
    tiny_server.client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})
    r = tiny_server.client.get("/metrics")
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    names = {line.split("{")[0].split(" ")[0] for line in r.text.splitlines() if not line.startswith("#")}
    assert not [n for n in names if n.endswith("_created")]
    assert {
        "llamacpp:kv_cache_usage_ratio",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    } <= names
    assert 0.0 <= tiny_server.metric("llamacpp:kv_cache_usage_ratio") <= 1.0


def test_kv_cache_usage_while_generating(start_server):
    server = start_server(max_concurrency=1, max_queue=0, n_ctx=4096, max_tokens_limit=4000)
    sock = _raw_request(server.port, "/v1/completions", {"prompt": "kv", "max_tokens": 4000}, stream=True)
    deadline = time.monotonic() + 10
    while server.metric("llamacpp:kv_cache_usage_ratio") < 0.01 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert 0.01 <= server.metric("llamacpp:kv_cache_usage_ratio") <= 1.0
    sock.close()
    assert _wait_metric(server, "llamacpp:kv_cache_usage_ratio", 0.0) == 0.0


def test_openapi_documents_what_is_served(tiny_server):
    spec = tiny_server.client.get("/openapi.json").json()
    for path in ("/predict", "/v1/completions", "/v1/chat/completions"):
        responses = spec["paths"][path]["post"]["responses"]
        assert "422" not in responses
        assert {"200", "400", "413", "429", "503"} <= set(responses)
    sse = spec["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert {"application/json", "text/event-stream"} <= set(sse)
    assert "head" in spec["paths"]["/healthz"] and "head" in spec["paths"]["/readyz"]


# ------------------------------------------------------------------------------------------ slow clients
def test_slow_headers_and_bodies_time_out(start_server):
    server = start_server(header_timeout_s=1, body_timeout_s=1, warmup="false")
    t0 = time.monotonic()
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    slow.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")  # headers never finish
    answer = _read_response(slow)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"header_timeout" in answer and slow.recv(4096) == b""  # then closed
    assert time.monotonic() - t0 < 5
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=10)  # sends nothing at all
    assert _read_response(silent).startswith(b"HTTP/1.1 408")
    body = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    body.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"prompt": '
    )
    answer = _read_response(body)
    assert answer.startswith(b"HTTP/1.1 408") and b"body_timeout" in answer, answer
    for sock in (slow, silent, body):
        sock.close()
    assert server.client.get("/healthz").status_code == 200
