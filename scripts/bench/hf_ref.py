#!/usr/bin/env python3
"""HF transformers reference for `pragma bench`, printed as JSON.

The GGUF is dequantized by transformers' own GGUF loader into a float32
LlamaForCausalLM (eval mode, no_grad, torch.set_num_threads(--threads); the
lm_head is tied to the embedding by hand). Measured, with the same tokens and
timing rules as `pragma bench`:
  prefill   model.model(ids) on the whole batch x seq tensor (no padding, no KV
            cache), then lm_head on the last position only, as pragma does.
  capture   the same with output_hidden_states=True: the residual stream after
            every layer (HF's last entry is after the final norm; same cost).
  decode    greedy decoding of `decode` tokens after a 16-token prompt with the KV
            cache (past_key_values), by hand: model.generate() cannot import on
            torch 1.13 + Python 3.11 (torch.distributed.fsdp). The prompt's
            forward is not timed; the last chosen token is not fed back.
  rss       peak RSS of this process (VmHWM), including the dequantization.
Best of --reps after one warm-up.

BLAS: Debian's torch does its matmuls in whatever libblas.so.3 is installed; the
default is netlib's reference BLAS, ~10x slower than OpenBLAS here. If Debian's
OpenBLAS is installed (`apt-get install libopenblas0-openmp`; the -pthread build
also works but then two thread pools compete for the cores), the script
re-executes itself with it first on LD_LIBRARY_PATH, for this process only, so
the system default is left alone (--system-blas turns this off). The JSON "blas"
key names the library that was loaded.

Loading goes through load_gguf_checkpoint() + from_config() rather than
from_pretrained(gguf_file=...), which insists on `accelerate` (not installed).

Usage: /usr/bin/python3 scripts/bench/hf_ref.py [MODEL.gguf] [--batch 8 --seq 128 --decode 128 --reps 3]
"""

import argparse
import json
import os
import sys
import time

from common import PROMPT_LEN, TEXT, add_common_args, batch_rows, best_of, peak_rss_mib

# Debian's OpenBLAS builds, preferred first (the OpenMP one shares torch's thread pool).
OPENBLAS_DIRS = ["/usr/lib/x86_64-linux-gnu/openblas-openmp", "/usr/lib/x86_64-linux-gnu/openblas-pthread"]


def use_openblas(threads):
    """Re-exec with Debian's OpenBLAS ahead of the system libblas.so.3, if installed."""
    found = [d for d in OPENBLAS_DIRS if os.path.isfile(f"{d}/libblas.so.3")]
    if os.environ.get("PRAGMA_BENCH_REEXEC") or not found:
        return
    env = dict(os.environ, PRAGMA_BENCH_REEXEC="1")
    env.update(OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    env["LD_LIBRARY_PATH"] = ":".join(filter(None, [found[0], env.get("LD_LIBRARY_PATH")]))
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def loaded_blas():
    """The BLAS libraries mapped into this process, as parent-dir/file."""
    with open("/proc/self/maps") as fh:
        libs = {line.split()[-1] for line in fh if "blas" in line.rsplit("/", 1)[-1]}
    return ", ".join(sorted("/".join(p.split("/")[-2:]) for p in libs)) or None


def load(path):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    d, f = os.path.split(os.path.abspath(path))
    cfg = AutoConfig.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.float32)
    sd = load_gguf_checkpoint(path, return_tensors=True)["tensors"]
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    if "lm_head.weight" in missing:  # the GGUF has no output.weight: tied embeddings
        model.lm_head.weight = model.model.embed_tokens.weight
        missing.remove("lm_head.weight")
    assert not missing, missing
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    return model.eval(), tok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap)
    ap.add_argument("--system-blas", action="store_true", help="don't switch to OpenBLAS")
    a = ap.parse_args()
    if not a.system_blas:
        use_openblas(a.threads)

    import torch
    import transformers

    torch.set_num_threads(a.threads)
    torch.set_grad_enabled(False)
    transformers.logging.set_verbosity_error()

    model, tok = load(a.model)
    ids = tok(TEXT, add_special_tokens=False).input_ids
    rows = torch.tensor(batch_rows(ids, a.batch, a.seq))
    prompt = rows[:1, :PROMPT_LEN]

    def prefill(hidden_states=False):
        out = model.model(input_ids=rows, use_cache=False, output_hidden_states=hidden_states)
        model.lm_head(out.last_hidden_state[:, -1])
        if hidden_states:
            assert len(out.hidden_states) == model.config.num_hidden_layers + 1

    def decode():
        out = model(input_ids=prompt, use_cache=True, num_logits_to_keep=1)
        t = time.perf_counter()
        for i in range(a.decode):
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            if i + 1 < a.decode:
                out = model(input_ids=nxt, past_key_values=out.past_key_values, use_cache=True)
        return time.perf_counter() - t

    t_plain = best_of(a.reps, prefill)
    t_capture = best_of(a.reps, lambda: prefill(hidden_states=True))
    t_decode = best_of(min(a.reps, 2), decode)
    n_tok = a.batch * a.seq
    print(json.dumps({
        "tool": "hf-transformers",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "blas": loaded_blas(),
        "attn_implementation": model.config._attn_implementation,
        "threads": a.threads,
        "prefill_batch": a.batch,
        "prefill_seq": a.seq,
        "prefill_tok_s": n_tok / t_plain,
        "prefill_capture_all_resid_tok_s": n_tok / t_capture,
        "capture_overhead": t_capture / t_plain - 1.0,
        "decode_tokens": a.decode,
        "decode_tok_s": a.decode / t_decode,
        "peak_rss_mib": peak_rss_mib(),
    }, indent=2))


if __name__ == "__main__":
    main()
