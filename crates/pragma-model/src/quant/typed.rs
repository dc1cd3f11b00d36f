//! GGML block types through candle's implementations (`candle_core::quantized::k_quants`):
//! dequantization (`GgmlType::to_float`) and the quantized dot products
//! (`GgmlType::vec_dot_4`, after quantizing the activations to the type's dot partner, Q8_0 /
//! Q8_1 / Q8_K, as llama.cpp's CPU backend does).

use candle_core::quantized::k_quants::GgmlType;
use candle_core::quantized::GgmlDType;

use crate::error::{Error, Result};

/// Runs `$body` with `$T` the candle block type of `$dtype`.
macro_rules! typed {
    ($dtype:expr, $T:ident => $body:expr) => {{
        use candle_core::quantized::k_quants::*;
        match $dtype {
            GgmlDType::Q4_0 => {
                type $T = BlockQ4_0;
                $body
            }
            GgmlDType::Q4_1 => {
                type $T = BlockQ4_1;
                $body
            }
            GgmlDType::Q5_0 => {
                type $T = BlockQ5_0;
                $body
            }
            GgmlDType::Q5_1 => {
                type $T = BlockQ5_1;
                $body
            }
            GgmlDType::Q8_0 => {
                type $T = BlockQ8_0;
                $body
            }
            GgmlDType::Q8_1 => {
                type $T = BlockQ8_1;
                $body
            }
            GgmlDType::Q2K => {
                type $T = BlockQ2K;
                $body
            }
            GgmlDType::Q3K => {
                type $T = BlockQ3K;
                $body
            }
            GgmlDType::Q4K => {
                type $T = BlockQ4K;
                $body
            }
            GgmlDType::Q5K => {
                type $T = BlockQ5K;
                $body
            }
            GgmlDType::Q6K => {
                type $T = BlockQ6K;
                $body
            }
            GgmlDType::Q8K => {
                type $T = BlockQ8K;
                $body
            }
            GgmlDType::F16 => {
                type $T = half::f16;
                $body
            }
            GgmlDType::BF16 => {
                type $T = half::bf16;
                $body
            }
            GgmlDType::F32 => {
                type $T = f32;
                $body
            }
        }
    }};
}

/// Whether candle's block type for `dtype` has the file's layout (its size is the
/// dtype's bytes per block), so file bytes can be read as blocks.
pub fn check(dtype: GgmlDType) -> Result<()> {
    let size = typed!(dtype, T => std::mem::size_of::<T>());
    if size != dtype.type_size() {
        return Err(Error::InvalidInput(format!(
            "{dtype:?}: candle's block is {size} bytes, the format's {}",
            dtype.type_size()
        )));
    }
    Ok(())
}

/// Copy bytes into 8-byte aligned storage (every block type's alignment divides 8).
pub fn aligned(bytes: &[u8]) -> Vec<u64> {
    let mut v = vec![0u64; bytes.len().div_ceil(8)];
    as_bytes_mut(&mut v)[..bytes.len()].copy_from_slice(bytes);
    v
}

/// The first `len` bytes of aligned storage.
pub fn as_bytes(v: &[u64], len: usize) -> &[u8] {
    // SAFETY: u64 storage is at least `len` bytes (made by `aligned`); u8 has no
    // alignment or validity requirements.
    #[allow(unsafe_code)]
    unsafe {
        std::slice::from_raw_parts(v.as_ptr() as *const u8, len.min(v.len() * 8))
    }
}

pub fn as_bytes_mut(v: &mut [u64]) -> &mut [u8] {
    // SAFETY: as `as_bytes`, mutably; every byte pattern is a valid u64.
    #[allow(unsafe_code)]
    unsafe {
        std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, v.len() * 8)
    }
}

/// Bytes as blocks of `T`.
///
/// Callers pass slices of `aligned` storage that start at a whole block (row starts are
/// multiples of the block size, which is a multiple of `T`'s alignment) and hold whole
/// blocks; `check` has verified `size_of::<T>()` is the format's block size.
fn blocks<T: GgmlType>(bytes: &[u8]) -> &[T] {
    let size = std::mem::size_of::<T>();
    assert!(
        bytes.len().is_multiple_of(size)
            && (bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>()),
        "block slice of {} bytes at {:p} for {size}-byte blocks",
        bytes.len(),
        bytes.as_ptr()
    );
    // SAFETY: length and alignment checked above; candle's block types are `repr(C)`
    // plain data (f16 / f32 scales and integer arrays) valid for any bit pattern.
    #[allow(unsafe_code)]
    unsafe {
        std::slice::from_raw_parts(bytes.as_ptr() as *const T, bytes.len() / size)
    }
}

/// Dequantize whole blocks into `out`.
pub fn to_float(dtype: GgmlDType, bytes: &[u8], out: &mut [f32]) {
    typed!(dtype, T => T::to_float(blocks::<T>(bytes), out))
}

/// `y[n, rows] = x[n, cols] . W^T` with candle's quantized kernels (activations
/// quantized to the block type's dot partner).
pub fn matmul(
    dtype: GgmlDType,
    bytes: &[u8],
    x: &[f32],
    n: usize,
    cols: usize,
    rows: usize,
) -> Vec<f32> {
    typed!(dtype, T => matmul_t::<T>(blocks::<T>(bytes), x, n, cols, rows))
}

/// `x[n, cols] . W[rows, cols]^T` as candle's `k_quants::matmul` computes it (the
/// activations quantized to `T::VecDotType`, then `vec_dot_4` over quads of weight rows),
/// but on pragma's rayon pool: candle's own worker pool spins for a while after each
/// call, and between the ~40 such calls of a decode step that spinning thread took a
/// fifth of the CPU from the rayon workers (Gemma 3 decode +20% without it).
fn matmul_t<T: GgmlType>(w: &[T], x: &[f32], n: usize, cols: usize, rows: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let kb = cols.div_ceil(T::BLCK_SIZE);
    let mut xq: Vec<T::VecDotType> = (0..n * kb).map(|_| T::VecDotType::zeros()).collect();
    for (xs, q) in x.chunks_exact(cols).zip(xq.chunks_exact_mut(kb)) {
        if T::DIRECT_COPY {
            T::VecDotType::direct_copy(xs, q);
        } else {
            T::VecDotType::from_float(xs, q);
        }
    }
    let row = |r: usize| &w[r * kb..(r + 1) * kb];
    // [rows, n], weight rows in chunks of 4 (one vec_dot_4 each) per parallel task.
    const CHUNK: usize = 32;
    let mut yt = vec![0f32; rows * n];
    yt.par_chunks_mut(CHUNK * n)
        .enumerate()
        .for_each(|(ci, out)| {
            let r0 = ci * CHUNK;
            let nr = out.len() / n;
            for j in 0..n {
                let xs = &xq[j * kb..(j + 1) * kb];
                let mut r = 0;
                while r + 4 <= nr {
                    let a = r0 + r;
                    let (d0, d1, d2, d3) =
                        T::vec_dot_4(cols, row(a), row(a + 1), row(a + 2), row(a + 3), xs);
                    for (k, d) in [d0, d1, d2, d3].into_iter().enumerate() {
                        out[(r + k) * n + j] = d;
                    }
                    r += 4;
                }
                for k in r..nr {
                    out[k * n + j] = T::vec_dot(cols, row(r0 + k), xs);
                }
            }
        });
    if n == 1 {
        return yt;
    }
    let mut y = vec![0f32; n * rows];
    for r in 0..rows {
        for j in 0..n {
            y[j * rows + r] = yt[r * n + j];
        }
    }
    y
}
