//! What to do at which sites: [`Positions`], [`Action`], [`Hook`] and the ordered
//! [`Hooks`] list passed into one call.

use std::fmt;
use std::sync::Arc;

use candle_core::Tensor;

use super::{HookPoint, SiteInfo};
use crate::error::{Error, Result};

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
    /// Save the activation into the returned [`Cache`](super::Cache).
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
    pub(super) hooks: Vec<Hook>,
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

    /// Capture `point` into the returned [`Cache`](super::Cache). Capturing a point again with nothing
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
