#!/usr/bin/env python3
"""llama.cpp reference for `pragma bench` (via llama-cpp-python), printed as JSON.

Measured, with the same tokens and timing rules as `pragma bench`:
  prefill   prompt processing of the batch x seq token rows from common.py. The
            Python API has no padded multi-sequence batch, so each row is its own
            eval() of `seq` tokens (one llama_decode, n_batch >= seq), with the KV
            cache cleared before each; logits for the last position only
            (logits_all=False). tok/s = batch*seq / time for all rows.
  decode    greedy decoding of `decode` tokens after a 16-token prompt: argmax over
            the last logits, then eval([tok]); the prompt's eval is not timed.
            As in pragma, the last chosen token is not fed back (decode-1 evals).
  rss       peak RSS of this process (VmHWM), which includes the mmapped GGUF.
Best of --reps after one warm-up. No capture: llama.cpp has no activation hooks.

The model is loaded with use_extra_bufts=false (--no-repack): on this VM the AMX
repacked path dies with SIGILL (see scripts/fixtures/llamacpp_compat.py).

Usage: python3 scripts/bench/llamacpp_ref.py [MODEL.gguf] [--batch 8 --seq 128 --decode 128 --reps 3]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))  # llamacpp_compat
from common import PROMPT_LEN, TEXT, add_common_args, batch_rows, best_of, peak_rss_mib  # noqa: E402
from llamacpp_compat import load_llama_no_extra_bufts  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap)
    a = ap.parse_args()

    import llama_cpp

    t_load = time.perf_counter()
    llm = load_llama_no_extra_bufts(
        llama_cpp,
        model_path=a.model,
        n_ctx=max(a.seq, PROMPT_LEN + a.decode) + 16,
        n_batch=max(512, a.seq),
        n_ubatch=max(512, a.seq),
        n_threads=a.threads,
        n_threads_batch=a.threads,
        logits_all=False,
        verbose=False,
    )
    load_s = time.perf_counter() - t_load
    rss_loaded = peak_rss_mib()
    ids = llm.tokenize(TEXT.encode(), add_bos=False, special=False)
    rows = batch_rows(ids, a.batch, a.seq)
    n_vocab = llm.n_vocab()

    def prefill():
        for row in rows:
            llm.reset()  # the next eval() drops the whole KV cache
            llm.eval(row)

    def last_argmax():
        return int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))))

    def decode():
        llm.reset()
        llm.eval(rows[0][:PROMPT_LEN])
        t = time.perf_counter()
        for i in range(a.decode):
            tok = last_argmax()
            if i + 1 < a.decode:
                llm.eval([tok])
        return time.perf_counter() - t

    t_prefill = best_of(a.reps, prefill)
    t_decode = best_of(min(a.reps, 2), decode)
    print(json.dumps({
        "tool": "llama.cpp",
        "llama_cpp_python": llama_cpp.__version__,
        "threads": a.threads,
        "prefill_batch": a.batch,
        "prefill_seq": a.seq,
        "prefill_mode": "one sequence per eval, KV cache cleared between",
        "prefill_tok_s": a.batch * a.seq / t_prefill,
        "prefill_capture_all_resid_tok_s": None,
        "capture_overhead": None,
        "decode_tokens": a.decode,
        "decode_tok_s": a.decode / t_decode,
        "peak_rss_mib": peak_rss_mib(),
        "load_s": load_s,
        "peak_rss_after_load_mib": rss_loaded,
    }, indent=2))


if __name__ == "__main__":
    main()
