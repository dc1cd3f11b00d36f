//! `pragma transcripts diff|check|outliers|cluster`: questions about collections.

use anyhow::Result;
use clap::Args;
use pragma_transcripts::db::Db;
use pragma_transcripts::model::Role;

use super::DbArg;

fn parse_pool(p: &str) -> Result<pragma_transcripts::analysis::Pool> {
    use pragma_transcripts::analysis::Pool;
    match p {
        "mean" => Ok(Pool::Mean),
        "max" => Ok(Pool::Max),
        p => anyhow::bail!("--pool {p}: expected mean or max"),
    }
}

/// `all` (every message) or one role.
fn parse_role(r: &str) -> Result<Option<Role>> {
    match r {
        "all" => Ok(None),
        r => Ok(Some(Role::parse(r).ok_or_else(|| {
            anyhow::anyhow!(
                "--role {r}: expected all or one of {}",
                Role::NAMES.join(", ")
            )
        })?)),
    }
}

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
    use pragma_transcripts::analysis::outliers;
    let pool = parse_pool(&a.pool)?;
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
    cfg.role = parse_role(&a.role)?;
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
    crate::runs_cmd::set_result(&r);
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
                        .map(|e| format!("{}: {}", e.side, e.text.replace('|', "\\|")))
                        .unwrap_or_default()
                );
            }
            let (neg, pos) = if dir.ends_with(&r.b) {
                (&r.a, &r.b)
            } else {
                (&r.b, &r.a)
            };
            let h = &hs[0];
            let flag = match h.name.strip_prefix("latent ") {
                Some(j) => format!("--latent {j}"),
                None => format!("--ngram {:?}", h.name),
            };
            println!(
                "\nCheck the first on this diff's held-out half: `pragma transcripts check {neg} {pos} {flag} --heldout{}`; \
                 on new collections made the same way: `pragma transcripts check A2 B2 {flag}`\n",
                if a.seed != 0 || a.discovery != 0.5 {
                    format!(" --discovery {} --seed {}", a.discovery, a.seed)
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct CheckArgs {
    /// The negative collection.
    a: String,
    /// The positive collection: the side the hypothesis says has more of it.
    b: String,
    /// An SAE latent (its max activation per transcript is the detector).
    #[arg(long, group = "detector")]
    latent: Option<u32>,
    /// A word or two-word phrase (present or not; lower-cased words, as diff reads them).
    #[arg(long, group = "detector")]
    ngram: Option<String>,
    /// A probe or vector scorer as `score` named it (probe:NAME, vector:NAME@L).
    #[arg(long, group = "detector")]
    scorer: Option<String>,
    /// For --scorer: max (largest per-message max) or mean (of per-message means).
    #[arg(long, default_value = "max")]
    pool: String,
    /// The SAE scorer of --latent (default: the one both collections have).
    #[arg(long)]
    sae: Option<String>,
    /// Which messages are read: a role, or `all`.
    #[arg(long, default_value = "assistant")]
    role: String,
    /// Only the held-out transcripts of `diff A B --discovery D --seed S` (the ones the
    /// hypothesis was not found on).
    #[arg(long)]
    heldout: bool,
    #[arg(long, default_value_t = 0.5, requires = "heldout")]
    discovery: f64,
    #[arg(long, default_value_t = 0, requires = "heldout")]
    seed: u64,
    /// Bootstrap resamples and label permutations.
    #[arg(long, default_value_t = 2000)]
    reps: usize,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArg,
}

pub(super) fn cmd_check(a: CheckArgs) -> Result<()> {
    use pragma_transcripts::check::{check, CheckConfig, Detector};
    let detector = match (a.latent, &a.ngram, &a.scorer) {
        (Some(j), None, None) => Detector::Latent(j),
        (None, Some(g), None) => Detector::Ngram(g.clone()),
        (None, None, Some(s)) => Detector::Scorer(s.clone()),
        _ => anyhow::bail!(
            "expected one hypothesis: --latent J, --ngram WORDS or --scorer NAME (as diff prints them)"
        ),
    };
    let db = Db::open(&a.db.db)?;
    let mut cfg = CheckConfig::new(&a.a, &a.b, detector);
    cfg.role = parse_role(&a.role)?;
    cfg.pool = parse_pool(&a.pool)?;
    cfg.sae = a.sae.clone();
    cfg.heldout = a.heldout.then_some((a.discovery, a.seed));
    cfg.reps = a.reps;
    let r = check(&db, &cfg)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "# {} as a detector of {} ({} transcripts) against {} ({}){}",
        r.detector,
        r.b,
        r.units.1,
        r.a,
        r.units.0,
        if r.heldout {
            ", held-out half of the diff split"
        } else {
            ""
        }
    );
    if let Some((ra, rb)) = r.rate {
        println!(
            "present in {:.1}% of {} and {:.1}% of {}",
            100.0 * rb,
            r.b,
            100.0 * ra,
            r.a
        );
    } else {
        println!(
            "mean {:.3} in {} and {:.3} in {}",
            r.mean.1, r.b, r.mean.0, r.a
        );
    }
    let verdict = if r.ci.0 > 0.5 {
        format!("detects {}", r.b)
    } else if r.ci.1 < 0.5 {
        format!("detects {} instead (AUROC below 0.5)", r.a)
    } else if r.p < 0.05 {
        "borderline: the interval includes 0.5 though the permutation p is below 0.05".into()
    } else {
        "within noise: the interval includes 0.5".into()
    };
    let p = if r.p <= 1.0 / (a.reps as f64 + 1.0) + 1e-15 {
        format!("p <= {:.1e} (no shuffle of {} did as well)", r.p, a.reps)
    } else {
        format!("p {:.2e} ({} shuffles)", r.p, a.reps)
    };
    println!(
        "AUROC {:.3} [{:.3}, {:.3}] (bootstrap 95%), permutation {p}: {verdict}",
        r.auroc, r.ci.0, r.ci.1
    );
    Ok(())
}
