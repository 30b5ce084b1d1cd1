"""Prometheus metrics. llama.cpp server names (`llamacpp:*`) where they exist, `model_server_*` otherwise.

One private registry with our metrics plus the standard `process_*` collector; served at GET /metrics in
the classic text format (0.0.4) that every Prometheus version reads, without `*_created` series.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

# `*_created` samples double the series count and confuse older Prometheus versions; nobody queries them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

#: The classic Prometheus text exposition format (what every Prometheus version and agent reads).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def exposition() -> bytes:
    """The registry in the classic text format."""
    return generate_latest(REGISTRY)


# Seconds buckets from a fast CPU token (~1 ms) up to long GPU prompts and long generations.
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

REQUESTS_PROCESSING = Gauge(
    "llamacpp:requests_processing", "Sequences being decoded (busy slots).", registry=REGISTRY
)
REQUESTS_DEFERRED = Gauge(
    "llamacpp:requests_deferred", "Accepted requests waiting for a free slot.", registry=REGISTRY
)
PROMPT_TOKENS = Counter("llamacpp:prompt_tokens", "Prompt tokens processed.", registry=REGISTRY)
PREDICTED_TOKENS = Counter("llamacpp:tokens_predicted", "Generated tokens.", registry=REGISTRY)
DECODE_STEPS = Counter(
    "llamacpp:n_decode",
    "llama_decode calls (per engine step: one per new prompt tail with serial prefill, one for the "
    "generated tokens, one for whole prompt blocks).",
    registry=REGISTRY,
)
KV_CACHE_USAGE = Gauge(
    "llamacpp:kv_cache_usage_ratio",
    "KV cache cells holding tokens (running and cached sequences) over all cells, 0..1.",
    registry=REGISTRY,
)

STEP_TOKENS = Histogram(
    "model_server_step_tokens",
    "Tokens per engine step: one per generating sequence plus prompt tokens (at most "
    "MODEL_SERVER_PREFILL_CHUNK while sequences are generating, else MODEL_SERVER_N_BATCH).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192),
    registry=REGISTRY,
)
DECODE_MIX = Counter(
    "model_server_decode_sampling_mix",
    "llama_decode calls by the kinds of sampling of the sequences they produced logits for (grammar, "
    "logprobs, plain; joined with +): sequences of every kind decode together in one batch.",
    ["kinds"],
    registry=REGISTRY,
)
EMBEDDINGS_INFLIGHT = Gauge(
    "model_server_embeddings_inflight",
    "Embedding requests accepted and not finished (at most MODEL_SERVER_EMBEDDINGS_MAX_INFLIGHT).",
    registry=REGISTRY,
)
EMBEDDING_TOKENS = Counter(
    "model_server_embedding_tokens", "Input tokens embedded by /v1/embeddings.", registry=REGISTRY
)
PREFIX_HITS = Counter(
    "model_server_prefix_cache_hits",
    "Requests whose prompt reused KV cells of a running or finished sequence (at least one token).",
    registry=REGISTRY,
)
PREFIX_REUSED_TOKENS = Counter(
    "model_server_prefix_cache_reused_tokens",
    "Prompt tokens taken from the KV cache instead of being computed.",
    registry=REGISTRY,
)
PREFIX_COPIES = Counter(
    "model_server_prefix_cache_copies",
    "KV sequence copies: a prefix copied into a new request's sequence, or a cached entry moved.",
    registry=REGISTRY,
)
PREFIX_EVICTIONS = Counter(
    "model_server_prefix_cache_evictions",
    "Cached entries (finished requests' KV) dropped because their sequence was needed.",
    registry=REGISTRY,
)
PREFIX_CACHED_TOKENS = Gauge(
    "model_server_prefix_cache_tokens",
    "KV cells held by finished requests, kept for prefix reuse (dropped when their sequence is needed).",
    registry=REGISTRY,
)

TTFT = Histogram(
    "model_server_time_to_first_token_seconds",
    "From admission to the first generated token (includes queue time and prompt processing).",
    buckets=_LATENCY,
    registry=REGISTRY,
)
INTER_TOKEN = Histogram(
    "model_server_inter_token_latency_seconds",
    "Time between two generated tokens of one sequence.",
    buckets=_LATENCY,
    registry=REGISTRY,
)
E2E = Histogram(
    "model_server_e2e_request_latency_seconds",
    "From admission to the last token of a completed request.",
    buckets=_LATENCY,
    registry=REGISTRY,
)
QUEUE_TIME = Histogram(
    "model_server_queue_time_seconds",
    "Time an accepted request waited for a slot.",
    buckets=_LATENCY,
    registry=REGISTRY,
)
REQUESTS = Counter(
    "model_server_requests",
    "Finished HTTP requests by route and status code.",
    ["route", "status"],
    registry=REGISTRY,
)
REJECTED = Counter(
    "model_server_rejected_requests",
    "Requests refused before generation (overloaded = 429, draining = 503).",
    ["reason"],
    registry=REGISTRY,
)
CANCELLED = Counter(
    "model_server_cancelled_requests",
    "Accepted requests ended before their finish: client_disconnected (queued or generating) or "
    "drain_timeout (cut off by the shutdown; the client got an error).",
    ["reason"],
    registry=REGISTRY,
)
