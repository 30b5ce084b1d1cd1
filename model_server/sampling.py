"""Per-sequence sampling: the defaults (one place for the API and the engine) and llama.cpp sampler chains.

Each sequence gets its own chain, built when it takes a slot and freed with the slot, so per-request
options (penalties, seeds, later grammars or logit biases) never leak between requests.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import llama_cpp


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling. temperature <= 0 means greedy (argmax). Defaults follow llama-cpp-python's
    `Llama.__call__` (the seed's call): temperature 0.8, top_p 0.95, top_k 40, min_p 0.05, no penalties,
    penalties look back over the last 64 tokens, random seed."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    penalty_last_n: int = 64
    seed: int | None = None

    @property
    def has_penalties(self) -> bool:
        return self.repeat_penalty != 1.0 or self.frequency_penalty != 0.0 or self.presence_penalty != 0.0

    @property
    def plain_greedy(self) -> bool:
        """Greedy without penalties: the next token is the logits' argmax, no sampler state involved."""
        return self.temperature <= 0.0 and not self.has_penalties


#: The defaults every layer uses (request schemas, /predict, warm-up).
DEFAULTS = SamplingParams()


def build_sampler(p: SamplingParams, n_vocab: int, prompt_tokens: list[int]) -> Any:
    """A llama.cpp sampler chain for one sequence: penalties -> top-k -> top-p -> min-p -> temperature ->
    seeded dist (greedy when temperature <= 0). The penalties look back over the prompt too, as
    llama-server's do. The caller frees it with `llama_sampler_free`."""
    sparams = llama_cpp.llama_sampler_chain_default_params()
    sparams.no_perf = True
    chain = llama_cpp.llama_sampler_chain_init(sparams)
    add = llama_cpp.llama_sampler_chain_add
    if p.has_penalties:
        add(
            chain,
            llama_cpp.llama_sampler_init_penalties(
                n_vocab, p.penalty_last_n, p.repeat_penalty, p.frequency_penalty, p.presence_penalty
            ),
        )
    if p.temperature <= 0.0:
        add(chain, llama_cpp.llama_sampler_init_greedy())
    else:
        if p.top_k > 0:
            add(chain, llama_cpp.llama_sampler_init_top_k(p.top_k))
        if p.top_p < 1.0:
            add(chain, llama_cpp.llama_sampler_init_top_p(p.top_p, 1))
        if p.min_p > 0.0:
            add(chain, llama_cpp.llama_sampler_init_min_p(p.min_p, 1))
        add(chain, llama_cpp.llama_sampler_init_temp(p.temperature))
        seed = p.seed if p.seed is not None else secrets.randbits(32)
        add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    if p.has_penalties and p.penalty_last_n > 0:
        for tok in prompt_tokens[-p.penalty_last_n :]:
            llama_cpp.llama_sampler_accept(chain, tok)
    return chain
