//! `pragma info`: a model's architecture, sizes, dtypes, memory estimate and hook points.

use anyhow::Result;
use clap::Args;
use pragma_model::hooks::HookPoint;
use pragma_model::{Model, DEFAULT_MODEL};

use crate::load;

#[derive(Args)]
pub struct InfoArgs {
    /// Model: .gguf file, HF folder, or built-in name.
    #[arg(default_value = DEFAULT_MODEL)]
    model: String,
    /// Print machine-readable JSON.
    #[arg(long)]
    json: bool,
}

pub fn cmd_info(a: InfoArgs) -> Result<()> {
    let model = load(&a.model)?;
    let cfg = model.cfg();
    let all = HookPoint::all_for(cfg);
    let hooks: Vec<(String, String)> = all
        .iter()
        .map(|p| (p.to_string(), p.shape_doc().to_string()))
        .collect();
    if a.json {
        let v = serde_json::json!({
            "info": model.info,
            "config": cfg,
            "tokenizer": model.tokenizer.info,
            "hook_points": hooks.iter().map(|(n, s)| serde_json::json!({"name": n, "shape": s})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print_info(&model);
    println!("\nhook points ({}):", hooks.len());
    let per_layer: Vec<HookPoint> = all
        .iter()
        .copied()
        .filter(|p| p.layer() == Some(0))
        .collect();
    println!("  {:<40} {}", "hook_embed", HookPoint::Embed.shape_doc());
    for p in &per_layer {
        let name = format!("blocks.{{0..{}}}.{}", cfg.n_layers - 1, p.site());
        println!("  {:<40} {}", name, p.shape_doc());
    }
    for p in all.iter().copied().filter(|p| p.layer().is_none()) {
        if p != HookPoint::Embed {
            println!("  {:<40} {}", p.to_string(), p.shape_doc());
        }
    }
    println!(
        "\nwhere batch = sequences, pos = tokens, d_model = {}, n_heads = {}, n_kv_heads = {}, d_head = {}, d_mlp = {}.",
        cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_mlp
    );
    println!("Patterns: 'blocks.*.hook_resid_post', 'blocks.-1.hook_mlp_out', 'blocks.0..4.attn.*', comma lists.");
    if cfg.gemma.is_some() {
        println!(
            "Gemma: hook_attn_out and hook_mlp_out come after the post-norms (ln1_post, ln2_post), as in \
             TransformerLens; wildcards include the post-norm sites only when they name them \
             ('blocks.*.ln2_post.*')."
        );
    }
    Ok(())
}

/// Resident memory of the pragma binary and its tokenizer before weights (measured:
/// `pragma info` on the tiny test model).
const RUNTIME_MB: usize = 30;

pub fn print_info(model: &Model) {
    let cfg = model.cfg();
    println!("model       {}", model.info.name.as_deref().unwrap_or("?"));
    println!(
        "file        {} ({})",
        model.info.path.display(),
        model.info.format
    );
    println!("arch        {}", cfg.arch.name());
    if let Some(g) = &cfg.gemma {
        let global: Vec<String> = (0..cfg.n_layers)
            .filter(|&i| !g.is_local(i))
            .map(|i| i.to_string())
            .collect();
        println!(
            "gemma       sliding window {} (RoPE base {}) except global layers {} (base {}); \
             embedding x {:.4}, queries x {:.4}, post-norms, GELU-tanh gate{}",
            g.sliding_window,
            g.rope_theta_local,
            global.join(", "),
            cfg.rope_theta,
            g.embed_scale,
            g.query_scale,
            match (g.attn_softcap, g.final_softcap) {
                (None, None) => String::new(),
                (a, f) => format!(", soft-caps attention {a:?} final {f:?}"),
            }
        );
    }
    println!(
        "sizes       {} layers, d_model {}, d_mlp {}, heads {} (kv {}), d_head {}, vocab {}, context {}",
        cfg.n_layers, cfg.d_model, cfg.d_mlp, cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.vocab_size, cfg.context_length
    );
    println!("params      {:.1} M", cfg.n_params() as f64 / 1e6);
    if !model.info.file_dtypes.is_empty() {
        let d: Vec<String> = model
            .info
            .file_dtypes
            .iter()
            .map(|(t, n)| format!("{t} x{n}"))
            .collect();
        println!("file dtypes {}", d.join(", "));
    }
    let t = &model.transformer;
    let mb = |b: usize| b as f64 / 1e6;
    let ctx = cfg.context_length.min(4096);
    println!(
        "memory      weights {:.1} MB held ({}), + KV cache {:.1} KB per token ({:.1} MB for {ctx} tokens), \
         + activations {:.1} MB for a {ctx}-token forward (resident ~ weights + KV + activations + ~{} MB runtime)",
        mb(t.weight_bytes()),
        match t.mode {
            pragma_model::WeightMode::Native => "in the file's dtypes, Q4_0 / Q5_0 widened for pragma's kernels; --weights f32 for 4 bytes a weight",
            pragma_model::WeightMode::F32 => "dequantized to f32",
        },
        cfg.kv_bytes_per_token() as f64 / 1e3,
        mb(cfg.kv_bytes_per_token() * ctx),
        mb(cfg.activation_bytes(ctx, ctx)),
        RUNTIME_MB,
    );
    let tk = &model.tokenizer.info;
    let named = |id: Option<u32>| match id {
        Some(i) => format!("{i} {}", model.tokenizer.token_str(i)),
        None => "none".into(),
    };
    println!(
        "tokenizer   {} (pre: {}), bos {}, eos {}, add_bos {}, chat template: {}",
        tk.kind,
        tk.pre.as_deref().unwrap_or("-"),
        named(tk.bos),
        named(tk.eos),
        tk.add_bos,
        if model.tokenizer.chat_template.is_some() {
            "yes"
        } else {
            "no"
        }
    );
}
