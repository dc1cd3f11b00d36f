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
}

pub fn cmd_serve(a: ServeArgs) -> Result<()> {
    let tokenizer = if a.model == "none" {
        None
    } else {
        let m = pragma_model::Model::load(&a.model, &mut |m| eprintln!("{m}"))?;
        Some(Arc::new(m.tokenizer.clone()))
    };
    let cfg = pragma_server::ServeConfig {
        db: a.db,
        addr: a.bind,
        api_key: a.api_key,
    };
    pragma_server::serve(cfg, tokenizer, &mut |addr| {
        // The first line on stdout is the address (tests and scripts read it).
        println!("http://{addr}/");
        eprintln!("serving the transcripts UI; Ctrl-C stops");
    })?;
    Ok(())
}
