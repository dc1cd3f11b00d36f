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

mod cache;
mod list;
mod point;
mod site;

pub use cache::Cache;
pub use list::{Action, Hook, HookFn, Hooks, Positions};
pub use point::HookPoint;
pub(crate) use site::run_site;
pub use site::SiteInfo;
