"""`python -m bench.exact_rows [--flash-attn on|off] [--length N]`: which ways of cutting a prompt into
decodes give the same logits, to the last bit, on llama.cpp's CPU kernels (the premise of exact prefix reuse,
docs/model_server.md "Exact reuse").

A random prompt of `--length` tokens on the embedded SmolLM2 (2 threads, the engine's context layout: 8
per-sequence KV streams) is decoded once as a reference (in whole 64-row blocks and the rest in one chunk),
then cut other ways: other chunk sizes, another sequence, other sequences' rows in the same decodes, a
lone last row. Each line prints the largest logit difference against the reference for the last prompt
row and for 20 greedy tokens after it (each alone, or with 7 other sequences' tokens), and whether the
greedy tokens are the same. 0 means bit-identical.
"""

from __future__ import annotations

import argparse
import random

import llama_cpp
import numpy as np

from model_server.settings import embedded_model_path

N_SEQ, GEN = 8, 20


def _pieces(n: int, size: int) -> list[int]:
    """n rows in chunks of `size`, the last one shorter."""
    return [size] * (n // size) + ([n % size] if n % size else [])


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.exact_rows", description=__doc__.splitlines()[0])
    p.add_argument("--flash-attn", choices=("on", "off"), default="off")
    p.add_argument("--length", type=int, default=700, help="prompt tokens (200 to 1,500)")
    args = p.parse_args()
    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(
        str(embedded_model_path()).encode(), llama_cpp.llama_model_default_params()
    )
    cp = llama_cpp.llama_context_default_params()
    cp.kv_unified, cp.n_seq_max, cp.n_ctx = False, N_SEQ, 2048 * N_SEQ
    cp.n_batch, cp.n_ubatch = 4096, 512  # the neighbours' decodes hold 8 x 100 rows
    cp.n_threads = cp.n_threads_batch = 2
    on, off = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED, llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    cp.flash_attn_type = on if args.flash_attn == "on" else off
    ctx = llama_cpp.llama_init_from_model(model, cp)
    mem = llama_cpp.llama_get_memory(ctx)
    n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
    batch = llama_cpp.llama_batch_init(4096, 0, 1)
    rng = random.Random(1)
    prompt = [rng.randrange(100, 40000) for _ in range(args.length)]

    def decode(rows: list[tuple[int, int, int, bool]]) -> None:
        for i, (tok, pos, seq, logits) in enumerate(rows):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, pos, 1
            batch.seq_id[i][0], batch.logits[i] = seq, logits
        batch.n_tokens = len(rows)
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise SystemExit("llama_decode failed")

    def logits(i: int) -> np.ndarray:
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, i), shape=(n_vocab,)).copy()

    def run(chunks: list[int], seq: int, neighbours: bool) -> tuple[list[np.ndarray], list[int]]:
        """The prompt in `chunks` on sequence `seq` (with the other sequences' rows in every decode when
        `neighbours`), then GEN greedy tokens: logits of the last prompt row and of every token."""
        assert sum(chunks) == len(prompt)
        llama_cpp.llama_memory_seq_rm(mem, seq, 0, -1)
        pos = 0
        for n in chunks:
            rows = [(prompt[pos + i], pos + i, seq, pos + i == len(prompt) - 1) for i in range(n)]
            if neighbours:  # the others' rows: as many as ours, so no micro-batch splits ours
                for k in range(N_SEQ):
                    if k != seq:
                        llama_cpp.llama_memory_seq_rm(mem, k, 0, -1)
                rows += [(500 + k + j, j, k, j == n - 1) for k in range(N_SEQ) if k != seq for j in range(n)]
            decode(rows)
            pos += n
        out, tokens = [logits(chunks[-1] - 1)], []
        for g in range(GEN):
            tokens.append(int(out[-1].argmax()))
            rows = [(tokens[-1], len(prompt) + g, seq, True)]
            if neighbours:
                for k in range(N_SEQ):
                    if k != seq:
                        llama_cpp.llama_memory_seq_rm(mem, k, 0, -1)
                rows += [(600 + k, 0, k, True) for k in range(N_SEQ) if k != seq]
            decode(rows)
            out.append(logits(0))
        return out, tokens

    blocks = [64] * (len(prompt) // 64)
    rest = len(prompt) % 64
    reference = blocks + ([rest] if rest else [])
    ref, ref_tokens = run(reference, 0, False)
    half = len(prompt) // 2
    cuts = {
        "the reference again, on another sequence": (reference, 3, False),
        "two halves": ([half, len(prompt) - half], 1, False),
        "mixed chunks": ([17, 100, 3, 64, *_pieces(len(prompt) - 184, 300)], 5, False),
        "2-row chunks (3 last when odd)": ([*_pieces(len(prompt) - 3, 2), 3], 4, False),
        "100-row chunks with 7 neighbours": (_pieces(len(prompt), 100), 6, True),
        "whole blocks, the tail as 2 + rest": ([*blocks, 2, rest - 2] if rest > 3 else reference, 2, False),
        "everything but a lone last row": ([len(prompt) - 1 - 511, 511, 1] if len(prompt) > 512 else
                                            [len(prompt) - 1, 1], 7, False),
    }  # fmt: skip
    print(f"flash attention {args.flash_attn}, {len(prompt)} prompt tokens; reference: {reference[:3]}...")
    for name, (chunks, seq, neighbours) in cuts.items():
        chunks = [c for c in chunks if c]
        out, tokens = run(chunks, seq, neighbours)
        diffs = [float(np.abs(a - b).max()) for a, b in zip(ref, out, strict=True)]
        same = "same tokens" if tokens == ref_tokens else "OTHER TOKENS"
        print(f"  {name:42} last prompt row {diffs[0]:.3g}  all {max(diffs):.3g}  {same}")
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)


if __name__ == "__main__":
    main()
