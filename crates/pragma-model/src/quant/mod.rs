//! Weights kept in their file dtype, and the matmuls that read them.
//!
//! Decoding one token reads every weight once, so its speed is set by bytes read:
//! f32 weights cost 4 bytes each, Q4_1 0.625 and Q8_0 1.06. For Q4_1 and Q8_0 (the
//! default model's dtypes) pragma's own kernels compute with f32 activations: each block
//! contributes `d * (x . q) + m * sum(x)`, exactly the dequantized weights `d * q + m` up
//! to float rounding. Other block types (Q4_0, Q5_x, Q2_K..Q6_K) use candle's kernels,
//! which quantize the activations to 8 bits as llama.cpp's do. Prefill (many rows)
//! dequantizes 64-row tiles into an f32 GEMM, as fast as the GEMM on weights dequantized
//! at load (`examples/matmul_kernels.rs`); [`QuantWeight::uses_rows`] picks the path.

use candle_core::quantized::GgmlDType;
use std::sync::Arc;

use half::f16;
use rayon::prelude::*;

use crate::error::{Error, Result};

mod simd;
mod typed;
#[cfg(target_arch = "x86_64")]
use simd::{avx2, avx512};

const QK: usize = 32;

/// Block formats we compute on directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantKind {
    /// `{ d: f16, m: f16, qs: [u8; 16] }`: w = d * nibble + m.
    Q4_1,
    /// `{ d: f16, qs: [i8; 32] }`: w = d * q.
    Q8_0,
}

impl QuantKind {
    /// The split layout a file dtype is held in: Q4_1 as itself, and Q4_0 as Q4_1 with
    /// `m = -8 d` (24 bytes a block instead of 18); Q8_0 as itself, and Q5_0 widened to
    /// it (its 5-bit values `q - 16` are exact in an i8; 36 bytes a block instead of
    /// 22). candle's Q5_0 kernel is scalar: it decoded at a seventh of the speed, and
    /// Q4_0 at half (`examples/matmul_kernels.rs`).
    pub fn from_ggml(d: GgmlDType) -> Option<Self> {
        match d {
            GgmlDType::Q4_1 | GgmlDType::Q4_0 => Some(QuantKind::Q4_1),
            GgmlDType::Q8_0 | GgmlDType::Q5_0 => Some(QuantKind::Q8_0),
            _ => None,
        }
    }
    /// Quant bytes per block (after the f16 scale fields).
    fn qs_bytes(self) -> usize {
        match self {
            QuantKind::Q4_1 => 16,
            QuantKind::Q8_0 => 32,
        }
    }
    /// f16 scale fields per block: (d, m) or (d).
    fn n_scales(self) -> usize {
        match self {
            QuantKind::Q4_1 => 2,
            QuantKind::Q8_0 => 1,
        }
    }
}

/// How a [`QuantWeight`] holds its blocks.
#[derive(Clone, Debug)]
enum Repr {
    /// Q4_1 and Q8_0 for pragma's f32-activation kernels: the quant bytes, and the
    /// blocks' f16 scales widened to f32 once at load (converting them per dot product
    /// cost 7% of decode; they add 20% to Q4_1's bytes, 6% to Q8_0's).
    Split {
        kind: QuantKind,
        qs: Vec<u8>,
        scales: Vec<f32>,
    },
    /// Any GGML block type (and F16 / BF16 / F32 rows) exactly as in the file, in 8-byte
    /// aligned memory, computed on with candle's kernels ([`typed`]).
    Blocks { data: Vec<u64>, len: usize },
    /// Blocks read in place from a memory-mapped file (`len` bytes at `start`): no copy,
    /// and the pages are the OS's file cache, shared and loaded as they are first read.
    Mapped {
        map: Arc<memmap2::Mmap>,
        start: usize,
        len: usize,
    },
}

/// A `[rows, cols]` weight matrix kept in its file dtype: GGUF blocks (Q4_0 ... Q8_K),
/// or F16 / BF16 rows. Row-major; each row is `cols / block_size` whole blocks.
///
/// [`QuantWeight::matmul`] computes `x W^T` without ever holding `W` in f32: for a few
/// activation rows (decoding) a dot-product kernel reads the blocks directly; for many
/// (prefill) tiles of 64 weight rows are dequantized into a per-thread buffer and fed to
/// an f32 GEMM (the `gemm` crate candle uses), so the cost of dequantizing is shared by
/// every activation row.
#[derive(Clone, Debug)]
pub struct QuantWeight {
    pub dtype: GgmlDType,
    pub rows: usize,
    pub cols: usize,
    repr: Repr,
}

/// Weight rows per prefill tile.
const TILE_ROWS: usize = 64;

impl QuantWeight {
    /// From the file's bytes (`rows * cols / block_size * type_size` of them).
    ///
    /// Errors: `cols` not a multiple of the block size, a byte count that does not match,
    /// or a dtype pragma cannot compute in.
    pub fn new(dtype: GgmlDType, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self> {
        Self::from_bytes(dtype, rows, cols, &data)
    }

    /// As [`Self::new`], from borrowed bytes: one copy, straight into the layout kept
    /// (Q4_1 / Q8_0 split, other types aligned blocks).
    pub fn from_bytes(dtype: GgmlDType, rows: usize, cols: usize, bytes: &[u8]) -> Result<Self> {
        check_len(dtype, rows, cols, bytes.len())?;
        if let Some(kind) = QuantKind::from_ggml(dtype) {
            let mut split = SplitBuilder::new(kind, dtype, bytes.len());
            split.push(bytes);
            return Ok(split.finish(rows, cols));
        }
        typed::check(dtype)?;
        Ok(Self {
            dtype,
            rows,
            cols,
            repr: Repr::Blocks {
                data: typed::aligned(bytes),
                len: bytes.len(),
            },
        })
    }

    /// As [`Self::new`], from the first `len` bytes of 8-byte aligned storage (what
    /// [`Self::alloc`] gives to be read into): block types keep it without a copy.
    pub fn from_aligned(
        dtype: GgmlDType,
        rows: usize,
        cols: usize,
        data: Vec<u64>,
        len: usize,
    ) -> Result<Self> {
        check_len(dtype, rows, cols, len)?;
        if data.len() * 8 < len {
            return Err(Error::InvalidInput(format!(
                "{dtype:?} weight [{rows}, {cols}]: {len} bytes expected in storage of {}",
                data.len() * 8
            )));
        }
        if let Some(kind) = QuantKind::from_ggml(dtype) {
            let mut split = SplitBuilder::new(kind, dtype, len);
            split.push(typed::as_bytes(&data, len));
            return Ok(split.finish(rows, cols));
        }
        typed::check(dtype)?;
        Ok(Self {
            dtype,
            rows,
            cols,
            repr: Repr::Blocks { data, len },
        })
    }

    /// Zeroed aligned storage for `len` bytes and a mutable view of them, to read a
    /// tensor's bytes into before [`Self::from_aligned`].
    pub fn alloc(len: usize) -> Vec<u64> {
        vec![0u64; len.div_ceil(8)]
    }

    /// The bytes of storage made by [`Self::alloc`].
    pub fn bytes_mut(v: &mut [u64]) -> &mut [u8] {
        typed::as_bytes_mut(v)
    }

    /// Whether pragma's own f32-activation row kernels cover `dtype` (Q4_1, Q8_0); other
    /// dtypes decode with candle's kernels.
    pub fn has_row_kernel(dtype: GgmlDType) -> bool {
        QuantKind::from_ggml(dtype).is_some()
    }

    /// Bytes held in memory.
    pub fn bytes(&self) -> usize {
        match &self.repr {
            Repr::Split { qs, scales, .. } => qs.len() + 4 * scales.len(),
            Repr::Blocks { len, .. } | Repr::Mapped { len, .. } => *len,
        }
    }

    /// A weight whose blocks stay in a memory-mapped file: `len` bytes at `start`. Q4_1
    /// and Q8_0 (pragma's split layout) and misaligned data are copied instead.
    ///
    /// Errors: as [`Self::new`], or a range past the map's end.
    pub fn mapped(
        dtype: GgmlDType,
        rows: usize,
        cols: usize,
        map: Arc<memmap2::Mmap>,
        start: usize,
        len: usize,
    ) -> Result<Self> {
        let Some(bytes) = map.get(start..start + len) else {
            return Err(Error::InvalidInput(format!(
                "{dtype:?} weight [{rows}, {cols}]: bytes {start}..{} past the file's {}",
                start + len,
                map.len()
            )));
        };
        let aligned = (bytes.as_ptr() as usize).is_multiple_of(8);
        check_len(dtype, rows, cols, len)?;
        if let Some(kind) = QuantKind::from_ggml(dtype) {
            // Split in chunks, dropping each chunk's pages once copied: the peak holds the
            // split copy and one chunk of the file, not the whole tensor twice.
            let mut split = SplitBuilder::new(kind, dtype, len);
            let chunk = (16 << 20) / dtype.type_size() * dtype.type_size();
            for (i, c) in bytes.chunks(chunk).enumerate() {
                split.push(c);
                dont_need(&map, start + i * chunk, c.len());
            }
            return Ok(split.finish(rows, cols));
        }
        if !aligned {
            let w = Self::from_bytes(dtype, rows, cols, bytes);
            dont_need(&map, start, len);
            return w;
        }
        typed::check(dtype)?;
        Ok(Self {
            dtype,
            rows,
            cols,
            repr: Repr::Mapped { map, start, len },
        })
    }

    /// For a weight read in place from a mapped file, tell the OS its pages are not needed
    /// now (`MADV_DONTNEED`), after they were copied (row permutation, stacking): they
    /// leave this process's resident set and are re-read from the file if read again.
    /// Other weights: nothing.
    pub fn release_pages(&self) {
        if let Repr::Mapped { map, start, len } = &self.repr {
            dont_need(map, *start, *len);
        }
    }

    /// Bytes of one row of blocks as the file stores them.
    fn row_bytes(&self) -> usize {
        self.cols / self.dtype.block_size() * self.dtype.type_size()
    }

    fn block_bytes(&self) -> &[u8] {
        match &self.repr {
            Repr::Blocks { data, len } => typed::as_bytes(data, *len),
            Repr::Mapped { map, start, len } => &map[*start..*start + *len],
            Repr::Split { .. } => &[],
        }
    }

    /// Reorder rows: row `i` of the result is row `perm[i]` of `self`.
    pub fn permute_rows(&self, perm: &[usize]) -> Self {
        let repr = match &self.repr {
            Repr::Split { kind, qs, scales } => {
                let nb = self.cols / QK;
                let (qb, sb) = (nb * kind.qs_bytes(), nb * kind.n_scales());
                let mut q = Vec::with_capacity(qs.len());
                let mut sc = Vec::with_capacity(scales.len());
                for &r in perm {
                    q.extend_from_slice(&qs[r * qb..(r + 1) * qb]);
                    sc.extend_from_slice(&scales[r * sb..(r + 1) * sb]);
                }
                Repr::Split {
                    kind: *kind,
                    qs: q,
                    scales: sc,
                }
            }
            Repr::Blocks { len, .. } | Repr::Mapped { len, .. } => {
                let rb = self.row_bytes();
                let src = self.block_bytes();
                let mut out = Vec::with_capacity(*len);
                for &r in perm {
                    out.extend_from_slice(&src[r * rb..(r + 1) * rb]);
                }
                Repr::Blocks {
                    data: typed::aligned(&out),
                    len: *len,
                }
            }
        };
        Self {
            dtype: self.dtype,
            rows: self.rows,
            cols: self.cols,
            repr,
        }
    }

    /// Concatenate matrices with the same layout and width along the rows (the same
    /// dtype, or dtypes held in the same split layout, e.g. Gemma's Q5_0 q/k with its
    /// Q8_0 v); `None` if they differ (the caller then keeps them apart).
    pub fn stack_rows(parts: &[&QuantWeight]) -> Option<QuantWeight> {
        let first = parts.first()?;
        let layout = |q: &QuantWeight| match &q.repr {
            Repr::Split { kind, .. } => Ok(*kind),
            _ => Err(q.dtype),
        };
        if parts
            .iter()
            .any(|p| layout(p) != layout(first) || p.cols != first.cols)
        {
            return None;
        }
        let dtype = match &first.repr {
            Repr::Split { kind, .. } if parts.iter().any(|p| p.dtype != first.dtype) => {
                match kind {
                    QuantKind::Q4_1 => GgmlDType::Q4_1,
                    QuantKind::Q8_0 => GgmlDType::Q8_0,
                }
            }
            _ => first.dtype,
        };
        let rows = parts.iter().map(|p| p.rows).sum();
        let repr = match &first.repr {
            Repr::Split { kind, .. } => {
                let mut qs = Vec::new();
                let mut scales = Vec::new();
                for p in parts {
                    if let Repr::Split {
                        qs: q, scales: s, ..
                    } = &p.repr
                    {
                        qs.extend_from_slice(q);
                        scales.extend_from_slice(s);
                    }
                }
                Repr::Split {
                    kind: *kind,
                    qs,
                    scales,
                }
            }
            Repr::Blocks { .. } | Repr::Mapped { .. } => {
                // Straight into aligned storage: one copy.
                let len: usize = parts.iter().map(|p| p.block_bytes().len()).sum();
                let mut data = Self::alloc(len);
                let mut at = 0;
                for p in parts {
                    let b = p.block_bytes();
                    Self::bytes_mut(&mut data)[at..at + b.len()].copy_from_slice(b);
                    at += b.len();
                }
                Repr::Blocks { data, len }
            }
        };
        Some(QuantWeight {
            dtype,
            rows,
            cols: first.cols,
            repr,
        })
    }

    /// Whether the dot-product kernel beats dequantized tiles for `n` activation rows
    /// of any dtype it covers (measured with `examples/matmul_kernels.rs`: it reads 4-6x
    /// fewer bytes, which wins while the GEMM is bandwidth-bound, i.e. for a handful of
    /// rows).
    pub fn worth_it(n: usize) -> bool {
        n <= 4
    }

    /// Whether [`Self::matmul`] uses the row kernels for `n` rows of this weight: up to
    /// 4 rows for block types, up to 8 for pragma's split layouts where the four-row
    /// AVX-512 kernels run (`examples/matmul_kernels.rs`, Q4_1 1536x576: 8 rows in 221 us
    /// against 413 us for the tiles; at 16 rows the two tie); never for F16 / BF16 / F32
    /// rows, whose candle dot products are scalar (200x slower than the tiles).
    pub fn uses_rows(&self, n: usize) -> bool {
        match &self.repr {
            Repr::Split { kind, .. } if kernel4(*kind).is_some() => n <= 8,
            _ => {
                Self::worth_it(n)
                    && !matches!(
                        self.dtype,
                        GgmlDType::F16 | GgmlDType::BF16 | GgmlDType::F32
                    )
            }
        }
    }

    /// `y[n, rows] = x[n, cols] . W^T`: the row kernels for `n <=` [`Self::worth_it`]'s
    /// limit, else dequantized tiles and an f32 GEMM.
    pub fn matmul(&self, x: &[f32], n: usize) -> Vec<f32> {
        debug_assert_eq!(x.len(), n * self.cols);
        if self.uses_rows(n) {
            self.matmul_rows(x, n)
        } else {
            self.matmul_tiled(x, n)
        }
    }

    /// `y[n, rows] = x[n, cols] . W^T` with the row kernels (the decode path) whatever `n`.
    pub fn matmul_rows(&self, x: &[f32], n: usize) -> Vec<f32> {
        match &self.repr {
            Repr::Split { kind, qs, scales } => self.matmul_split(*kind, qs, scales, x, n),
            Repr::Blocks { .. } | Repr::Mapped { .. } => {
                typed::matmul(self.dtype, self.block_bytes(), x, n, self.cols, self.rows)
            }
        }
    }

    fn matmul_split(
        &self,
        kind: QuantKind,
        qs: &[u8],
        scales: &[f32],
        x: &[f32],
        n: usize,
    ) -> Vec<f32> {
        let nb = self.cols / QK;
        // Per-block sums of x, needed for Q4_1's offset term.
        let sums: Vec<f32> = x.chunks_exact(QK).map(|c| c.iter().sum()).collect();
        let mut y = vec![0f32; n * self.rows];
        let (qb, sb) = (nb * kind.qs_bytes(), nb * kind.n_scales());
        let dot = kernel(kind);
        let dot4 = kernel4(kind);
        // Output rows in parallel chunks; each chunk computes all n activation rows so
        // a weight row is read from memory once (and, four rows at a time, converted
        // once).
        const CHUNK: usize = 64;
        let mut yt = vec![0f32; self.rows * n]; // [rows, n]
        yt.par_chunks_mut(CHUNK * n)
            .enumerate()
            .for_each(|(ci, out)| {
                let r0 = ci * CHUNK;
                for (ri, o) in out.chunks_exact_mut(n).enumerate() {
                    let r = r0 + ri;
                    let w = &qs[r * qb..(r + 1) * qb];
                    let sc = &scales[r * sb..(r + 1) * sb];
                    let xs = |j: usize| &x[j * self.cols..(j + 1) * self.cols];
                    let ss = |j: usize| &sums[j * nb..(j + 1) * nb];
                    let mut j = 0;
                    if let Some(d4) = dot4 {
                        while j + 4 <= n {
                            let v = d4(
                                w,
                                sc,
                                [xs(j), xs(j + 1), xs(j + 2), xs(j + 3)],
                                [ss(j), ss(j + 1), ss(j + 2), ss(j + 3)],
                            );
                            o[j..j + 4].copy_from_slice(&v);
                            j += 4;
                        }
                    }
                    for (jj, oj) in o.iter_mut().enumerate().skip(j) {
                        *oj = dot(w, sc, xs(jj), ss(jj));
                    }
                }
            });
        for r in 0..self.rows {
            for j in 0..n {
                y[j * self.rows + r] = yt[r * n + j];
            }
        }
        y
    }

    /// Many activation rows: tiles of [`TILE_ROWS`] weight rows dequantized into a
    /// per-thread buffer, each multiplied by all of `x` with a single-threaded GEMM; the
    /// tiles run in parallel on rayon's pool.
    pub fn matmul_tiled(&self, x: &[f32], n: usize) -> Vec<f32> {
        let (rows, cols) = (self.rows, self.cols);
        let mut y = vec![0f32; n * rows];
        if n == 0 || rows == 0 {
            return y;
        }
        let dst = SendPtr(y.as_mut_ptr());
        (0..rows.div_ceil(TILE_ROWS)).into_par_iter().for_each_init(
            Vec::new,
            |buf: &mut Vec<f32>, ti| {
                let r0 = ti * TILE_ROWS;
                let r1 = (r0 + TILE_ROWS).min(rows);
                buf.resize((r1 - r0) * cols, 0.0);
                self.dequantize_rows(r0, r1, buf);
                let d = dst;
                // SAFETY: `y` is `[n, rows]` row-major and outlives the loop; tile `ti`
                // writes only its columns r0..r1 of every row, so no two tiles write the
                // same element. `x` is `[n, cols]` and `buf` `[r1 - r0, cols]`, both
                // row-major; the strides below say so (rhs = buf^T).
                #[allow(unsafe_code)]
                unsafe {
                    gemm::gemm(
                        n,
                        r1 - r0,
                        cols,
                        d.0.add(r0),
                        1,
                        rows as isize,
                        false,
                        x.as_ptr(),
                        1,
                        cols as isize,
                        buf.as_ptr(),
                        cols as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            },
        );
        y
    }

    /// Dequantize rows `r0..r1` into `out` (`(r1 - r0) * cols` values).
    pub fn dequantize_rows(&self, r0: usize, r1: usize, out: &mut [f32]) {
        let cols = self.cols;
        debug_assert_eq!(out.len(), (r1 - r0) * cols);
        match &self.repr {
            Repr::Split { kind, qs, scales } => {
                let (nq, ns) = (kind.qs_bytes(), kind.n_scales());
                let nb = cols / QK;
                let qs = &qs[r0 * nb * nq..r1 * nb * nq];
                let sc = &scales[r0 * nb * ns..r1 * nb * ns];
                for ((q, s), o) in qs
                    .chunks_exact(nq)
                    .zip(sc.chunks_exact(ns))
                    .zip(out.chunks_exact_mut(QK))
                {
                    let d = s[0];
                    match kind {
                        QuantKind::Q4_1 => {
                            let m = s[1];
                            for (j, b) in q.iter().enumerate() {
                                o[j] = (b & 0x0F) as f32 * d + m;
                                o[j + 16] = (b >> 4) as f32 * d + m;
                            }
                        }
                        QuantKind::Q8_0 => {
                            for (o, &b) in o.iter_mut().zip(q) {
                                *o = b as i8 as f32 * d;
                            }
                        }
                    }
                }
            }
            Repr::Blocks { .. } | Repr::Mapped { .. } => {
                let rb = self.row_bytes();
                typed::to_float(self.dtype, &self.block_bytes()[r0 * rb..r1 * rb], out);
            }
        }
    }

    /// The dequantized matrix: `[rows * cols]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        self.dequantize_rows(0, self.rows, &mut out);
        out
    }
}

/// `MADV_DONTNEED` over the pages of `start..start + len` of a read-only file map.
/// `len` bytes of `dtype` blocks must be exactly a `[rows, cols]` matrix.
fn check_len(dtype: GgmlDType, rows: usize, cols: usize, len: usize) -> Result<()> {
    let bs = dtype.block_size();
    let want = rows * (cols / bs) * dtype.type_size();
    if !cols.is_multiple_of(bs) || len != want {
        return Err(Error::InvalidInput(format!(
            "{dtype:?} weight [{rows}, {cols}]: expected {want} bytes in blocks of {bs}, found {len}"
        )));
    }
    Ok(())
}

/// Builds the split layout (quant bytes, f32 scales) from the file's blocks of `dtype`
/// fed in pieces of whole blocks.
struct SplitBuilder {
    kind: QuantKind,
    dtype: GgmlDType,
    qs: Vec<u8>,
    scales: Vec<f32>,
}

impl SplitBuilder {
    fn new(kind: QuantKind, dtype: GgmlDType, len: usize) -> Self {
        let blocks = len / dtype.type_size();
        Self {
            kind,
            dtype,
            qs: Vec::with_capacity(blocks * kind.qs_bytes()),
            scales: Vec::with_capacity(blocks * kind.n_scales()),
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let (nq, ns) = (self.kind.qs_bytes(), self.kind.n_scales());
        for blk in bytes.chunks_exact(self.dtype.type_size()) {
            if self.dtype == GgmlDType::Q4_0 {
                // `{ d: f16, qs: [u8; 16] }`, w = d * (nibble - 8) = d * nibble + (-8 d).
                let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
                self.scales.extend([d, -8.0 * d]);
                self.qs.extend_from_slice(&blk[2..18]);
                continue;
            }
            for s in 0..ns {
                self.scales
                    .push(f16::from_le_bytes([blk[2 * s], blk[2 * s + 1]]).to_f32());
            }
            if self.dtype == GgmlDType::Q5_0 {
                // `{ d: f16, qh: u32, qs: [u8; 16] }`: element j < 16 is the low nibble of
                // qs[j] with bit j of qh as its fifth bit, element j + 16 the high nibble
                // with bit j + 16; w = d * (q - 16) (ggml's dequantize_row_q5_0).
                let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                let q = &blk[6..22];
                let lo = (0..16).map(|j| (q[j] & 0x0F) | ((((qh >> j) << 4) & 0x10) as u8));
                let hi = (0..16).map(|j| (q[j] >> 4) | (((qh >> (j + 12)) & 0x10) as u8));
                self.qs.extend(lo.chain(hi).map(|v| (v as i8 - 16) as u8));
            } else {
                self.qs.extend_from_slice(&blk[2 * ns..2 * ns + nq]);
            }
        }
    }

    fn finish(self, rows: usize, cols: usize) -> QuantWeight {
        let dtype = self.dtype;
        QuantWeight {
            dtype,
            rows,
            cols,
            repr: Repr::Split {
                kind: self.kind,
                qs: self.qs,
                scales: self.scales,
            },
        }
    }
}

fn dont_need(map: &memmap2::Mmap, start: usize, len: usize) {
    let page = 4096;
    let a = start / page * page;
    let b = (start + len).min(map.len());
    if b <= a {
        return;
    }
    // SAFETY: the map is private and read-only, never written, so dropping its pages only
    // makes the next read fault them in again from the file with the same bytes; no
    // reference into the range sees different content.
    #[allow(unsafe_code)]
    let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, a, b - a) };
}

/// A raw pointer that may cross threads (each tile writes its own columns).
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: only used by `matmul_tiled`, whose tiles write disjoint elements.
#[allow(unsafe_code)]
unsafe impl Send for SendPtr {}
#[allow(unsafe_code)]
unsafe impl Sync for SendPtr {}

/// A row kernel: `w` holds a row's quant bytes, `sc` its scales, `x` the activations,
/// `sums` the per-block sums of `x` (for Q4_1's offset term).
type DotFn = fn(&[u8], &[f32], &[f32], &[f32]) -> f32;

/// One weight row against four activation rows (and their block sums).
type Dot4Fn = fn(&[u8], &[f32], [&[f32]; 4], [&[f32]; 4]) -> [f32; 4];

/// The four-row kernel for `kind` where this CPU has one (AVX-512).
fn kernel4(kind: QuantKind) -> Option<Dot4Fn> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("fma") {
            return Some(match kind {
                QuantKind::Q4_1 => |w, sc, x, s| {
                    // SAFETY: AVX-512F and FMA are present (checked when chosen); callers
                    // pass whole rows (w: cols/32 blocks, each x: cols values, each s:
                    // cols/32 sums).
                    #[allow(unsafe_code)]
                    unsafe {
                        avx512::dot4_q4_1(w, sc, x, s)
                    }
                },
                QuantKind::Q8_0 => |w, sc, x, _| {
                    // SAFETY: as above.
                    #[allow(unsafe_code)]
                    unsafe {
                        avx512::dot4_q8_0(w, sc, x)
                    }
                },
            });
        }
    }
    let _ = kind;
    None
}

/// The fastest kernel this CPU runs for `kind`, chosen once per matmul.
fn kernel(kind: QuantKind) -> DotFn {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("fma") {
            return match kind {
                QuantKind::Q4_1 => |w, sc, x, s| {
                    // SAFETY: AVX-512F and FMA are present (checked when chosen); callers
                    // pass whole rows (w: cols/32 blocks, x: cols values, s: cols/32 sums).
                    #[allow(unsafe_code)]
                    unsafe {
                        avx512::dot_q4_1(w, sc, x, s)
                    }
                },
                QuantKind::Q8_0 => |w, sc, x, _| {
                    // SAFETY: as above.
                    #[allow(unsafe_code)]
                    unsafe {
                        avx512::dot_q8_0(w, sc, x)
                    }
                },
            };
        }
        if has!("avx2") && has!("fma") {
            return match kind {
                QuantKind::Q4_1 => |w, sc, x, s| {
                    // SAFETY: AVX2 and FMA are present (checked when chosen); whole rows.
                    #[allow(unsafe_code)]
                    unsafe {
                        avx2::dot_q4_1(w, sc, x, s)
                    }
                },
                QuantKind::Q8_0 => |w, sc, x, _| {
                    // SAFETY: as above.
                    #[allow(unsafe_code)]
                    unsafe {
                        avx2::dot_q8_0(w, sc, x)
                    }
                },
            };
        }
    }
    match kind {
        QuantKind::Q4_1 => dot_q4_1_scalar,
        QuantKind::Q8_0 => |w, sc, x, _| dot_q8_0_scalar(w, sc, x),
    }
}

fn dot_q4_1_scalar(w: &[u8], sc: &[f32], x: &[f32], sums: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (((qs, dm), xs), s) in w
        .chunks_exact(16)
        .zip(sc.chunks_exact(2))
        .zip(x.chunks_exact(QK))
        .zip(sums)
    {
        let (d, m) = (dm[0], dm[1]);
        let mut t = 0f32;
        for (j, q) in qs.iter().enumerate() {
            t += xs[j] * (q & 0x0F) as f32 + xs[j + 16] * (q >> 4) as f32;
        }
        acc += d * t + m * s;
    }
    acc
}

fn dot_q8_0_scalar(w: &[u8], sc: &[f32], x: &[f32]) -> f32 {
    let mut acc = 0f32;
    for ((qs, &d), xs) in w.chunks_exact(32).zip(sc).zip(x.chunks_exact(QK)) {
        let t: f32 = qs.iter().zip(xs).map(|(&q, &xv)| q as i8 as f32 * xv).sum();
        acc += d * t;
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    /// Every dtype pragma computes in: (dtype, tolerance of the row kernels relative to
    /// |x| |w_row|). pragma's own Q4_1 / Q8_0 kernels (Q4_0 and Q5_0 held in their
    /// layouts) use f32 activations (1e-5, float
    /// rounding); candle's quantize the activations to 8 bits (Q8_0 / Q8_K) or round them
    /// to f16 / bf16, as llama.cpp does: 1e-2.
    const DTYPES: &[(GgmlDType, f64)] = &[
        (GgmlDType::Q4_0, 1e-5),
        (GgmlDType::Q4_1, 1e-5),
        (GgmlDType::Q5_0, 1e-5),
        (GgmlDType::Q5_1, 1e-2),
        (GgmlDType::Q8_0, 1e-5),
        (GgmlDType::Q2K, 1e-2),
        (GgmlDType::Q3K, 1e-2),
        (GgmlDType::Q4K, 1e-2),
        (GgmlDType::Q5K, 1e-2),
        (GgmlDType::Q6K, 1e-2),
        (GgmlDType::F16, 1e-2),
        (GgmlDType::BF16, 1e-2),
    ];

    fn weight(dtype: GgmlDType, rows: usize, cols: usize) -> (QuantWeight, Vec<f32>) {
        let w = Tensor::randn(0f32, 1.0, (rows, cols), &Device::Cpu).expect("w");
        let q = QTensor::quantize(&w, dtype).expect("quantize");
        let deq = q
            .dequantize(&Device::Cpu)
            .expect("deq")
            .flatten_all()
            .expect("f")
            .to_vec1::<f32>()
            .expect("v");
        let qw =
            QuantWeight::new(dtype, rows, cols, q.data().expect("data").into_owned()).expect("qw");
        (qw, deq)
    }

    #[allow(clippy::too_many_arguments)]
    fn check_matmul(
        y: &[f32],
        x: &[f32],
        deq: &[f32],
        n: usize,
        rows: usize,
        cols: usize,
        tol: f64,
        what: &str,
    ) {
        for j in 0..n {
            let xs = &x[j * cols..(j + 1) * cols];
            let xn = xs.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
            for r in 0..rows {
                let wr = &deq[r * cols..(r + 1) * cols];
                let want: f64 = xs.iter().zip(wr).map(|(a, b)| *a as f64 * *b as f64).sum();
                let wn = wr.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
                let got = y[j * rows + r] as f64;
                assert!(
                    (got - want).abs() <= tol * xn * wn + 1e-6,
                    "{what} [{j},{r}]: {got} vs {want} (bound {})",
                    tol * xn * wn
                );
            }
        }
    }

    /// Each dtype: dequantization equals candle's; the row kernels and the tiles (rows
    /// not a multiple of the tile) equal the dequantized weights' f64 matmul within the
    /// stated tolerance (tiles: 1e-5, the dequantized values are exact and only the f32
    /// summation differs).
    #[test]
    fn every_dtype_matches_the_dequantized_matmul() {
        let (rows, cols) = (70, 512);
        for &(dtype, tol) in DTYPES {
            let (qw, deq) = weight(dtype, rows, cols);
            assert_eq!(
                qw.dequantize(),
                deq,
                "{dtype:?}: same dequantization as candle"
            );
            for n in [1, 3, 37] {
                let x: Vec<f32> = (0..n * cols)
                    .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                    .collect();
                let y = qw.matmul_rows(&x, n);
                check_matmul(
                    &y,
                    &x,
                    &deq,
                    n,
                    rows,
                    cols,
                    tol,
                    &format!("{dtype:?} rows n={n}"),
                );
                let y = qw.matmul_tiled(&x, n);
                check_matmul(
                    &y,
                    &x,
                    &deq,
                    n,
                    rows,
                    cols,
                    1e-5,
                    &format!("{dtype:?} tiles n={n}"),
                );
            }
        }
    }

    /// Row permutation and stacking act on whole rows of blocks.
    #[test]
    fn permute_and_stack_move_whole_rows() {
        let (rows, cols) = (6, 256);
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q4K, GgmlDType::F16] {
            let (a, da) = weight(dtype, rows, cols);
            let (b, db) = weight(dtype, 2, cols);
            let perm = [5, 0, 3, 1, 4, 2];
            let p = a.permute_rows(&perm).dequantize();
            for (i, &r) in perm.iter().enumerate() {
                assert_eq!(
                    p[i * cols..(i + 1) * cols],
                    da[r * cols..(r + 1) * cols],
                    "{dtype:?}"
                );
            }
            let s = QuantWeight::stack_rows(&[&a, &b]).expect("stack");
            assert_eq!(s.rows, rows + 2);
            assert_eq!(s.dequantize(), [da.clone(), db].concat(), "{dtype:?}");
            let (c, _) = weight(GgmlDType::Q8_0, 2, cols);
            if dtype != GgmlDType::Q8_0 {
                assert!(QuantWeight::stack_rows(&[&a, &c]).is_none());
            }
        }
        // Q5_0 is held in Q8_0's layout, so the two stack.
        let (a, da) = weight(GgmlDType::Q5_0, rows, cols);
        let (c, dc) = weight(GgmlDType::Q8_0, 2, cols);
        let s = QuantWeight::stack_rows(&[&a, &c]).expect("same layout");
        assert_eq!(s.dequantize(), [da, dc].concat());
    }

    /// pragma's SIMD row kernels agree with the scalar ones.
    #[test]
    fn scalar_and_simd_row_kernels_agree() {
        let cols = 96;
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let (qw, _) = weight(dtype, 3, cols);
            let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.3).cos()).collect();
            let y = qw.matmul_rows(&x, 1);
            let Repr::Split { kind, qs, scales } = &qw.repr else {
                panic!("{dtype:?} is split");
            };
            let nb = cols / QK;
            let w0 = &qs[..nb * kind.qs_bytes()];
            let s0 = &scales[..nb * kind.n_scales()];
            let sums: Vec<f32> = x.chunks_exact(QK).map(|c| c.iter().sum()).collect();
            let scalar = match kind {
                QuantKind::Q4_1 => dot_q4_1_scalar(w0, s0, &x, &sums),
                QuantKind::Q8_0 => dot_q8_0_scalar(w0, s0, &x),
            };
            assert!((scalar - y[0]).abs() < 1e-4 * (1.0 + scalar.abs()));
        }
    }

    #[test]
    fn bad_sizes_are_errors() {
        let e = QuantWeight::new(GgmlDType::Q4K, 2, 100, vec![0; 10]).expect_err("cols");
        assert!(e.to_string().contains("blocks of 256"), "{e}");
        let e = QuantWeight::new(GgmlDType::Q8_0, 2, 64, vec![0; 10]).expect_err("bytes");
        assert!(e.to_string().contains("expected 136 bytes"), "{e}");
    }
}
