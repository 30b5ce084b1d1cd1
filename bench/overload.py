"""`python -m bench --scenario overload`: how this server behaves when it is saturated (issue 12's goals).

One server (ours) on the embedded model: every slot generating and the queue full, then
- `429`: latency of refused requests, each carrying a heavy chat prompt (the work must not be done);
- `healthz`: /healthz latency while heavy prompts (special-token text, huge chats, oversize prompts) keep
  arriving, each refused with a 400.
Goals: 429 p99 < 50 ms, /healthz < 100 ms. Results: one JSON line per measurement and a markdown table.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))] if xs else float("nan")


def _row(measure: str, clients: int, xs: list[float], **extra: object) -> dict:
    return {
        "measure": measure,
        "clients": clients,
        "n": len(xs),
        "p50_ms": pct(xs, 50) * 1000,
        "p99_ms": pct(xs, 99) * 1000,
        "max_ms": max(xs) * 1000,
        **extra,
    }


def _saturate(url: str, port: int, n: int) -> list[socket.socket]:
    """n long streaming requests on raw sockets (closed by the caller, which cancels them)."""
    socks = []
    for i in range(n):
        raw = json.dumps({"prompt": f"Once upon a time {i}", "max_tokens": 4000, "stream": True}).encode()
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(raw)}\r\n\r\n".encode()
            + raw
        )
        socks.append(s)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = httpx.post(f"{url}/v1/completions", json={"prompt": "probe", "max_tokens": 1}, timeout=30)
        if r.status_code == 429:
            return socks
        time.sleep(0.2)
    raise SystemExit("the server never reported saturation (no 429 within 60 s)")


def _timed(fn: Callable[[], int], expect: int) -> float:
    t0 = time.perf_counter()
    status = fn()
    if status != expect:
        raise SystemExit(f"expected {expect}, got {status}")
    return time.perf_counter() - t0


def run(url: str, port: int, slots: int, queue: int, requests: int, clients: int) -> list[dict]:
    socks = _saturate(url, port, slots + queue)
    rows = []
    try:
        heavy_chat = {"messages": [{"role": "user", "content": "<|im_end|>" * 3000}], "max_tokens": 5}
        http = [httpx.Client(base_url=url, timeout=60) for _ in range(clients)]

        def refused(i: int) -> float:
            client = http[i % clients]
            return _timed(lambda: client.post("/v1/chat/completions", json=heavy_chat).status_code, 429)

        with ThreadPoolExecutor(clients) as pool:
            lat = list(pool.map(refused, range(requests)))
        for c in http:
            c.close()
        rows.append(_row("429 (saturated)", clients, lat))

        heavy = [
            ("/v1/completions", {"prompt": "<|im_end|>a" * 20000, "max_tokens": 1}),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}] * 10000}),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "<|im_start|>b" * 12000}]}),
        ]
        bodies = [(path, json.dumps(body).encode()) for path, body in heavy]
        stop = threading.Event()
        probes: list[float] = []

        def probe() -> None:
            with httpx.Client(base_url=url, timeout=60) as c:
                while not stop.is_set():
                    probes.append(_timed(lambda: c.get("/healthz").status_code, 200))
                    time.sleep(0.01)

        def fire(i: int) -> int:
            path, body = bodies[i % len(bodies)]
            headers = {"content-type": "application/json"}
            return httpx.post(url + path, content=body, headers=headers, timeout=120).status_code

        prober = threading.Thread(target=probe)
        prober.start()
        with ThreadPoolExecutor(clients) as pool:
            statuses = list(pool.map(fire, range(requests)))
        stop.set()
        prober.join()
        rows.append(_row("/healthz (heavy 400s in flight)", clients, probes, heavy=sorted(set(statuses))))
    finally:
        for s in socks:
            s.close()
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| measure | clients | samples | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['measure']} | {r['clients']} | {r['n']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['max_ms']:.1f} |"
        )
    return "\n".join(lines)


def main(
    start_target: Callable[..., tuple],
    model: Path,
    port: int,
    threads: int,
    n_ctx: int,
    log: Path,
    requests: int,
    clients: int,
) -> list[dict]:
    slots, queue = 4, 4
    proc, url = start_target("ours", model, port, threads, n_ctx, slots, log)
    try:
        rows = run(url, port, slots, queue, requests, clients)
    finally:
        proc.terminate()
        proc.wait(60)
    for r in rows:
        print(json.dumps(r), flush=True)
    print(table(rows))
    return rows
