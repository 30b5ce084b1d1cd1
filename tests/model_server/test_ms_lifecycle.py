"""Backpressure, client disconnects and graceful SIGTERM drain, each on its own real server process."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx


def _stream(url: str, body: dict, first_chunk: threading.Event, result: dict) -> None:
    """Consume one SSE completion; record chunks, [DONE] and the finish reason."""
    try:
        with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}, timeout=120) as r:
            result["status"] = r.status_code
            for line in r.iter_lines():
                if line == "data: [DONE]":
                    result["done"] = True
                elif line.startswith("data: "):
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        result["error_event"] = chunk["error"]
                        continue
                    result.setdefault("chunks", 0)
                    result["chunks"] += 1
                    result["finish"] = chunk["choices"][0]["finish_reason"] or result.get("finish")
                    first_chunk.set()
    except Exception as exc:  # surfaced by the test's asserts
        result["error"] = repr(exc)
    finally:
        first_chunk.set()


def _start_streams(url: str, n: int, max_tokens: int) -> tuple[list[threading.Thread], list[dict]]:
    threads, results = [], []
    for i in range(n):
        ev, res = threading.Event(), {}
        body = {"prompt": f"stream {i}", "max_tokens": max_tokens, "temperature": 0}
        t = threading.Thread(target=_stream, args=(url, body, ev, res), daemon=True)
        t.start()
        assert ev.wait(60), "no first chunk within 60 s"
        threads.append(t)
        results.append(res)
    return threads, results


def test_overload_gets_429_at_once_while_accepted_complete(start_server):
    server = start_server(max_concurrency=2, max_queue=1, n_ctx=2048, max_tokens_limit=1500)
    # Two generating + one queued = full. The queued one starts only when a slot frees, so start it without
    # waiting for its first chunk.
    threads, results = _start_streams(server.url, 2, 1500)
    queued_res: dict = {}
    queued = threading.Thread(
        target=_stream,
        args=(
            server.url,
            {"prompt": "queued", "max_tokens": 20, "temperature": 0},
            threading.Event(),
            queued_res,
        ),
        daemon=True,
    )
    queued.start()
    deadline = time.monotonic() + 10
    while server.metric("llamacpp:requests_deferred") < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.metric("llamacpp:requests_deferred") == 1
    assert server.metric("llamacpp:requests_processing") == 2

    t0 = time.monotonic()
    r = server.client.post("/v1/completions", json={"prompt": "one too many", "max_tokens": 5})
    elapsed = time.monotonic() - t0
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "overloaded"
    assert elapsed < 2.0, f"429 took {elapsed:.2f}s: it must not wait for capacity"

    for t in [*threads, queued]:
        t.join(120)
    for res in [*results, queued_res]:
        assert res.get("status") == 200 and res.get("done") and res.get("finish") == "length", res
    assert server.metric('model_server_rejected_requests_total{reason="overloaded"}') == 1
    # Exactly the three accepted requests are in the histograms (the warm-up request is not).
    assert server.metric("model_server_e2e_request_latency_seconds_count") == 3
    assert server.metric("llamacpp:tokens_predicted_total") == 1500 + 1500 + 20


def test_disconnect_cancels_and_frees_the_slot(start_server):
    server = start_server(max_concurrency=1, max_queue=0, n_ctx=4096, max_tokens_limit=4000)
    raw = json.dumps({"prompt": "long", "max_tokens": 4000, "temperature": 0, "stream": True}).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(raw)}\r\n\r\n".encode()
        + raw
    )
    assert b"200 OK" in sock.recv(4096)
    # The only slot is busy: another request is refused.
    busy = server.client.post("/v1/completions", json={"prompt": "x", "max_tokens": 1})
    assert busy.status_code == 429
    sock.close()
    deadline = time.monotonic() + 20
    while server.metric("llamacpp:requests_processing") != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.metric("llamacpp:requests_processing") == 0
    # Cancelled long before 4000 tokens, and the slot serves the next request.
    assert server.metric("llamacpp:tokens_predicted_total") < 3900
    ok = server.client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 2


def test_non_streaming_disconnect_cancels(start_server):
    server = start_server(max_concurrency=1, max_queue=0, n_ctx=4096, max_tokens_limit=4000)
    with __import__("pytest").raises(httpx.ReadTimeout):
        server.client.post("/v1/completions", json={"prompt": "x", "max_tokens": 4000}, timeout=0.5)
    deadline = time.monotonic() + 20
    while server.metric("llamacpp:requests_processing") != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.metric("llamacpp:requests_processing") == 0
    assert server.client.post("/v1/completions", json={"prompt": "x", "max_tokens": 1}).status_code == 200


def test_sigterm_drains_streams_in_flight_and_exits_0(start_server):
    server = start_server(
        max_concurrency=3, max_queue=2, n_ctx=1024, max_tokens_limit=600, drain_timeout_s=60
    )
    threads, results = _start_streams(server.url, 3, 600)
    server.terminate()
    # While draining: not ready, new work refused with 503 + Retry-After, liveness still fine.
    deadline = time.monotonic() + 5
    while server.client.get("/readyz").status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    ready = server.client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "draining"
    refused = server.client.post("/v1/completions", json={"prompt": "late", "max_tokens": 2})
    assert refused.status_code == 503 and "retry-after" in refused.headers
    assert server.client.get("/healthz").status_code == 200
    for t in threads:
        t.join(120)
    for res in results:
        assert res.get("status") == 200 and res.get("done") and res.get("finish") == "length", res
        assert res["chunks"] >= 100  # the streams ran to their end, not cut at SIGTERM
    assert server.proc.wait(60) == 0
    assert any(rec["msg"].startswith("drained") for rec in server.log_records())


def test_sigterm_drain_timeout_is_an_error_to_the_client_and_still_exits_0(start_server):
    """Issue 12: a request cut off by the drain timeout must not look like a success."""
    server = start_server(
        max_concurrency=2, max_queue=0, n_ctx=8192, max_tokens_limit=8000, drain_timeout_s=1
    )
    threads, results = _start_streams(server.url, 1, 8000)
    plain: dict = {}

    def non_streaming() -> None:
        body = {"prompt": "plain", "max_tokens": 8000, "temperature": 0}
        r = httpx.post(f"{server.url}/v1/completions", json=body, timeout=120)
        plain.update(status=r.status_code, body=r.json())

    waiter = threading.Thread(target=non_streaming, daemon=True)
    waiter.start()
    deadline = time.monotonic() + 10
    while server.metric("llamacpp:requests_processing") < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    t0 = time.monotonic()
    server.terminate()
    assert server.proc.wait(60) == 0
    assert time.monotonic() - t0 < 30
    threads[0].join(30)
    waiter.join(30)
    # Streaming: no finish_reason, an OpenAI error event, then [DONE].
    res = results[0]
    assert not res.get("finish") and res.get("done"), res
    assert res["error_event"]["code"] == "drain_timeout", res
    # Non-streaming: 503 with Retry-After semantics, not a 200 with truncated text.
    assert plain["status"] == 503, plain
    assert plain["body"]["error"]["code"] == "drain_timeout"
    assert any(rec["msg"].startswith("drain timeout") for rec in server.log_records())
