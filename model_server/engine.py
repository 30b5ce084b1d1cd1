"""Continuous-batching llama.cpp engine.

One engine thread owns the llama.cpp model, context and batch (none of them is thread-safe). Requests are
queued from the asyncio side; between two `llama_decode` steps the engine admits waiting requests into free
slots. Each slot owns one KV-cache sequence (per-sequence KV streams so a sequence's numerics do not
depend on its neighbours, `model_server.kvcache`), decoded together with the others in one batch per step:
one token per generating slot plus prompt chunks of slots still reading their prompt. While any slot is
generating, prompt chunks are capped at `prefill_chunk` tokens per step (chunked prefill), so a long prompt
delays the running streams' next token by one short step at a time, not by the whole prompt.

Prefix reuse: a new request's prompt starts from the longest prefix that some sequence already holds (a
running one, or a recently finished one kept as a cache entry), in place or copied (`kvcache.KvCache`);
requests arriving together with the same long prefix compute it once. A cancelled sequence is freed at
once; a finished one stays cached until its sequence is needed.

Sampling is per sequence (`sampling.SeqSampler`: its chain, grammar, logit bias, banned end tokens), on
its own row of each decode's logits, so grammar-constrained, log-probability and plain sequences decode in
the same batch (model_server_decode_sampling_mix_total counts which kinds shared each decode).

Admission is two-phase so that a refusal costs nothing: `reserve()` takes a place (or raises Overloaded /
Draining at once) before the caller spends CPU on the prompt, then `Reservation.submit()` queues the
tokenized request. A queued request whose client left is removed from the queue at once (`cancel`).

Events go back to the event loop with `loop.call_soon_threadsafe`; the engine never blocks on a client.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ctypes
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

from model_server import logs, metrics
from model_server.kvcache import BLOCK, CacheStats, KvCache, KvSeq
from model_server.sampling import GrammarError, SamplingParams, SeqSampler, TokenLogprob, token_logprob

log = logging.getLogger("model_server.engine")


class EngineError(Exception):
    """Base class of admission errors mapped to HTTP statuses by the API layer."""


class Overloaded(EngineError):
    """All slots busy and the queue full (HTTP 429)."""


class Draining(EngineError):
    """The server is shutting down and admits nothing new (HTTP 503)."""


class PromptTooLong(EngineError):
    """The prompt does not fit into the per-sequence context (HTTP 400)."""


#: Why a request was cancelled (label of model_server_cancelled_requests_total).
CLIENT_DISCONNECTED = "client_disconnected"
DRAIN_TIMEOUT = "drain_timeout"


@dataclass
class Event:
    """One message from the engine to a request's consumer."""

    kind: str  # "delta" | "done" | "error"
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    message: str = ""
    code: str | None = None  # errors: "drain_timeout" (cut off by the shutdown) or None (engine failure)
    logprobs: list[TokenLogprob] | None = None  # deltas of requests with sampling.n_logprobs: their tokens'
    index: int = 0  # the choice (of a request with n > 1) this event belongs to; set by the consumer


@dataclass(eq=False)
class GenRequest:
    """A generation request travelling from the API to the engine thread."""

    request_id: str
    prompt_tokens: list[int]
    max_tokens: int
    sampling: SamplingParams
    stop: list[str]
    emit: Callable[[Event], None]
    completion_id: str = ""  # the id the client sees (unique per completion); request_id is for logs
    t_enqueued: float = field(default_factory=time.perf_counter)
    cancelled: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str | None = None
    record_metrics: bool = True  # False for the warm-up request

    def cancel(self, reason: str = CLIENT_DISCONNECTED) -> None:
        """Flag the request; the engine ends it at its next step (`Engine.cancel` also dequeues it)."""
        if not self.cancelled.is_set():
            self.cancel_reason = reason
            self.cancelled.set()


@dataclass(frozen=True)
class Health:
    """The engine's liveness: `ok` while its thread runs and llama.cpp has not failed."""

    ok: bool
    detail: str = ""


class _Slot:
    """Engine-thread state of one active request and the KV-cache sequence it owns."""

    def __init__(self, kv: KvSeq, req: GenRequest, order: int) -> None:
        self.kv = kv
        self.seq_id = kv.seq_id
        self.req = req
        self.order = order  # admission order: earlier requests are placed and prefilled first
        self.sampler: SeqSampler | None = None  # built when the slot is placed
        self.logprobs: list[TokenLogprob] = []  # of tokens whose text was not sent yet
        self.placed = False  # False while it waits for an earlier request's prefix (kvcache.place)
        self.n_past = 0  # tokens already in the KV cache
        self.n_prompt_done = 0
        self.next_token: int | None = None  # sampled, not yet fed back
        self.batch_index: int | None = None  # output row of the last decode for this slot
        self.n_generated = 0
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""
        self.sent = 0
        self.t_started = time.perf_counter()
        self.t_last_token: float | None = None

    @property
    def prefilling(self) -> bool:
        return self.n_prompt_done < len(self.req.prompt_tokens)


class _LlamaKvOps:
    """`kvcache.KvOps` on a llama.cpp memory: a sequence copy is a stream copy done at the next decode."""

    def __init__(self, memory: Any) -> None:
        self.memory = memory

    def copy(self, src: int, dst: int) -> None:
        llama_cpp.llama_memory_seq_cp(self.memory, src, dst, -1, -1)

    def truncate(self, seq_id: int, n: int) -> None:
        llama_cpp.llama_memory_seq_rm(self.memory, seq_id, n, -1)


class Engine:
    """Owns llama.cpp. `submit()` from the event loop; everything else runs on the engine thread."""

    def __init__(
        self,
        model_path: Path,
        *,
        n_ctx: int,
        n_batch: int,
        n_threads: int,
        n_gpu_layers: int,
        max_concurrency: int,
        max_queue: int,
        flash_attn: str = "auto",
        prefix_cache: bool = True,
        cache_seqs: int = 0,
        prefill_chunk: int = 256,
        serial_prefill: bool = True,
    ) -> None:
        """`prefix_cache`: reuse KV of running and finished sequences; `cache_seqs`: extra KV sequences
        that only keep finished requests' tokens for reuse (n_ctx cells each); `prefill_chunk`: most prompt
        tokens per step while other sequences are generating; `serial_prefill`: compute new requests'
        prompt tails one request per decode, shortest first, before the generated tokens (`_plan`)."""
        self.model_path = model_path
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.prefill_chunk = prefill_chunk
        self.serial_prefill = serial_prefill
        self._lock = threading.Condition()
        self._pending: deque[GenRequest] = deque()
        self._inflight = 0  # accepted and not finished (queued + active)
        self._draining = False
        self._stop = False
        self._thread: threading.Thread | None = None
        self._fatal: str | None = None

        logs.route_llama_logs()
        llama_cpp.llama_backend_init()
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = n_gpu_layers
        self.model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), mparams)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load the model {model_path}")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)

        cparams = llama_cpp.llama_context_default_params()
        # Per-sequence KV streams: each sequence gets n_ctx cells of its own, and its attention never sees
        # (or sums over) the other sequences' cells, so greedy output does not depend on the batch.
        # Recurrent and hybrid models keep a state, not per-token cells: their prefixes cannot be cut.
        n_seqs = max_concurrency + cache_seqs
        cparams.kv_unified = False
        cparams.n_seq_max = n_seqs
        cparams.n_ctx = n_ctx * n_seqs
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        cparams.no_perf = True
        cparams.flash_attn_type = {
            "auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
            "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
            "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
        }[flash_attn]
        self.ctx = llama_cpp.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            llama_cpp.llama_model_free(self.model)
            raise RuntimeError("llama.cpp could not create a context (out of memory for the KV cache?)")
        self.n_ctx_seq = int(llama_cpp.llama_n_ctx_seq(self.ctx))
        self.n_batch = int(llama_cpp.llama_n_batch(self.ctx))
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.bos_id = llama_cpp.llama_vocab_bos(self.vocab)
        self.eos_id = llama_cpp.llama_vocab_eos(self.vocab)
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.bos_text = self.token_text(self.bos_id) if self.bos_id >= 0 else ""
        self.eos_text = self.token_text(self.eos_id) if self.eos_id >= 0 else ""
        #: End-of-generation token ids (banned by min_tokens / ignore_eos).
        self.eog_ids = np.array(
            [t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self.vocab, t)], dtype=np.int64
        )
        reuse = prefix_cache and not (
            llama_cpp.llama_model_is_recurrent(self.model) or llama_cpp.llama_model_is_hybrid(self.model)
        )
        # How prompt rows come out the same with and without reuse (model_server.kvcache, "Exact reuse"):
        # with flash attention, in whole blocks of BLOCK rows (below BLOCK rows per micro-batch every row is
        # computed row by row and any prefix is exact); without it, in chunks of at least two rows of one
        # sequence, each in a decode of its own.
        self.lone_prompt_decodes = flash_attn == "off"
        if self.lone_prompt_decodes:
            block, min_rows = 1, 2
        else:
            block, min_rows = (BLOCK if self.n_batch >= BLOCK else 1), 1
        #: A prompt's last part below this many tokens is its tail (`_plan`).
        self.tail_rows = BLOCK if self.n_batch >= BLOCK else 1
        self.kv = KvCache(
            n_seqs, self.n_ctx_seq, _LlamaKvOps(self.memory), reuse=reuse, block=block, min_rows=min_rows
        )
        self._stats_seen = CacheStats()  # kv.stats already counted in the metrics
        self._slots: dict[int, _Slot] = {}  # by seq_id
        self._admitted = 0  # admission counter (_Slot.order)
        log.info(
            "model loaded",
            extra={
                "model": str(model_path),
                "n_ctx_seq": self.n_ctx_seq,
                "n_batch": self.n_batch,
                "slots": max_concurrency,
                "kv_sequences": n_seqs,
                "prefix_cache": reuse,
                "prefill_chunk": prefill_chunk,
                "serial_prefill": serial_prefill,
                "flash_attn": flash_attn,
                "n_threads": n_threads,
                "n_gpu_layers": n_gpu_layers,
            },
        )

    # ------------------------------------------------------------------ model helpers (any thread, read-only)
    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(65536)
        n = llama_cpp.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            llama_cpp.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace")

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode("utf-8")
        n_max = len(data) + 8
        arr = (llama_cpp.llama_token * n_max)()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), arr, n_max, add_special, parse_special)
        if n < 0:
            n_max = -n
            arr = (llama_cpp.llama_token * n_max)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), arr, n_max, add_special, parse_special)
        if n < 0:
            raise ValueError("tokenization failed")
        return list(arr[:n])

    def token_bytes(self, token: int, *, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def token_text(self, token: int) -> str:
        return self.token_bytes(token, special=True).decode("utf-8", errors="replace")

    # ------------------------------------------------------------------ admission (event-loop thread)
    @property
    def draining(self) -> bool:
        return self._draining

    def health(self) -> Health:
        """Liveness: an engine failure (or a dead engine thread once started) is unhealthy."""
        if self._fatal:
            return Health(False, self._fatal)
        if self._thread is not None and not self._thread.is_alive() and not self._stop:
            return Health(False, "engine thread stopped")
        return Health(True)

    def stats(self) -> tuple[int, int]:
        """(active sequences, queued requests)."""
        with self._lock:
            return len(self._slots), len(self._pending)

    def inflight(self) -> int:
        with self._lock:
            return self._inflight

    def reserve(self) -> Reservation:
        """Take a place among the accepted requests, or raise Overloaded/Draining at once; never waits.

        Cheap on purpose: callers reserve before they render or tokenize a prompt."""
        with self._lock:
            if self._draining:
                raise Draining("the server is shutting down")
            if self._fatal:
                raise EngineError(self._fatal)
            if self._inflight >= self.max_concurrency + self.max_queue:
                raise Overloaded(
                    f"all {self.max_concurrency} slots are busy and the queue ({self.max_queue}) is full"
                )
            self._inflight += 1
        return Reservation(self)

    def submit(self, req: GenRequest) -> None:
        """Reserve and queue in one call (warm-up, tests); raises like `reserve` and `Reservation.submit`."""
        reservation = self.reserve()
        try:
            reservation.submit(req)
        finally:
            reservation.release()

    def check_prompt(self, n_tokens: int) -> None:
        """Raise PromptTooLong unless a prompt of n_tokens leaves room for output in one slot."""
        if n_tokens == 0:
            raise PromptTooLong("the prompt is empty after tokenization")
        if n_tokens >= self.n_ctx_seq:
            raise PromptTooLong(
                f"the prompt has {n_tokens} tokens; the context holds {self.n_ctx_seq} tokens "
                f"per request (MODEL_SERVER_N_CTX), leaving no room for output"
            )

    def _enqueue(self, req: GenRequest) -> None:
        """Queue a reserved request (its place is already counted in _inflight)."""
        with self._lock:
            if self._fatal:
                raise EngineError(self._fatal)
            self._pending.append(req)
            metrics.REQUESTS_DEFERRED.set(len(self._pending))
            self._lock.notify()

    def _unreserve(self) -> None:
        with self._lock:
            self._inflight -= 1

    def cancel(self, req: GenRequest, reason: str = CLIENT_DISCONNECTED) -> None:
        """End a request early (any thread). A queued one leaves the queue now, freeing its place and the
        llamacpp:requests_deferred gauge at once; a generating one is released at the next engine step."""
        req.cancel(reason)
        with self._lock:
            try:
                self._pending.remove(req)
            except ValueError:
                if not self._stop:
                    self._lock.notify()
                return
            self._inflight -= 1
            metrics.REQUESTS_DEFERRED.set(len(self._pending))
        self._emit_cancelled(req, 0)

    def cancel_all(self, reason: str = DRAIN_TIMEOUT) -> None:
        """Cancel every accepted request (drain timeout): each ends with an error event (code: reason)."""
        with self._lock:
            pending = list(self._pending)
            active = [slot.req for slot in self._slots.values()]
        for req in pending + active:
            self.cancel(req, reason)

    def start_draining(self) -> None:
        with self._lock:
            self._draining = True

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="llama-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.cancel_all(DRAIN_TIMEOUT)
        with self._lock:
            self._stop = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def close(self) -> None:
        """Free llama.cpp resources; only after stop()."""
        if self._thread is not None and self._thread.is_alive():
            return
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)
        llama_cpp.llama_model_free(self.model)

    # ------------------------------------------------------------------ engine thread
    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # a llama.cpp failure: fail everything loudly, never hang clients
            log.exception("engine thread failed")
            with self._lock:
                self._fatal = f"engine failure: {exc}"
                victims = [s.req for s in self._slots.values()] + list(self._pending)
                self._pending.clear()
            for req in victims:
                req.emit(Event("error", message="internal engine error"))
            metrics.REQUESTS_DEFERRED.set(0)
            metrics.REQUESTS_PROCESSING.set(0)

    def _admit(self) -> None:
        """Move queued requests into free slots, each with a KV-cache sequence (engine thread, lock held)."""
        while self._pending and len(self._slots) < self.max_concurrency:
            req = self._pending.popleft()
            if req.cancelled.is_set():
                self._finish_unslotted(req)
                continue
            kv = self.kv.acquire(req.prompt_tokens)
            self._admitted += 1
            slot = _Slot(kv, req, self._admitted)
            self._slots[kv.seq_id] = slot
            if req.record_metrics:
                metrics.QUEUE_TIME.observe(slot.t_started - req.t_enqueued)
        metrics.REQUESTS_DEFERRED.set(len(self._pending))
        metrics.REQUESTS_PROCESSING.set(len(self._slots))

    def _finish_unslotted(self, req: GenRequest) -> None:
        self._inflight -= 1
        self._emit_cancelled(req, 0)

    def _emit_cancelled(self, req: GenRequest, n_generated: int) -> None:
        """Tell a cancelled request's consumer; a drain cut-off is an error the client must see."""
        reason = req.cancel_reason or CLIENT_DISCONNECTED
        if req.record_metrics:
            metrics.CANCELLED.labels(reason=reason).inc()
        if reason == DRAIN_TIMEOUT:
            req.emit(
                Event(
                    "error",
                    message="the server shut down before this request finished "
                    "(MODEL_SERVER_DRAIN_TIMEOUT_S ran out); retry it",
                    code=DRAIN_TIMEOUT,
                    prompt_tokens=len(req.prompt_tokens),
                    completion_tokens=n_generated,
                )
            )
            return
        req.emit(
            Event(
                "done",
                finish_reason="cancelled",
                prompt_tokens=len(req.prompt_tokens),
                completion_tokens=n_generated,
            )
        )

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._slots and not self._stop:
                    self._lock.wait()
                if self._stop and not self._slots and not self._pending:
                    return
                if self._stop:
                    for req in self._pending:
                        req.cancel(DRAIN_TIMEOUT)
                self._admit()
                slots = sorted(self._slots.values(), key=lambda s: s.order)

            for slot in slots:
                if slot.req.cancelled.is_set():
                    self._release(slot, "cancelled")
            slots = [s for s in slots if s.seq_id in self._slots]
            if not slots:
                continue
            self._place(slots)
            slots = [s for s in slots if s.seq_id in self._slots]  # _place fails a sampler it cannot build
            decodes = self._plan(slots)
            if decodes:
                metrics.STEP_TOKENS.observe(sum(n for part in decodes for _, n in part))
            # Each decode's logits are sampled (and a request's first token sent) before the next decode
            # overwrites them.
            for part in decodes:
                self._decode(part)
            self._update_kv_usage()

    def _place(self, slots: list[_Slot]) -> None:
        """Give newly admitted requests their reusable prefix, in admission order, before anything of this
        step is added to the batch (a sequence copy is taken when the next decode starts). A request
        whose prefix an earlier one is still computing waits for it."""
        ahead: list[list[int]] = []  # prompts that earlier requests are still computing
        for slot in slots:
            if not slot.placed:
                placement = self.kv.place(slot.kv, slot.req.prompt_tokens, ahead)
                if placement is not None:
                    slot.placed = True
                    slot.n_past = slot.n_prompt_done = placement.n_reused
                    req = slot.req
                    try:
                        slot.sampler = SeqSampler(
                            req.sampling, self.vocab, self.n_vocab, self.eog_ids, req.prompt_tokens
                        )
                    except GrammarError as exc:  # the API checks grammars first: not expected here
                        self._release(slot, None, error=str(exc))
                        continue
                    if placement.n_reused and req.record_metrics:
                        metrics.PREFIX_HITS.inc()
                        metrics.PREFIX_REUSED_TOKENS.inc(placement.n_reused)
            if not slot.placed or slot.prefilling:
                ahead.append(slot.req.prompt_tokens)
        stats, seen = self.kv.stats, self._stats_seen
        metrics.PREFIX_COPIES.inc(stats.copies - seen.copies)
        metrics.PREFIX_EVICTIONS.inc(stats.evictions - seen.evictions)
        seen.copies, seen.evictions = stats.copies, stats.evictions

    def _plan(self, slots: list[_Slot]) -> list[list[tuple[_Slot, int]]]:
        """This step's decodes in order, each a list of (slot, tokens) of at most n_batch tokens:

        1. prompt tails (a prompt's last part below `tail_rows` tokens: cheap, and it gives its request its
           first token). With `serial_prefill` one tail per step (admission order), in a decode of its own
           before the generated tokens: on a CPU a decode costs about its tokens, so a request's first
           token then waits for one tail, not for every tail admitted with it, and requests that arrived
           together get their first tokens, and so finish, in different steps (their clients' next requests
           do not arrive together again). Else all tails, together with the generated tokens;
        2. one token per generating slot, row by row;
        3. the rest of the prompts (admission order): whole blocks, in a decode of their own (kvcache: the
           same kernel for a row whatever runs next to it).

        Prompt tokens are capped at n_batch, and at `prefill_chunk` while any slot is generating
        (chunked prefill). Decodes of several slots are in sequence-id order: llama.cpp splits a batch of
        per-sequence streams into micro-batches of consecutive sequence ids, so this order keeps a
        decode in as few of them as possible. Without flash attention (`lone_prompt_decodes`) every prompt
        chunk is a decode of its own and never leaves a single prompt token for later (kvcache)."""
        block, lone = self.kv.block, self.lone_prompt_decodes
        rows = [(s, 1) for s in slots if s.next_token is not None]
        budget = min(self.n_batch, max(block, self.prefill_chunk)) if rows else self.n_batch
        prefilling = [s for s in slots if s.placed and s.prefilling]
        tails: list[tuple[_Slot, int]] = []
        blocks: list[tuple[_Slot, int]] = []
        for slot in prefilling:
            left = len(slot.req.prompt_tokens) - slot.n_prompt_done
            if left < self.tail_rows and left <= budget and not (self.serial_prefill and tails):
                tails.append((slot, left))
                budget -= left
        for slot in prefilling:
            left = len(slot.req.prompt_tokens) - slot.n_prompt_done
            if left < self.tail_rows:
                continue  # a tail: this step's, or a later one's
            take = min(left - left % block, budget - budget % block)
            if 0 < left - take < self.kv.min_rows:
                take = left - self.kv.min_rows  # the last chunk keeps min_rows rows
            if take > 0:
                blocks.append((slot, take))
                budget -= take
        decodes: list[list[tuple[_Slot, int]]] = []
        if lone:
            decodes = [[tail] for tail in tails]
        elif self.serial_prefill:
            decodes = [tails] if tails else []
        else:
            rows += tails
        rows.sort(key=lambda st: st[0].seq_id)
        blocks.sort(key=lambda st: st[0].seq_id)
        return decodes + self._split(rows) + ([[b] for b in blocks] if lone else self._split(blocks))

    def _split(self, part: list[tuple[_Slot, int]]) -> list[list[tuple[_Slot, int]]]:
        """`part` in decodes of at most n_batch tokens (more generating slots than n_batch, or blocks)."""
        out: list[list[tuple[_Slot, int]]] = []
        n = self.n_batch
        for item in part:
            if n + item[1] > self.n_batch:
                out.append([])
                n = 0
            out[-1].append(item)
            n += item[1]
        return out

    def _decode(self, part: list[tuple[_Slot, int]]) -> None:
        """One llama_decode of `part` ((slot, tokens) pairs, at most n_batch tokens), then sample every
        slot whose logits it produced. A failed decode fails the requests in it."""
        if not part:
            return
        n = n_prompt_tokens = 0
        for slot, take in part:
            slot.batch_index = None
            if slot.next_token is not None:
                self._batch_add(n, slot.next_token, slot.n_past, slot.seq_id, True)
                slot.kv.tokens.append(slot.next_token)
                if self.kv.block == 1 and self.kv.min_rows == 1 and slot.kv.exact == slot.n_past:
                    slot.kv.exact = slot.kv.blocks = slot.n_past + 1  # every row row by row: exact too
                slot.batch_index = n
                slot.n_past += 1
                slot.next_token = None
                n += 1
                continue
            prompt = slot.req.prompt_tokens
            start = slot.n_prompt_done
            for pos in range(start, start + take):
                self._batch_add(n, prompt[pos], pos, slot.seq_id, pos == len(prompt) - 1)
                n += 1
            slot.kv.tokens.extend(prompt[start : start + take])
            self._mark_exact(slot.kv, start, take, alone=len(part) == 1)
            if start + take == len(prompt):
                slot.batch_index = n - 1
            slot.n_prompt_done += take
            slot.n_past += take
            if slot.req.record_metrics:
                n_prompt_tokens += take
        self.batch.n_tokens = n
        rc = llama_cpp.llama_decode(self.ctx, self.batch)
        metrics.DECODE_STEPS.inc()
        if rc != 0:
            # 1 = no KV slot for the batch, 2 = aborted, <0 = error: fail the sequences of this decode.
            log.error("llama_decode failed", extra={"rc": rc, "n_tokens": n})
            for slot, _ in part:
                self._release(slot, None, error=f"decode failed (rc={rc})")
            return
        if n_prompt_tokens:
            metrics.PROMPT_TOKENS.inc(n_prompt_tokens)
        kinds = {
            s.sampler.kind
            for s, _ in part
            if s.batch_index is not None and s.sampler and s.req.record_metrics
        }
        if kinds:
            # Which kinds of sampling shared this decode (tests: grammar, logprobs and plain together).
            metrics.DECODE_MIX.labels(kinds="+".join(sorted(kinds))).inc()
        now = time.perf_counter()
        for slot, _ in part:
            if slot.batch_index is not None:
                self._on_token(slot, *self._sample(slot, slot.batch_index), now)

    def _mark_exact(self, kv: KvSeq, start: int, take: int, *, alone: bool) -> None:
        """Extend the sequence's reusable rows by a prompt chunk computed the way a run of the prompt
        computes it (kvcache, "Exact reuse"): whole blocks (or chunks) from position 0, or a tail of two
        rows or more in a decode of its own."""
        if kv.exact != start:
            return
        if take % self.kv.block == 0 and take >= self.kv.min_rows and kv.blocks == start:
            kv.exact = kv.blocks = start + take
        elif take >= 2 and alone:
            kv.exact = start + take

    def _sample(self, slot: _Slot, index: int) -> tuple[int | None, TokenLogprob | None]:
        """The next token from the logits of batch row `index` (None: the grammar is complete), and its
        log-probability when the request asks for them. Plain greedy is an argmax over the logits, first
        maximum as llama.cpp's greedy sampler, without building its 49k-entry candidate list (a tenth of
        the time)."""
        p = slot.req.sampling
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx, index), shape=(self.n_vocab,))
        if p.plain_greedy:
            tok: int | None = int(logits.argmax())
        else:
            assert slot.sampler is not None
            tok = slot.sampler.sample(self.ctx, index, logits, slot.n_generated)
        lp = None
        if p.n_logprobs is not None and tok is not None:
            lp = token_logprob(logits, tok, p.n_logprobs)
        return tok, lp

    def _update_kv_usage(self) -> None:
        """llamacpp:kv_cache_usage_ratio (cells holding tokens, running and cached, over all cells) and the
        tokens of finished requests kept for reuse."""
        metrics.KV_CACHE_USAGE.set(self.kv.used_tokens() / self.kv.capacity())
        metrics.PREFIX_CACHED_TOKENS.set(self.kv.cached_tokens())

    def _batch_add(self, i: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
        b = self.batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq_id
        b.logits[i] = logits

    def _on_token(self, slot: _Slot, tok: int | None, lp: TokenLogprob | None, now: float) -> None:
        req = slot.req
        if req.record_metrics:
            if slot.t_last_token is None:
                metrics.TTFT.observe(now - req.t_enqueued)
            else:
                metrics.INTER_TOKEN.observe(now - slot.t_last_token)
        slot.t_last_token = now

        if tok is None or llama_cpp.llama_vocab_is_eog(self.vocab, tok):
            self._release(slot, "stop")
            return
        slot.n_generated += 1
        if lp is not None:
            slot.logprobs.append(lp)
        if req.record_metrics:
            metrics.PREDICTED_TOKENS.inc()
        slot.text += slot.decoder.decode(self.token_bytes(tok))

        stop_at = self._find_stop(slot)
        if stop_at is not None:
            slot.text = slot.text[:stop_at]
            self._release(slot, "stop")
            return
        if slot.n_generated >= req.max_tokens or slot.n_past + 1 >= self.n_ctx_seq:
            self._release(slot, "length")
            return
        # Hold back a tail that could still become a stop string; send the rest.
        safe = len(slot.text) - self._stop_holdback(slot)
        if safe > slot.sent:
            req.emit(Event("delta", text=slot.text[slot.sent : safe], logprobs=self._take_logprobs(slot)))
            slot.sent = safe
        slot.next_token = tok

    def _take_logprobs(self, slot: _Slot) -> list[TokenLogprob] | None:
        """The log-probabilities gathered since the last delta (they travel with the text they made)."""
        if slot.req.sampling.n_logprobs is None:
            return None
        out, slot.logprobs = slot.logprobs, []
        return out

    def _find_stop(self, slot: _Slot) -> int | None:
        if not slot.req.stop:
            return None
        best: int | None = None
        # Only the unsent region (plus overlap) can hold a new match.
        start = max(0, slot.sent - max(len(s) for s in slot.req.stop))
        for s in slot.req.stop:
            i = slot.text.find(s, start)
            if i >= 0 and (best is None or i < best):
                best = i
        return best

    def _stop_holdback(self, slot: _Slot) -> int:
        hold = 0
        text = slot.text
        for s in slot.req.stop:
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        return hold

    def _release(self, slot: _Slot, finish_reason: str | None, error: str | None = None) -> None:
        """Free the slot, then tell the consumer (engine thread). A finished request's KV cells stay cached
        for reuse (not the warm-up's); a cancelled or failed one's are freed now."""
        keep = finish_reason in ("stop", "length") and slot.req.record_metrics
        self.kv.release(slot.kv, keep=keep)
        if slot.sampler is not None:
            slot.sampler.free()
        with self._lock:
            self._slots.pop(slot.seq_id, None)
            self._inflight -= 1
            metrics.REQUESTS_PROCESSING.set(len(self._slots))
        self._update_kv_usage()
        req = slot.req
        if error is not None:
            req.emit(Event("error", message=error))
            return
        if finish_reason == "cancelled":
            self._emit_cancelled(req, slot.n_generated)
            return
        tail = slot.decoder.decode(b"", final=True) if finish_reason == "length" else ""
        text = slot.text + tail
        if len(text) > slot.sent or slot.logprobs:
            req.emit(Event("delta", text=text[slot.sent :], logprobs=self._take_logprobs(slot)))
        if req.record_metrics:
            metrics.E2E.observe(time.perf_counter() - req.t_enqueued)
        req.emit(
            Event(
                "done",
                finish_reason=finish_reason,
                prompt_tokens=len(req.prompt_tokens),
                completion_tokens=slot.n_generated,
            )
        )

    # ------------------------------------------------------------------ warm-up
    def warmup(self) -> None:
        """Run one real request through the engine thread (graph allocation, first-touch of weights)."""
        done = threading.Event()

        def emit(ev: Event) -> None:
            if ev.kind in ("done", "error"):
                done.set()

        toks = (
            [self.bos_id] if self.bos_id >= 0 else self.tokenize("Hi", add_special=False, parse_special=False)
        )
        req = GenRequest("warmup", toks, 1, SamplingParams(temperature=0.0), [], emit, record_metrics=False)
        self.submit(req)
        if not done.wait(300):
            raise RuntimeError("warm-up did not finish within 300 s")


class Reservation:
    """A place among the accepted requests (from `Engine.reserve`): `submit` it once, or `release` it."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._held = True

    def submit(self, req: GenRequest) -> None:
        """Queue the request under this place; raises PromptTooLong (place still held: release it)."""
        if not self._held:
            raise EngineError("reservation already used or released")
        self._engine.check_prompt(len(req.prompt_tokens))
        self._engine._enqueue(req)
        self._held = False

    def release(self) -> None:
        """Give the place back unless a request was queued with it (idempotent)."""
        if self._held:
            self._held = False
            self._engine._unreserve()


class AsyncStream:
    """Bridges engine events into an asyncio queue for one request."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    def emit(self, ev: Event) -> None:
        # RuntimeError: the event loop is closed (process shutdown), nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.queue.put_nowait, ev)
