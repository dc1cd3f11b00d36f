//! Saving tensors: safetensors files written atomically (temp file + rename).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// Write `tensors` (any dtype pragma uses) with string metadata to `path`,
/// atomically: readers never see a half-written file.
pub fn save_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let mut bufs = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let dtype = match t.dtype() {
            DType::F32 => safetensors::Dtype::F32,
            DType::F16 => safetensors::Dtype::F16,
            DType::BF16 => safetensors::Dtype::BF16,
            DType::U32 => safetensors::Dtype::U32,
            DType::I64 => safetensors::Dtype::I64,
            other => {
                return Err(Error::InvalidInput(format!(
                    "cannot save tensor '{name}' of dtype {other:?}"
                )))
            }
        };
        bufs.push((name.clone(), dtype, t.dims().to_vec(), tensor_le_bytes(t)?));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bufs
        .iter()
        .map(|(n, d, s, b)| {
            safetensors::tensor::TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::InvalidInput(format!("tensor '{n}': {e}")))
        })
        .collect::<Result<_>>()?;
    let data = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::InvalidInput(format!("serializing {}: {e}", path.display())))?;
    write_atomic(path, &data)
}

/// A tensor's elements as little-endian bytes, row-major (F32, F16, BF16, U32, I64).
pub fn tensor_le_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let flat = t.flatten_all()?;
    Ok(match t.dtype() {
        DType::F16 => flat
            .to_vec1::<half::f16>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::BF16 => flat
            .to_vec1::<half::bf16>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::U32 => flat
            .to_vec1::<u32>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::I64 => flat
            .to_vec1::<i64>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::F32 => flat
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        other => {
            return Err(Error::InvalidInput(format!(
                "no byte layout for dtype {other:?}"
            )))
        }
    })
}

/// Write bytes to `path` via a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, data).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}
