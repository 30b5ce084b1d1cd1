"""`python -m bench`: streaming load against three servers on the same GGUF, threads and context.

Targets (each started as a subprocess on 127.0.0.1 and stopped afterwards):
  ours         python -m model_server serve (continuous batching, one slot per client)
  llama_cpp    python -m llama_cpp.server --interrupt_requests false (llama-cpp-python's bundled server)
  llama_server llama.cpp's llama-server built by bench/build_llama_server.sh (-np = max concurrency)

Each client sends `--requests` sequential streaming /v1/completions requests (temperature 0, max_tokens 128,
distinct prompts). Output tokens are counted as content chunks (every server streams one token per chunk).
Every loop is bounded by count and by `--deadline-s`. Results go to stdout as a markdown table and JSON.

`--scenario overload` measures ours saturated instead: 429 latency and /healthz latency under heavy
prompts (bench/overload.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
# Story openings: SmolLM2 continues them for well over 128 tokens (an instruction-style completion prompt
# often ends at once with EOS, which would measure nothing).
PROMPTS = [
    "Once upon a time, in a small village by the sea, there lived",
    "Chapter 1. The old lighthouse keeper",
    "The robot looked at the blank canvas and",
    "It was the coldest winter anyone could remember, and",
    "The history of the city begins with",
    "Dear diary, today something strange happened:",
    "The expedition left the camp at dawn. The first day",
    "In the year 2150, the first colony on Mars",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Result:
    ok: bool
    ttft: float = 0.0
    itl: list[float] = field(default_factory=list)
    tokens: int = 0
    e2e: float = 0.0
    error: str = ""


def one_request(client: httpx.Client, url: str, prompt: str, max_tokens: int, model: str) -> Result:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    t0 = time.perf_counter()
    last = None
    res = Result(ok=False)
    try:
        with client.stream("POST", f"{url}/v1/completions", json=body) as r:
            if r.status_code != 200:
                res.error = f"HTTP {r.status_code}"
                return res
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                choices = chunk.get("choices") or []
                if not choices or not choices[0].get("text"):
                    continue
                now = time.perf_counter()
                if last is None:
                    res.ttft = now - t0
                else:
                    res.itl.append(now - last)
                last = now
                res.tokens += 1
        res.e2e = time.perf_counter() - t0
        res.ok = res.tokens > 0
        if not res.ok:
            res.error = "no tokens"
    except Exception as exc:
        res.error = repr(exc)
    return res


def run_level(
    url: str, concurrency: int, requests: int, max_tokens: int, model: str, deadline_s: float
) -> dict:
    results: list[Result] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + deadline_s

    def client_loop(i: int) -> None:
        with httpx.Client(timeout=300) as client:
            for j in range(requests):
                if time.monotonic() > stop_at:
                    return
                prompt = f"Story {i}.{j}. {PROMPTS[(i + j) % len(PROMPTS)]}"
                r = one_request(client, url, prompt, max_tokens, model)
                with lock:
                    results.append(r)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in results if r.ok]
    ttfts = sorted(r.ttft for r in ok)
    itls = sorted(x for r in ok for x in r.itl)

    def pct(xs: list[float], p: float) -> float:
        if not xs:
            return float("nan")
        return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]

    return {
        "concurrency": concurrency,
        "requests": len(results),
        "errors": len(results) - len(ok),
        "wall_s": wall,
        "req_per_s": len(ok) / wall,
        "out_tok_per_s": sum(r.tokens for r in ok) / wall,
        "ttft_p50_ms": pct(ttfts, 50) * 1000,
        "ttft_p99_ms": pct(ttfts, 99) * 1000,
        "itl_p50_ms": pct(itls, 50) * 1000,
        "itl_p99_ms": pct(itls, 99) * 1000,
        "mean_tokens": statistics.mean(r.tokens for r in ok) if ok else 0,
        "first_error": next((r.error for r in results if not r.ok), ""),
    }


def start_target(name: str, model: Path, port: int, threads: int, n_ctx: int, slots: int, log: Path):
    env = {**os.environ}
    if name == "ours":
        env.update(
            MODEL_SERVER_HOST="127.0.0.1",
            MODEL_SERVER_PORT=str(port),
            MODEL_SERVER_MODEL_PATH=str(model),
            MODEL_SERVER_N_THREADS=str(threads),
            MODEL_SERVER_N_CTX=str(n_ctx),
            MODEL_SERVER_MAX_CONCURRENCY=str(slots),
            MODEL_SERVER_MAX_QUEUE=str(slots),
            MODEL_SERVER_LOG_LEVEL="warning",
        )
        cmd = [sys.executable, "-m", "model_server", "serve"]
    elif name == "llama_cpp":
        cmd = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
            "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(threads),
            "--n_threads_batch", str(threads), "--interrupt_requests", "false",
        ]  # fmt: skip
    elif name == "llama_server":
        binary = REPO / "bench/.build/llama.cpp-build/bin/llama-server"
        if not binary.exists():
            raise SystemExit("llama-server not built: run bench/build_llama_server.sh (make bench does)")
        cmd = [
            str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
            "-c", str(n_ctx * slots), "-np", str(slots), "-t", str(threads), "-tb", str(threads),
            "--no-webui",
        ]  # fmt: skip
    else:
        raise SystemExit(f"unknown target {name}")
    out = log.open("wb")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    probe = "/v1/models" if name == "llama_cpp" else ("/health" if name == "llama_server" else "/readyz")
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited: see {log}")
        try:
            if httpx.get(url + probe, timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{name} not ready in 180 s: see {log}")


def main() -> int:
    if sys.argv[1:2] == ["chat-ui"]:  # `python -m bench chat-ui`: the chat UI's overhead (bench/chat_ui.py)
        from bench.chat_ui import main as chat_ui_main

        return chat_ui_main(sys.argv[2:])
    from model_server.settings import embedded_model_path

    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--targets", default="ours,llama_cpp,llama_server")
    p.add_argument("--concurrency", default="1,4,8,16")
    p.add_argument("--requests", type=int, default=1, help="sequential requests per client per level")
    p.add_argument("--min-level-requests", type=int, default=4, help="at least this many requests per level")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n-ctx", type=int, default=2048, help="context per sequence")
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--deadline-s", type=float, default=300, help="per level: no new request after this")
    p.add_argument("--out", type=Path, default=REPO / "bench/.build/results.json")
    p.add_argument("--scenario", choices=("throughput", "overload"), default="throughput")
    p.add_argument("--overload-requests", type=int, default=200, help="overload: requests per measurement")
    p.add_argument("--overload-clients", type=int, default=16, help="overload: concurrent clients")
    args = p.parse_args()
    model = args.model or embedded_model_path()
    if args.scenario == "overload":
        from bench import overload

        args.out.parent.mkdir(parents=True, exist_ok=True)
        log = args.out.parent / "overload.log"
        port = free_port()
        rows = overload.main(
            start_target,
            model,
            port,
            args.threads,
            args.n_ctx,
            log,
            args.overload_requests,
            args.overload_clients,
        )
        args.out.with_name("overload.json").write_text(json.dumps(rows, indent=2))
        return 0
    levels = [int(x) for x in args.concurrency.split(",")]
    slots = max(levels)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    all_rows: dict[str, list[dict]] = {}
    for target in args.targets.split(","):
        port = free_port()
        proc, url = start_target(
            target, model, port, args.threads, args.n_ctx, slots, args.out.parent / f"{target}.log"
        )
        try:
            one_request(httpx.Client(timeout=120), url, "warm up", 8, "m")  # not measured
            rows = []
            for c in levels:
                per_client = max(args.requests, -(-args.min_level_requests // c))
                row = run_level(url, c, per_client, args.max_tokens, "m", args.deadline_s)
                print(json.dumps({"target": target, **row}), flush=True)
                rows.append(row)
            all_rows[target] = rows
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    args.out.write_text(json.dumps(all_rows, indent=2))
    print(table(all_rows))
    return 0


def table(all_rows: dict[str, list[dict]]) -> str:
    lines = [
        "| server | clients | req/s | out tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms "
        "| errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for target, rows in all_rows.items():
        for r in rows:
            lines.append(
                f"| {target} | {r['concurrency']} | {r['req_per_s']:.2f} | {r['out_tok_per_s']:.1f} | "
                f"{r['ttft_p50_ms']:.0f} | {r['ttft_p99_ms']:.0f} | {r['itl_p50_ms']:.1f} | "
                f"{r['itl_p99_ms']:.1f} | {r['errors']}/{r['requests']} |"
            )
    if "ours" in all_rows:
        lines += ["", "| clients | ours / llama_cpp (tok/s) | ours / llama_server (tok/s) |", "|---|---|---|"]
        for i, r in enumerate(all_rows["ours"]):
            ratios = []
            for other in ("llama_cpp", "llama_server"):
                rows = all_rows.get(other)
                base = rows[i]["out_tok_per_s"] if rows else 0
                ratios.append(f"{r['out_tok_per_s'] / base:.2f}x" if base else "n/a")
            lines.append(f"| {r['concurrency']} | {ratios[0]} | {ratios[1]} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
