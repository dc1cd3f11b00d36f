//! `pragma transcripts diff|outliers|cluster`: questions about collections.

use anyhow::Result;
use clap::Args;
use pragma_transcripts::db::Db;
use pragma_transcripts::model::Role;

use super::DbArg;

#[derive(Args)]
pub struct OutliersArgs {
    collection: String,
    /// A scorer name as `score` made it (probe:NAME, vector:NAME@L, sae:NAME).
    #[arg(long)]
    scorer: String,
    /// Pooled value for probes and vectors: mean or max over tokens.
    #[arg(long, default_value = "max")]
    pool: String,
    /// Per message instead of per transcript (probes and vectors).
    #[arg(long)]
    messages: bool,
    #[arg(long, default_value_t = 10)]
    top: usize,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArg,
}

#[derive(Args)]
pub struct ClusterArgs {
    collection: String,
    /// Number of clusters.
    #[arg(long, short, default_value_t = 8)]
    k: usize,
    /// Cluster on this SAE scorer's latents (default: words).
    #[arg(long)]
    sae: Option<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArg,
}

pub(super) fn cmd_outliers(a: OutliersArgs) -> Result<()> {
    use pragma_transcripts::analysis::{outliers, Pool};
    let pool = match a.pool.as_str() {
        "mean" => Pool::Mean,
        "max" => Pool::Max,
        p => anyhow::bail!("--pool {p}: expected mean or max"),
    };
    let db = Db::open(&a.db.db)?;
    let o = outliers(&db, &a.collection, &a.scorer, pool, a.messages, a.top)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&o)?);
        return Ok(());
    }
    for x in &o {
        println!(
            "{}{}: {}",
            x.run,
            x.message.map(|m| format!(" B{m}")).unwrap_or_default(),
            x.reason
        );
    }
    Ok(())
}

pub(super) fn cmd_cluster(a: ClusterArgs) -> Result<()> {
    let db = Db::open(&a.db.db)?;
    let c =
        pragma_transcripts::analysis::clusters(&db, &a.collection, a.sae.as_deref(), a.k, a.seed)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
        return Ok(());
    }
    println!(
        "{}: {} clusters on {}",
        c.collection,
        c.clusters.len(),
        c.features
    );
    for (i, cl) in c.clusters.iter().enumerate() {
        let fmt = |v: &[(String, f64, f64)]| {
            v.iter()
                .map(|(w, s, l)| format!("{w} ({:.0}%, x{l:.1})", 100.0 * s))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("\ncluster {i}: {} transcripts", cl.size);
        println!("  over-represented: {}", fmt(&cl.top));
        if !cl.words.is_empty() {
            println!("  words: {}", fmt(&cl.words));
        }
        println!(
            "  e.g. {}",
            cl.examples
                .iter()
                .map(|e| e.1.clone())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct DiffArgs {
    a: String,
    b: String,
    /// Which messages make a transcript's text and latents: a role, or `all`.
    #[arg(long, default_value = "assistant")]
    role: String,
    /// The SAE scorer to compare (as `score` named it, e.g. sae:sae-l15); default: the
    /// one both collections have.
    #[arg(long)]
    sae: Option<String>,
    /// Hypotheses shown per family and direction.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Share of transcripts the hypotheses are found on (the rest checks them).
    #[arg(long, default_value_t = 0.5)]
    discovery: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Model whose tokenizer renders the latents' contexts.
    #[arg(long, default_value = pragma_model::DEFAULT_MODEL)]
    model: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArg,
}

pub(super) fn cmd_diff(a: DiffArgs) -> Result<()> {
    use pragma_transcripts::diff::{decode_context, diff, DiffConfig};
    let db = Db::open(&a.db.db)?;
    let mut cfg = DiffConfig::new(&a.a, &a.b);
    cfg.role = match a.role.as_str() {
        "all" => None,
        r => Some(Role::parse(r).ok_or_else(|| {
            anyhow::anyhow!(
                "--role {r}: expected all or one of {}",
                Role::NAMES.join(", ")
            )
        })?),
    };
    cfg.sae = a.sae.clone();
    cfg.top = a.top;
    cfg.discovery = a.discovery;
    cfg.seed = a.seed;
    let mut r = diff(&db, &cfg)?;
    // Latent contexts are token ids until a tokenizer renders them.
    let has_ids = r
        .families
        .iter()
        .flat_map(|f| f.more_in_a.iter().chain(&f.more_in_b))
        .flat_map(|h| &h.examples)
        .any(|e| e.text.starts_with("ids:"));
    if has_ids {
        let model = pragma_model::Model::load(&a.model, &mut |m| eprintln!("{m}"))?;
        for f in &mut r.families {
            for h in f.more_in_a.iter_mut().chain(f.more_in_b.iter_mut()) {
                for e in &mut h.examples {
                    e.text = decode_context(&model.tokenizer, &e.text);
                }
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "# {} vs {}: {} and {} transcripts{}; hypotheses found on {} + {}, checked on the rest\n",
        r.a,
        r.b,
        r.units.0,
        r.units.1,
        r.paired
            .map(|n| format!(", {n} paired by sample id and epoch (sign test)"))
            .unwrap_or_else(|| " (unpaired: Fisher exact test)".into()),
        r.discovery_units.0,
        r.discovery_units.1
    );
    if let Some(n) = &r.note {
        println!("({n})\n");
    }
    for f in &r.families {
        for (dir, hs, disc) in [
            (format!("more in {}", r.b), &f.more_in_b, f.discoveries.0),
            (format!("more in {}", r.a), &f.more_in_a, f.discoveries.1),
        ] {
            println!(
                "## {}: {dir} ({} tested, {disc} discoveries at FDR 0.05)\n",
                f.name, f.tested
            );
            if hs.is_empty() {
                println!("(none)\n");
                continue;
            }
            println!(
                "| hypothesis | {} | {} | log-odds | p | q | held-out AUROC | example |",
                r.a, r.b
            );
            println!("|---|---|---|---|---|---|---|---|");
            for h in hs {
                println!(
                    "| {} | {:.1}% | {:.1}% | {:+.2} | {:.2e} | {:.2e} | {} | {} |",
                    h.name,
                    100.0 * h.rate_a,
                    100.0 * h.rate_b,
                    h.log_odds,
                    h.p,
                    h.q,
                    h.heldout_auroc.map_or("-".into(), |v| format!("{v:.2}")),
                    h.examples
                        .first()
                        .map(|e| format!("{}: {}", e.side, e.text.replace('|', "/")))
                        .unwrap_or_default()
                );
            }
            println!();
        }
    }
    Ok(())
}
