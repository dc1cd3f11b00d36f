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

/// Write bytes to `path` via a temporary file in the same folder and a rename, making
/// the folder if it is missing. Errors (`Error::Write`) name `path`.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let write_err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    // A new output folder is made, as `--out runs/vectors/v.safetensors` expects.
    std::fs::create_dir_all(dir).map_err(write_err)?;
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, data).map_err(write_err)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        write_err(e)
    })
}

/// Write `value` as pretty JSON to `path`, atomically. Non-finite floats are written as
/// `null` (JSON has no NaN); fields that may hold them read back through [`json_f64`].
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::InvalidInput(format!("serializing {}: {e}", path.display())))?;
    write_atomic(path, text.as_bytes())
}

/// Read a JSON file that pragma wrote; `what` names it in errors ("a sweep.json from
/// `pragma steer sweep`").
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::InvalidInput(format!("{}: expected {what}: {e}", path.display())))
}

/// Serde for `f64` fields that may be NaN or infinite (an undefined AUROC, a CI that
/// was not computed): JSON has no such numbers, so they are written as `null` and read
/// back as NaN. Use `#[serde(with = "pragma_model::io::json_f64")]`; the submodules
/// cover `(f64, f64)` pairs, `Vec<f64>` and `Option<(f64, f64)>`.
pub mod json_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    fn out(v: f64) -> Option<f64> {
        v.is_finite().then_some(v)
    }

    fn back(v: Option<f64>) -> f64 {
        v.unwrap_or(f64::NAN)
    }

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_some(&out(*v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(back(Option::<f64>::deserialize(d)?))
    }

    pub mod pair {
        use super::*;
        pub fn serialize<S: Serializer>(v: &(f64, f64), s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq([out(v.0), out(v.1)])
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<(f64, f64), D::Error> {
            let (a, b) = <(Option<f64>, Option<f64>)>::deserialize(d)?;
            Ok((back(a), back(b)))
        }
    }

    pub mod opt_pair {
        use super::*;
        pub fn serialize<S: Serializer>(v: &Option<(f64, f64)>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(p) => s.serialize_some(&[out(p.0), out(p.1)]),
                None => s.serialize_none(),
            }
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<(f64, f64)>, D::Error> {
            let v = Option::<(Option<f64>, Option<f64>)>::deserialize(d)?;
            Ok(v.map(|(a, b)| (back(a), back(b))))
        }
    }

    pub mod vec {
        use super::*;
        pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(v.iter().map(|x| out(*x)))
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
            Ok(Vec::<Option<f64>>::deserialize(d)?
                .into_iter()
                .map(back)
                .collect())
        }
    }
}

/// Cast an activation-like tensor to a storage dtype, refusing to turn finite values
/// into infinities (float16 holds |x| <= 65504; bfloat16 and float32 about 3.4e38).
/// `name` (e.g. the hook) goes into the error, with the largest magnitude seen and the
/// dtypes that would hold it.
pub fn cast_checked(t: &Tensor, dtype: DType, name: &str) -> Result<Tensor> {
    if t.dtype() == dtype || !matches!(dtype, DType::F16 | DType::BF16) {
        return Ok(t.to_dtype(dtype)?);
    }
    // The largest magnitude, on the tensor's device; only when the model's own values are
    // non-finite (kept as they are) are the finite ones scanned on the host.
    let mut max = t
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_dtype(DType::F32)?
        .to_scalar::<f32>()?;
    if !max.is_finite() {
        max = t
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .filter(|x| x.is_finite())
            .fold(0f32, |m, x| m.max(x.abs()));
    }
    let fits = |d: DType| match d {
        DType::F16 => half::f16::from_f32(max).is_finite(),
        DType::BF16 => half::bf16::from_f32(max).is_finite(),
        _ => true,
    };
    if !fits(dtype) {
        let holds: Vec<&str> = [(DType::BF16, "bf16"), (DType::F32, "f32")]
            .into_iter()
            .filter(|(d, _)| fits(*d))
            .map(|(_, n)| n)
            .collect();
        return Err(Error::LossyWrite {
            name: name.to_string(),
            max_abs: max,
            dtype: format!("{dtype:?}").to_lowercase(),
            holds: holds.join(" or "),
        });
    }
    Ok(t.to_dtype(dtype)?)
}

/// Number of non-finite values (NaN, +-inf) in little-endian `f32`/`f16`/`bf16` bytes,
/// by their exponent bits (no conversion).
pub fn count_nonfinite(bytes: &[u8], dtype: DType) -> u64 {
    match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .filter(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) & 0x7F80_0000 == 0x7F80_0000)
            .count() as u64,
        DType::F16 => bytes
            .chunks_exact(2)
            .filter(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7C00 == 0x7C00)
            .count() as u64,
        DType::BF16 => bytes
            .chunks_exact(2)
            .filter(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7F80 == 0x7F80)
            .count() as u64,
        _ => 0,
    }
}

/// Refuse to save a tensor with non-finite values (a vector or probe that came out
/// NaN would otherwise be written and silently poison everything it touches).
pub fn ensure_finite(t: &Tensor, name: &str) -> Result<()> {
    let bad = t
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .filter(|x| !x.is_finite())
        .count();
    if bad > 0 {
        return Err(Error::InvalidInput(format!(
            "{name}: {bad} non-finite values (NaN or inf); refusing to save it"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_make_their_folder_and_name_the_target_on_failure() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("new/sub/v.bin");
        write_atomic(&p, b"abc").expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"abc");
        // A folder where the file should go: the error names the target, not a temp file.
        let e = write_atomic(d.path(), b"x").expect_err("a folder");
        let msg = e.to_string();
        assert!(msg.starts_with("cannot write"), "{msg}");
        assert!(!msg.contains(".tmp-"), "{msg}");
    }
}
