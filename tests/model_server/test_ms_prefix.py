"""Issue 13: prefix reuse and chunked prefill on real servers (real llama.cpp, real HTTP).

The reference for every output is a server with MODEL_SERVER_PREFIX_CACHE=false, each request alone:
greedy output with reuse must equal it exactly, whatever else runs and whatever was cached before.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

# The tiny model's vocabulary has single characters and whole words only: about a token per character.
PREFIX = "the llama server and the model token " * 6  # 222 tokens: 3 whole blocks and a part
SUFFIXES = ["hello world", "you poem", "é ü 你好 token", "Z", "and the", "a" * 70, "server server"]


def complete(server, prompt: str, max_tokens: int = 24) -> dict:
    r = server.client.post(
        "/v1/completions", json={"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}, timeout=120
    )
    assert r.status_code == 200, r.text
    return r.json()


def text(server, prompt: str, max_tokens: int = 24) -> str:
    return complete(server, prompt, max_tokens)["choices"][0]["text"]


def metrics(server) -> dict[str, float]:
    names = (
        "llamacpp:prompt_tokens_total",
        "model_server_prefix_cache_hits_total",
        "model_server_prefix_cache_reused_tokens_total",
        "model_server_prefix_cache_copies_total",
        "model_server_prefix_cache_evictions_total",
        "model_server_prefix_cache_tokens",
        "llamacpp:kv_cache_usage_ratio",
    )
    return {n: server.metric(n) for n in names}


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_gguf):
    """The tiny model without prefix reuse: every output's reference, each request alone."""
    from conftest import Server

    server = Server(
        tiny_gguf, tmp_path_factory.mktemp("ref"), max_concurrency=4, n_ctx=1024, prefix_cache=False
    )
    server.wait_ready()
    yield server
    assert server.stop() == 0


def test_greedy_output_with_reuse_equals_without(start_server, reference):
    """Sequential, concurrent, repeated and follow-up prompts that share a long prefix: every output equals
    the output computed from scratch, and the reuse really happened (metrics)."""
    server = start_server(max_concurrency=4, n_ctx=1024)
    prompts = [PREFIX + s for s in SUFFIXES]
    expected = {p: text(reference, p) for p in prompts}
    before = metrics(server)
    assert [text(server, p) for p in prompts[:2]] == [expected[p] for p in prompts[:2]]  # one after the other
    with ThreadPoolExecutor(4) as pool:  # together: computed once, copied to the others
        assert list(pool.map(lambda p: text(server, p), prompts[2:6])) == [expected[p] for p in prompts[2:6]]
    assert text(server, prompts[0]) == expected[prompts[0]]  # the same prompt again
    follow_up = prompts[1] + expected[prompts[1]] + " and the model"  # a conversation goes on
    assert text(server, follow_up) == text(reference, follow_up)
    d = delta(metrics(server), before)
    assert d["model_server_prefix_cache_hits_total"] >= 6
    assert d["model_server_prefix_cache_reused_tokens_total"] >= 6 * 192  # 3 whole blocks each
    assert d["model_server_prefix_cache_copies_total"] >= 1
    computed = d["llamacpp:prompt_tokens_total"]
    total = sum(
        complete(reference, p, 1)["usage"]["prompt_tokens"] for p in [*prompts, prompts[0], follow_up]
    )
    assert computed < total / 2, (computed, total)


def test_requests_arriving_together_compute_a_shared_prefix_once(start_server, reference):
    server = start_server(max_concurrency=4, n_ctx=1024)
    prompts = [PREFIX * 2 + s for s in SUFFIXES[:4]]  # 444 tokens and more, 6 whole blocks shared
    n_prompt = complete(reference, prompts[0], 1)["usage"]["prompt_tokens"]
    before = metrics(server)
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda p: text(server, p, 8), prompts))
    d = delta(metrics(server), before)
    assert outs == [text(reference, p, 8) for p in prompts]
    # Once the prefix, then for each request at most a block and its own suffix. Copied, or in place
    # when a sharer had finished before the next arrived (over HTTP the arrivals are not one step apart
    # on a loaded machine: test_requests_admitted_in_one_step_compute_a_shared_prefix_once pins the step).
    assert d["llamacpp:prompt_tokens_total"] <= n_prompt + 3 * (64 + 16), d
    assert d["model_server_prefix_cache_hits_total"] == 3


def test_eviction_under_memory_pressure_never_fails_a_request(start_server, reference):
    """Two sequences, eight distinct long prompts at once, twice: every request succeeds and is right."""
    server = start_server(max_concurrency=2, max_queue=16, n_ctx=512)
    prompts = [f"{w} " * 40 for w in ("the", "and", "you", "poem", "hello", "world", "model", "llama")]
    expected = [text(reference, p, 6) for p in prompts]
    before = metrics(server)
    for _ in range(2):
        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(lambda p: text(server, p, 6), prompts)) == expected
    d = delta(metrics(server), before)
    assert d["model_server_prefix_cache_evictions_total"] >= 8
    assert 0 < server.metric("llamacpp:kv_cache_usage_ratio") <= 1


def _stream_tokens(server, prompt: str, max_tokens: int, seen: list[float], stop: threading.Event) -> None:
    """Read a streaming completion, appending the arrival time of every token chunk to `seen`."""
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    with (
        httpx.Client(base_url=server.url, timeout=120) as client,
        client.stream("POST", "/v1/completions", json=body) as r,
    ):
        for line in r.iter_lines():
            if stop.is_set():
                return
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["text"]:
                seen.append(time.monotonic())


def _steps_over_128_tokens(server) -> float:
    """model_server_step_tokens observations above 128 tokens (one scrape)."""
    buckets = {}
    for line in server.client.get("/metrics").text.splitlines():
        if line.startswith("model_server_step_tokens_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[le] = float(line.rsplit(" ", 1)[1])
    return buckets["+Inf"] - buckets["128.0"]


def _big_steps_while_generating(server) -> tuple[float, int]:
    """While a stream generates, a ~1,200-token prompt arrives: engine steps of more than 128 tokens, and
    the tokens the stream received while the prompt was read."""
    seen: list[float] = []
    stop = threading.Event()
    reader = threading.Thread(target=_stream_tokens, args=(server, "hello", 1500, seen, stop))
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        big = _steps_over_128_tokens(server)
        n_before = len(seen)
        r = complete(server, "the model " * 120, 1)
        assert r["usage"]["prompt_tokens"] > 1100
        return _steps_over_128_tokens(server) - big, len(seen) - n_before
    finally:
        stop.set()
        reader.join(60)


def test_chunked_prefill_keeps_running_streams_going(start_server):
    """With a 64-token prefill chunk a long prompt is read in ~19 steps of 65 tokens, each giving the
    running stream its next token; with 512 in 3 big steps the stream has to wait out."""
    chunked = start_server(max_concurrency=2, n_ctx=2048, max_tokens_limit=2000, prefill_chunk=64)
    big, received = _big_steps_while_generating(chunked)
    assert big == 0 and received >= 19
    coarse = start_server(max_concurrency=2, n_ctx=2048, max_tokens_limit=2000, prefill_chunk=512)
    big, _ = _big_steps_while_generating(coarse)
    assert big >= 2


def test_a_cancelled_request_frees_its_sequence_and_a_sharer_is_unaffected(start_server, reference):
    server = start_server(max_concurrency=2, n_ctx=1024, max_tokens_limit=1000)
    seen: list[float] = []
    stop = threading.Event()
    reader = threading.Thread(target=_stream_tokens, args=(server, PREFIX + "hello", 900, seen, stop))
    reader.start()
    deadline = time.monotonic() + 60
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    before = metrics(server)
    sharer = PREFIX + "world"
    result = {}
    worker = threading.Thread(target=lambda: result.update(complete(server, sharer, 24)))
    worker.start()
    while (
        server.metric("model_server_prefix_cache_copies_total")
        == before["model_server_prefix_cache_copies_total"]
    ):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    stop.set()  # the first client leaves while the sharer, copied from it, still runs
    reader.join(60)
    worker.join(120)
    assert result["choices"][0]["text"] == text(reference, sharer)
    # Only the sharer's tokens stay (cached for reuse): the cancelled request's sequence was freed.
    n_sharer = result["usage"]["prompt_tokens"] + result["usage"]["completion_tokens"] - 1
    deadline = time.monotonic() + 10
    while server.metric("model_server_prefix_cache_tokens") != n_sharer and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.metric("model_server_prefix_cache_tokens") == n_sharer
    assert server.metric("llamacpp:requests_processing") == 0


def test_smollm2_with_a_shared_system_prompt_reuse_equals_without(start_server, smol_server, smol_gguf):
    """The embedded model, chat with one system prompt and several questions, together and one by one."""
    reference = start_server(smol_gguf, max_concurrency=4, n_ctx=1024, prefix_cache=False)
    system = (
        "You are the support assistant of a shop for outdoor gear. Orders ship in three to five working "
        "days in Europe and five to eight to North America; shipping is free above 80 euros. Unused items "
        "can be returned within 30 days for a full refund; used items only when defective. Every product "
        "has a two-year warranty; tents and backpacks of our own brand have a lifetime warranty on seams "
        "and zippers. Recommend four-season tents for winter camping and sleeping bags rated at least five "
        "degrees below the coldest night. Answer briefly and politely, in two or three sentences."
    )
    questions = [
        "How long does shipping to Canada take?",
        "Can I return a used tent?",
        "Which tent for winter?",
    ]

    def chat(server, question: str) -> str:
        body = {
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
            "max_tokens": 16,
            "temperature": 0,
        }
        r = server.client.post("/v1/chat/completions", json=body, timeout=300)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["message"]["content"]

    expected = [chat(reference, q) for q in questions]
    before = smol_server.metric("model_server_prefix_cache_reused_tokens_total")
    assert [chat(smol_server, q) for q in questions] == expected
    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(lambda q: chat(smol_server, q), questions)) == expected
    assert smol_server.metric("model_server_prefix_cache_reused_tokens_total") - before >= 5 * 128


class _OneStep:
    """Requests admitted in the same engine step (queued before the engine thread starts), in-process on
    the tiny model: `firsts` is (request, llama_decode calls so far) at each first token in the order
    they were sampled, `texts` every request's output, `computed` the prompt tokens computed."""

    def __init__(self, model, prompts: list[list[int]], *, serial: bool = True, **options) -> None:
        from model_server.engine import Engine, GenRequest
        from model_server.metrics import REGISTRY
        from model_server.sampling import SamplingParams

        firsts: list[tuple[int, float]] = []
        parts: list[list[tuple[int, int, bool]]] = []  # every decode: (request, tokens, prompt rows?)
        decodes = lambda: REGISTRY.get_sample_value("llamacpp:n_decode_total")  # noqa: E731

        class Recording(Engine):
            def _decode(self, part):
                parts.append([(int(s.req.request_id), n, s.next_token is None) for s, n in part])
                super()._decode(part)

            def _on_token(self, slot, tok, lp, now):  # engine thread, right after the decode that sampled it
                if slot.t_last_token is None:
                    firsts.append((int(slot.req.request_id), decodes()))
                super()._on_token(slot, tok, lp, now)

        engine = Recording(model, n_ctx=1024, n_batch=512, n_threads=1, n_gpu_layers=0,
                           max_concurrency=len(prompts), max_queue=0, serial_prefill=serial,
                           **options)  # fmt: skip
        self.texts = [""] * len(prompts)
        done = threading.Semaphore(0)

        def emitter(i: int):
            def emit(ev) -> None:
                self.texts[i] += ev.text
                if ev.kind in ("done", "error"):
                    done.release()

            return emit

        computed = lambda: REGISTRY.get_sample_value("llamacpp:prompt_tokens_total")  # noqa: E731
        before = computed()
        try:
            for i, prompt in enumerate(prompts):
                req = GenRequest(str(i), prompt, 6, SamplingParams(temperature=0.0), [], emitter(i))
                engine.submit(req)
            engine.start()
            for _ in prompts:
                assert done.acquire(timeout=120)
        finally:
            engine.stop()
            engine.close()
        self.firsts, self.computed, self.stats = firsts, computed() - before, engine.kv.stats
        self.parts = parts


def _tokens(model, text: str) -> list[int]:
    from model_server.engine import Engine

    engine = Engine(model, n_ctx=64, n_batch=64, n_threads=1, n_gpu_layers=0, max_concurrency=1, max_queue=0)
    try:
        return engine.tokenize(text, add_special=False, parse_special=False)
    finally:
        engine.close()


def test_requests_admitted_together_get_their_first_tokens_one_after_the_other(tiny_gguf):
    """Serial prefill (the CPU default): one new prompt's tail per step, in a decode of its own before the
    generated tokens, in admission order, so each first token waits for one tail and requests admitted
    together start (and finish) in different steps; all together, every first token waits for the one
    decode of all tails. Greedy outputs are the same either way."""
    words = _tokens(tiny_gguf, PREFIX * 2)
    prompts = [words[i : i + n] for i, n in enumerate((50, 30, 10, 40))]  # admission order
    serial, joint = _OneStep(tiny_gguf, prompts), _OneStep(tiny_gguf, prompts, serial=False)
    assert [i for i, _ in serial.firsts] == [0, 1, 2, 3]
    start = serial.firsts[0][1] - 1
    # Step 1: tail 0. Step 2: tail 1, then request 0's second token. Step 3: tail 2, then 0 and 1...
    assert [n - start for _, n in serial.firsts] == [1, 2, 4, 6]
    assert len({n for _, n in joint.firsts}) == 1  # one decode gave all four first tokens
    assert serial.texts == joint.texts and all(serial.texts)


def test_requests_admitted_in_one_step_compute_a_shared_prefix_once(tiny_gguf):
    """Whatever the arrival timing, requests admitted in the same step with a common prefix: the first
    computes it, the others wait for it and copy it (deterministic: all queued before the engine runs)."""
    from model_server.kvcache import common_prefix

    prompts = [_tokens(tiny_gguf, PREFIX * 2 + s) for s in SUFFIXES[:4]]
    step = _OneStep(tiny_gguf, prompts)
    shared = min(common_prefix(prompts[0], p) for p in prompts[1:])
    reused = shared - shared % 64
    assert reused >= 384
    assert (step.stats.hits, step.stats.copies, step.stats.reused_tokens) == (3, 3, 3 * reused)
    assert step.computed == sum(len(p) for p in prompts) - 3 * reused
    alone = [_OneStep(tiny_gguf, [p]).texts[0] for p in prompts]
    assert step.texts == alone


# ---------------------------------------------------------------------- without flash attention
@pytest.fixture(scope="module")
def reference_noflash(tmp_path_factory, tiny_gguf):
    """The reference without flash attention (it rounds differently from the flash-attention one)."""
    from conftest import Server

    server = Server(
        tiny_gguf,
        tmp_path_factory.mktemp("ref-noflash"),
        max_concurrency=4,
        n_ctx=1024,
        prefix_cache=False,
        flash_attn="off",
    )
    server.wait_ready()
    yield server
    assert server.stop() == 0


@pytest.mark.parametrize("flash_attn", ["auto", "off"])
def test_prompt_rows_past_whole_blocks_are_reused_and_outputs_equal(request, start_server, flash_attn):
    """Reuse is not only whole 64-token blocks: a few shared tokens in place, a prompt that extends the
    previous one down to its last two tokens (with flash attention: when its whole blocks end where the
    previous prompt's do), a conversation's previous prompt, a prefix computed once for requests arriving
    together; every output equals the reference computed from scratch with the same attention."""
    from model_server.kvcache import common_prefix

    ref = request.getfixturevalue("reference" if flash_attn == "auto" else "reference_noflash")
    server = start_server(max_concurrency=4, n_ctx=1024, flash_attn=flash_attn)

    def tokens(prompt: str) -> list[int]:
        body = {"content": prompt, "add_special": True, "parse_special": False}
        return server.client.post("/tokenize", json=body).json()["tokens"]

    def same(prompt: str) -> dict[str, float]:
        """Complete on both servers, compare, and return the metrics' change on ours."""
        before = metrics(server)
        assert text(server, prompt) == text(ref, prompt), prompt
        return delta(metrics(server), before)

    same("the model hello")
    d = same("the model world")  # a few tokens of the entry in place: fewer than a block
    shared = common_prefix(tokens("the model hello"), tokens("the model world"))
    assert 0 < shared < 64
    assert d["model_server_prefix_cache_reused_tokens_total"] == shared
    assert d["model_server_prefix_cache_hits_total"] == 1

    same(PREFIX + "hello world")
    d = same(PREFIX + "hello world!")  # the previous prompt and one token: all but the last two reused
    n = len(tokens(PREFIX + "hello world!"))
    assert n % 64 not in (0, 1)  # not whole blocks: flash attention's rule would reuse fewer
    assert d["model_server_prefix_cache_reused_tokens_total"] == n - 2
    assert d["llamacpp:prompt_tokens_total"] == 2

    answer = text(server, PREFIX + "you poem")
    same(PREFIX + "you poem" + answer + " and the model")  # the next turn: the previous prompt is reused

    prompts = [PREFIX * 2 + s for s in SUFFIXES[:4]]
    expected = [text(ref, p) for p in prompts]
    before = metrics(server)
    with ThreadPoolExecutor(4) as pool:  # together: the first computes the prefix, the others copy it
        assert list(pool.map(lambda p: text(server, p), prompts)) == expected
    assert delta(metrics(server), before)["model_server_prefix_cache_copies_total"] >= 1


def test_without_flash_attention_prompt_rows_never_share_a_decode_or_go_alone(tiny_gguf):
    """The rule that makes any prefix exact without flash attention: every prompt decode holds one
    sequence's rows, at least two of them (only a one-token prompt has one), and generated tokens never
    share it; a chunk never leaves a single prompt token behind. Request 1 waits for request 0's 70
    tokens, copies them, then reads its other 129 while request 0 generates, 64 a step: 64, 63, 2.
    Greedy output equals each request decoded alone (its prompt in one chunk)."""
    words = _tokens(tiny_gguf, PREFIX * 2)
    prompts = [words[:70], words[:199], words[:1], words[40:77]]
    pair = _OneStep(tiny_gguf, prompts[:2], flash_attn="off", prefill_chunk=64)
    assert (pair.stats.copies, pair.stats.reused_tokens) == (1, 70)
    chunks = [n for part in pair.parts for r, n, is_prompt in part if r == 1 and is_prompt]
    assert chunks == [64, 63, 2]
    every = _OneStep(tiny_gguf, prompts, flash_attn="off", prefill_chunk=64)
    for step in (pair, every):
        prompt_decodes = [part for part in step.parts if any(is_prompt for _, _, is_prompt in part)]
        assert all(len(part) == 1 for part in prompt_decodes), prompt_decodes
        for part in prompt_decodes:
            request, n, _ = part[0]
            assert n >= 2 or len(prompts[request]) == 1
    alone = [_OneStep(tiny_gguf, [p], flash_attn="off").texts[0] for p in prompts]
    assert every.texts == alone and all(alone) and pair.texts == alone[:2]
