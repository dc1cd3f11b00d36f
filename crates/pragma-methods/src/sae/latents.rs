//! Which SAE latents fire on each token of a text: `pragma sae latents` as a library call
//! (SAELens' `analysis` does the same for its feature dashboards).

use candle_core::Tensor;
use pragma_model::hooks::Hooks;
use pragma_model::llama::{Batch, Logits};
use pragma_model::Model;
use serde::{Deserialize, Serialize};

use super::Sae;
use crate::error::Result;

/// One latent's activation at one token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LatentActivation {
    /// Index into the SAE's `d_sae` latents.
    pub latent: usize,
    /// Its activation (`encode`'s output; > 0 when it fires).
    pub activation: f32,
}

/// The latents that fire at one position.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TokenLatents {
    /// Token index in the input, from 0.
    pub position: usize,
    /// The token's string in the vocabulary.
    pub token: String,
    /// A control token (BOS, chat markers): left out of SAE training (its activations
    /// are attention sinks the SAE never saw), so not read: `l0` 0, no latents.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub control_token: bool,
    /// How many latents fire (activation > 0).
    pub l0: usize,
    /// The strongest firing latents, largest first (ties: lower index first).
    pub latents: Vec<LatentActivation>,
}

/// Run `model` on `ids`, read the activations at the SAE's hook (`[t, d_in]`), encode
/// them (`[t, d_sae]`) and keep the `top` strongest firing latents per token.
///
/// Errors: the SAE's hook is not a site of this model, or its width differs.
pub fn token_latents(
    model: &Model,
    sae: &Sae,
    ids: &[u32],
    top: usize,
) -> Result<Vec<TokenLatents>> {
    let point = sae.hook_point(model.cfg().n_layers)?;
    let mut hooks = Hooks::new();
    hooks.capture(point);
    let (_, cache) =
        model
            .transformer
            .forward(&Batch::single(ids, model.device())?, &hooks, Logits::None)?;
    let f: Tensor = sae.encode(&cache.get_row(point, 0)?)?; // [t, d_sae]
    let rows: Vec<Vec<f32>> = f.to_vec2()?;
    Ok(ids
        .iter()
        .zip(&rows)
        .enumerate()
        .map(|(position, (&id, row))| {
            let token = model.tokenizer.token_str(id);
            if model.tokenizer.is_special(id) {
                return TokenLatents {
                    position,
                    token,
                    control_token: true,
                    l0: 0,
                    latents: Vec::new(),
                };
            }
            let mut fired: Vec<(usize, f32)> = row
                .iter()
                .copied()
                .enumerate()
                .filter(|(_, v)| *v > 0.0)
                .collect();
            fired.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
            let l0 = fired.len();
            fired.truncate(top);
            TokenLatents {
                position,
                token,
                control_token: false,
                l0,
                latents: fired
                    .into_iter()
                    .map(|(latent, activation)| LatentActivation { latent, activation })
                    .collect(),
            }
        })
        .collect())
}
