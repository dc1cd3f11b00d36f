//! Reading a store: memory-mapped shards, never loaded whole.
//!
//! Rows are global token indices `0..n_tokens` in corpus order. The reader serves
//! the three access patterns of pragma's methods: shuffled batches (SAE training),
//! per-document pooled vectors (probes, steering datasets), and token -> text context
//! (feature dashboards).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use half::{bf16, f16};
use memmap2::Mmap;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::manifest::Manifest;

struct TensorLoc {
    start: usize,
    end: usize,
}

struct Shard {
    path: PathBuf,
    mmap: Mmap,
    tensors: HashMap<String, TensorLoc>,
    first_token: u64,
    n_tokens: u64,
}

/// How to pool a document's token vectors into one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pool {
    Last,
    Mean,
}

impl Pool {
    pub fn parse(s: &str) -> Result<Pool> {
        match s {
            "last" => Ok(Pool::Last),
            "mean" => Ok(Pool::Mean),
            _ => Err(Error::Corpus(format!(
                "pooling '{s}': expected last or mean"
            ))),
        }
    }
}

/// Per-token metadata for the whole store (16 bytes a token, loaded on demand).
#[derive(Clone, Debug, Default)]
pub struct TokenTable {
    pub doc: Vec<u32>,
    pub seq: Vec<u32>,
    pub pos: Vec<u32>,
    pub token: Vec<u32>,
}

/// An open activation store.
pub struct Store {
    pub dir: PathBuf,
    pub manifest: Manifest,
    shards: Vec<Shard>,
    elem: usize,
}

impl Store {
    /// Open a store: parse the manifest, map the shards and check their sizes.
    /// (Checksums are checked by [`Store::verify`].)
    ///
    /// `dir` may be an object-store URL (`s3://bucket/prefix`, see [`crate::location`]):
    /// its shards are then downloaded once into the local shard cache, each checked
    /// against the manifest's sha256, and mapped from there.
    pub fn open(dir: &Path) -> Result<Store> {
        Self::open_with(dir, &mut |_, _| {})
    }

    /// [`Store::open`], reporting downloads of a remote store's shards as `(done, total)`.
    pub fn open_with(dir: &Path, progress: &mut dyn FnMut(usize, usize)) -> Result<Store> {
        let loc = crate::location::Location::parse(&dir.to_string_lossy())?;
        let manifest = Manifest::read(dir)?;
        let files: Vec<(String, String, u64)> = manifest
            .shards
            .iter()
            .map(|s| (s.file.clone(), s.sha256.clone(), s.bytes))
            .collect();
        let elem = match manifest.settings.dtype.as_str() {
            "f16" | "bf16" => 2,
            _ => 4,
        };
        // The manifest is checked before any shard is read: shards follow each other
        // from token 0 and add up to the store's tokens, and every size is computed
        // without overflow, so a bad manifest is an error here and not an index out of
        // range later (a crash the `store` fuzz target found).
        let bad = |reason: String| Error::Store {
            path: dir.join(crate::manifest::MANIFEST),
            reason,
        };
        let mut next = 0u64;
        for s in &manifest.shards {
            if s.first_token != next {
                return Err(bad(format!(
                    "shard {} starts at token {}, expected {next} (the shards must follow each other)",
                    s.file, s.first_token
                )));
            }
            next = next
                .checked_add(s.n_tokens)
                .ok_or_else(|| bad(format!("shard {}: token count overflows", s.file)))?;
        }
        if next != manifest.n_tokens {
            return Err(bad(format!(
                "the shards hold {next} tokens, the manifest says {}",
                manifest.n_tokens
            )));
        }
        let mut row_bytes: Vec<(String, u64)> = vec![
            ("doc".into(), 4),
            ("seq".into(), 4),
            ("pos".into(), 4),
            ("token".into(), 4),
        ];
        for h in &manifest.hooks {
            let n = h
                .shape
                .iter()
                .try_fold(elem as u64, |a, &d| a.checked_mul(d as u64))
                .ok_or_else(|| bad(format!("hook {}: shape {:?} overflows", h.name, h.shape)))?;
            row_bytes.push((h.name.clone(), n));
        }
        let paths = loc.local_shards(&files, progress)?;
        let mut shards = Vec::with_capacity(manifest.shards.len());
        for (s, path) in manifest.shards.iter().zip(paths) {
            let file = std::fs::File::open(&path).map_err(|_| Error::CorruptShard {
                file: path.clone(),
                reason: "missing (listed in manifest.json)".into(),
            })?;
            // SAFETY: the shard is mapped read-only; pragma never rewrites a finished
            // shard (new shards get new names), and sizes are checked below.
            #[allow(unsafe_code)]
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
            if mmap.len() as u64 != s.bytes {
                return Err(Error::CorruptShard {
                    file: path,
                    reason: format!("expected {} bytes, found {}", s.bytes, mmap.len()),
                });
            }
            let tensors = index_shard(&path, &mmap)?;
            for (name, bytes) in &row_bytes {
                let want = bytes.checked_mul(s.n_tokens);
                match tensors.get(name) {
                    Some(t) if want == Some((t.end - t.start) as u64) => {}
                    Some(t) => {
                        return Err(Error::CorruptShard {
                            file: path,
                            reason: format!(
                                "tensor '{name}' holds {} bytes, expected {} rows of {bytes}",
                                t.end - t.start,
                                s.n_tokens
                            ),
                        })
                    }
                    None => {
                        return Err(Error::CorruptShard {
                            file: path,
                            reason: format!("lacks tensor '{name}'"),
                        })
                    }
                }
            }
            shards.push(Shard {
                path,
                mmap,
                tensors,
                first_token: s.first_token,
                n_tokens: s.n_tokens,
            });
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            manifest,
            shards,
            elem,
        })
    }

    /// Check every shard's sha256 against the manifest.
    pub fn verify(&self) -> Result<()> {
        let loc = crate::location::Location::parse(&self.dir.to_string_lossy())?;
        crate::writer::verify_shards_at(&loc, &self.manifest, true)
    }

    pub fn n_tokens(&self) -> u64 {
        self.manifest.n_tokens
    }

    /// Non-finite values (NaN, +-inf) per hook, in manifest order: `pragma cache` never
    /// writes them where the model's values were finite, so anything but 0 means the
    /// model itself produced them or the store was written by something else.
    pub fn nonfinite_counts(&self) -> Result<Vec<(String, u64)>> {
        let dtype = match self.manifest.settings.dtype.as_str() {
            "f16" => candle_core::DType::F16,
            "bf16" => candle_core::DType::BF16,
            _ => candle_core::DType::F32,
        };
        self.manifest
            .hooks
            .iter()
            .map(|h| {
                let mut n = 0;
                for s in &self.shards {
                    n += pragma_model::io::count_nonfinite(self.raw(s, &h.name)?, dtype);
                }
                Ok((h.name.clone(), n))
            })
            .collect()
    }

    /// Values per token for `hook` (e.g. 576).
    pub fn width(&self, hook: &str) -> Result<usize> {
        Ok(self.manifest.hook(hook)?.shape.iter().product())
    }

    /// Fail unless this store was made from `model_sha256` with `hook` of `width` values:
    /// methods call this before mixing a store with a model.
    pub fn require(&self, hook: &str, width: usize, model_sha256: Option<&str>) -> Result<()> {
        let w = self.width(hook)?;
        if w != width {
            return Err(Error::Store {
                path: self.dir.clone(),
                reason: format!("{hook} has {w} values per token, expected {width} (d_model of the model in use)"),
            });
        }
        if let Some(sha) = model_sha256 {
            if sha != self.manifest.model.sha256 {
                return Err(Error::Store {
                    path: self.dir.clone(),
                    reason: format!(
                        "made with model sha256 {} ({}), not the model in use (sha256 {sha})",
                        self.manifest.model.sha256, self.manifest.model.spec
                    ),
                });
            }
        }
        Ok(())
    }

    fn locate(&self, row: u64) -> Result<(usize, usize)> {
        if row >= self.n_tokens() {
            return Err(Error::Store {
                path: self.dir.clone(),
                reason: format!(
                    "row {row} out of range: the store has {} tokens",
                    self.n_tokens()
                ),
            });
        }
        let s = self
            .shards
            .partition_point(|s| s.first_token + s.n_tokens <= row);
        Ok((s, (row - self.shards[s].first_token) as usize))
    }

    fn raw<'a>(&'a self, shard: &'a Shard, name: &str) -> Result<&'a [u8]> {
        let loc = shard.tensors.get(name).ok_or_else(|| Error::CorruptShard {
            file: shard.path.clone(),
            reason: format!("lacks tensor '{name}'"),
        })?;
        Ok(&shard.mmap[loc.start..loc.end])
    }

    fn decode_into(&self, bytes: &[u8], out: &mut Vec<f32>) {
        match self.manifest.settings.dtype.as_str() {
            "f16" => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()),
            ),
            "bf16" => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            ),
            _ => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
        }
    }

    /// Rows (global token indices) of one hook as f32 `[rows.len(), width]`.
    pub fn gather(&self, hook: &str, rows: &[u64]) -> Result<Tensor> {
        let w = self.width(hook)?;
        let rb = w * self.elem;
        let mut out = Vec::with_capacity(rows.len() * w);
        for &r in rows {
            let (s, i) = self.locate(r)?;
            let data = self.raw(&self.shards[s], hook)?;
            self.decode_into(&data[i * rb..(i + 1) * rb], &mut out);
        }
        Ok(Tensor::from_vec(out, (rows.len(), w), &Device::Cpu)?)
    }

    /// One shard's rows of `hook` as f32 `[n, width]`, for sequential passes.
    pub fn shard_rows(&self, hook: &str, shard: usize) -> Result<Tensor> {
        let w = self.width(hook)?;
        let s = &self.shards[shard];
        let mut out = Vec::with_capacity(s.n_tokens as usize * w);
        self.decode_into(self.raw(s, hook)?, &mut out);
        Ok(Tensor::from_vec(
            out,
            (s.n_tokens as usize, w),
            &Device::Cpu,
        )?)
    }

    pub fn n_shards(&self) -> usize {
        self.shards.len()
    }

    /// Uniformly shuffled batches of rows across all shards (seeded, [`Permutation`]):
    /// memory is one batch, whatever the store's size; rows are read from the maps.
    pub fn shuffled_batches<'a>(
        &'a self,
        hook: &'a str,
        batch: usize,
        seed: u64,
    ) -> Result<impl Iterator<Item = Result<Tensor>> + 'a> {
        self.width(hook)?;
        let n = self.n_tokens();
        let order = crate::Permutation::new(n, seed);
        let batch = batch.max(1) as u64;
        Ok((0..n.div_ceil(batch)).map(move |b| {
            let rows: Vec<u64> = order.range(b * batch, (b + 1) * batch).collect();
            self.gather(hook, &rows)
        }))
    }

    /// Shard `shard`'s first row and row count.
    pub fn shard_span(&self, shard: usize) -> (u64, u64) {
        let s = &self.shards[shard];
        (s.first_token, s.n_tokens)
    }

    /// Shard `shard`'s token ids (one per row), read from its map.
    pub fn shard_token_ids(&self, shard: usize) -> Result<Vec<u32>> {
        Ok(self
            .raw(&self.shards[shard], "token")?
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// The per-token tables (doc, seq, pos, token) for all rows (16 bytes a row: for
    /// passes over a large store, read ranges with [`Store::token_rows`]).
    pub fn tokens(&self) -> Result<TokenTable> {
        self.token_rows(0, self.n_tokens())
    }

    /// The per-token tables of rows `start..end` (clamped to the store), read from the maps.
    pub fn token_rows(&self, start: u64, end: u64) -> Result<TokenTable> {
        let end = end.min(self.n_tokens());
        let mut t = TokenTable::default();
        if start >= end {
            return Ok(t);
        }
        let (first, _) = self.locate(start)?;
        for s in &self.shards[first..] {
            if s.first_token >= end {
                break;
            }
            let a = (start.max(s.first_token) - s.first_token) as usize * 4;
            let b = (end.min(s.first_token + s.n_tokens) - s.first_token) as usize * 4;
            let read = |name: &str, v: &mut Vec<u32>| -> Result<()> {
                v.extend(
                    self.raw(s, name)?[a..b]
                        .chunks_exact(4)
                        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
                Ok(())
            };
            read("doc", &mut t.doc)?;
            read("seq", &mut t.seq)?;
            read("pos", &mut t.pos)?;
            read("token", &mut t.token)?;
        }
        Ok(t)
    }

    /// The text around row `row`: up to `before` tokens of the same sequence before it,
    /// the token itself in `[[...]]`, and `after` tokens after it.
    pub fn context(
        &self,
        table: &TokenTable,
        tokenizer: &pragma_model::Tokenizer,
        row: u64,
        before: usize,
        after: usize,
    ) -> Result<String> {
        self.locate(row)?;
        let r = row as usize;
        let seq = table.seq[r];
        let mut a = r;
        while a > 0 && r - a < before && table.seq[a - 1] == seq {
            a -= 1;
        }
        let mut b = r + 1;
        while b < table.seq.len() && b - r <= after && table.seq[b] == seq {
            b += 1;
        }
        let dec = |x: &[u32]| tokenizer.decode(x).map_err(Error::from);
        Ok(format!(
            "{}[[{}]]{}",
            dec(&table.token[a..r])?,
            dec(&table.token[r..r + 1])?,
            dec(&table.token[r + 1..b])?
        ))
    }

    /// One vector per document: the last token's or the mean over its tokens.
    /// `sink`: a token id (the BOS) whose row is left out when it opens a sequence, as
    /// the probe and steering readers leave out the attention-sink position.
    /// Returns the document ids (corpus order) and `[n_docs, width]`.
    pub fn pooled(&self, hook: &str, pool: Pool, sink: Option<u32>) -> Result<(Vec<u32>, Tensor)> {
        let table = self.tokens()?;
        let w = self.width(hook)?;
        let mut docs: Vec<u32> = Vec::new();
        let mut groups: Vec<Vec<u64>> = Vec::new();
        for (i, (&d, &p)) in table.doc.iter().zip(&table.pos).enumerate() {
            let next_in_seq = table.seq.get(i + 1) == Some(&table.seq[i]);
            if p == 0 && sink == Some(table.token[i]) && next_in_seq {
                continue;
            }
            if docs.last() != Some(&d) {
                docs.push(d);
                groups.push(Vec::new());
            }
            if let Some(g) = groups.last_mut() {
                g.push(i as u64);
            }
        }
        let mut out = Vec::with_capacity(docs.len() * w);
        for g in &groups {
            let rows: Vec<u64> = match pool {
                Pool::Last => g.last().copied().into_iter().collect(),
                Pool::Mean => g.clone(),
            };
            let x = self.gather(hook, &rows)?.mean(0)?;
            out.extend(x.to_vec1::<f32>()?);
        }
        Ok((
            docs.clone(),
            Tensor::from_vec(out, (docs.len(), w), &Device::Cpu)?,
        ))
    }
}

/// Byte ranges of the tensors in a mapped safetensors shard.
fn index_shard(path: &Path, bytes: &[u8]) -> Result<HashMap<String, TensorLoc>> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| Error::CorruptShard {
        file: path.to_path_buf(),
        reason: format!("not valid safetensors: {e}"),
    })?;
    let base = bytes.as_ptr() as usize;
    Ok(st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = view.data();
            let start = data.as_ptr() as usize - base;
            (
                name,
                TensorLoc {
                    start,
                    end: start + data.len(),
                },
            )
        })
        .collect())
}
