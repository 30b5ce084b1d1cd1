"""Per-sequence sampling: the defaults (one place for the API and the engine) and llama.cpp sampler chains.

Each sequence gets its own `SeqSampler` (a chain, a grammar, its logit bias), built when it takes a slot and
freed with the slot, so per-request options never leak between requests and sequences with different
options decode in the same batch: sampling happens per sequence on its own row of logits.

Grammar-constrained sampling works as llama-server's: the token the sequence would pick unconstrained is
checked against the grammar first (one candidate, microseconds); only when the grammar rejects it is the
grammar applied to the whole vocabulary and the token picked again from what it allows.

Log-probabilities are those of the model's distribution: a log-softmax of the raw logits, before penalties,
logit bias, grammar and temperature (the sampled token's and the top alternatives').
"""

from __future__ import annotations

import ctypes
import secrets
from dataclasses import dataclass
from typing import Any

import llama_cpp
import numpy as np


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
    #: (token id, bias) pairs added to the logits (OpenAI's logit_bias; -100 bans, +100 forces).
    logit_bias: tuple[tuple[int, float], ...] = ()
    #: End-of-generation tokens are banned until this many tokens were generated.
    min_tokens: int = 0
    #: End-of-generation tokens are always banned (the request ends at max_tokens or a stop string).
    ignore_eos: bool = False
    #: GBNF grammar (root rule `root`) the output must match (model_server.grammar).
    grammar: str | None = None
    #: None: no log-probabilities; k: the sampled token's and the k most likely tokens' (0 <= k <= 20).
    n_logprobs: int | None = None

    @property
    def has_penalties(self) -> bool:
        return self.repeat_penalty != 1.0 or self.frequency_penalty != 0.0 or self.presence_penalty != 0.0

    @property
    def shapes_logits(self) -> bool:
        """Logit bias or banned end-of-generation tokens change the logits before sampling."""
        return bool(self.logit_bias) or self.min_tokens > 0 or self.ignore_eos

    @property
    def plain_greedy(self) -> bool:
        """Greedy without penalties, bias or grammar: the next token is the logits' argmax, no sampler state
        involved (log-probabilities do not change the choice)."""
        return (
            self.temperature <= 0.0
            and not self.has_penalties
            and not self.shapes_logits
            and self.grammar is None
        )


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


class GrammarError(ValueError):
    """llama.cpp's grammar parser refused a grammar (it logs why)."""


def check_grammar(vocab: Any, grammar: str) -> None:
    """Raise GrammarError unless llama.cpp parses `grammar` (compiled once and freed; any thread)."""
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    if not sampler:
        raise GrammarError("llama.cpp could not parse the grammar")
    llama_cpp.llama_sampler_free(sampler)


#: llama_token_data {id, logit, p} as a numpy record, so candidate arrays are filled at C speed.
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


@dataclass(frozen=True)
class TokenLogprob:
    """The log-probability of one generated token and the top alternatives (token ids, by rank)."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...]


def token_logprob(logits: np.ndarray, token: int, k: int) -> TokenLogprob:
    """Log-softmax of `logits` at `token`, and the k most likely tokens in descending order."""
    x = logits.astype(np.float64)
    m = float(x.max())
    lse = m + float(np.log(np.exp(x - m).sum()))
    top: tuple[tuple[int, float], ...] = ()
    if k > 0:
        idx = np.argpartition(-x, k - 1)[:k]
        idx = idx[np.lexsort((idx, -x[idx]))]  # by logit descending, then token id (stable ties)
        top = tuple((int(i), float(x[i] - lse)) for i in idx)
    return TokenLogprob(token, float(x[token] - lse), top)


class SeqSampler:
    """One sequence's sampling state (engine thread): its llama.cpp chain (None for plain greedy), grammar
    and logit bias. `sample` picks the next token from a row of logits; `free` releases llama.cpp objects."""

    def __init__(
        self, p: SamplingParams, vocab: Any, n_vocab: int, eog: np.ndarray, prompt_tokens: list[int]
    ) -> None:
        self.p = p
        self.n_vocab = n_vocab
        self.eog = eog
        greedy_only = p.temperature <= 0.0 and not p.has_penalties
        self.chain: Any = None if greedy_only else build_sampler(p, n_vocab, prompt_tokens)
        self.grammar: Any = None
        if p.grammar is not None:
            self.grammar = llama_cpp.llama_sampler_init_grammar(vocab, p.grammar.encode(), b"root")
            if not self.grammar:
                self.free()
                raise GrammarError("llama.cpp could not parse the grammar")
        self.bias_ids = np.array([t for t, _ in p.logit_bias], dtype=np.int64)
        self.bias_values = np.array([b for _, b in p.logit_bias], dtype=np.float32)
        self._cand: np.ndarray | None = None
        self._one = np.zeros(1, dtype=_TOKEN_DATA)

    @property
    def kind(self) -> str:
        """For the decode-mix metric: grammar, logprobs or plain."""
        if self.grammar is not None:
            return "grammar"
        return "logprobs" if self.p.n_logprobs is not None else "plain"

    def free(self) -> None:
        if self.chain is not None:
            llama_cpp.llama_sampler_free(self.chain)
            self.chain = None
        if self.grammar is not None:
            llama_cpp.llama_sampler_free(self.grammar)
            self.grammar = None

    def sample(self, ctx: Any, index: int, logits: np.ndarray, n_generated: int) -> int | None:
        """The next token from `logits` (batch row `index` of `ctx`), accepted into the chain and grammar;
        None when the grammar admits nothing more (its output is complete and end-of-generation is banned).
        """
        p = self.p
        x = logits
        ban_eog = p.ignore_eos or n_generated < p.min_tokens
        if p.logit_bias or ban_eog:
            x = logits.copy()
            if p.logit_bias:
                x[self.bias_ids] += self.bias_values
            if ban_eog:
                x[self.eog] = -np.inf
        accepted = False
        if self.chain is None:
            tok = int(x.argmax())
        elif x is logits and self.grammar is None:
            # Unchanged logits: llama.cpp reads them itself (and accepts the token into the chain).
            tok = int(llama_cpp.llama_sampler_sample(self.chain, ctx, index))
            accepted = True
        else:
            tok = self._pick(self._fill(x))
        if self.grammar is not None and not self._grammar_allows(tok, float(x[tok])):
            cand = self._fill(x)
            llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(self._array(cand)))
            if not np.isfinite(cand["logit"].max()):
                return None
            tok = self._pick(cand)
        if self.chain is not None and not accepted:
            llama_cpp.llama_sampler_accept(self.chain, tok)
        # The grammar never accepts an end-of-generation token (llama.cpp aborts on one it did not expect);
        # the sequence ends there anyway.
        if self.grammar is not None and tok not in self.eog:
            llama_cpp.llama_sampler_accept(self.grammar, tok)
        return tok

    def _fill(self, x: np.ndarray) -> np.ndarray:
        if self._cand is None:
            self._cand = np.zeros(self.n_vocab, dtype=_TOKEN_DATA)
        cand = self._cand
        cand["id"] = np.arange(self.n_vocab, dtype=np.int32)  # chains sort in place: reset the order
        cand["logit"] = x
        cand["p"] = 0.0
        return cand

    def _array(self, cand: np.ndarray) -> llama_cpp.llama_token_data_array:
        return llama_cpp.llama_token_data_array(
            data=cand.ctypes.data_as(llama_cpp.llama_token_data_p),
            size=len(cand),
            selected=-1,
            sorted=False,
        )

    def _pick(self, cand: np.ndarray) -> int:
        """Greedy: the first maximum; otherwise the chain's choice (it does not accept it)."""
        if self.chain is None:
            return int(cand["id"][int(cand["logit"].argmax())])
        arr = self._array(cand)
        llama_cpp.llama_sampler_apply(self.chain, ctypes.byref(arr))
        return int(cand["id"][arr.selected])

    def _grammar_allows(self, tok: int, logit: float) -> bool:
        one = self._one
        one[0] = (tok, logit, 0.0)
        llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(self._array(one)))
        return bool(np.isfinite(one["logit"][0]))
