//! `pragma serve`: parse, call `pragma_server::serve`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct ServeArgs {
    /// Transcript database (from `pragma transcripts import`).
    #[arg(long, default_value = crate::transcripts::DEFAULT_DB, env = "PRAGMA_TRANSCRIPTS_DB")]
    db: PathBuf,
    /// Address to listen on. Anything but a loopback address needs --api-key.
    #[arg(long, default_value = "127.0.0.1:8040")]
    bind: std::net::SocketAddr,
    /// Key clients must send (x-api-key header; browsers open /login?key=KEY once).
    #[arg(long, env = "PRAGMA_API_KEY")]
    api_key: Option<String>,
    /// Model whose tokenizer shows the scored tokens (the one `transcripts score` used);
    /// `none` shows token ids.
    #[arg(long, default_value = pragma_model::DEFAULT_MODEL)]
    model: String,
    /// A steering vector for the playground (/steer): NAME=FILE from `pragma steer train`.
    /// Repeatable.
    #[arg(long)]
    vector: Vec<String>,
    /// An SAE, NAME=DIR, for the logit table of latent pages of the scorer `sae:NAME`
    /// (as `pragma transcripts score --sae NAME=DIR` named it). Repeatable.
    #[arg(long)]
    sae: Vec<String>,
}

pub fn cmd_serve(a: ServeArgs) -> Result<()> {
    let model = if a.model == "none" {
        anyhow::ensure!(
            a.vector.is_empty(),
            "--vector needs a model (not --model none)"
        );
        None
    } else {
        Some(Arc::new(pragma_model::Model::load(&a.model, &mut |m| {
            eprintln!("{m}")
        })?))
    };
    let tokenizer = model.as_ref().map(|m| Arc::new(m.tokenizer.clone()));
    let mut vectors = Vec::new();
    for v in &a.vector {
        let (name, file) = v
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--vector {v}: expected NAME=FILE"))?;
        let vec = pragma_methods::steering::SteeringVector::load(std::path::Path::new(file))
            .map_err(|e| anyhow::anyhow!("--vector {file}: {e}"))?;
        vectors.push((name.to_string(), vec));
    }
    let mut saes = Vec::new();
    for d in &a.sae {
        let (name, dir) = d
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--sae {d}: expected NAME=DIR"))?;
        let sae = pragma_methods::sae::Sae::load(std::path::Path::new(dir))
            .map_err(|e| anyhow::anyhow!("--sae {dir}: {e}"))?;
        saes.push((format!("sae:{name}"), sae));
    }
    anyhow::ensure!(
        saes.is_empty() || model.is_some(),
        "--sae needs a model (not --model none)"
    );
    let playground = match (&model, vectors.is_empty() && saes.is_empty()) {
        (Some(m), false) => Some(pragma_server::Playground {
            model: m.clone(),
            vectors,
            saes,
        }),
        _ => None,
    };
    let cfg = pragma_server::ServeConfig {
        db: a.db,
        addr: a.bind,
        api_key: a.api_key,
    };
    pragma_server::serve(cfg, tokenizer, playground, &mut |addr| {
        // The first line on stdout is the address (tests and scripts read it).
        println!("http://{addr}/");
        eprintln!("serving the transcripts UI; Ctrl-C stops");
    })?;
    Ok(())
}
