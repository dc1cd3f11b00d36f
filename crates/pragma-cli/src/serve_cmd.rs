//! `pragma serve`: parse, call `pragma_server::serve`. One server: the transcript UI and,
//! with a model, OpenAI's API under `/v1` with per-request steering.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct ServeArgs {
    /// Model to serve (a .gguf, an HF folder or a built-in name); the same as --model.
    #[arg(value_name = "MODEL")]
    model_pos: Option<String>,
    /// Transcript database (from `pragma transcripts import`).
    #[arg(long, default_value = crate::transcripts::DEFAULT_DB, env = "PRAGMA_TRANSCRIPTS_DB")]
    db: PathBuf,
    /// Address to listen on. Anything but a loopback address needs --api-key.
    #[arg(long, default_value = "127.0.0.1:8040")]
    bind: std::net::SocketAddr,
    /// Key clients must send (`x-api-key` or `Authorization: Bearer KEY`, as OpenAI
    /// clients do; browsers open /login?key=KEY once).
    #[arg(long, env = "PRAGMA_API_KEY")]
    api_key: Option<String>,
    /// Model whose tokenizer shows the scored tokens (the one `transcripts score` used);
    /// `none` shows token ids.
    #[arg(long, default_value = pragma_model::DEFAULT_MODEL)]
    model: String,
    /// A steering vector for the playground (/steer) and the API's `pragma.steer`:
    /// NAME=FILE from `pragma steer train`. Repeatable.
    #[arg(long)]
    vector: Vec<String>,
    /// A folder of steering vectors (`*.safetensors`), each registered under its file
    /// stem, as --vector.
    #[arg(long)]
    vectors: Option<PathBuf>,
    /// A probe for the API's `pragma.monitor`: NAME=FILE from `pragma probe train`.
    /// Repeatable.
    #[arg(long)]
    probe: Vec<String>,
    /// Largest `max_tokens` an API request may ask for.
    #[arg(long, default_value_t = 2048)]
    max_tokens_limit: usize,
    /// Most API requests decoded together (requests with the same `pragma` field share
    /// a batch).
    #[arg(long, default_value_t = 8)]
    max_batch: usize,
    /// An SAE, NAME=DIR: the API's `pragma.sae_latents` (a request's strongest latents
    /// per token) and `"vector": "sae:NAME:LATENT"` steering, and the logit table of
    /// latent pages of the scorer `sae:NAME` (as `pragma transcripts score --sae
    /// NAME=DIR` named it). Repeatable.
    #[arg(long)]
    sae: Vec<String>,
    /// A research project file whose check-ins /project shows (default: the nearest
    /// pragma.toml at or above this folder, if any).
    #[arg(long)]
    project: Option<PathBuf>,
}

pub fn cmd_serve(mut a: ServeArgs) -> Result<()> {
    if let Some(m) = a.model_pos.take() {
        a.model = m;
    }
    if let Some(dir) = &a.vectors {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("--vectors {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        for f in files {
            let stem = f.file_stem().map(|s| s.to_string_lossy().into_owned());
            a.vector
                .push(format!("{}={}", stem.unwrap_or_default(), f.display()));
        }
    }
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
    let mut probes = Vec::new();
    for p in &a.probe {
        let (name, file) = p
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--probe {p}: expected NAME=FILE"))?;
        let probe = pragma_methods::probe::Probe::load(std::path::Path::new(file))
            .map_err(|e| anyhow::anyhow!("--probe {file}: {e}"))?;
        probes.push((name.to_string(), probe));
    }
    anyhow::ensure!(
        probes.is_empty() || model.is_some(),
        "--probe needs a model (not --model none)"
    );
    let openai = model.as_ref().map(|m| {
        let id = if pragma_model::fetch::find_known(&a.model).is_some() {
            a.model.clone()
        } else {
            m.info.name.clone().unwrap_or_else(|| a.model.clone())
        };
        pragma_server::openai::OpenAi::with_probes(
            m.clone(),
            id,
            vectors.clone(),
            probes.clone(),
            a.max_tokens_limit,
            a.max_batch,
        )
        .with_saes(
            saes.iter()
                .map(|(n, s)| (n.trim_start_matches("sae:").to_string(), s.clone()))
                .collect(),
        )
    });
    let playground = match (&model, vectors.is_empty() && saes.is_empty()) {
        (Some(m), false) => Some(pragma_server::Playground {
            model: m.clone(),
            vectors,
            saes,
        }),
        _ => None,
    };
    let with_api = openai.is_some();
    let project = match a.project {
        Some(p) => {
            pragma_research::project::Project::load(&p)?;
            Some(p)
        }
        None => pragma_research::project::Project::find(&std::env::current_dir()?).ok(),
    };
    let cfg = pragma_server::ServeConfig {
        db: a.db,
        addr: a.bind,
        api_key: a.api_key,
        openai,
        project: project.clone(),
    };
    pragma_server::serve(cfg, tokenizer, playground, &mut |addr| {
        // The first line on stdout is the address (tests and scripts read it).
        println!("http://{addr}/");
        if let Some(p) = &project {
            eprintln!(
                "research project {}: check-ins at http://{addr}/project",
                p.display()
            );
        }
        if with_api {
            eprintln!(
                "serving the transcripts UI and OpenAI's API at http://{addr}/v1 \
                 (per-request steering: the body's \"pragma\" field); Ctrl-C stops"
            );
        } else {
            eprintln!("serving the transcripts UI; Ctrl-C stops");
        }
    })?;
    Ok(())
}
