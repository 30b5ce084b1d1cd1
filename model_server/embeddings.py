"""`POST /v1/embeddings`: sentence embeddings from the served model, on a llama.cpp context of their own.

The generation engine's context never computes embeddings; this one does, on its own thread, so embedding
traffic never enters the generation batch. Its admission is separate too: at most
MODEL_SERVER_EMBEDDINGS_MAX_INFLIGHT requests are accepted at once (running or waiting), the rest get a
429 at once, and it computes with MODEL_SERVER_EMBEDDINGS_N_THREADS threads, so a burst of embedding
requests cannot take the generation's slots, queue places or all of its CPU.

Pooling is the model's: the GGUF's `<arch>.pooling_type` (embedding models set it: mean, CLS, last).
Causal language models have none; for them the token vectors are averaged (mean pooling, as llama-server's
`--pooling mean`). Every vector is L2-normalized (as OpenAI's): cosine similarity is a dot product.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import llama_cpp
import numpy as np

from model_server import metrics

log = logging.getLogger("model_server.embeddings")

POOLING_NAMES = {
    llama_cpp.LLAMA_POOLING_TYPE_MEAN: "mean",
    llama_cpp.LLAMA_POOLING_TYPE_CLS: "cls",
    llama_cpp.LLAMA_POOLING_TYPE_LAST: "last",
    llama_cpp.LLAMA_POOLING_TYPE_RANK: "rank",
}


class EmbeddingsBusy(Exception):
    """MODEL_SERVER_EMBEDDINGS_MAX_INFLIGHT requests are in flight (HTTP 429)."""


class InputTooLong(ValueError):
    """An input has more tokens than the embedding context holds (HTTP 400)."""


class Embedder:
    """Owns the embedding context. `embed()` runs on its single worker thread; `admit()` from anywhere."""

    def __init__(self, model: Any, model_meta: Any, *, n_ctx: int, n_threads: int, max_inflight: int) -> None:
        """`model`: the loaded llama.cpp model (shared with the generation context, read-only weights);
        `model_meta(key)`: GGUF metadata lookup; `n_ctx`: most tokens of one input."""
        self.max_inflight = max_inflight
        self._inflight = 0
        self._lock = threading.Lock()
        arch = model_meta("general.architecture") or ""
        declared = model_meta(f"{arch}.pooling_type")
        cparams = llama_cpp.llama_context_default_params()
        cparams.embeddings = True
        cparams.pooling_type = (
            llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED
            if declared not in (None, "0")
            else llama_cpp.LLAMA_POOLING_TYPE_MEAN
        )
        # One input per decode, whole in one micro-batch (pooling needs every token of a sequence together).
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_ctx
        cparams.n_ubatch = n_ctx
        cparams.n_seq_max = 1
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        cparams.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(model, cparams)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create the embedding context")
        self.n_ctx = int(llama_cpp.llama_n_ctx(self.ctx))
        self.n_embd = int(llama_cpp.llama_model_n_embd(model))
        self.pooling = POOLING_NAMES.get(llama_cpp.llama_pooling_type(self.ctx), "none")
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(self.n_ctx, 0, 1)
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="embeddings")
        log.info(
            "embeddings ready", extra={"n_embd": self.n_embd, "pooling": self.pooling, "n_ctx": self.n_ctx}
        )

    def admit(self) -> None:
        """Take an in-flight place or raise EmbeddingsBusy; pair with `done()`."""
        with self._lock:
            if self._inflight >= self.max_inflight:
                raise EmbeddingsBusy(f"{self.max_inflight} embedding requests in flight")
            self._inflight += 1
            metrics.EMBEDDINGS_INFLIGHT.set(self._inflight)

    def done(self) -> None:
        with self._lock:
            self._inflight -= 1
            metrics.EMBEDDINGS_INFLIGHT.set(self._inflight)

    @property
    def executor(self) -> ThreadPoolExecutor:
        return self._worker

    def embed(self, inputs: list[list[int]]) -> np.ndarray:
        """L2-normalized embeddings (one row per input) of token lists (worker thread only)."""
        out = np.zeros((len(inputs), self.n_embd), dtype=np.float32)
        for i, tokens in enumerate(inputs):
            if not tokens:
                raise InputTooLong(f"input[{i}] is empty after tokenization")
            if len(tokens) > self.n_ctx:
                raise InputTooLong(
                    f"input[{i}] has {len(tokens)} tokens; an embedding input holds at most {self.n_ctx} "
                    "(MODEL_SERVER_N_CTX)"
                )
            llama_cpp.llama_memory_clear(self.memory, True)
            b = self.batch
            for pos, tok in enumerate(tokens):
                b.token[pos] = tok
                b.pos[pos] = pos
                b.n_seq_id[pos] = 1
                b.seq_id[pos][0] = 0
                b.logits[pos] = True
            b.n_tokens = len(tokens)
            rc = llama_cpp.llama_decode(self.ctx, b)
            if rc != 0:
                raise RuntimeError(f"embedding decode failed (rc={rc})")
            ptr = llama_cpp.llama_get_embeddings_seq(self.ctx, 0)
            vec = np.ctypeslib.as_array(ptr, shape=(self.n_embd,)).astype(np.float32)
            norm = float(np.linalg.norm(vec))
            out[i] = vec / norm if norm > 0 else vec
            metrics.EMBEDDING_TOKENS.inc(len(tokens))
        return out

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)
