"""Continuous-batching llama.cpp engine.

One engine thread owns the llama.cpp model, context and batch (none of them is thread-safe). Requests are
queued from the asyncio side; between two `llama_decode` steps the engine admits waiting requests into free
slots. Each slot is one KV-cache sequence (`seq_id` = slot index, per-sequence KV streams so a sequence's
numerics do not depend on its neighbours), decoded together with the others in one batch per step: one
token per generating slot plus prompt chunks of newly admitted slots, up to `n_batch` tokens. A finished or
cancelled sequence is removed from the KV cache at once and its slot is reused.

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

from model_server import logs, metrics
from model_server.sampling import SamplingParams, build_sampler

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
    """Engine-thread state of one active sequence."""

    def __init__(self, seq_id: int, req: GenRequest, sampler: Any) -> None:
        self.seq_id = seq_id
        self.req = req
        self.sampler = sampler
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
    ) -> None:
        self.model_path = model_path
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
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
        # Per-sequence KV streams: each slot gets n_ctx cells of its own, and its attention never sees
        # (or sums over) the other sequences' cells, so greedy output does not depend on the batch.
        cparams.kv_unified = False
        cparams.n_seq_max = max_concurrency
        cparams.n_ctx = n_ctx * max_concurrency
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
        self._free_seq_ids = list(range(max_concurrency))
        self._slots: dict[int, _Slot] = {}
        log.info(
            "model loaded",
            extra={
                "model": str(model_path),
                "n_ctx_seq": self.n_ctx_seq,
                "n_batch": self.n_batch,
                "slots": max_concurrency,
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
        """Move queued requests into free slots (engine thread, lock held)."""
        while self._pending and self._free_seq_ids:
            req = self._pending.popleft()
            if req.cancelled.is_set():
                self._finish_unslotted(req)
                continue
            seq_id = self._free_seq_ids.pop(0)
            slot = _Slot(seq_id, req, build_sampler(req.sampling, self.n_vocab, req.prompt_tokens))
            self._slots[seq_id] = slot
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
                slots = list(self._slots.values())

            for slot in slots:
                if slot.req.cancelled.is_set():
                    self._release(slot, "cancelled")
            slots = [s for s in slots if s.seq_id in self._slots]
            if not slots:
                continue
            n, n_prompt_tokens = self._build_batch(slots)
            if n == 0:
                continue
            self.batch.n_tokens = n
            rc = llama_cpp.llama_decode(self.ctx, self.batch)
            metrics.DECODE_STEPS.inc()
            if rc != 0:
                # 1 = no KV slot for the batch, 2 = aborted, <0 = error: fail the sequences of this step.
                log.error("llama_decode failed", extra={"rc": rc, "n_tokens": n})
                for slot in slots:
                    self._release(slot, None, error=f"decode failed (rc={rc})")
                continue
            if n_prompt_tokens:
                metrics.PROMPT_TOKENS.inc(n_prompt_tokens)
            self._sample(slots)
            self._update_kv_usage()

    def _build_batch(self, slots: list[_Slot]) -> tuple[int, int]:
        """Fill the batch: one token per generating slot first, then prompt chunks up to n_batch.

        Returns (tokens in the batch, prompt tokens counted in the metrics)."""
        n = 0
        for slot in slots:
            slot.batch_index = None
            if slot.next_token is not None:
                self._batch_add(n, slot.next_token, slot.n_past, slot.seq_id, True)
                slot.batch_index = n
                slot.n_past += 1
                slot.next_token = None
                n += 1
        n_prompt_tokens = 0
        for slot in slots:
            if not slot.prefilling or n >= self.n_batch:
                continue
            prompt = slot.req.prompt_tokens
            take = min(len(prompt) - slot.n_prompt_done, self.n_batch - n)
            for i in range(take):
                pos = slot.n_prompt_done + i
                last = pos == len(prompt) - 1
                self._batch_add(n, prompt[pos], pos, slot.seq_id, last)
                if last:
                    slot.batch_index = n
                n += 1
            slot.n_prompt_done += take
            slot.n_past += take
            if slot.req.record_metrics:
                n_prompt_tokens += take
        return n, n_prompt_tokens

    def _sample(self, slots: list[_Slot]) -> None:
        """Sample the next token of every slot whose logits the last decode produced."""
        now = time.perf_counter()
        for slot in slots:
            if slot.batch_index is None:
                continue
            tok = llama_cpp.llama_sampler_sample(slot.sampler, self.ctx, slot.batch_index)
            self._on_token(slot, tok, now)

    def _update_kv_usage(self) -> None:
        """llamacpp:kv_cache_usage_ratio: KV cells holding tokens over all cells (every slot's context)."""
        used = sum(slot.n_past for slot in list(self._slots.values()))
        metrics.KV_CACHE_USAGE.set(used / (self.n_ctx_seq * self.max_concurrency))

    def _batch_add(self, i: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
        b = self.batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq_id
        b.logits[i] = logits

    def _on_token(self, slot: _Slot, tok: int, now: float) -> None:
        req = slot.req
        if req.record_metrics:
            if slot.t_last_token is None:
                metrics.TTFT.observe(now - req.t_enqueued)
            else:
                metrics.INTER_TOKEN.observe(now - slot.t_last_token)
        slot.t_last_token = now

        if llama_cpp.llama_vocab_is_eog(self.vocab, tok):
            self._release(slot, "stop")
            return
        slot.n_generated += 1
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
            req.emit(Event("delta", text=slot.text[slot.sent : safe]))
            slot.sent = safe
        slot.next_token = tok

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
        """Free the slot and its KV cells, then tell the consumer (engine thread)."""
        llama_cpp.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
        llama_cpp.llama_sampler_free(slot.sampler)
        with self._lock:
            self._slots.pop(slot.seq_id, None)
            self._free_seq_ids.append(slot.seq_id)
            self._free_seq_ids.sort()
            self._inflight -= 1
            metrics.REQUESTS_PROCESSING.set(len(self._slots))
        req = slot.req
        if error is not None:
            req.emit(Event("error", message=error))
            return
        self._update_kv_usage()
        if finish_reason == "cancelled":
            self._emit_cancelled(req, slot.n_generated)
            return
        tail = slot.decoder.decode(b"", final=True) if finish_reason == "length" else ""
        text = slot.text + tail
        if len(text) > slot.sent:
            req.emit(Event("delta", text=text[slot.sent :]))
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
