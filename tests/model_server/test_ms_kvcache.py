"""The prefix-reuse policy (`model_server.kvcache`) on a model of llama.cpp's sequences: no llama.cpp here.

`FakeKv` does what the engine's llama.cpp operations do to the cells (a copy replaces the destination's
content, a truncation drops positions), so every test also checks that the cache's idea of each sequence
equals what the sequences really hold. `compute` does what the engine does while a request runs.
"""

from __future__ import annotations

import random

import pytest

from model_server.kvcache import BLOCK, KvCache, KvSeq, common_prefix

SYSTEM = list(range(1000, 1000 + 3 * BLOCK))  # a shared "system prompt" of three whole blocks


class FakeKv:
    def __init__(self, n: int) -> None:
        self.content: list[list[int]] = [[] for _ in range(n)]
        self.copies: list[tuple[int, int]] = []

    def copy(self, src: int, dst: int) -> None:
        self.copies.append((src, dst))
        self.content[dst] = list(self.content[src])

    def truncate(self, seq_id: int, n: int) -> None:
        del self.content[seq_id][n:]


def make(n: int = 4, reuse: bool = True, block: int = BLOCK) -> tuple[KvCache, FakeKv]:
    ops = FakeKv(n)
    return KvCache(n, 2048, ops, reuse=reuse, block=block), ops


def compute(cache: KvCache, ops: FakeKv, seq: KvSeq, prompt: list[int], start: int, out=()) -> None:
    """The engine's work for a request placed at `start` (serial prefill): whole prompt blocks (exact),
    then the rest of the prompt (its tail: exact when it has two rows or more) and the generated tokens
    (all but the last, which is never fed back) row by row (exact too when block=1: then every row is
    computed row by row)."""
    full = start + (len(prompt) - start) // cache.block * cache.block
    rest = list(prompt[start:]) + list(out)[:-1]
    if seq.exact == start:
        if cache.block == 1:
            seq.exact = seq.blocks = start + len(rest)
        else:
            if seq.blocks == start:
                seq.blocks = full
            seq.exact = len(prompt) if len(prompt) - full >= 2 else full
    seq.tokens.extend(rest)
    ops.content[seq.seq_id].extend(rest)


def consistent(cache: KvCache, ops: FakeKv) -> bool:
    return all(s.tokens == ops.content[s.seq_id] and s.exact <= len(s.tokens) for s in cache.seqs)


def run(cache: KvCache, ops: FakeKv, prompt: list[int], out=(1, 2), *, keep: bool = True):
    """One request start to finish: acquire, place, compute, release."""
    seq = cache.acquire(prompt)
    placement = cache.place(seq, prompt)
    assert placement is not None
    compute(cache, ops, seq, prompt, placement.n_reused, out)
    cache.release(seq, keep=keep)
    return seq, placement


@pytest.mark.parametrize("seed", range(20))
def test_common_prefix_matches_the_naive_count(seed: int) -> None:
    rng = random.Random(seed)
    a = [rng.randrange(3) for _ in range(rng.randrange(0, 300))]
    b = a[: rng.randrange(0, len(a) + 1)] + [rng.randrange(3) for _ in range(rng.randrange(0, 50))]
    naive = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    assert common_prefix(a, b) == common_prefix(b, a) == naive


def test_a_finished_request_is_reused_in_place_in_whole_blocks() -> None:
    cache, ops = make()
    first, p1 = run(cache, ops, [*SYSTEM, 1, 2])
    assert p1.n_reused == 0 and (first.blocks, first.exact) == (len(SYSTEM), len(SYSTEM) + 2)
    second, p2 = run(cache, ops, [*SYSTEM[:-5], 3, 4])  # shares 2 whole blocks and 59 more tokens
    assert second is first  # the lowest free sequence, which holds the prefix
    assert (p2.n_reused, p2.copied_from) == (2 * BLOCK, None)
    assert ops.copies == [] and consistent(cache, ops)
    assert (cache.stats.hits, cache.stats.reused_tokens) == (1, 2 * BLOCK)


def test_only_rows_computed_as_whole_prompt_blocks_are_reused() -> None:
    """The partial last block and generated tokens were computed row by row: a prompt that continues the
    conversation past another block boundary recomputes them, so it gets the rows a fresh computation
    (whole blocks up to its own last block boundary) would give."""
    cache, ops = make()
    first_prompt = [*SYSTEM, *range(40)]  # 3 whole blocks + 40
    answer = list(range(500, 600))
    run(cache, ops, first_prompt, answer)
    follow_up = [*first_prompt, *answer[:-1], 7, 8, 9]
    _, placement = run(cache, ops, follow_up)
    assert placement.n_reused == len(SYSTEM)


def test_tail_rows_are_reused_by_a_prompt_whose_whole_blocks_end_there_too() -> None:
    """A fresh run of such a prompt computes the same rows row by row; at least two rows stay to compute
    (a lone row could take llama.cpp's split-KV kernel); generated tokens are never reused."""
    cache, ops = make()
    run(cache, ops, [*SYSTEM, *range(40)], list(range(500, 520)))  # 3 whole blocks + a 40-token tail
    _, same_boundary = run(cache, ops, [*SYSTEM, *range(30), 7, 8, 9])  # 3 blocks + 33
    assert same_boundary.n_reused == len(SYSTEM) + 30
    _, one_more = run(cache, ops, [*SYSTEM, *range(30), 7, 8, 9, 10])  # the last prompt and one token
    assert one_more.n_reused == len(SYSTEM) + 32  # all but two rows
    _, over_answer = run(cache, ops, [*SYSTEM, *range(30), 7, 8, 9, 10, 1, 5])  # its answer's token
    assert over_answer.n_reused == len(SYSTEM) + 34  # the prompt rows, not the generated token
    _, short = run(cache, ops, list(range(20)))  # no whole block either way: tail rows from the start
    assert short.n_reused == 0  # SYSTEM shares nothing with it
    _, shorter = run(cache, ops, list(range(12)))
    assert shorter.n_reused == 10
    assert consistent(cache, ops)


def test_a_few_tokens_in_place_never_truncate_an_entry_that_served_reuse() -> None:
    """Reusing a few tail tokens in place is allowed only from an entry that has not saved anyone a block;
    a valuable entry moves out of the way instead (and is counted as kept, not evicted)."""
    cache, ops = make(n=2)
    run(cache, ops, [*SYSTEM, 1, 2])
    run(cache, ops, [*SYSTEM, 3, 4])  # in place: the entry has now served reuse
    evictions = cache.stats.evictions
    seq, placement = run(cache, ops, [1000, 1001, 5, 6, 7])  # shares two tokens with the entry
    assert placement.n_reused == 0 and seq.seq_id == 0
    assert cache.seqs[1].tokens[: len(SYSTEM)] == SYSTEM  # moved, not truncated
    assert cache.stats.evictions == evictions and consistent(cache, ops)


def test_an_identical_prompt_recomputes_at_least_its_last_token() -> None:
    cache, ops = make()
    prompt = SYSTEM[: 2 * BLOCK]  # exactly two whole blocks
    run(cache, ops, prompt)
    _, placement = run(cache, ops, prompt)
    assert placement.n_reused == BLOCK  # the last token's logits start the generation: its block is redone


def test_a_running_request_shares_its_prefix_by_copy() -> None:
    cache, ops = make()
    prompt_a = [*SYSTEM, 1]
    a = cache.acquire(prompt_a)
    cache.place(a, prompt_a)
    compute(cache, ops, a, prompt_a, 0, [50, 51])  # generating
    prompt_b = [*SYSTEM, 2]
    b = cache.acquire(prompt_b)
    placement = cache.place(b, prompt_b)
    assert placement is not None and (placement.n_reused, placement.copied_from) == (len(SYSTEM), a.seq_id)
    assert ops.copies == [(a.seq_id, b.seq_id)]
    assert b.tokens == SYSTEM and b.exact == len(SYSTEM) and consistent(cache, ops)


def test_a_copy_must_gain_a_whole_block_over_reuse_in_place() -> None:
    cache, ops = make()
    long_prompt = [*SYSTEM, 1]
    run(cache, ops, long_prompt)  # sequence 0
    busy = cache.acquire([9])  # sequence 0 busy: the next request gets sequence 1
    busy.tokens, busy.exact, busy.blocks = list(ops.content[0]), len(SYSTEM), len(SYSTEM)
    other = [*SYSTEM[:BLOCK], 5, 6]  # shares only one block with sequence 0's entry
    seq = cache.acquire(other)
    placement = cache.place(seq, other)
    assert placement is not None and placement.n_reused == BLOCK and placement.copied_from == 0
    short = [*SYSTEM[: BLOCK - 1], 5]  # less than a block in common: nothing to copy
    seq2 = cache.acquire(short)
    placement = cache.place(seq2, short)
    assert placement is not None and placement.n_reused == 0 and placement.copied_from is None


def test_requests_arriving_together_compute_a_shared_prefix_once() -> None:
    """The first computes the prefix; the others wait for it, then copy it."""
    cache, ops = make()
    prompts = [[*SYSTEM, i] for i in range(3)]
    seqs = [cache.acquire(p) for p in prompts]
    leader = cache.place(seqs[0], prompts[0])
    assert leader is not None and leader.n_reused == 0
    assert cache.place(seqs[1], prompts[1], ahead=[prompts[0]]) is None  # waits
    assert cache.place(seqs[2], prompts[2], ahead=[prompts[0], prompts[1]]) is None
    # The leader's first two blocks are in: a copy now would still leave a block to compute twice.
    seqs[0].tokens, seqs[0].exact = SYSTEM[: 2 * BLOCK], 2 * BLOCK
    seqs[0].blocks = 2 * BLOCK
    ops.content[0] = list(seqs[0].tokens)
    assert cache.place(seqs[1], prompts[1], ahead=[prompts[0]]) is None
    seqs[0].tokens, seqs[0].exact = [*SYSTEM, 0], len(SYSTEM)
    seqs[0].blocks = len(SYSTEM)
    ops.content[0] = list(seqs[0].tokens)
    for i in (1, 2):
        placement = cache.place(seqs[i], prompts[i], ahead=[])
        assert placement is not None and placement.n_reused == len(SYSTEM)
        assert placement.copied_from == seqs[0].seq_id
    assert consistent(cache, ops)


def test_the_earliest_request_never_waits() -> None:
    cache, _ = make()
    prompt = [*SYSTEM, 1]
    seq = cache.acquire(prompt)
    assert cache.place(seq, prompt, ahead=[]) is not None


def test_cancelled_requests_free_their_cells_and_finished_ones_stay_cached() -> None:
    cache, ops = make()
    run(cache, ops, [*SYSTEM, 1], [2, 3])
    assert cache.cached_tokens() == len(SYSTEM) + 2
    seq, _ = run(cache, ops, [9] * 100, [1, 2], keep=False)
    assert seq.tokens == [] and ops.content[seq.seq_id] == [] and seq.exact == 0
    assert consistent(cache, ops)


def test_without_reuse_nothing_is_reused_or_kept() -> None:
    cache, ops = make(reuse=False)
    run(cache, ops, [*SYSTEM, 1])
    _, placement = run(cache, ops, [*SYSTEM, 1])
    assert placement.n_reused == 0 and cache.used_tokens() == 0 and ops.copies == []
    assert cache.stats.hits == 0


def test_with_row_by_row_blocks_any_prefix_is_reused() -> None:
    """block=1 (micro-batches below BLOCK rows): every row is computed the same way, so every row counts."""
    cache, ops = make(block=1)
    prompt = [*SYSTEM, *range(40)]
    answer = list(range(500, 600))
    run(cache, ops, prompt, answer)
    follow_up = [*prompt, *answer[:-1], 7]
    _, placement = run(cache, ops, follow_up)
    assert placement.n_reused == len(follow_up) - 1


def test_new_requests_take_the_lowest_free_sequences() -> None:
    """Running sequences keep consecutive ids: llama.cpp decodes consecutive streams in one micro-batch."""
    cache, _ = make(n=4)
    seqs = [cache.acquire([i]) for i in range(3)]
    assert [s.seq_id for s in seqs] == [0, 1, 2]
    cache.release(seqs[0], keep=True)
    assert cache.acquire([5]).seq_id == 0


def test_a_valuable_entry_moves_out_of_the_way_and_a_useless_one_is_dropped() -> None:
    cache, ops = make(n=3)
    run(cache, ops, [*SYSTEM, 1])  # sequence 0
    run(cache, ops, [*SYSTEM, 3])  # reuses sequence 0 in place: now it has served reuse
    other = [5] * 100
    seq = cache.acquire(other)  # takes sequence 0; its entry moves to the highest empty one
    assert seq.seq_id == 0 and ops.copies == [(0, 2)]
    assert cache.seqs[2].tokens[: len(SYSTEM)] == SYSTEM and cache.seqs[2].exact == len(SYSTEM)
    placement = cache.place(seq, other)
    assert placement is not None and placement.n_reused == 0 and seq.tokens == []
    compute(cache, ops, seq, other, 0, [1])
    cache.release(seq, keep=True)
    # The never-reused entry in sequence 0 is dropped (counted) when a new request needs the sequence.
    evictions = cache.stats.evictions
    _, placement = run(cache, ops, [*SYSTEM, 6])  # copies the system prompt back from sequence 2
    assert placement.copied_from == 2 and placement.n_reused == len(SYSTEM)
    assert cache.stats.evictions == evictions + 1
    assert ops.copies[-1] == (2, 0) and consistent(cache, ops)


def test_eviction_never_fails_a_request() -> None:
    """More distinct prompts than sequences: every request gets a sequence; old entries are overwritten."""
    cache, ops = make(n=2)
    for i in range(10):
        _, placement = run(cache, ops, [100 + i] * 150)
        assert placement.n_reused == 0
        assert consistent(cache, ops)
    assert cache.stats.evictions >= 8
    assert cache.used_tokens() <= cache.capacity()


def test_every_sequence_busy_is_an_error() -> None:
    cache, _ = make(n=1)
    cache.acquire([1])
    with pytest.raises(LookupError):
        cache.acquire([2])
