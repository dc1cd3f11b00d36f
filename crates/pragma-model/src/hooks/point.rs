//! [`HookPoint`]: one activation site by its TransformerLens name, and the parser for
//! names and patterns (`blocks.1..3.hook_resid_post`, `blocks.*.attn.hook_z`).

use std::fmt;

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
