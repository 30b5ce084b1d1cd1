"""KV-cache sequences and prefix reuse (engine thread only; no llama.cpp here, only calls through `KvOps`).

The engine's KV cache holds `n_seqs` sequences, each a stream of its own (`kv_unified=false`: a sequence's
attention never sums over other sequences' cells). A request takes a whole sequence while it runs. When it
finishes, the sequence keeps its K/V as a cached entry until a new request needs the sequence. A new prompt
that starts with tokens some sequence already holds (a running one, or a recently finished one) reuses them
instead of computing them again:

- in place: the new request's sequence already holds the prefix (its previous request's prompt), or
- by copy: llama.cpp copies the source sequence's stream into the new request's sequence
  (`llama_memory_seq_cp`, a memory copy inside the next `llama_decode`, no compute), then the tail past
  the common prefix is dropped (`llama_memory_seq_rm`);
- by waiting: when a request admitted earlier is still computing a longer common prefix (many users
  arriving at once with the same system prompt), the later one waits for it instead of computing the
  same tokens in parallel, then copies.

Exact reuse: greedy output with reuse equals greedy output without. llama.cpp's CPU kernels compute a
prompt row one of two ways depending on the micro-batch, both exact per row but rounding differently, so only
rows computed the way a request would compute them anyway are reused (`KvSeq.exact`):

- with flash attention, a sequence's rows use a tiled kernel from `BLOCK` rows per micro-batch up and a
  row-by-row one below (and a split-KV one for a lone row past 512 cells). Prompts are computed in whole
  blocks of `BLOCK` rows from position 0 and the last partial block (the tail) row by row. Whole prompt
  blocks are reused (`KvSeq.blocks`), and a tail's rows (computed with at least one more row, in a decode
  of its own: `KvSeq.exact`) by a prompt whose own whole blocks end where this one's do, leaving it at
  least two rows to compute;
- without it, a row computed together with at least one more row of its sequence comes out the same however
  the prompt is cut into chunks, and a lone row (every generated token) differently. Prompts are computed in
  chunks of at least two rows, each in a decode of its own, and any prefix of those rows is reused
  (`block` 1, `min_rows` 2), leaving at least two prompt rows to compute.

The last prompt token is always computed (its logits start the generation).

A new request takes the lowest-numbered free sequence, so that running sequences keep consecutive ids
(llama.cpp decodes consecutive streams in one micro-batch); a cached entry that has served reuse before is
moved out of the way (copied to the least valuable free sequence) instead of being dropped. Cancelled
requests free their sequence at once; finished ones stay cached (`reuse=True`). Memory never runs out
because of the cache: every sequence is preallocated, a request always gets one, and a cached entry is
overwritten (an eviction) when its sequence is needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

#: Rows of a prompt block: llama.cpp's CPU flash-attention query tile (GGML_FA_TILE_Q). A sequence's rows
#: in a micro-batch use the tiled kernel from this many up, the row-by-row kernel below.
BLOCK = 64


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists (C-speed slice comparisons)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


class KvOps(Protocol):
    """The llama.cpp memory operations the cache needs (the engine implements them)."""

    def copy(self, src: int, dst: int) -> None:
        """Make sequence dst a copy of sequence src (dst's previous content is gone)."""
        ...

    def truncate(self, seq_id: int, n: int) -> None:
        """Drop the positions >= n of a sequence (n = 0: empty it)."""
        ...


@dataclass(eq=False)
class KvSeq:
    """One KV-cache sequence: the tokens whose K/V it holds (by position), how many leading ones are
    reusable (`exact`) and how many of those were computed as whole prompt blocks (`blocks`), who owns it,
    how useful it was."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    exact: int = 0
    blocks: int = 0
    busy: bool = False  # a running request owns it
    tick: int = 0  # last use (admission or release), for least-recently-used choices
    hits: int = 0  # times its content saved another request (or one in place) at least BLOCK tokens

    def reusable(self, prompt: Sequence[int], block: int, min_rows: int = 1) -> int:
        """Tokens of `prompt` this sequence can give, leaving at least `min_rows` prompt tokens to compute:
        whole blocks of the common prefix, or past them the tail rows when the prompt's own whole blocks
        end where this sequence's do (a run of the prompt computes those rows row by row too), then
        leaving two rows."""
        size = len(prompt)
        n = min(common_prefix(self.tokens, prompt), self.exact, size - min_rows)
        if n > self.blocks and self.blocks == size - size % block:
            return max(self.blocks, min(n, size - 2))
        n = min(n, self.blocks)
        return max(0, n - n % block)

    def cut(self, n: int) -> None:
        del self.tokens[n:]
        self.exact = min(self.exact, n)
        self.blocks = min(self.blocks, n)


@dataclass(frozen=True)
class Placement:
    """Where a request's prefill starts: `n_reused` prompt tokens already in its sequence."""

    n_reused: int
    copied_from: int | None  # source sequence id of a copy, None when in place or nothing reused


@dataclass
class CacheStats:
    """Counters since start (the engine mirrors them into Prometheus)."""

    hits: int = 0  # requests that reused prompt tokens
    reused_tokens: int = 0  # prompt tokens not computed thanks to reuse
    copies: int = 0  # sequence copies (reuse by copy, and relocations of cached entries)
    evictions: int = 0  # cached entries overwritten to make room (all but a prefix of under BLOCK tokens)


class KvCache:
    """The sequences of one llama.cpp context and the prefix-reuse policy (engine thread only)."""

    def __init__(
        self,
        n_seqs: int,
        n_ctx_seq: int,
        ops: KvOps,
        *,
        reuse: bool = True,
        block: int = BLOCK,
        min_rows: int = 1,
    ) -> None:
        """`block`: reuse in multiples of it: BLOCK with flash attention, 1 when no micro-batch can hold
        BLOCK rows (every row is then computed row by row, and any prefix is exact) or without flash
        attention. `min_rows`: prompt rows a request always computes itself: 1 (its last token), 2 without
        flash attention (a lone prompt row would round differently)."""
        self.seqs = [KvSeq(i) for i in range(n_seqs)]
        self.block = block
        self.min_rows = min_rows
        self.n_ctx_seq = n_ctx_seq
        self.ops = ops
        self.reuse = reuse
        self.stats = CacheStats()
        self._tick = 0

    # ------------------------------------------------------------------ figures
    def used_tokens(self) -> int:
        """Cells holding tokens, in every sequence (running and cached)."""
        return sum(len(s.tokens) for s in self.seqs)

    def cached_tokens(self) -> int:
        """Cells held by finished requests' cached entries (reusable, overwritten when needed)."""
        return sum(len(s.tokens) for s in self.seqs if not s.busy)

    def capacity(self) -> int:
        return self.n_ctx_seq * len(self.seqs)

    # ------------------------------------------------------------------ lifecycle
    def acquire(self, prompt: Sequence[int]) -> KvSeq:
        """A sequence for a new request: the lowest-numbered free one. Its cached entry is kept in place
        when the prompt can reuse it, moved to the least valuable free sequence when it has served reuse
        before, else dropped. Raises LookupError when every sequence is busy."""
        seq = next((s for s in self.seqs if not s.busy), None)
        if seq is None:
            raise LookupError("every KV-cache sequence is busy")
        cached_tick, seq.busy, seq.tick = seq.tick, True, self._next_tick()
        if not seq.tokens or not self.reuse:
            return seq
        n = seq.reusable(prompt, self.block, self.min_rows)
        if n >= BLOCK or (n and not seq.hits):
            # Its own entry starts this prompt: reuse in place. A few tokens (without flash attention any
            # prefix is exact) only from an entry that has not served reuse before: it is all but gone.
            if n < BLOCK:
                self.stats.evictions += 1
            return seq
        target = self._relocation_target(seq, cached_tick)
        if target is not None:
            self._evict(target)
            self.ops.copy(seq.seq_id, target.seq_id)
            target.tokens, target.exact, target.blocks = list(seq.tokens), seq.exact, seq.blocks
            target.hits, target.tick = seq.hits, cached_tick
            self.stats.copies += 1
        else:
            self.stats.evictions += 1
        # The content stays until placement, where a copy or a truncation replaces it.
        seq.hits = 0
        return seq

    def release(self, seq: KvSeq, *, keep: bool) -> None:
        """A request let go of its sequence: finished (keep=True: stays cached for reuse) or cancelled or
        failed (keep=False: its cells are freed now)."""
        seq.busy = False
        seq.tick = self._next_tick()
        if not (keep and self.reuse) and seq.tokens:
            self.ops.truncate(seq.seq_id, 0)
            seq.cut(0)
            seq.hits = 0

    def place(
        self, seq: KvSeq, prompt: Sequence[int], ahead: Iterable[Sequence[int]] = ()
    ) -> Placement | None:
        """Give a newly admitted request's sequence the longest reusable prefix of its prompt available
        now, and return where its prefill starts; or None to wait one step, because a request admitted
        earlier (`ahead`: the prompts such requests are still computing) will soon hold a longer one.
        The caller places its requests in admission order before it adds anything of the step to the
        batch (a copy is taken when the next decode starts)."""
        best, source = 0, None
        if self.reuse:
            # A copy or a wait must gain at least BLOCK tokens (a copy moves a whole stream).
            own = best = seq.reusable(prompt, self.block, self.min_rows)
            for other in self.seqs:
                if other is not seq and other.exact >= own + BLOCK:
                    n = other.reusable(prompt, self.block, self.min_rows)
                    if n >= own + BLOCK and n > best:
                        best, source = n, other
            for other_prompt in ahead:
                soon = min(common_prefix(other_prompt, prompt), len(prompt) - self.min_rows)
                if soon - soon % self.block >= best + BLOCK:
                    return None
        if source is not None:
            self.ops.copy(source.seq_id, seq.seq_id)
            seq.tokens, seq.exact, seq.blocks = list(source.tokens), source.exact, source.blocks
            self.stats.copies += 1
        if len(seq.tokens) > best:
            self.ops.truncate(seq.seq_id, best)
            seq.cut(best)
        if best:
            if best >= BLOCK:
                (source or seq).hits += 1
            self.stats.hits += 1
            self.stats.reused_tokens += best
        return Placement(best, source.seq_id if source is not None else None)

    # ------------------------------------------------------------------ internals
    def _next_tick(self) -> int:
        self._tick += 1
        return self._tick

    def _relocation_target(self, seq: KvSeq, cached_tick: int) -> KvSeq | None:
        """Where a cached entry that served reuse before can move: an empty free sequence, else the least
        valuable free one if that is less valuable than it (never reused, or used less recently)."""
        if seq.hits == 0:
            return None
        free = [s for s in self.seqs if not s.busy and s is not seq]
        empty = [s for s in free if not s.tokens]
        if empty:
            return empty[-1]  # the highest id: new requests take low ids first
        victim = min(free, key=lambda s: (s.hits > 0, s.tick), default=None)
        if victim is None or (victim.hits > 0 and victim.tick > cached_tick):
            return None
        return victim

    def _evict(self, seq: KvSeq) -> None:
        if seq.tokens:
            self.stats.evictions += 1
        seq.tokens, seq.exact, seq.blocks, seq.hits = [], 0, 0, 0
