"""`python -m bench chat-ui`: the chat UI's overhead over the model server, side by side in one run.

One model server (`python -m model_server serve`, embedded SmolLM2 unless --model) and one chat UI
(`python -m chat_ui` in front of it) on 127.0.0.1. The same questions go, one at a time and in rotating
order, through three paths:

  direct    streaming POST /v1/chat/completions to the model server (the same body the UI sends)
  backend   the UI's backend path in process: chat_ui.backend.answer() (history, client, events)
  ui_http   through the running UI app: Gradio's HTTP API of the chat page (/gradio_api/call/chat, SSE),
            i.e. the UI server's queue, the chat function and Gradio's streaming to the client

Per request: TTFT (send -> first answer text) and decode rate (tokens after the first / time from the
first to the last text). Greedy decoding (temperature 0), so every path generates the same tokens; the
token count of a question is the one the direct path saw. Each path is compared with direct round by round
(the same question, asked back to back, so a load burst of the machine hits both) and the median of those
ratios is judged against the targets of issue 15: TTFT overhead < 10 %, tokens/s at most 5 % below
direct. The model server gets one thread by default, so the UI process and this client have a core of
their own on a small machine (on a cluster they run on other nodes). Every loop is bounded by count and by
--deadline-s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.__main__ import free_port, start_target

REPO = Path(__file__).resolve().parents[1]
PATHS = ("direct", "backend", "ui_http")
QUESTIONS = [
    "Tell me a short story about a lighthouse keeper.",
    "Explain how a bicycle works.",
    "Describe a walk through a forest in autumn.",
    "Write a letter to a friend about a trip to the mountains.",
    "What makes a good breakfast? Give details.",
    "Tell me about the history of bread.",
]
TTFT_TARGET = 0.10
TPS_TARGET = 0.05


@dataclass
class Sample:
    ok: bool
    ttft: float = 0.0
    decode_s: float = 0.0
    text: str = ""
    chunks: int = 0
    error: str = ""


def ui_settings(model_url: str, max_tokens: int):
    from chat_ui.settings import Settings

    return Settings(model_url=model_url, max_tokens=max_tokens, temperature=0.0, log_level="warning")


async def run_direct(client: httpx.AsyncClient, url: str, body: dict) -> Sample:
    t0 = time.perf_counter()
    first = last = None
    text, chunks = [], 0
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as resp:
        if resp.status_code != 200:
            return Sample(False, error=f"HTTP {resp.status_code}")
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:]).get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    last = time.perf_counter()
                    first = first or last
                    text.append(piece)
                    chunks += 1
    if first is None or last is None:
        return Sample(False, error="no text")
    return Sample(True, first - t0, last - first, "".join(text), chunks)


async def run_backend(model_client, question: str) -> Sample:
    from chat_ui.backend import answer

    t0 = time.perf_counter()
    first = last = None
    seen, chunks, final = 0, 0, ""
    async for turn in answer(model_client, question, []):
        if turn.error is not None:
            return Sample(False, error=turn.error.message)
        if len(turn.text) > seen:
            last = time.perf_counter()
            first = first or last
            seen, chunks, final = len(turn.text), chunks + 1, turn.text
    if first is None or last is None:
        return Sample(False, error="no text")
    return Sample(True, first - t0, last - first, final, chunks)


def answer_text(data: list) -> str:
    """The answer's text in an update of the chat endpoint: a string, or a list of message dicts of which
    the titled ones are the UI's notes (e.g. the token limit's)."""
    value = data[0] if data else ""
    if isinstance(value, str):
        return value
    parts = []
    for message in value if isinstance(value, list) else []:
        if isinstance(message, dict) and not (message.get("metadata") or {}).get("title"):
            content = message.get("content")
            parts.append(content if isinstance(content, str) else "")
    return "".join(parts)


async def run_ui_http(client: httpx.AsyncClient, ui_url: str, question: str) -> Sample:
    t0 = time.perf_counter()
    first = last = None
    final, updates = "", 0
    started = await client.post(f"{ui_url}/gradio_api/call/chat", json={"data": [question]})
    if started.status_code != 200:
        return Sample(False, error=f"HTTP {started.status_code}")
    event_id = started.json()["event_id"]
    event = ""
    async with client.stream("GET", f"{ui_url}/gradio_api/call/chat/{event_id}") as resp:
        async for line in resp.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
                if event == "error":
                    return Sample(False, error="gradio error event")
            elif line.startswith("data: ") and event in ("generating", "complete"):
                text = answer_text(json.loads(line[6:]))
                if len(text) > len(final):
                    last = time.perf_counter()
                    first = first or last
                    final, updates = text, updates + 1
                if event == "complete":
                    break
    if first is None or last is None:
        return Sample(False, error="no text")
    return Sample(True, first - t0, last - first, final, updates)


def summarize(samples: dict[str, dict[int, tuple[int, Sample]]], tokens: dict[int, int]) -> dict:
    """Per path: TTFT and decode rate (the direct path's token count of a question / the decode time), and
    against direct, paired by round (the same question, asked back to back): the median of the per-round
    ratios and of the added TTFT. Pairing cancels most of what the machine's load does to both."""

    def rate(q: int, s: Sample) -> float | None:
        return (tokens[q] - 1) / s.decode_s if s.decode_s > 0 and tokens.get(q, 0) > 1 else None

    def median(xs: list[float]) -> float:
        return statistics.median(xs) if xs else float("nan")

    direct = samples.get("direct", {})
    rows = {}
    for path, items in samples.items():
        ok = {r: (q, s) for r, (q, s) in items.items() if s.ok}
        ttfts = [s.ttft * 1000 for _, s in ok.values()]
        rates = [x for q, s in ok.values() if (x := rate(q, s)) is not None]
        ttft_ratio, ttft_added, rate_ratio = [], [], []
        for r, (q, s) in ok.items():
            if path == "direct" or r not in direct or not direct[r][1].ok:
                continue
            d = direct[r][1]
            ttft_ratio.append(s.ttft / d.ttft)
            ttft_added.append((s.ttft - d.ttft) * 1000)
            mine, theirs = rate(q, s), rate(q, d)
            if mine and theirs:
                rate_ratio.append(mine / theirs)
        rows[path] = {
            "requests": len(items),
            "errors": len(items) - len(ok),
            "ttft_p50_ms": median(ttfts),
            "tok_s_p50": median(rates),
            "paired_rounds": len(ttft_ratio),
            "ttft_ratio_p50": median(ttft_ratio),
            "ttft_added_p50_ms": median(ttft_added),
            "tok_s_ratio_p50": median(rate_ratio),
            "first_error": next((s.error for _, s in items.values() if not s.ok), ""),
        }
    return rows


def table(rows: dict[str, dict]) -> str:
    lines = [
        "| path | requests | TTFT p50 ms | tok/s p50 | TTFT vs direct (paired p50) "
        "| TTFT added ms (paired p50) | tok/s vs direct (paired p50) | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path, r in rows.items():
        ttft_vs = added = tps_vs = "—"
        if path != "direct" and r["paired_rounds"]:
            over, diff = r["ttft_ratio_p50"] - 1, r["tok_s_ratio_p50"] - 1
            ttft_vs = f"{over:+.1%} ({'ok' if over < TTFT_TARGET else 'over target'})"
            added = f"{r['ttft_added_p50_ms']:+.1f}"
            # A slowdown counts; a path faster than direct is the noise floor of the run.
            tps_vs = f"{diff:+.1%} ({'ok' if diff >= -TPS_TARGET else 'off target'})"
        lines.append(
            f"| {path} | {r['requests']} | {r['ttft_p50_ms']:.1f} | {r['tok_s_p50']:.1f} | {ttft_vs} "
            f"| {added} | {tps_vs} | {r['errors']}/{r['requests']} |"
        )
    return "\n".join(lines)


def start_ui(model_url: str, max_tokens: int, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "CHAT_UI_HOST": "127.0.0.1",
        "CHAT_UI_PORT": str(port),
        "CHAT_UI_MODEL_URL": model_url,
        "CHAT_UI_MAX_TOKENS": str(max_tokens),
        "CHAT_UI_TEMPERATURE": "0",
        "CHAT_UI_LOG_LEVEL": "warning",
    }
    out = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "chat_ui"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"chat UI exited: see {log}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"chat UI not ready in 180 s: see {log}")


async def measure(args: argparse.Namespace, model_url: str, ui_url: str | None) -> dict:
    from chat_ui.backend import ModelClient, build_messages

    settings = ui_settings(model_url, args.max_tokens)
    paths = [p for p in args.paths.split(",") if p]
    samples: dict[str, dict[int, tuple[int, Sample]]] = {p: {} for p in paths}
    tokens: dict[int, int] = {}
    model_client = ModelClient(settings)
    stop_at = time.monotonic() + args.deadline_s
    async with httpx.AsyncClient(timeout=300) as client:

        async def one(path: str, q: int) -> Sample:
            question = QUESTIONS[q % len(QUESTIONS)]
            if path == "direct":
                messages = build_messages(
                    settings.resolved_system_prompt(), [], question, settings.max_history_messages
                )
                return await run_direct(client, model_url, model_client.request_body(messages))
            if path == "backend":
                return await run_backend(model_client, question)
            assert ui_url is not None
            return await run_ui_http(client, ui_url, question)

        for path in paths:  # warm-up, not measured
            await one(path, 0)
        for r in range(args.rounds):
            if time.monotonic() > stop_at:
                break
            q = r % len(QUESTIONS)
            rotated = paths[r % len(paths) :] + paths[: r % len(paths)]
            for path in rotated:
                sample = await one(path, q)
                samples[path][r] = (q, sample)
                if path == "direct" and sample.ok:
                    tokens[q] = sample.chunks
                line = {"round": r, "path": path, "ok": sample.ok, "ttft_ms": round(sample.ttft * 1000, 1)}
                line.update(decode_s=round(sample.decode_s, 3), chunks=sample.chunks)
                print(json.dumps(line), flush=True)
    await model_client.aclose()
    answers = {q: s.text for q, s in samples.get("direct", {}).values() if s.ok}
    same = all(s.text == answers.get(q) for items in samples.values() for q, s in items.values() if s.ok)
    rows = summarize(samples, tokens)
    return {"rows": rows, "same_text_on_every_path": same, "questions": len(tokens)}


def main(argv: list[str] | None = None) -> int:
    from model_server.settings import embedded_model_path

    p = argparse.ArgumentParser(prog="python -m bench chat-ui", description=__doc__.splitlines()[0])
    p.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, of {', '.join(PATHS)}")
    p.add_argument("--rounds", type=int, default=12, help="questions asked on every path")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument(
        "--threads", type=int, default=1, help="model server threads (1 leaves a core to the UI and client)"
    )
    p.add_argument("--n-ctx", type=int, default=2048)
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--deadline-s", type=float, default=600, help="no new round after this")
    p.add_argument("--out", type=Path, default=REPO / "bench/.build/chat_ui.json")
    args = p.parse_args(argv)
    for path in args.paths.split(","):
        if path not in PATHS:
            p.error(f"--paths: unknown path {path!r} (choose from {', '.join(PATHS)})")
    model = args.model or embedded_model_path()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    try:
        proc, model_url = start_target(
            "ours", model, free_port(), args.threads, args.n_ctx, 1, args.out.parent / "chat_ui-model.log"
        )
        procs.append(proc)
        ui_url = None
        if "ui_http" in args.paths:
            ui_proc, ui_url = start_ui(model_url, args.max_tokens, args.out.parent / "chat_ui-ui.log")
            procs.append(ui_proc)
        result = asyncio.run(measure(args, model_url, ui_url))
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    args.out.write_text(json.dumps(result, indent=2))
    print(table(result["rows"]))
    print(f"\nsame answer text on every path: {result['same_text_on_every_path']}; results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
