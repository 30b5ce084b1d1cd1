"""`python -m bench`: streaming load on three servers side by side (same GGUF, threads and context).

Targets (each started as a subprocess on 127.0.0.1 and stopped afterwards):
  ours         python -m model_server serve (continuous batching, prefix reuse, one slot per client)
  ours_noflash the same with MODEL_SERVER_FLASH_ATTN=off (cheaper prompt tails at long contexts, any prefix
               reused; slower generation at short contexts): the CPU trade-off, measured side by side
  llama_cpp    python -m llama_cpp.server --interrupt_requests false (llama-cpp-python's bundled server)
  llama_server llama.cpp's llama-server built by bench/build_llama_server.sh (-np = max concurrency)

Workloads (bench/workloads.py): `short` (short story prompts, 128 tokens out, /v1/completions) and `shared`
(one ~750-token system prompt for everyone + a distinct short question, 32 tokens out, chat). Every
(target, workload, clients) level gets a freshly started server, so no level warms another's caches. Each
client sends its requests one after the other (temperature 0, streaming); output tokens are counted as
content chunks (every server streams one token per chunk). Every loop is bounded by count and by
`--deadline-s`. Results: one JSON line per level, then markdown tables, ratios and issue 13's targets; the
load average at the start of each level is printed with it.

`--scenario overload` measures ours saturated instead: 429 latency and /healthz latency under heavy
prompts (bench/overload.py). `--scenario structured` measures json_schema output throughput against
llama-server at the largest --concurrency level (bench/structured.py).
"""

from __future__ import annotations

import argparse
import json
import math
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

from bench.workloads import WORKLOADS, Workload

REPO = Path(__file__).resolve().parents[1]
TARGETS = ("ours", "ours_noflash", "llama_cpp", "llama_server")
#: Our server's configurations: target name -> MODEL_SERVER_* settings on top of the common ones.
OURS: dict[str, dict[str, str]] = {"ours": {}, "ours_noflash": {"MODEL_SERVER_FLASH_ATTN": "off"}}


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


def one_request(client: httpx.Client, url: str, workload: Workload, body: dict) -> Result:
    """One streaming request; TTFT and ITL are measured on content chunks as the client receives them."""
    t0 = time.perf_counter()
    last = None
    res = Result(ok=False)
    try:
        with client.stream("POST", f"{url}{workload.path}", json=body) as r:
            if r.status_code != 200:
                res.error = f"HTTP {r.status_code}"
                return res
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                if not workload.text(json.loads(line[6:])):
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


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def run_level(url: str, workload: Workload, concurrency: int, per_client: int, deadline_s: float) -> dict:
    results: list[Result] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + deadline_s

    def client_loop(i: int) -> None:
        # A new connection per request: llama-server (cpp-httplib) closes a kept-alive connection after 5
        # requests, and a request sent on it at that moment fails (httpx does not retry a POST).
        with httpx.Client(timeout=600, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            for j in range(per_client):
                if time.monotonic() > stop_at:
                    return
                r = one_request(client, url, workload, workload.body(i, j, "m"))
                with lock:
                    results.append(r)

    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in results if r.ok]
    ttfts = [r.ttft for r in ok]
    itls = [x for r in ok for x in r.itl]
    return {
        "workload": workload.name,
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
        "load_avg_1m": load,
        "first_error": next((r.error for r in results if not r.ok), ""),
        "ttfts_ms": [round(r.ttft * 1000) for r in ok],  # in completion order
    }


def start_target(name: str, model: Path, port: int, threads: int, n_ctx: int, slots: int, log: Path):
    env = {**os.environ}
    if name in OURS:
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
        env.update(OURS[name])
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


def stop_target(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def measure(args: argparse.Namespace, model: Path) -> list[dict]:
    """Every (workload, clients, target) level on a fresh server; targets side by side per level."""
    levels = [int(x) for x in args.concurrency.split(",")]
    slots = max(levels)
    rows: list[dict] = []
    for wname in args.workloads.split(","):
        workload = WORKLOADS[wname]
        for c in levels:
            per_client = max(args.requests, -(-args.min_level_requests // c))
            for target in args.targets.split(","):
                log = args.out.parent / f"{target}-{wname}-{c}.log"
                proc, url = start_target(target, model, free_port(), args.threads, args.n_ctx, slots, log)
                try:
                    warm = {
                        "model": "m",
                        "prompt": "warm up",
                        "max_tokens": 8,
                        "temperature": 0,
                        "stream": True,
                    }
                    with httpx.Client(timeout=120) as client:  # not measured
                        one_request(client, url, WORKLOADS["short"], warm)
                    row = {"target": target, **run_level(url, workload, c, per_client, args.deadline_s)}
                finally:
                    stop_target(proc)
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def _f(x: float, digits: int = 0) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def table(rows: list[dict]) -> str:
    lines: list[str] = []
    for wname in dict.fromkeys(r["workload"] for r in rows):
        lines += [
            f"### {wname}: {WORKLOADS[wname].description}",
            "",
            "| server | clients | requests | out tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms "
            "| errors | load 1m |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in (r for r in rows if r["workload"] == wname):
            lines.append(
                f"| {r['target']} | {r['concurrency']} | {r['requests']} | {_f(r['out_tok_per_s'], 1)} | "
                f"{_f(r['ttft_p50_ms'])} | {_f(r['ttft_p99_ms'])} | {_f(r['itl_p50_ms'], 1)} | "
                f"{_f(r['itl_p99_ms'], 1)} | {r['errors']} | {r['load_avg_1m']:.1f} |"
            )
        lines.append("")
    lines += ratios(rows)
    return "\n".join(lines)


def _find(rows: list[dict], target: str, workload: str, clients: int) -> dict | None:
    return next(
        (
            r
            for r in rows
            if r["target"] == target and r["workload"] == workload and r["concurrency"] == clients
        ),
        None,
    )


def _ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return float("nan")
    return a / b


def ratios(rows: list[dict]) -> list[str]:
    """ours / other for every level both ran: tok/s (higher is better), TTFT and ITL (lower is better)."""
    lines = [
        "### Ratios: ours / other (out tok/s: higher is better; TTFT, ITL: lower is better)",
        "",
        "| workload | clients | ours | vs | out tok/s | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in (r for r in rows if r["target"] in OURS):
        for other in ("llama_server", "llama_cpp"):
            o = _find(rows, other, r["workload"], r["concurrency"])
            if o is None:
                continue
            cells = [
                _ratio(r[k], o[k])
                for k in ("out_tok_per_s", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms")
            ]
            lines.append(
                f"| {r['workload']} | {r['concurrency']} | {r['target']} | {other} | "
                + " | ".join(f"{_f(x, 2)}x" for x in cells)
                + " |"
            )
    lines += ["", *targets(rows)]
    return lines


# Issue 13's targets: (workload, clients, other, metric, comparison, bound).
TARGET_CHECKS = [
    ("shared", 8, "llama_server", "out_tok_per_s", ">=", 1.5),
    ("shared", 8, "llama_server", "ttft_p50_ms", "<=", 0.5),
    ("short", 8, "llama_server", "out_tok_per_s", ">=", 1.0),
    ("short", 8, "llama_server", "ttft_p50_ms", "<=", 1.0),
    ("short", 8, "llama_cpp", "out_tok_per_s", ">=", 2.0),
    ("short", 1, "llama_server", "ttft_p50_ms", "<=", 1.05),
    ("short", 1, "llama_server", "itl_p50_ms", "<=", 1.05),
]


def targets(rows: list[dict]) -> list[str]:
    lines = [
        "### Issue 13's targets in this run",
        "",
        "| workload | clients | metric | ours | ours / other | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in OURS:
        for workload, clients, other, metric, op, bound in TARGET_CHECKS:
            ours, theirs = _find(rows, name, workload, clients), _find(rows, other, workload, clients)
            if ours is None or theirs is None:
                continue
            x = _ratio(ours[metric], theirs[metric])
            met = (x >= bound if op == ">=" else x <= bound) if not math.isnan(x) else False
            lines.append(
                f"| {workload} | {clients} | {metric} vs {other} | {name} | {_f(x, 2)}x | {op} {bound}x | "
                f"{'yes' if met else 'NO'} |"
            )
    return lines


def main() -> int:
    if sys.argv[1:2] == ["chat-ui"]:  # `python -m bench chat-ui`: the chat UI's overhead (bench/chat_ui.py)
        from bench.chat_ui import main as chat_ui_main

        return chat_ui_main(sys.argv[2:])
    from model_server.settings import embedded_model_path

    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--workloads", default="short,shared", help=f"from {', '.join(WORKLOADS)}")
    p.add_argument("--concurrency", default="1,8", help="client counts (levels)")
    p.add_argument("--requests", type=int, default=4, help="sequential requests per client per level")
    p.add_argument("--min-level-requests", type=int, default=8, help="at least this many requests per level")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n-ctx", type=int, default=2048, help="context per sequence")
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--deadline-s", type=float, default=180, help="per level: no new request after this")
    p.add_argument("--out", type=Path, default=REPO / "bench/.build/results.json")
    p.add_argument("--scenario", choices=("throughput", "overload", "structured"), default="throughput")
    p.add_argument("--overload-requests", type=int, default=200, help="overload: requests per measurement")
    p.add_argument("--overload-clients", type=int, default=16, help="overload: concurrent clients")
    args = p.parse_args()
    model = args.model or embedded_model_path()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.scenario == "structured":  # json_schema output, ours vs llama-server (bench/structured.py)
        from bench import structured

        levels = [int(x) for x in args.concurrency.split(",")]
        rows = structured.main(
            start_target,
            stop_target,
            free_port,
            model,
            args.out.parent,
            targets=[t for t in args.targets.split(",") if t in ("ours", "llama_server")],
            clients=max(levels),
            per_client=args.requests,
            threads=args.threads,
            n_ctx=args.n_ctx,
            max_tokens=128,
            deadline_s=args.deadline_s,
        )
        args.out.with_name("structured.json").write_text(json.dumps(rows, indent=2))
        return 0
    if args.scenario == "overload":
        from bench import overload

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
    for w in args.workloads.split(","):
        if w not in WORKLOADS:
            raise SystemExit(f"--workloads: unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")
    t0 = time.monotonic()
    rows = measure(args, model)
    args.out.write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2)
    )
    print(table(rows))
    print(f"\n{len(rows)} levels in {time.monotonic() - t0:.0f} s; JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
