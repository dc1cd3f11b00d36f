//! GGML block types through candle's implementations (`candle_core::quantized::k_quants`):
//! dequantization (`GgmlType::to_float`) and the quantized dot products
//! (`k_quants::matmul`, which quantizes the activations to the type's dot partner, Q8_0 /
//! Q8_1 / Q8_K, as llama.cpp's CPU backend does).

use candle_core::quantized::k_quants::{self, GgmlType};
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
    let mut y = vec![0f32; n * rows];
    // k_quants::matmul's (m, k, n): m activation rows, k columns, n weight rows.
    let r =
        typed!(dtype, T => k_quants::matmul::<T>((n, cols, rows), x, blocks::<T>(bytes), &mut y));
    if let Err(e) = r {
        // Shapes are checked when the weight is built; this is unreachable in practice.
        panic!("quantized matmul {dtype:?} [{n}x{cols}] x [{rows}x{cols}]^T: {e}");
    }
    y
}
