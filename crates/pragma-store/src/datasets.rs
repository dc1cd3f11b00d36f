//! Built-in corpora, fetched from Debian's package archive on first use.
//!
//! `fortunes`: the English fortune-cookie collection of Debian's `fortunes` and
//! `fortunes-min` packages (about 15k short texts: quotes, jokes, poems). License:
//! BSD-style (the fortune-mod collection, see the packages' copyright files, which
//! the fetch copies next to the corpus). Fetched with `apt-get download` (needs the
//! apt package lists: run `apt-get update` once) and unpacked with `dpkg-deb -x`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

pub const BUILTIN: &[(&str, &str)] = &[(
    "fortunes",
    "Debian fortunes + fortunes-min (English fortune cookies, BSD-style license)",
)];

/// Resolve `--data`: a path, or a built-in corpus name (fetched if needed).
pub fn resolve(spec: &str, progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let p = Path::new(spec);
    if p.exists() {
        return Ok(p.to_path_buf());
    }
    match spec {
        "fortunes" => fetch_fortunes(progress),
        _ => Err(Error::Corpus(format!(
            "'{spec}' is neither a file nor a built-in corpus (built-in: {})",
            BUILTIN
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn fetch_fortunes(progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let dir = pragma_model::fetch::cache_dir().join("data");
    let out = dir.join("fortunes.jsonl");
    if out.exists() {
        return Ok(out);
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let work = dir.join(format!(".fetch-fortunes-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    progress(
        "fetching the fortunes corpus from Debian (apt-get download fortunes fortunes-min)...",
    );
    let run = |cmd: &mut Command, what: &str| -> Result<()> {
        let st = cmd
            .current_dir(&work)
            .status()
            .map_err(|e| Error::Corpus(format!("cannot run {what}: {e}")))?;
        if !st.success() {
            return Err(Error::Corpus(format!(
                "{what} failed ({st}); on Debian run `apt-get update` first, or pass --data FILE"
            )));
        }
        Ok(())
    };
    run(
        Command::new("apt-get").args(["download", "fortunes", "fortunes-min"]),
        "apt-get download",
    )?;
    for deb in std::fs::read_dir(&work)
        .map_err(|e| Error::io(&work, e))?
        .flatten()
    {
        if deb.path().extension().is_some_and(|x| x == "deb") {
            run(
                Command::new("dpkg-deb")
                    .arg("-x")
                    .arg(deb.path())
                    .arg("root"),
                "dpkg-deb -x",
            )?;
        }
    }
    let fdir = work.join("root/usr/share/games/fortunes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&fdir)
        .map_err(|e| Error::io(&fdir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_none())
        .collect();
    files.sort();
    let mut lines = String::new();
    let mut n = 0usize;
    for f in &files {
        let bytes = std::fs::read(f).map_err(|e| Error::io(f, e))?;
        let text = String::from_utf8_lossy(&bytes);
        for fortune in text.split("\n%\n") {
            let t = fortune.trim_matches(|c: char| c == '%' || c.is_whitespace());
            if !t.is_empty() {
                lines.push_str(&serde_json::json!({ "text": t }).to_string());
                lines.push('\n');
                n += 1;
            }
        }
    }
    // Keep the packages' copyright files with the corpus.
    for pkg in ["fortunes", "fortunes-min"] {
        let src = work.join(format!("root/usr/share/doc/{pkg}/copyright"));
        let _ = std::fs::copy(&src, dir.join(format!("fortunes.{pkg}.copyright")));
    }
    pragma_model::io::write_atomic(&out, lines.as_bytes())?;
    let _ = std::fs::remove_dir_all(&work);
    progress(&format!("stored {} ({n} fortunes)", out.display()));
    Ok(out)
}
