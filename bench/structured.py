"""`python -m bench --scenario structured`: structured-output throughput, ours vs llama-server (issue 14).

Every client sends chat requests one after the other with `response_format: json_schema` (the same schema
for all, a distinct request text each), greedy, not streamed; the output tokens are the answers'
`usage.completion_tokens`, and every answer is checked against the schema (an invalid one counts as an
error). Each target runs on a freshly started server with the same GGUF, threads, context and slots.
Target: ours' output tok/s >= 1.0x llama-server's at 8 clients.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jsonschema

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 32},
        "category": {"enum": ["tent", "backpack", "sleeping bag", "stove", "jacket"]},
        "price_eur": {"type": "number"},
        "in_stock": {"type": "boolean"},
        "features": {"type": "array", "items": {"type": "string", "maxLength": 24}, "maxItems": 3},
    },
    "required": ["name", "category", "price_eur", "in_stock", "features"],
    "additionalProperties": False,
}
ITEMS = [
    "a two-person tent for hiking",
    "a 40-litre backpack",
    "a winter sleeping bag",
    "a camping gas stove",
    "a waterproof hiking jacket",
    "an ultralight tent",
    "a children's backpack",
    "a summer sleeping bag",
]


def body(i: int, j: int, max_tokens: int) -> dict[str, Any]:
    item = ITEMS[(i + j) % len(ITEMS)]
    return {
        "model": "m",
        "messages": [
            {"role": "system", "content": "You write product records for an outdoor shop as JSON."},
            {"role": "user", "content": f"Write the product record of {item} (request {i}-{j})."},
        ],
        "temperature": 0,
        "max_tokens": max_tokens,
        "response_format": {"type": "json_schema", "json_schema": {"name": "product", "schema": SCHEMA}},
    }


def run_level(url: str, clients: int, per_client: int, max_tokens: int, deadline_s: float) -> dict[str, Any]:
    lock = threading.Lock()
    done: list[tuple[int, float, str]] = []  # (tokens, seconds, error)
    stop_at = time.monotonic() + deadline_s

    def client_loop(i: int) -> None:
        with httpx.Client(timeout=600, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            for j in range(per_client):
                if time.monotonic() > stop_at:
                    return
                t0 = time.perf_counter()
                error, tokens = "", 0
                try:
                    r = client.post(f"{url}/v1/chat/completions", json=body(i, j, max_tokens))
                    if r.status_code != 200:
                        error = f"HTTP {r.status_code}: {r.text[:200]}"
                    else:
                        out = r.json()
                        tokens = out["usage"]["completion_tokens"]
                        jsonschema.validate(json.loads(out["choices"][0]["message"]["content"]), SCHEMA)
                except Exception as exc:  # an invalid answer is an error of the level, not of the bench
                    error = repr(exc)[:200]
                with lock:
                    done.append((tokens, time.perf_counter() - t0, error))

    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [d for d in done if not d[2]]
    return {
        "clients": clients,
        "requests": len(done),
        "errors": len(done) - len(ok),
        "first_error": next((d[2] for d in done if d[2]), ""),
        "wall_s": round(wall, 2),
        "out_tok_per_s": sum(d[0] for d in ok) / wall,
        "mean_tokens": sum(d[0] for d in ok) / len(ok) if ok else 0,
        "mean_latency_s": sum(d[1] for d in ok) / len(ok) if ok else 0,
        "load_avg_1m": load,
    }


def main(
    start_target: Callable[..., Any],
    stop_target: Callable[[Any], None],
    free_port: Callable[[], int],
    model: Path,
    out_dir: Path,
    *,
    targets: list[str],
    clients: int,
    per_client: int,
    threads: int,
    n_ctx: int,
    max_tokens: int,
    deadline_s: float,
) -> list[dict[str, Any]]:
    rows = []
    for target in targets:
        log = out_dir / f"structured-{target}.log"
        proc, url = start_target(target, model, free_port(), threads, n_ctx, clients, log)
        try:
            with httpx.Client(timeout=120) as client:  # warm-up, not measured
                client.post(f"{url}/v1/chat/completions", json=body(0, 99, 8))
            row = {"target": target, **run_level(url, clients, per_client, max_tokens, deadline_s)}
        finally:
            stop_target(proc)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\n| server | clients | requests | errors | out tok/s | mean tokens | mean latency s | load 1m |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['target']} | {r['clients']} | {r['requests']} | {r['errors']} | "
            f"{r['out_tok_per_s']:.1f} | {r['mean_tokens']:.1f} | {r['mean_latency_s']:.2f} | "
            f"{r['load_avg_1m']:.1f} |"
        )
    ours = next((r for r in rows if r["target"] == "ours"), None)
    theirs = next((r for r in rows if r["target"] == "llama_server"), None)
    if ours and theirs and theirs["out_tok_per_s"]:
        ratio = ours["out_tok_per_s"] / theirs["out_tok_per_s"]
        met = "yes" if ratio >= 1.0 else "NO"
        print(f"\nours / llama_server out tok/s: {ratio:.2f}x (target >= 1.0x: {met})")
    return rows
