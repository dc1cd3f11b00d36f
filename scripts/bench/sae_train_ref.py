#!/usr/bin/env python3
"""TopK SAE training throughput of the real EleutherAI sparsify or SAELens, on a pragma store.

Reads one hook of a pragma activation store (manifest.json + shard-*.safetensors: an f16
[n_tokens, d_in] tensor per hook and u32 token tables), leaves out rows whose token is one of
manifest["model"]["special_tokens"] (as `pragma sae train` does), shuffles the rest with a
fixed seed, takes (warmup + steps) * batch rows as float32 in memory, then trains with the
library's own trainer and prints one JSON object on stdout:

  {"lib", "version", "d_sae", "k", "batch", "steps", "tokens_per_second", "seconds",
   "threads", "final_fvu_or_mse", ...details}

Only the training steps after --warmup-steps are timed: from the end of the optimizer step
of the last warm-up step to the end of the optimizer step of the last step (each interval
is one full step of the trainer's loop, bookkeeping included). The data is in memory.

--lib sparsify (eai-sparsify): its `Trainer.fit` itself, for one hookpoint, loss_fn "fvu".
  The Trainer takes activations from forward hooks on a model, so the model here is a
  stand-in whose hooked module returns rows of the in-memory float32 activations
  (`input_ids` are row numbers; sequences of --seq rows, --batch / --seq sequences per
  batch; no exclude_tokens, the special rows are already gone). Per step the Trainer does
  what it does for a model: b_dec = batch mean on step 0, decoder rows to unit norm,
  forward of `SparseCoder` (fused encoder, eager embedding_bag decoder) with
  dead_mask = tokens since fired > dead_feature_threshold, loss = fvu + auxk_alpha * auxk_loss
  (auxk_alpha 1/32), backward, decoder-gradient projection
  (remove_gradient_parallel_to_decoder_directions), optimizer step, lr scheduler step,
  dead-latent bookkeeping. --optimizer adam (default here; sparsify falls back to
  torch.optim.Adam without bitsandbytes, lr 2e-4 / sqrt(d_sae / 2^14), linear warm-up over
  its default 1000 steps, --lr-warmup-steps to change) or signum (sparsify's own default:
  ScheduleFreeWrapper(SignSGD), momentum 0.95, lr 5e-3 / sqrt(d_sae / 2^14)). With Adam's
  1000-step warm-up the SAE hardly moves in a few dozen steps, so few or no latents die
  and AuxK may never run (see "auxk_steps"). The Trainer's final checkpoint write
  (after the timed steps) is skipped. sparsify's forward has a CUDA bf16 autocast
  decorator; on the CPU it is disabled, so this trains in float32 like pragma.

--lib saelens (sae-lens): `TopKTrainingSAE` (its defaults: rescale_acts_by_decoder_norm,
  decoder_init_norm 0.1, dense activations) driven by its own `SAETrainer.fit` with the
  batches as the data provider. Per step: `training_forward_pass` with the trainer's
  dead_neuron_mask (forward passes since fired > dead_feature_window), loss = mse +
  aux_loss_coefficient * scale * AuxK (coefficient 1.0, SAELens' default; its AuxK is a
  per-row squared error, not variance-normalised like sparsify's), backward, grad-norm
  clipping to 1, Adam (lr 3e-4 constant, betas 0.9/0.999), lr scheduler step; no input
  normalisation (normalize_activations "none", the default).

The dead-latent window is the same for the three tools: --dead-tokens, default
min(10M, steps * batch / 4) as `pragma sae train` on steps * batch tokens (sparsify:
dead_feature_threshold in tokens; SAELens: dead_feature_window = dead_tokens // batch
steps). AuxK only costs anything once some latent is dead; "auxk_steps" says in how many
timed steps it was non-zero and "dead_latents_final" how many latents were dead at the end.

A training run rather than a throughput sample: --tokens N trains N // --batch steps with
no untimed steps ("seconds" runs from just before Trainer.fit / SAETrainer.fit to the end
of the last optimizer step; the store read and shuffle before it are not counted), and the
dead window default becomes min(10M, N / 4), as `pragma sae train --tokens N`. With Adam
give --lr-warmup-steps too: sparsify's default 1000-step warm-up never ends in a run of a
few hundred steps. --drop-outliers leaves rows whose norm is above 10x the median norm
(median over the first 65536 rows of the shuffled sequence) out of each batch, as `pragma
sae train` does (outlier_factor 10, scale_tokens 65536): for sparsify through its own
exclude_tokens mask (the stand-in's input_ids are row numbers of the store rows, so the
outlier rows' numbers are the excluded "tokens"), for SAELens by filtering the batches.
--save DIR (sparsify) writes the trained SAE with sparsify's `SparseCoder.save_to_disk`
(cfg.json + sae.safetensors, the weights as trained: sparsify renormalises the decoder
before each forward, not after the last step); pragma maps a folder named layers.N to
blocks.N.hook_resid_post. --lr-schedule pragma (sparsify, Adam; a diagnostic) puts pragma's
schedule (warm-up over 1% of the steps, constant, linear decay to 0 over the last 20%) in
place of sparsify's (linear warm-up over --lr-warmup-steps, then linear decay to 0 over all
the remaining steps); the JSON gives the first and last per-step learning rates and their
mean. Example (the same-budget comparison in BENCHMARKS.md):

  /opt/sae-venv/bin/python scripts/bench/sae_train_ref.py --lib sparsify \\
      --store runs/fortunes-l15 --hook blocks.15.hook_resid_post --d-sae 4608 --k 32 \\
      --tokens 2000000 --batch 4096 --seed 0 --lr-warmup-steps 5 --drop-outliers \\
      --save /tmp/cmp/sparsify/layers.15

Runs under /opt/sae-venv (Debian's torch 1.13 + sae-lens 6.54.12 + eai-sparsify 1.3.3; see
scripts/fixtures/make_sae_fixtures.py for the setup) with the shims in sae_shims.py.

BLAS: Debian's torch does its matmuls in the system libblas.so.3, netlib's reference BLAS
unless OpenBLAS is installed: its float32 GEMM ran at ~2.4 GFLOP/s here against ~200 with
OpenBLAS, and a sparsify step at d_sae 4608 took 9.9 s instead of 0.6 s. As hf_ref.py, the script re-executes itself with OpenBLAS first on
LD_LIBRARY_PATH (this process only) when `apt-get install libopenblas0-openmp` was done or
$OPENBLAS_DIR names a folder with its libblas.so.3 (`apt-get download
libopenblas0-openmp; dpkg-deb -x libopenblas0-openmp_*.deb DIR`, then
DIR/usr/lib/x86_64-linux-gnu/openblas-openmp); the JSON key "blas" names the library torch
loaded, and stderr warns when it is not OpenBLAS. --system-blas turns the switch off.

Usage:
  /opt/sae-venv/bin/python scripts/bench/sae_train_ref.py --lib sparsify \\
      --store /tmp/rm/fort15 --hook blocks.15.hook_resid_post --d-sae 4608 [--steps 20]
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "2")

import argparse
import functools
import importlib.metadata
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sae_shims  # noqa: E402
from common import loaded_blas, use_openblas  # noqa: E402


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def load_rows(store: Path, hook: str, n: int, seed: int):
    """The float16 rows of `hook` (special-token rows left out), n shuffled row numbers
    into them (a new permutation per pass if the store has fewer than n rows), and the
    row count. `pool[idx]` is the training sequence."""
    from safetensors.numpy import load_file

    m = json.loads((store / "manifest.json").read_text())
    hooks = [h["name"] for h in m.get("hooks", [])]
    if hook not in hooks:
        raise SystemExit(f"error: {store}: no hook {hook} (has {', '.join(hooks)})")
    special = np.array(m["model"].get("special_tokens", []), dtype=np.uint32)
    parts = []
    for sh in m["shards"]:
        t = load_file(str(store / sh["file"]))
        keep = ~np.isin(t["token"], special)
        parts.append(t[hook][keep])
        del t
    x = np.concatenate(parts)
    del parts
    rng = np.random.default_rng(seed)
    idx = []
    have = 0
    while have < n:  # a new permutation per pass if the store is smaller than needed
        p = rng.permutation(len(x))
        idx.append(p[: n - have])
        have += len(idx[-1])
    return x, np.concatenate(idx), len(x)


def outlier_rows(pool, idx, factor: float, sample: int):
    """As `pragma sae train` (outlier_factor 10, scale_tokens 65536): the median row norm
    over the first `sample` rows of the shuffled sequence; rows of the pool whose norm is
    above factor x that median. Returns (their row numbers, the cut, the median)."""
    norms = np.empty(len(pool), dtype=np.float64)
    for i in range(0, len(pool), 65536):  # f16 -> f64 in chunks
        c = pool[i : i + 65536].astype(np.float64)
        norms[i : i + len(c)] = np.sqrt((c * c).sum(1))
    first = norms[idx[:sample]]
    median = float(np.sort(first)[len(first) // 2])  # pragma's sorted[len / 2]
    cut = factor * median
    return np.flatnonzero(norms > cut), cut, median


def time_optimizer_steps(opt, times: list):
    """Record perf_counter() after each call of opt.step (functools.wraps keeps the
    attributes that torch's lr schedulers put on the wrapped step)."""
    inner = opt.step

    @functools.wraps(inner)
    def step(*a, **k):
        r = inner(*a, **k)
        times.append(time.perf_counter())
        return r

    opt.step = step


def run_sparsify(acts, idx, outliers, a, dead_tokens):
    import torch
    from torch import nn
    from sparsify import SparseCoderConfig
    from sparsify.config import TrainConfig
    from sparsify.trainer import Trainer

    n_steps = a.warmup_steps + a.steps
    if a.batch % a.seq:
        raise SystemExit(f"error: --batch {a.batch} must be a multiple of --seq {a.seq}")
    hookpoint = "resid_post"

    class Replay(nn.Module):
        def __init__(self, x):
            super().__init__()
            self.register_buffer("x", x, persistent=False)

        def forward(self, input_ids):
            return self.x[input_ids]  # [sequences, seq, d_in]; input_ids are pool rows

    class ReplayModel(nn.Module):
        """Stands in for the transformer: its `resid_post` module outputs stored rows."""

        def __init__(self, x):
            super().__init__()
            setattr(self, hookpoint, Replay(x))

        @property
        def base_model(self):
            return self

        @property
        def device(self):
            return getattr(self, hookpoint).x.device

        @property
        def dummy_inputs(self):
            return {"input_ids": torch.zeros(1, 1, dtype=torch.long)}

        def forward(self, input_ids):
            return getattr(self, hookpoint)(input_ids)

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return n_steps * a.batch // a.seq

        def __getitem__(self, i):
            return {"input_ids": idx[i * a.seq : (i + 1) * a.seq]}

    cfg = TrainConfig(
        sae=SparseCoderConfig(num_latents=a.d_sae, k=a.k),
        batch_size=a.batch // a.seq,
        loss_fn="fvu",
        optimizer=a.optimizer,
        auxk_alpha=1.0 / 32.0,
        dead_feature_threshold=dead_tokens,
        hookpoints=[hookpoint],
        # --drop-outliers: the outlier rows' numbers, masked out of each batch by the
        # Trainer itself (as pragma leaves them out of its batches)
        exclude_tokens=[int(r) for r in outliers],
        init_seeds=[a.seed],
        log_to_wandb=False,
        save_every=10**9,
    )
    if a.lr_warmup_steps is not None:
        cfg.lr_warmup_steps = a.lr_warmup_steps
    with tempfile.TemporaryDirectory() as tmp:
        cfg.save_dir = tmp
        trainer = Trainer(cfg, Rows(), ReplayModel(acts))
        trainer.save = lambda: None  # the final checkpoint, after the timed steps
        sae = trainer.saes[hookpoint]
        if a.lr_schedule == "pragma":
            # pragma's TrainConfig::lr_at in place of sparsify's scheduler (a diagnostic:
            # same base lr, only the schedule differs)
            warm = min(max(n_steps // 100, 1), 1000)
            decay = n_steps - n_steps // 5

            def pragma_lr(s):
                if s < warm:
                    return (s + 1) / warm
                if s >= decay and n_steps > decay:
                    return (n_steps - s) / (n_steps - decay)
                return 1.0

            trainer.lr_schedulers = [
                torch.optim.lr_scheduler.LambdaLR(trainer.optimizers[0], pragma_lr)
            ]
        lrs: list = []  # per step, the learning rate of its optimizer step
        outs: list = []  # the last step's ForwardOutput
        aux: list = []  # per step, auxk_loss (a detached scalar: no sync in the loop)
        fvus: list = []  # per step, the batch FVU (detached)
        trained: list = []  # per step, the rows the SAE saw (the batch less excluded rows)

        def keep(module, inputs, o):
            outs[:] = [o]
            aux.append(o.auxk_loss.detach())
            fvus.append(o.fvu.detach())
            trained.append(o.sae_out.shape[0])
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

        sae.register_forward_hook(keep)
        times: list = []
        for opt in trainer.optimizers[:1]:
            time_optimizer_steps(opt, times)
        pg = trainer.optimizers[0].param_groups[0]
        lr = pg.get("initial_lr", pg.get("lr"))  # the base lr (a warm-up scheduler starts at 0)
        t_fit = time.perf_counter()
        trainer.fit()
    if len(times) != n_steps or len(aux) != n_steps:
        raise SystemExit(f"error: expected {n_steps} steps, saw {len(times)} / {len(aux)}")
    saved = None
    if a.save is not None:
        # sparsify's own writer (what Trainer._checkpoint calls per hookpoint):
        # cfg.json (SparseCoderConfig + d_in) + sae.safetensors
        sae.save_to_disk(a.save)
        saved = str(a.save)
    last = outs[-1]
    dead = int((trainer.num_tokens_since_fired[hookpoint] > dead_tokens).sum())
    tail = [float(v) for v in fvus[-20:]]
    return {
        # with --warmup-steps 0 (--tokens): from just before Trainer.fit to the end of the
        # last optimizer step (step 0's b_dec init and every batch included)
        "seconds": times[-1] - (times[a.warmup_steps - 1] if a.warmup_steps else t_fit),
        "final_fvu_or_mse": float(last.fvu),
        "final_metric": "fvu",
        "final_fvu_last20": sum(tail) / len(tail),
        "final_auxk": float(last.auxk_loss),
        "auxk_steps": sum(float(v) > 0 for v in aux[a.warmup_steps :]),
        "dead_latents_final": dead,
        "optimizer": {
            "adam": "torch.optim.Adam (sparsify's 'adam', no bitsandbytes), linear warm-up "
            f"{cfg.lr_warmup_steps} steps",
            "signum": "ScheduleFreeWrapper(SignSGD), momentum 0.95 (sparsify's default)",
        }[a.optimizer],
        "lr_initial": lr,
        "lr_schedule": (
            "pragma's (replacing sparsify's scheduler): lr * (s + 1) / warm for s < warm = "
            "clamp(steps / 100, 1, 1000), constant, linear decay to 0 over the last 20%"
            if a.lr_schedule == "pragma"
            else "transformers get_linear_schedule_with_warmup: lr * s / warmup for "
            f"s < {cfg.lr_warmup_steps}, then linear decay to 0 at step {n_steps}"
        )
        if a.optimizer == "adam"
        else "none (schedule-free)",
        "lr_per_step_first_last": [lrs[:6], lrs[-3:]],
        "lr_mean": sum(lrs) / len(lrs),
        "loss": "fvu + (1/32) * auxk_loss (Trainer, loss_fn fvu)",
        "excluded_rows": len(outliers),
        "rows_trained": sum(trained),
        "saved": saved,
        "dead_feature_threshold_tokens": dead_tokens,
    }


def run_saelens(acts, idx, outliers, a, dead_tokens):
    import torch
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    n_steps = a.warmup_steps + a.steps
    torch.manual_seed(a.seed)
    sae = TopKTrainingSAE(
        TopKTrainingSAEConfig(
            d_in=acts.shape[1],
            d_sae=a.d_sae,
            k=a.k,
            aux_loss_coefficient=a.aux_coef,
            dtype="float32",
            device="cpu",
        )
    )
    window = max(dead_tokens // a.batch, 1)
    batches = [acts[idx[i * a.batch : (i + 1) * a.batch]] for i in range(n_steps)]
    if len(outliers):  # --drop-outliers: leave them out of each batch, as pragma
        out_t = torch.from_numpy(outliers).long()
        batches = [
            acts[j[~torch.isin(j, out_t)]]
            for j in (idx[i * a.batch : (i + 1) * a.batch] for i in range(n_steps))
        ]
    tcfg = SAETrainerConfig(
        total_training_samples=sum(len(b) for b in batches),
        train_batch_size_samples=a.batch,
        lr_end=3e-4 / 10,  # as LanguageModelSAERunnerConfig sets it (lr / 10; unused when constant)
        dead_feature_window=window,
        device="cpu",
    )
    trainer = SAETrainer(cfg=tcfg, sae=sae, data_provider=iter(batches))
    outs: list = []  # the last step's output (it holds dense [batch, d_sae] tensors)
    aux: list = []  # per step, the AuxK loss (a detached scalar: no sync in the loop)
    inner = trainer.step

    def step(batch):
        o = inner(batch)
        outs[:] = [o]
        aux.append(o.losses["auxiliary_reconstruction_loss"].detach())
        return o

    trainer.step = step
    times: list = []
    time_optimizer_steps(trainer.optimizer, times)
    t_fit = time.perf_counter()
    trainer.fit()
    if len(times) != n_steps or len(aux) != n_steps:
        raise SystemExit(f"error: expected {n_steps} steps, saw {len(times)} / {len(aux)}")
    last = outs[-1]
    with torch.no_grad():
        x, y = last.sae_in, last.sae_out
        fvu = float((x - y).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    return {
        "seconds": times[-1] - (times[a.warmup_steps - 1] if a.warmup_steps else t_fit),
        "final_fvu_or_mse": float(last.losses["mse_loss"]),
        "final_metric": "mse (SAELens mse_loss: per-row squared error sum, batch mean)",
        "final_fvu": fvu,
        "final_auxk": float(last.losses["auxiliary_reconstruction_loss"]),
        "auxk_steps": sum(float(v) > 0 for v in aux[a.warmup_steps :]),
        "dead_latents_final": int(trainer.dead_neurons.sum()),
        "optimizer": f"torch.optim.Adam via SAETrainer (betas {tcfg.adam_beta1}/"
        f"{tcfg.adam_beta2}), lr {tcfg.lr} {tcfg.lr_scheduler_name}, grad-norm clip 1.0",
        "lr_initial": tcfg.lr,
        "loss": f"mse + {a.aux_coef} * scale * AuxK (TopKTrainingSAE.training_forward_pass)",
        "dead_feature_window_steps": window,
        "excluded_rows": len(outliers),
        "rescale_acts_by_decoder_norm": sae.cfg.rescale_acts_by_decoder_norm,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", required=True, choices=["sparsify", "saelens"])
    ap.add_argument("--store", required=True, type=Path)
    ap.add_argument("--hook", default="blocks.15.hook_resid_post")
    ap.add_argument("--d-sae", type=int, default=4608)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4096, help="tokens per step")
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first (>= 1)")
    ap.add_argument(
        "--tokens",
        type=int,
        default=None,
        help="a training run of this many tokens: --steps = tokens // --batch, no untimed "
        "steps (the whole Trainer.fit is timed); the dead window default uses tokens / 4",
    )
    ap.add_argument(
        "--drop-outliers",
        action="store_true",
        help="leave rows with norm > 10x the median (over the first 65536 shuffled rows) "
        "out of each batch, as pragma sae train does",
    )
    ap.add_argument(
        "--save",
        type=Path,
        default=None,
        help="sparsify only: write the trained SAE there with its save_to_disk "
        "(cfg.json + sae.safetensors; name the folder layers.N for pragma's hook mapping)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--dead-tokens",
        type=int,
        default=None,
        help="AuxK dead window in tokens (default min(10M, steps*batch/4), as pragma)",
    )
    ap.add_argument(
        "--optimizer",
        default="adam",
        choices=["adam", "signum"],
        help="sparsify only (its own default is signum)",
    )
    ap.add_argument(
        "--lr-warmup-steps",
        type=int,
        default=None,
        help="sparsify + adam only: its linear lr warm-up (default: its own, 1000 steps)",
    )
    ap.add_argument(
        "--lr-schedule",
        default="sparsify",
        choices=["sparsify", "pragma"],
        help="sparsify + adam only: keep sparsify's scheduler (linear warm-up, then linear "
        "decay to 0 over the rest of the run) or put pragma's in its place (warm-up over 1%%, "
        "constant, linear decay over the last 20%%), as a diagnostic",
    )
    ap.add_argument("--aux-coef", type=float, default=1.0, help="SAELens aux_loss_coefficient")
    ap.add_argument("--seq", type=int, default=128, help="sparsify: rows per stand-in sequence")
    ap.add_argument("--system-blas", action="store_true", help="don't switch to OpenBLAS")
    a = ap.parse_args()
    if not a.system_blas:
        use_openblas(a.threads)
    # The libraries print progress on stdout (sparsify already on import): stdout is the JSON's.
    json_out, sys.stdout = sys.stdout, sys.stderr
    if a.tokens is not None:
        if a.tokens < a.batch:
            raise SystemExit(f"error: --tokens {a.tokens} is less than one batch ({a.batch})")
        a.steps, a.warmup_steps = a.tokens // a.batch, 0
    elif a.warmup_steps < 1 or a.steps < 1:
        raise SystemExit("error: --warmup-steps and --steps must be >= 1")
    if a.save is not None and a.lib != "sparsify":
        raise SystemExit("error: --save is for --lib sparsify only")
    if a.lr_schedule != "sparsify" and (a.lib != "sparsify" or a.optimizer != "adam"):
        raise SystemExit("error: --lr-schedule pragma is for --lib sparsify --optimizer adam")
    dead_tokens = a.dead_tokens
    if dead_tokens is None:  # pragma: min(10M, --tokens / 4)
        dead_tokens = min(10_000_000, (a.tokens or a.steps * a.batch) // 4)

    shims = sae_shims.install()
    import torch

    torch.set_num_threads(a.threads)
    t = time.perf_counter()
    n = (a.warmup_steps + a.steps) * a.batch
    pool, idx, n_rows = load_rows(a.store, a.hook, n, a.seed)
    outliers, cut, median = np.zeros(0, dtype=np.int64), None, None
    if a.drop_outliers:
        outliers, cut, median = outlier_rows(pool, idx, 10.0, 65536)
        log(
            f"{a.lib}: {len(outliers)} of {n_rows} rows have norm > {cut:.1f} "
            f"(10 x median {median:.1f}): left out of the batches"
        )
    acts = torch.from_numpy(pool).float().contiguous()  # the pool; batches index it
    del pool
    idx = torch.from_numpy(idx).long()
    load_s = time.perf_counter() - t
    log(f"{a.lib}: {n} rows drawn from {n_rows} non-special rows ([{n_rows}, {acts.shape[1]}] f32) in {load_s:.1f} s")

    torch.ones(8, 8) @ torch.ones(8, 8)  # load torch's BLAS before looking for it
    blas = ", ".join(
        b for b in (loaded_blas() or "").split(", ") if b and not b.startswith("numpy")
    )
    if "openblas" not in blas:
        log(
            f"warning: torch uses {blas or 'an unknown BLAS'}, not OpenBLAS: its matmuls are "
            "~10-20x slower than they should be. Install libopenblas0-openmp or set "
            "OPENBLAS_DIR (see scripts/bench/common.py use_openblas)."
        )
    run = run_sparsify if a.lib == "sparsify" else run_saelens
    r = run(acts, idx, outliers, a, dead_tokens)
    pkg = "eai-sparsify" if a.lib == "sparsify" else "sae-lens"
    out = {
        "lib": a.lib,
        "version": version(pkg),
        "d_sae": a.d_sae,
        "k": a.k,
        "batch": a.batch,
        "steps": a.steps,
        "tokens_per_second": a.steps * a.batch / r["seconds"],
        "seconds": r.pop("seconds"),
        "threads": torch.get_num_threads(),
        "final_fvu_or_mse": r.pop("final_fvu_or_mse"),
        "warmup_steps": a.warmup_steps,
        "d_in": int(acts.shape[1]),
        "hook": a.hook,
        "store_rows": n_rows,
        "load_seconds": load_s,
        "dead_tokens": dead_tokens,
        "tokens": a.tokens,
        "drop_outliers": {"factor": 10.0, "sample_rows": 65536, "median_norm": median,
                          "cut": cut, "rows": int(len(outliers))} if a.drop_outliers else None,
        **r,
        "torch": torch.__version__,
        "blas": blas,
        "shims": shims,
    }
    print(json.dumps(out, indent=1), file=json_out)


if __name__ == "__main__":
    main()
