//! pragma-store: hook activations over a corpus, in sharded, memory-mapped
//! safetensors files that numpy and torch read without pragma.
//!
//! Second stage of the data flow (model -> **activations** -> methods). Layout of a store:
//!
//! ```text
//! STORE/manifest.json            format, model sha256, hooks, settings, dataset sha256, shards
//! STORE/shard-00000.safetensors  one [n_tokens, ...] tensor per hook, plus u32 tables
//!                                doc, seq, pos, token (row -> document, sequence, position, id)
//! STORE/parts/plan.json          (sharded jobs) the shard boundaries a single machine would write
//! STORE/parts/part-00001-of-00004.json   (sharded jobs) one part's manifest, until finalized
//! ```
//!
//! `STORE` is a folder or an object-store URL (`s3://bucket/prefix`, [`location`]).
//! Sharded jobs ([`parts`]): `pragma cache --shard I/N` writes part I of N (the shards a
//! single machine would write, in the same order and bytes); `pragma store finalize`
//! merges the parts' manifests into `manifest.json`.
//!
//! ```no_run
//! use pragma_store::reader::{Store, Pool};
//! let store = Store::open(std::path::Path::new("acts"))?;
//! for batch in store.shuffled_batches("blocks.6.hook_resid_post", 4096, 0)? {
//!     let x = batch?; // [4096, 576] f32
//! }
//! let (docs, vecs) = store.pooled("blocks.6.hook_resid_post", Pool::Last, None)?;
//! # Ok::<(), pragma_store::Error>(())
//! ```

pub mod corpus;
pub mod datasets;
pub mod error;
pub mod location;
pub mod manifest;
pub mod parts;
pub mod permutation;
pub mod reader;
pub mod writer;

pub use error::{Error, Result};
pub use location::Location;
pub use permutation::Permutation;
pub use reader::Store;
