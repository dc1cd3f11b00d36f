//! The architecture description shared by every loader.

use serde::Serialize;

use crate::error::{Error, Result};

/// Decoder families served by the one llama-style implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    /// Gemma 3 (text): the llama block plus the extras in [`Gemma`].
    Gemma3,
}

impl Arch {
    pub const NAMES: &'static str = "llama, mistral, qwen2, qwen3, gemma3";

    pub fn parse(s: &str) -> Result<Arch> {
        match s {
            "llama" | "LlamaForCausalLM" => Ok(Arch::Llama),
            "mistral" | "MistralForCausalLM" => Ok(Arch::Mistral),
            "qwen2" | "Qwen2ForCausalLM" => Ok(Arch::Qwen2),
            "qwen3" | "Qwen3ForCausalLM" => Ok(Arch::Qwen3),
            "gemma3" => Ok(Arch::Gemma3),
            other => Err(Error::UnknownArchitecture {
                found: other.to_string(),
                expected: Self::NAMES.to_string(),
            }),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
        }
    }
}

/// Llama 3 style frequency-dependent RoPE scaling.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub arch: Arch,
    pub n_layers: usize,
    pub d_model: usize,
    pub d_mlp: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_head: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// Per-frequency divisors stored by llama.cpp as `rope_freqs.weight` (Llama 3 GGUFs).
    pub rope_freq_factors: Option<Vec<f64>>,
    /// Qwen2: biases on the q, k and v projections.
    pub qkv_bias: bool,
    /// Qwen3: RMSNorm on each query and key head before RoPE.
    pub qk_norm: bool,
    pub tie_embeddings: bool,
    /// Gemma 2/3's departures from the llama block; `None` for the llama family.
    pub gemma: Option<Gemma>,
}

/// What a Gemma 3 decoder adds to the llama block (Gemma Team, "Gemma 3 Technical
/// Report", 2025; Hugging Face `modeling_gemma3.py`; llama.cpp `gemma3`):
///
/// - the embedding is multiplied by `embed_scale` (sqrt(d_model)) before `hook_embed`;
/// - RMSNorms on the attention and MLP outputs before they join the residual
///   (TransformerLens' `ln1_post` and `ln2_post`), and q/k norms on every head;
/// - a tanh-approximated GELU gate (`gelu_pytorch_tanh`) in place of SiLU;
/// - queries scaled by `query_scale` (`query_pre_attn_scalar ** -0.5`);
/// - local layers that attend to the last `sliding_window` positions only, with
///   their own RoPE base; every `sliding_pattern`-th layer is global;
/// - optional tanh soft-capping of attention scores and final logits
///   (`cap * tanh(x / cap)`; Gemma 2 has it, Gemma 3 does not).
///
/// RMSNorm gains are stored as used: Hugging Face's `(1 + w)` is already folded into
/// GGUF files by llama.cpp's converter.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Gemma {
    pub embed_scale: f64,
    pub query_scale: f64,
    /// Keys a local layer attends to, counting the query's own position.
    pub sliding_window: usize,
    /// Layer `i` is global when `(i + 1) % sliding_pattern == 0`; 0: all global.
    pub sliding_pattern: usize,
    /// RoPE base of the local layers (the global ones use [`Config::rope_theta`]).
    pub rope_theta_local: f64,
    /// Linear RoPE scaling factor of the global layers (Gemma 3 4B+: 8), 1 if none.
    pub rope_scale_global: f64,
    pub attn_softcap: Option<f64>,
    pub final_softcap: Option<f64>,
}

impl Gemma {
    /// Whether layer `i` is a local (sliding-window) layer.
    pub fn is_local(&self, i: usize) -> bool {
        self.sliding_pattern > 0 && !(i + 1).is_multiple_of(self.sliding_pattern)
    }
}

impl Config {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.n_layers == 0 || self.d_model == 0 || self.n_heads == 0 || self.vocab_size == 0 {
            return bad(format!(
                "expected non-zero sizes, found n_layers={} d_model={} n_heads={} vocab={}",
                self.n_layers, self.d_model, self.n_heads, self.vocab_size
            ));
        }
        // Sizes come from files: each is bounded far above any real model, so a corrupt
        // or hostile value is an error and not an allocation of terabytes (the
        // `gguf_model` fuzz target found `n_layers` = 2^40 aborting the process).
        for (what, v, max) in [
            ("n_layers", self.n_layers, 4096),
            ("d_model", self.d_model, 1 << 20),
            ("d_mlp", self.d_mlp, 1 << 22),
            ("n_heads", self.n_heads, 4096),
            ("d_head", self.d_head, 4096),
            ("vocab_size", self.vocab_size, 1 << 24),
            ("context_length", self.context_length, 1 << 24),
        ] {
            if v > max {
                return bad(format!(
                    "{what} = {v} is larger than any model pragma reads (at most {max}): a corrupt file?"
                ));
            }
        }
        if self.n_kv_heads == 0 || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "n_heads ({}) must be a multiple of n_kv_heads ({})",
                self.n_heads, self.n_kv_heads
            ));
        }
        if self.d_head == 0 || !self.d_head.is_multiple_of(2) {
            return bad(format!(
                "head dim must be even for RoPE, found {}",
                self.d_head
            ));
        }
        Ok(())
    }

    /// Whether layer `i` attends through a sliding window (Gemma 3's local layers).
    pub fn is_local(&self, i: usize) -> bool {
        self.gemma.as_ref().is_some_and(|g| g.is_local(i))
    }

    /// RoPE inverse frequencies `[d_head / 2]` of layer `i`: Gemma 3's local layers use
    /// their own base, its global layers the linear scaling; others as [`Self::inv_freq`].
    pub fn inv_freq_of_layer(&self, i: usize) -> Vec<f64> {
        match &self.gemma {
            Some(g) if g.is_local(i) => {
                let d = self.d_head as f64;
                (0..self.d_head / 2)
                    .map(|j| 1.0 / g.rope_theta_local.powf(2.0 * j as f64 / d))
                    .collect()
            }
            Some(g) => self
                .inv_freq()
                .into_iter()
                .map(|f| f / g.rope_scale_global)
                .collect(),
            None => self.inv_freq(),
        }
    }

    /// The activation of the MLP's gate: SiLU, or GELU (tanh approximation) for Gemma.
    pub fn gelu_gate(&self) -> bool {
        self.gemma.is_some()
    }

    /// RoPE inverse frequencies `[d_head / 2]`, with Llama 3 scaling applied.
    pub fn inv_freq(&self) -> Vec<f64> {
        let d = self.d_head as f64;
        let mut inv: Vec<f64> = (0..self.d_head / 2)
            .map(|i| 1.0 / self.rope_theta.powf(2.0 * i as f64 / d))
            .collect();
        if let Some(s) = &self.rope_scaling {
            let old = s.original_max_position_embeddings as f64;
            let low_wavelen = old / s.low_freq_factor;
            let high_wavelen = old / s.high_freq_factor;
            for f in inv.iter_mut() {
                let wavelen = 2.0 * std::f64::consts::PI / *f;
                if wavelen > low_wavelen {
                    *f /= s.factor;
                } else if wavelen >= high_wavelen {
                    let smooth = (old / wavelen - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    *f = (1.0 - smooth) * *f / s.factor + smooth * *f;
                }
            }
        }
        if let Some(factors) = &self.rope_freq_factors {
            for (f, k) in inv.iter_mut().zip(factors) {
                *f /= k;
            }
        }
        inv
    }

    pub fn n_params(&self) -> usize {
        let d = self.d_model;
        let attn = d * self.n_heads * self.d_head * 2 + d * self.n_kv_heads * self.d_head * 2;
        let mlp = 3 * d * self.d_mlp;
        let norms = if self.gemma.is_some() {
            4 * d + 2 * self.d_head
        } else {
            2 * d
        };
        let per_layer = attn + mlp + norms;
        let embed = self.vocab_size * d;
        let head = if self.tie_embeddings { 0 } else { embed };
        self.n_layers * per_layer + embed + head + d
    }

    /// KV cache bytes per token of one sequence: keys and values, f32, every layer
    /// (`2 * n_layers * n_kv_heads * d_head * 4`).
    pub fn kv_bytes_per_token(&self) -> usize {
        2 * self.n_layers * self.n_kv_heads * self.d_head * 4
    }

    /// Peak activation bytes of one forward over `tokens` tokens (all rows of the
    /// batch together) of which each attends to at most `keys`: the residual stream,
    /// the block's projections and MLP (`tokens * (4 d + 2 (h + 2 hk) dh + 3 f)` f32),
    /// plus the attention scores and pattern (`2 h * tokens * keys` f32). Captured
    /// hooks come on top.
    pub fn activation_bytes(&self, tokens: usize, keys: usize) -> usize {
        let (d, f, h, hk, dh) = (
            self.d_model,
            self.d_mlp,
            self.n_heads,
            self.n_kv_heads,
            self.d_head,
        );
        4 * (tokens * (4 * d + 2 * (h + 2 * hk) * dh + 3 * f) + 2 * h * tokens * keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_rope_scaling_covers_all_three_bands() {
        // head_dim 8, theta 5e5: wavelengths 6.3 (kept), 167 (smoothed: between
        // 256/4 and 256/1), 4443 and 118143 (divided by 8). Expected values computed
        // independently in Python from the published Llama 3 formula.
        let mut cfg = crate::testing::tiny_config(Arch::Llama);
        cfg.d_head = 8;
        cfg.rope_theta = 500_000.0;
        cfg.rope_scaling = Some(Llama3RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 256,
        });
        let want = [
            1.0,
            0.010538232746455323,
            0.00017677669529663688,
            6.647869871181235e-06,
        ];
        for (got, want) in cfg.inv_freq().iter().zip(want) {
            assert!((got - want).abs() <= 1e-12 * want, "{got} vs {want}");
        }
    }
}
