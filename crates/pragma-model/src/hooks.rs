//! Hook points and the hooks that read or change them.
//!
//! A [`HookPoint`] names one activation site with the TransformerLens string users
//! already know (`blocks.3.hook_resid_post`). A [`Hooks`] value lists what to do at
//! which sites, in order, and is passed *into* one forward or generate call: there is
//! no global registration, so nothing leaks into the next call.
//!
//! ```
//! use pragma_model::hooks::{HookPoint, Hooks, Positions};
//! let mut hooks = Hooks::new();
//! hooks.capture(HookPoint::ResidPost(3));
//! hooks.zero(HookPoint::MlpOut(5), Positions::Last);
//! assert_eq!(HookPoint::parse("blocks.3.hook_resid_post", 30).unwrap(), HookPoint::ResidPost(3));
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use candle_core::{DType, Tensor, D};

use crate::error::{Error, Result};

/// One activation site, named and meaning what it means in TransformerLens (checked
/// against TransformerLens itself: `tests/transformer_lens.rs`). A hook at an
/// `ln*.hook_scale` / `ln*.hook_normalized` site computes that norm step by step instead
/// of with the fused kernel, which moves later activations by float32 rounding
/// (~1e-6 relative). Shapes use `b` = batch,
/// `t` = positions, `d` = d_model, `h` = query heads, `hk` = key/value heads,
/// `dh` = head dim, `f` = d_mlp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookPoint {
    /// `hook_embed`: token embeddings `[b, t, d]`.
    Embed,
    /// `blocks.{i}.hook_resid_pre`: residual stream entering block i `[b, t, d]`.
    ResidPre(usize),
    /// `blocks.{i}.ln1.hook_scale`: the attention RMSNorm's divisor
    /// `sqrt(mean(x^2) + eps)` `[b, t, 1]`.
    Ln1Scale(usize),
    /// `blocks.{i}.ln1.hook_normalized`: `x / scale`, *before* the norm's gain `[b, t, d]`.
    Ln1Normalized(usize),
    /// `blocks.{i}.attn.hook_q`: queries before RoPE `[b, t, h, dh]` (after the per-head
    /// q norm for Qwen3).
    AttnQ(usize),
    /// `blocks.{i}.attn.hook_k`: keys before RoPE `[b, t, hk, dh]`.
    AttnK(usize),
    /// `blocks.{i}.attn.hook_v`: values `[b, t, hk, dh]`.
    AttnV(usize),
    /// `blocks.{i}.attn.hook_rot_q`: queries after RoPE `[b, t, h, dh]`.
    AttnRotQ(usize),
    /// `blocks.{i}.attn.hook_rot_k`: keys after RoPE `[b, t, hk, dh]`.
    AttnRotK(usize),
    /// `blocks.{i}.attn.hook_attn_scores`: scaled, masked attention logits before the
    /// softmax `[b, h, t_query, t_key]` (masked entries are -inf, as in TransformerLens).
    AttnScores(usize),
    /// `blocks.{i}.attn.hook_pattern`: attention probabilities `[b, h, t_query, t_key]`.
    AttnPattern(usize),
    /// `blocks.{i}.attn.hook_z`: per-head attention output before `W_O` `[b, t, h, dh]`.
    AttnZ(usize),
    /// `blocks.{i}.ln1_post.hook_scale` (Gemma only): the divisor of the RMSNorm on the
    /// attention output `[b, t, 1]`.
    Ln1PostScale(usize),
    /// `blocks.{i}.ln1_post.hook_normalized` (Gemma only): the attention output `W_O z`
    /// divided by its RMS, before the gain `[b, t, d]`.
    Ln1PostNormalized(usize),
    /// `blocks.{i}.hook_attn_out`: attention output added to the residual `[b, t, d]`
    /// (for Gemma, after its `ln1_post` norm, as in TransformerLens).
    AttnOut(usize),
    /// `blocks.{i}.hook_resid_mid`: residual after attention `[b, t, d]`.
    ResidMid(usize),
    /// `blocks.{i}.ln2.hook_scale`: the MLP RMSNorm's divisor `[b, t, 1]`.
    Ln2Scale(usize),
    /// `blocks.{i}.ln2.hook_normalized`: `x / scale`, before the gain `[b, t, d]`.
    Ln2Normalized(usize),
    /// `blocks.{i}.mlp.hook_pre`: the gate projection before its activation `[b, t, f]`.
    MlpPre(usize),
    /// `blocks.{i}.mlp.hook_pre_linear`: the up projection (gated MLPs) `[b, t, f]`.
    MlpPreLinear(usize),
    /// `blocks.{i}.mlp.hook_post`: `act(pre) * pre_linear`, the input of the down
    /// projection `[b, t, f]`.
    MlpPost(usize),
    /// `blocks.{i}.ln2_post.hook_scale` (Gemma only): the divisor of the RMSNorm on the
    /// MLP output `[b, t, 1]`.
    Ln2PostScale(usize),
    /// `blocks.{i}.ln2_post.hook_normalized` (Gemma only): the down projection's output
    /// divided by its RMS, before the gain `[b, t, d]`.
    Ln2PostNormalized(usize),
    /// `blocks.{i}.hook_mlp_out`: MLP output added to the residual `[b, t, d]` (for
    /// Gemma, after its `ln2_post` norm).
    MlpOut(usize),
    /// `blocks.{i}.hook_resid_post`: residual stream leaving block i `[b, t, d]`.
    ResidPost(usize),
    /// `ln_final.hook_scale`: the final RMSNorm's divisor `[b, t, 1]`.
    LnFinalScale,
    /// `ln_final.hook_normalized`: the final residual divided by its RMS, *before* the
    /// norm's gain `[b, t, d]` (TransformerLens' meaning).
    LnFinal,
    /// `unembed.hook_in` (pragma's own name): the final norm's output with its gain, the
    /// input of the unembedding `[b, t, d]` (logits = this x `W_U`).
    UnembedIn,
}

/// Makes a block's hook point from its layer index.
type AtLayer = fn(usize) -> HookPoint;

/// Per-layer hook names, in the order they occur in a block.
const LAYER_SITES: &[(&str, AtLayer)] = &[
    ("hook_resid_pre", HookPoint::ResidPre),
    ("ln1.hook_scale", HookPoint::Ln1Scale),
    ("ln1.hook_normalized", HookPoint::Ln1Normalized),
    ("attn.hook_q", HookPoint::AttnQ),
    ("attn.hook_k", HookPoint::AttnK),
    ("attn.hook_v", HookPoint::AttnV),
    ("attn.hook_rot_q", HookPoint::AttnRotQ),
    ("attn.hook_rot_k", HookPoint::AttnRotK),
    ("attn.hook_attn_scores", HookPoint::AttnScores),
    ("attn.hook_pattern", HookPoint::AttnPattern),
    ("attn.hook_z", HookPoint::AttnZ),
    ("ln1_post.hook_scale", HookPoint::Ln1PostScale),
    ("ln1_post.hook_normalized", HookPoint::Ln1PostNormalized),
    ("hook_attn_out", HookPoint::AttnOut),
    ("hook_resid_mid", HookPoint::ResidMid),
    ("ln2.hook_scale", HookPoint::Ln2Scale),
    ("ln2.hook_normalized", HookPoint::Ln2Normalized),
    ("mlp.hook_pre", HookPoint::MlpPre),
    ("mlp.hook_pre_linear", HookPoint::MlpPreLinear),
    ("mlp.hook_post", HookPoint::MlpPost),
    ("ln2_post.hook_scale", HookPoint::Ln2PostScale),
    ("ln2_post.hook_normalized", HookPoint::Ln2PostNormalized),
    ("hook_mlp_out", HookPoint::MlpOut),
    ("hook_resid_post", HookPoint::ResidPost),
];

/// Hook names outside the blocks, in forward order (after `hook_embed`).
const FINAL_SITES: &[(&str, HookPoint)] = &[
    ("ln_final.hook_scale", HookPoint::LnFinalScale),
    ("ln_final.hook_normalized", HookPoint::LnFinal),
    ("unembed.hook_in", HookPoint::UnembedIn),
];

impl HookPoint {
    /// Every hook point of a llama-family model with `n_layers` blocks, in forward
    /// order (without Gemma's `ln1_post` / `ln2_post` sites).
    pub fn all(n_layers: usize) -> Vec<HookPoint> {
        Self::all_with(n_layers, false)
    }

    /// Every hook point of `cfg`'s model, in forward order: with the post-norm sites
    /// when the model has them (Gemma).
    pub fn all_for(cfg: &crate::Config) -> Vec<HookPoint> {
        Self::all_with(cfg.n_layers, cfg.gemma.is_some())
    }

    fn all_with(n_layers: usize, post_norms: bool) -> Vec<HookPoint> {
        let mut v = vec![HookPoint::Embed];
        for i in 0..n_layers {
            v.extend(
                LAYER_SITES
                    .iter()
                    .map(|(_, f)| f(i))
                    .filter(|p| post_norms || !p.is_post_norm()),
            );
        }
        v.extend(FINAL_SITES.iter().map(|(_, p)| *p));
        v
    }

    /// Whether this is one of Gemma's post-norm sites (`ln1_post`, `ln2_post`), which
    /// llama-family models do not have.
    pub fn is_post_norm(&self) -> bool {
        matches!(
            self,
            HookPoint::Ln1PostScale(_)
                | HookPoint::Ln1PostNormalized(_)
                | HookPoint::Ln2PostScale(_)
                | HookPoint::Ln2PostNormalized(_)
        )
    }

    pub fn layer(&self) -> Option<usize> {
        use HookPoint::*;
        match *self {
            Embed | LnFinalScale | LnFinal | UnembedIn => None,
            ResidPre(i) | Ln1Scale(i) | Ln1Normalized(i) | AttnQ(i) | AttnK(i) | AttnV(i)
            | AttnRotQ(i) | AttnRotK(i) | AttnScores(i) | AttnPattern(i) | AttnZ(i)
            | AttnOut(i) | ResidMid(i) | Ln2Scale(i) | Ln2Normalized(i) | MlpPre(i)
            | MlpPreLinear(i) | MlpPost(i) | MlpOut(i) | ResidPost(i) | Ln1PostScale(i)
            | Ln1PostNormalized(i) | Ln2PostScale(i) | Ln2PostNormalized(i) => Some(i),
        }
    }

    /// The shape of one token's activation, e.g. `[d_model]` or `[n_heads, d_head]`;
    /// `None` for the attention scores and pattern (they grow with the sequence).
    pub fn per_token_shape(&self, cfg: &crate::Config) -> Option<Vec<usize>> {
        use HookPoint::*;
        Some(match self {
            AttnScores(_) | AttnPattern(_) => return None,
            AttnQ(_) | AttnRotQ(_) | AttnZ(_) => vec![cfg.n_heads, cfg.d_head],
            AttnK(_) | AttnV(_) | AttnRotK(_) => vec![cfg.n_kv_heads, cfg.d_head],
            MlpPre(_) | MlpPreLinear(_) | MlpPost(_) => vec![cfg.d_mlp],
            Ln1Scale(_) | Ln2Scale(_) | Ln1PostScale(_) | Ln2PostScale(_) | LnFinalScale => {
                vec![1]
            }
            _ => vec![cfg.d_model],
        })
    }

    /// Whether one token's activation is a `[d_model]` vector (the residual stream and
    /// what is added to it): where steering vectors and probes live.
    pub fn is_model_width(&self) -> bool {
        use HookPoint::*;
        matches!(
            self,
            Embed
                | ResidPre(_)
                | Ln1Normalized(_)
                | AttnOut(_)
                | ResidMid(_)
                | Ln2Normalized(_)
                | Ln1PostNormalized(_)
                | Ln2PostNormalized(_)
                | MlpOut(_)
                | ResidPost(_)
                | LnFinal
                | UnembedIn
        )
    }

    /// The site name without the `blocks.{i}.` prefix.
    pub fn site(&self) -> &'static str {
        match self {
            HookPoint::Embed => "hook_embed",
            p if p.layer().is_none() => FINAL_SITES
                .iter()
                .find(|(_, f)| f == p)
                .map(|(s, _)| *s)
                .unwrap_or("?"),
            p => {
                let i = p.layer().unwrap_or(0);
                LAYER_SITES
                    .iter()
                    .find(|(_, f)| f(i) == *p)
                    .map(|(s, _)| *s)
                    .unwrap_or("?")
            }
        }
    }

    /// Which axis holds positions: the query axis (2) for scores and patterns, 1 otherwise.
    pub fn pos_axis(&self) -> usize {
        match self {
            HookPoint::AttnPattern(_) | HookPoint::AttnScores(_) => 2,
            _ => 1,
        }
    }

    /// A human-readable shape, e.g. `[batch, pos, d_model]`.
    pub fn shape_doc(&self) -> &'static str {
        use HookPoint::*;
        match self {
            AttnQ(_) | AttnRotQ(_) | AttnZ(_) => "[batch, pos, n_heads, d_head]",
            AttnK(_) | AttnV(_) | AttnRotK(_) => "[batch, pos, n_kv_heads, d_head]",
            AttnScores(_) | AttnPattern(_) => "[batch, n_heads, query_pos, key_pos]",
            MlpPre(_) | MlpPreLinear(_) | MlpPost(_) => "[batch, pos, d_mlp]",
            Ln1Scale(_) | Ln2Scale(_) | Ln1PostScale(_) | Ln2PostScale(_) | LnFinalScale => {
                "[batch, pos, 1]"
            }
            _ => "[batch, pos, d_model]",
        }
    }

    /// Parse one exact name. Negative layer indices count from the end.
    pub fn parse(name: &str, n_layers: usize) -> Result<HookPoint> {
        let unknown = || Error::UnknownHook {
            name: name.to_string(),
            suggestions: suggest(name, n_layers),
        };
        if name == "hook_embed" {
            return Ok(HookPoint::Embed);
        }
        if let Some((_, p)) = FINAL_SITES.iter().find(|(s, _)| *s == name) {
            return Ok(*p);
        }
        let rest = name.strip_prefix("blocks.").ok_or_else(unknown)?;
        let (idx, site) = split_layer(rest).ok_or_else(unknown)?;
        let layer = resolve_layer(idx, n_layers).ok_or_else(|| Error::UnknownHook {
            name: name.to_string(),
            suggestions: vec![format!(
                "a layer index in 0..{n_layers} (or -{n_layers}..-1), e.g. blocks.0.{site}"
            )],
        })?;
        LAYER_SITES
            .iter()
            .find(|(s, _)| *s == site)
            .map(|(_, f)| f(layer))
            .ok_or_else(unknown)
    }

    /// Expand a pattern into hook points. A pattern is a comma-separated list of
    /// names where the layer may be `*` (all layers), a negative index, or a range
    /// `a..b` (end exclusive) / `a..=b`; the site may end in `*` as a prefix match
    /// (`blocks.3.*`, `blocks.*.attn.*`).
    pub fn resolve_pattern(pattern: &str, n_layers: usize) -> Result<Vec<HookPoint>> {
        let mut out = Vec::new();
        for part in pattern.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let found = resolve_one(part, n_layers)?;
            for p in found {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        if out.is_empty() {
            return Err(Error::UnknownHook {
                name: pattern.to_string(),
                suggestions: vec!["blocks.*.hook_resid_post".into()],
            });
        }
        Ok(out)
    }
}

/// Split `3.hook_resid_post` / `0..4.attn.*` / `-1.mlp.hook_post` into the layer
/// spec and the site: the site starts after the first '.' that is followed by a
/// letter, '_' or '*' (layer specs hold digits, '-', '=' and '..').
fn split_layer(rest: &str) -> Option<(&str, &str)> {
    let b = rest.as_bytes();
    (0..b.len()).find_map(|i| {
        let next = *b.get(i + 1)?;
        (b[i] == b'.' && i > 0 && (next.is_ascii_alphabetic() || next == b'_' || next == b'*'))
            .then(|| (&rest[..i], &rest[i + 1..]))
    })
}

fn resolve_layer(idx: &str, n_layers: usize) -> Option<usize> {
    let i: i64 = idx.parse().ok()?;
    let n = n_layers as i64;
    let i = if i < 0 { n + i } else { i };
    (0..n).contains(&i).then_some(i as usize)
}

fn resolve_layers(spec: &str, n_layers: usize) -> Option<Vec<usize>> {
    if spec == "*" {
        return Some((0..n_layers).collect());
    }
    if let Some((a, b)) = spec.split_once("..") {
        let (b, inclusive) = match b.strip_prefix('=') {
            Some(b) => (b, true),
            None => (b, false),
        };
        let a = if a.is_empty() {
            0
        } else {
            resolve_layer(a, n_layers)?
        };
        let b = if b.is_empty() {
            n_layers
        } else {
            if inclusive {
                resolve_layer(b, n_layers)? + 1
            } else {
                // An exclusive end may equal n_layers.
                let e: i64 = b.parse().ok()?;
                let e = if e < 0 { n_layers as i64 + e } else { e };
                if !(0..=n_layers as i64).contains(&e) {
                    return None;
                }
                e as usize
            }
        };
        return (a < b).then(|| (a..b).collect());
    }
    resolve_layer(spec, n_layers).map(|i| vec![i])
}

fn resolve_one(part: &str, n_layers: usize) -> Result<Vec<HookPoint>> {
    if !part.contains('*') && !part.contains("..") {
        return HookPoint::parse(part, n_layers).map(|p| vec![p]);
    }
    // Gemma's post-norm sites join a wildcard only when it names them
    // (`blocks.*.ln1_post.*`), so `blocks.*.*` means the same sites for every family.
    let post = part.contains("ln1_post") || part.contains("ln2_post");
    let all = HookPoint::all_with(n_layers, post);
    let unknown = || Error::UnknownHook {
        name: part.to_string(),
        suggestions: suggest(part, n_layers),
    };
    if part == "*" {
        return Ok(all);
    }
    // `ln_final.*`: names outside the blocks by prefix.
    if let (false, Some(prefix)) = (part.starts_with("blocks."), part.strip_suffix('*')) {
        let found: Vec<HookPoint> = all
            .into_iter()
            .filter(|p| p.layer().is_none() && p.site().starts_with(prefix))
            .collect();
        return if found.is_empty() {
            Err(unknown())
        } else {
            Ok(found)
        };
    }
    let rest = part.strip_prefix("blocks.").ok_or_else(unknown)?;
    let (idx, site) = split_layer(rest).ok_or_else(unknown)?;
    let layers = resolve_layers(idx, n_layers).ok_or_else(unknown)?;
    let site_matches = |s: &str| match site.strip_suffix('*') {
        Some(prefix) => s.starts_with(prefix),
        None => s == site,
    };
    let found: Vec<HookPoint> = all
        .into_iter()
        .filter(|p| p.layer().is_some_and(|l| layers.contains(&l)) && site_matches(p.site()))
        .collect();
    if found.is_empty() {
        return Err(unknown());
    }
    Ok(found)
}

/// The nearest valid names (by edit distance), for error messages.
fn suggest(name: &str, n_layers: usize) -> Vec<String> {
    let mut scored: Vec<(usize, String)> = HookPoint::all(n_layers.min(2))
        .into_iter()
        .map(|p| {
            let s = p.to_string();
            (edit_distance(name, &s), s)
        })
        .collect();
    // Also compare the site alone, so `blocks.7.resid_post` suggests `blocks.7.hook_resid_post`.
    if let Some(rest) = name.strip_prefix("blocks.") {
        if let Some((idx, site)) = split_layer(rest) {
            for (s, _) in LAYER_SITES {
                scored.push((edit_distance(site, s), format!("blocks.{idx}.{s}")));
            }
        }
    }
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(3).map(|(_, s)| s).collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.layer() {
            Some(i) => write!(f, "blocks.{i}.{}", self.site()),
            None => f.write_str(self.site()),
        }
    }
}

/// Which token positions an intervention touches. Positions are token indices
/// within each sequence (padding excluded), counted from 0 at the first prompt token.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Positions {
    #[default]
    All,
    /// The last position of each forward call: the final prompt token in a
    /// single forward, and every newly generated token during decoding.
    Last,
    /// Token indices in `start..end`.
    Range(usize, usize),
    /// Token indices `>= n`.
    From(usize),
    /// Only tokens produced by generation (never prompt tokens). The first generated
    /// token is *computed* at the last prompt position, so this never steers it: see
    /// [`Positions::LastPromptAndGenerated`].
    Generated,
    /// The last prompt token and every generated token: everything that computes an
    /// answer token, the first one included (answer-only steering that also moves the
    /// first answer token).
    LastPromptAndGenerated,
}

impl Positions {
    /// Parse `all`, `last`, `generated`, `last-prompt+generated`, `from:N`, `N..M`, or `N`.
    pub fn parse(s: &str) -> Result<Positions> {
        let bad = || {
            Error::InvalidInput(format!(
                "positions '{s}': expected all, last, generated, last-prompt+generated, from:N, N..M or N"
            ))
        };
        Ok(match s {
            "all" => Positions::All,
            "last" => Positions::Last,
            "generated" => Positions::Generated,
            "last-prompt+generated" => Positions::LastPromptAndGenerated,
            _ => {
                if let Some(n) = s.strip_prefix("from:") {
                    Positions::From(n.parse().map_err(|_| bad())?)
                } else if let Some((a, b)) = s.split_once("..") {
                    let a = a.parse().map_err(|_| bad())?;
                    let b = b.parse().map_err(|_| bad())?;
                    if a >= b {
                        return Err(bad());
                    }
                    Positions::Range(a, b)
                } else {
                    let n: usize = s.parse().map_err(|_| bad())?;
                    Positions::Range(n, n + 1)
                }
            }
        })
    }
}

/// A user-supplied function applied at a hook site.
pub type HookFn = Arc<dyn Fn(&Tensor, &SiteInfo) -> candle_core::Result<Tensor> + Send + Sync>;

/// What a hook does at its site.
#[derive(Clone)]
pub enum Action {
    /// Save the activation into the returned [`Cache`].
    Capture,
    /// `x += scale * vector`; `vector` broadcasts over the trailing dims (e.g. `[d_model]`).
    Add { vector: Tensor, scale: f32 },
    /// Set the activation to `value` (broadcast over positions, e.g. a mean for mean-ablation).
    Replace { value: Tensor },
    /// Remove the component along `direction` (normalised here): `x -= (x.u) u` over the last dim.
    ProjectOut { direction: Tensor },
    /// Set the activation to zero.
    Zero,
    /// Take the activation from another run: `source` has the same layout as a
    /// captured tensor, `[b, t_source, ...]`, indexed by absolute position.
    Patch { source: Tensor },
    /// Any function of the activation (must keep its shape).
    Custom(HookFn),
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Capture => f.write_str("Capture"),
            Action::Add { scale, .. } => write!(f, "Add(scale={scale})"),
            Action::Replace { .. } => f.write_str("Replace"),
            Action::ProjectOut { .. } => f.write_str("ProjectOut"),
            Action::Zero => f.write_str("Zero"),
            Action::Patch { .. } => f.write_str("Patch"),
            Action::Custom(_) => f.write_str("Custom"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Hook {
    pub point: HookPoint,
    pub action: Action,
    pub positions: Positions,
    /// The batch rows it acts on (`None`: every row). Rows restrict interventions only;
    /// a capture always records the whole batch. See [`Hooks::for_rows`].
    pub rows: Option<Vec<usize>>,
}

/// An ordered list of hooks for one call. Hooks at the same site run in the
/// order they were added, so a capture added after an intervention sees its result.
#[derive(Clone, Debug, Default)]
pub struct Hooks {
    hooks: Vec<Hook>,
}

impl Hooks {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, point: HookPoint, action: Action, positions: Positions) -> &mut Self {
        self.hooks.push(Hook {
            point,
            action,
            positions,
            rows: None,
        });
        self
    }

    /// These hooks acting on batch rows `rows` only (intersected with any rows a hook
    /// already had), so requests with different interventions can share one batched
    /// forward: each row carries its own hooks (continuous batching in `pragma serve`).
    /// Captures are kept as they are and still record every row.
    pub fn for_rows(&self, rows: &[usize]) -> Hooks {
        let hooks = self
            .hooks
            .iter()
            .map(|h| {
                let mut h = h.clone();
                if !matches!(h.action, Action::Capture) {
                    h.rows = Some(match &h.rows {
                        None => rows.to_vec(),
                        Some(had) => rows.iter().copied().filter(|r| had.contains(r)).collect(),
                    });
                }
                h
            })
            .collect();
        Hooks { hooks }
    }

    /// Capture `point` into the returned [`Cache`]. Capturing a point again with nothing
    /// added at it in between is a no-op (the cache holds one tensor per point and call;
    /// a second capture would append a copy of the same positions).
    pub fn capture(&mut self, point: HookPoint) -> &mut Self {
        let last_here = self.hooks.iter().rev().find(|h| h.point == point);
        if let Some(h) = last_here {
            if matches!(h.action, Action::Capture) && h.positions == Positions::All {
                return self;
            }
        }
        self.push(point, Action::Capture, Positions::All)
    }

    pub fn add(
        &mut self,
        point: HookPoint,
        vector: Tensor,
        scale: f32,
        at: Positions,
    ) -> &mut Self {
        self.push(point, Action::Add { vector, scale }, at)
    }

    pub fn replace(&mut self, point: HookPoint, value: Tensor, at: Positions) -> &mut Self {
        self.push(point, Action::Replace { value }, at)
    }

    pub fn project_out(&mut self, point: HookPoint, direction: Tensor, at: Positions) -> &mut Self {
        self.push(point, Action::ProjectOut { direction }, at)
    }

    pub fn zero(&mut self, point: HookPoint, at: Positions) -> &mut Self {
        self.push(point, Action::Zero, at)
    }

    pub fn patch(&mut self, point: HookPoint, source: Tensor, at: Positions) -> &mut Self {
        self.push(point, Action::Patch { source }, at)
    }

    pub fn custom(&mut self, point: HookPoint, f: HookFn, at: Positions) -> &mut Self {
        self.push(point, Action::Custom(f), at)
    }

    pub fn extend(&mut self, other: &Hooks) -> &mut Self {
        self.hooks.extend(other.hooks.iter().cloned());
        self
    }

    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Hook> {
        self.hooks.iter()
    }

    /// True if any hook is registered at `point` (lets the model skip work).
    pub fn touches(&self, point: HookPoint) -> bool {
        self.hooks.iter().any(|h| h.point == point)
    }

    /// The deepest layer any hook needs, for forwards that stop early.
    pub fn max_layer(&self) -> Option<usize> {
        self.hooks.iter().filter_map(|h| h.point.layer()).max()
    }

    /// Check every hook against the model's layer count.
    pub fn validate(&self, n_layers: usize) -> Result<()> {
        for h in &self.hooks {
            if let Some(l) = h.point.layer() {
                if l >= n_layers {
                    return Err(Error::BadHook {
                        hook: h.point.to_string(),
                        reason: format!("layer {l} out of range: the model has {n_layers} layers (0..{n_layers})"),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Where in the sequence a site call is: the model passes this to every hook.
#[derive(Clone, Debug)]
pub struct SiteInfo {
    /// Absolute column of the first position in this call (KV-cache offset).
    pub offset: usize,
    /// Number of positions in this call.
    pub len: usize,
    /// Left-padding per batch row.
    pub pad: Vec<usize>,
    /// Per row, the column where its prompt ends: columns at or after it hold generated
    /// tokens (rows that joined a running batch end their prompts at other columns).
    pub prompt_cols: Vec<usize>,
}

impl SiteInfo {
    /// A `[b, len]` 0/1 mask of the positions selected by `positions`.
    fn mask_values(&self, positions: &Positions) -> Vec<f32> {
        let mut m = Vec::with_capacity(self.pad.len() * self.len);
        for (r, &pad) in self.pad.iter().enumerate() {
            let prompt_cols = self.prompt_cols.get(r).copied().unwrap_or(0);
            for i in 0..self.len {
                let col = self.offset + i;
                let on = if col < pad {
                    false
                } else {
                    let tok = col - pad;
                    match *positions {
                        Positions::All => true,
                        Positions::Last => i + 1 == self.len,
                        Positions::Range(a, b) => (a..b).contains(&tok),
                        Positions::From(n) => tok >= n,
                        Positions::Generated => col >= prompt_cols,
                        Positions::LastPromptAndGenerated => col + 1 >= prompt_cols,
                    }
                };
                m.push(if on { 1.0 } else { 0.0 });
            }
        }
        m
    }

    /// The mask shaped to broadcast against an activation at `point`.
    fn mask(
        &self,
        positions: &Positions,
        rows: Option<&[usize]>,
        point: HookPoint,
        x: &Tensor,
    ) -> Result<Option<Tensor>> {
        if rows.is_none()
            && *positions == Positions::All
            && self.pad.iter().all(|&p| p <= self.offset)
        {
            return Ok(None);
        }
        let mut vals = self.mask_values(positions);
        if let Some(rows) = rows {
            for (r, chunk) in vals.chunks_mut(self.len.max(1)).enumerate() {
                if !rows.contains(&r) {
                    chunk.fill(0.0);
                }
            }
        }
        let mut shape = vec![1usize; x.rank()];
        shape[0] = self.pad.len();
        shape[point.pos_axis()] = self.len;
        let m = Tensor::from_vec(vals, shape, x.device())?.to_dtype(x.dtype())?;
        Ok(Some(m))
    }
}

/// Blend `new` into `x` where `mask` is 1.
fn select(x: &Tensor, new: &Tensor, mask: Option<&Tensor>) -> candle_core::Result<Tensor> {
    match mask {
        None => new.broadcast_as(x.shape())?.contiguous(),
        Some(m) => {
            let keep = m.affine(-1.0, 1.0)?;
            x.broadcast_mul(&keep)?
                .add(&new.broadcast_mul(m)?.broadcast_as(x.shape())?)
        }
    }
}

/// Run every hook registered at `point` on `x`, in order.
pub(crate) fn run_site(
    hooks: &Hooks,
    point: HookPoint,
    mut x: Tensor,
    info: &SiteInfo,
    cache: &mut Cache,
) -> Result<Tensor> {
    for h in hooks.hooks.iter().filter(|h| h.point == point) {
        let bad = |reason: String| Error::BadHook {
            hook: format!("{} ({:?})", point, h.action),
            reason,
        };
        let mask = if matches!(h.action, Action::Capture) {
            None
        } else {
            h.mask(info, &x)?
        };
        let mask = mask.as_ref();
        x = match &h.action {
            Action::Capture => {
                cache.push(point, x.clone());
                x
            }
            Action::Add { vector, scale } => {
                let v = vector.to_dtype(x.dtype())?.affine(*scale as f64, 0.0)?;
                let v = v
                    .broadcast_as(x.shape())
                    .map_err(|_| bad(shape_msg("vector", v.dims(), x.dims())))?;
                match mask {
                    None => (&x + v)?,
                    Some(m) => (&x + v.broadcast_mul(m)?)?,
                }
            }
            Action::Replace { value } => {
                let v = value.to_dtype(x.dtype())?;
                v.broadcast_as(x.shape())
                    .map_err(|_| bad(shape_msg("value", v.dims(), x.dims())))?;
                select(&x, &v, mask)?
            }
            Action::ProjectOut { direction } => {
                let u = direction.to_dtype(x.dtype())?;
                let last = *x.dims().last().unwrap_or(&0);
                if u.dims().last() != Some(&last) {
                    return Err(bad(shape_msg("direction", u.dims(), x.dims())));
                }
                let norm = u.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
                let u = u.broadcast_div(&norm)?;
                let coef = x.broadcast_mul(&u)?.sum_keepdim(D::Minus1)?;
                let proj = coef.broadcast_mul(&u)?;
                let proj = match mask {
                    None => proj,
                    Some(m) => proj.broadcast_mul(m)?,
                };
                (&x - proj)?
            }
            Action::Zero => match mask {
                None => x.zeros_like()?,
                Some(m) => x.broadcast_mul(&m.affine(-1.0, 1.0)?)?,
            },
            Action::Patch { source } => {
                let src = patch_window(source, point, info, &x).map_err(|e| bad(e.to_string()))?;
                // Positions beyond the source's length are left alone.
                let avail = source.dims()[point.pos_axis()]
                    .saturating_sub(info.offset)
                    .min(info.len);
                let limit: Vec<f32> = (0..info.len)
                    .map(|i| if i < avail { 1.0 } else { 0.0 })
                    .collect();
                let mut shape = vec![1usize; x.rank()];
                shape[point.pos_axis()] = info.len;
                let limit = Tensor::from_vec(limit, shape, x.device())?.to_dtype(x.dtype())?;
                let m = match mask {
                    None => limit,
                    Some(m) => m.broadcast_mul(&limit)?,
                };
                select(&x, &src, Some(&m))?
            }
            Action::Custom(f) => {
                let y = f(&x, info)?;
                if y.dims() != x.dims() {
                    return Err(bad(shape_msg("custom hook output", y.dims(), x.dims())));
                }
                match mask {
                    None => y,
                    Some(_) => select(&x, &y, mask)?,
                }
            }
        };
    }
    Ok(x)
}

impl Hook {
    fn mask(&self, info: &SiteInfo, x: &Tensor) -> Result<Option<Tensor>> {
        info.mask(&self.positions, self.rows.as_deref(), self.point, x)
    }
}

fn shape_msg(what: &str, got: &[usize], act: &[usize]) -> String {
    format!("{what} has shape {got:?}, which does not broadcast to the activation's shape {act:?}")
}

/// The slice of a patch source covering this call's positions, zero-padded past its end.
fn patch_window(source: &Tensor, point: HookPoint, info: &SiteInfo, x: &Tensor) -> Result<Tensor> {
    let axis = point.pos_axis();
    let src_len = source.dims()[axis];
    if source.rank() != x.rank() || source.dims()[0] != x.dims()[0] {
        return Err(Error::InvalidInput(format!(
            "patch source has shape {:?}, expected [batch={}, pos, ...] like {:?}",
            source.dims(),
            x.dims()[0],
            x.dims()
        )));
    }
    let start = info.offset.min(src_len);
    let take = (src_len - start).min(info.len);
    let mut parts = Vec::new();
    if take > 0 {
        let mut s = source.narrow(axis, start, take)?;
        // Patterns grow along the key axis during generation: fit it to x.
        if axis == 2 {
            let (have, want) = (s.dims()[3], x.dims()[3]);
            if have > want {
                s = s.narrow(3, 0, want)?;
            } else if have < want {
                s = s.pad_with_zeros(3, 0, want - have)?;
            }
        }
        parts.push(s);
    }
    if take < info.len {
        let mut shape = x.dims().to_vec();
        shape[axis] = info.len - take;
        parts.push(Tensor::zeros(shape, x.dtype(), x.device())?);
    }
    let out = Tensor::cat(&parts, axis)?.to_dtype(x.dtype())?;
    if out.dims() != x.dims() {
        return Err(Error::InvalidInput(format!(
            "patch source has shape {:?}, which does not fit the activation's shape {:?}",
            source.dims(),
            x.dims()
        )));
    }
    Ok(out)
}

/// Activations captured during a call, by hook point. A generate call captures
/// one chunk per step; [`Cache::get`] joins them along the position axis.
#[derive(Clone, Debug, Default)]
pub struct Cache {
    chunks: BTreeMap<HookPoint, Vec<Tensor>>,
    /// Left padding per batch row, to recover each row's real tokens.
    pub pad: Vec<usize>,
}

impl Cache {
    /// An empty cache for a batch with this left padding.
    pub fn new(pad: Vec<usize>) -> Self {
        Self {
            chunks: BTreeMap::new(),
            pad,
        }
    }

    pub(crate) fn push(&mut self, point: HookPoint, t: Tensor) {
        self.chunks.entry(point).or_default().push(t);
    }

    pub fn points(&self) -> impl Iterator<Item = HookPoint> + '_ {
        self.chunks.keys().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The full activation at `point` for all rows (padded layout).
    pub fn get(&self, point: HookPoint) -> Result<Tensor> {
        let chunks = self.chunks.get(&point).ok_or_else(|| Error::UnknownHook {
            name: point.to_string(),
            suggestions: self.chunks.keys().take(3).map(|p| p.to_string()).collect(),
        })?;
        if chunks.len() == 1 {
            return Ok(chunks[0].clone());
        }
        let axis = point.pos_axis();
        if axis == 2 {
            // Attention patterns: later steps attend to more keys. Earlier rows are
            // zero there (causal), so pad the key axis.
            let keys = chunks.iter().map(|c| c.dims()[3]).max().unwrap_or(0);
            let padded: Vec<Tensor> = chunks
                .iter()
                .map(|c| c.pad_with_zeros(3, 0, keys - c.dims()[3]))
                .collect::<candle_core::Result<_>>()?;
            return Ok(Tensor::cat(&padded, axis)?);
        }
        Ok(Tensor::cat(chunks, axis)?)
    }

    /// Row `b` without its left padding: `[t_b, ...]`.
    pub fn get_row(&self, point: HookPoint, b: usize) -> Result<Tensor> {
        let t = self.get(point)?.get(b)?;
        let pad = self.pad.get(b).copied().unwrap_or(0);
        let axis = point.pos_axis() - 1;
        let len = t.dims()[axis] - pad;
        let mut t = t.narrow(axis, pad, len)?;
        if axis == 1 {
            let keys = t.dims()[2];
            t = t.narrow(2, pad, keys - pad)?;
        }
        Ok(t)
    }

    /// All captured tensors as f32, named by hook point, for saving.
    pub fn to_named(&self) -> Result<Vec<(String, Tensor)>> {
        self.points()
            .map(|p| Ok((p.to_string(), self.get(p)?.to_dtype(DType::F32)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_with_ranges_negatives_and_wildcards() {
        let r = |p: &str| {
            HookPoint::resolve_pattern(p, 6)
                .map(|v| v.iter().map(|p| p.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(
            r("blocks.1..3.hook_resid_post").expect("range"),
            ["blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]
        );
        assert_eq!(r("blocks.4..=-1.hook_mlp_out").expect("incl").len(), 2);
        assert_eq!(
            r("blocks.-1.attn.hook_q").expect("neg"),
            ["blocks.5.attn.hook_q"]
        );
        assert_eq!(r("blocks.*.hook_resid_post").expect("all").len(), 6);
        assert_eq!(r("blocks.0..2.attn.*").expect("attn").len(), 2 * 8);
        assert_eq!(r("blocks.0.ln1.*").expect("ln1").len(), 2);
        assert_eq!(
            r("hook_embed, blocks.0.hook_resid_pre")
                .expect("list")
                .len(),
            2
        );
        assert!(r("blocks.6.hook_resid_post").is_err());
        assert!(r("blocks.1..3.hook_nothing").is_err());
    }
}
