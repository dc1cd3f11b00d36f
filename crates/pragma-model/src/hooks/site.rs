//! Running hooks at one site: [`SiteInfo`] (where in the sequence a call is), the
//! position masks, and the patch window.

use candle_core::{Tensor, D};

use super::{Action, Cache, Hook, HookPoint, Hooks, Positions};
use crate::error::{Error, Result};

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
