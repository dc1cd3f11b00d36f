//! Feature dashboards (`pragma sae dashboard`): static HTML that opens from disk with no
//! network. For every latent, computed in one pass over an activation store:
//! - the top activating contexts (12 tokens before, 4 after), each token shaded by the
//!   latent's activation there;
//! - samples from activation quantile bins (a seeded reservoir sample per latent, split
//!   into four bins by activation, in the style of SAE-Vis' interval samples);
//! - the activation histogram (log10 bins) and density;
//! - the tokens the latent's decoder row promotes and suppresses: `W_dec[j] ⊙ g @ W_U`
//!   with `g` the final norm's gain (the direct logit effect, as SAE-Vis and Neuronpedia);
//! - a slot for a written explanation (`explanations.json`, `{"LATENT": "text"}`).
//!
//! The pass keeps a ring buffer of the last rows' sparse activations and decides on a
//! row once its following context is in the buffer, so contexts need no second pass.

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use candle_core::{Device, Tensor};
use pragma_model::Tokenizer;
use pragma_store::Store;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::Serialize;

use super::Sae;
use crate::error::{Error, Result};

const BEFORE: usize = 12;
const AFTER: usize = 4;
const TOP: usize = 16;
const RESERVOIR: usize = 40;
/// log10 activation histogram: bins of 0.2 from -3 to 3.
const HIST_LO: f64 = -3.0;
const HIST_STEP: f64 = 0.2;
const HIST_BINS: usize = 30;

/// One context: token ids and the latent's activation at each, with the firing token's
/// index in the context.
#[derive(Clone, Debug, Serialize)]
pub struct Example {
    pub value: f32,
    pub row: u64,
    pub tokens: Vec<u32>,
    pub acts: Vec<f32>,
    pub center: usize,
}

/// Everything shown for one latent.
#[derive(Clone, Debug, Serialize)]
pub struct LatentCard {
    pub latent: usize,
    pub fires: u64,
    pub density: f64,
    pub max: f32,
    pub mean_when_firing: f64,
    pub top: Vec<Example>,
    /// `(bin lower edge, upper edge, examples)`, four bins over the sampled range.
    pub quantiles: Vec<(f32, f32, Vec<Example>)>,
    /// Counts per log10(activation) bin of 0.2 from -3.
    pub histogram: Vec<u64>,
    /// `(token id, logit effect)`, largest first / smallest first.
    pub promotes: Vec<(u32, f32)>,
    pub suppresses: Vec<(u32, f32)>,
}

struct LatentState {
    fires: u64,
    sum: f64,
    max: f32,
    top: Vec<Example>, // sorted descending by value, at most TOP
    reservoir: Vec<Example>,
    seen_for_reservoir: u64,
    hist: [u64; HIST_BINS],
}

impl LatentState {
    fn new() -> Self {
        Self {
            fires: 0,
            sum: 0.0,
            max: 0.0,
            top: Vec::new(),
            reservoir: Vec::new(),
            seen_for_reservoir: 0,
            hist: [0; HIST_BINS],
        }
    }
    fn top_threshold(&self) -> f32 {
        if self.top.len() < TOP {
            0.0
        } else {
            self.top.last().map_or(0.0, |e| e.value)
        }
    }
}

/// Row in the ring buffer: its token, its sequence, and its sparse activations.
struct Buffered {
    row: u64,
    seq: u32,
    token: u32,
    acts: Vec<(u32, f32)>,
}

/// Build every latent's card from one pass over `store` (at most `max_tokens` rows).
/// `logit_effect`: `[d_sae, vocab]` is never built; it is computed in latent chunks.
pub fn build(
    sae: &Sae,
    store: &Store,
    max_tokens: u64,
    w_u: &Tensor,
    final_gain: &Tensor,
    seed: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<LatentCard>> {
    let hook = sae.cfg.hook_name.clone();
    let d = store.width(&hook)?;
    if d != sae.cfg.d_in {
        return Err(Error::Input(format!(
            "{hook} in the store has width {d}, the SAE reads d_in = {}",
            sae.cfg.d_in
        )));
    }
    let n = sae.cfg.d_sae;
    let specials = &store.manifest.model.special_tokens;
    let total = store.n_tokens().min(max_tokens);
    let mut states: Vec<LatentState> = (0..n).map(|_| LatentState::new()).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ring: VecDeque<Buffered> = VecDeque::new();
    let mut fired_tokens = 0u64;
    let batch = 2048u64;
    let mut start = 0u64;
    while start < total {
        let end = (start + batch).min(total);
        let table = store.token_rows(start, end)?;
        let ordinary: Vec<u64> = (start..end)
            .filter(|&r| {
                specials
                    .binary_search(&table.token[(r - start) as usize])
                    .is_err()
            })
            .collect();
        let mut acts: HashMap<u64, Vec<(u32, f32)>> = HashMap::new();
        if !ordinary.is_empty() {
            let x = store.gather(&hook, &ordinary)?;
            let f: Vec<Vec<f32>> = sae.encode(&x)?.to_vec2()?;
            for (r, row) in ordinary.iter().zip(f) {
                acts.insert(
                    *r,
                    row.iter()
                        .enumerate()
                        .filter(|(_, v)| **v > 0.0)
                        .map(|(j, v)| (j as u32, *v))
                        .collect(),
                );
            }
            fired_tokens += ordinary.len() as u64;
        }
        for r in start..end {
            let i = (r - start) as usize;
            ring.push_back(Buffered {
                row: r,
                seq: table.seq[i],
                token: table.token[i],
                acts: acts.remove(&r).unwrap_or_default(),
            });
            if ring.len() > BEFORE + 1 + AFTER {
                ring.pop_front();
            }
            if ring.len() > AFTER {
                let c = ring.len() - 1 - AFTER;
                visit(&ring, c, &mut states, &mut rng);
            }
        }
        progress(end, total);
        start = end;
    }
    // The last rows, whose following context is shorter.
    let tail = ring.len().min(AFTER);
    for c in ring.len() - tail..ring.len() {
        visit(&ring, c, &mut states, &mut rng);
    }

    let (promotes, suppresses) = logit_effects(sae, w_u, final_gain, 10)?;
    let tokens = fired_tokens.max(1) as f64;
    Ok(states
        .into_iter()
        .enumerate()
        .map(|(j, st)| {
            let mut res = st.reservoir;
            res.sort_by(|a, b| a.value.total_cmp(&b.value));
            let (lo, hi) = (
                res.first().map_or(0.0, |e| e.value),
                res.last().map_or(0.0, |e| e.value),
            );
            let width = (hi - lo) / 4.0;
            let quantiles = (0..4)
                .map(|q| {
                    let (a, b) = (lo + width * q as f32, lo + width * (q + 1) as f32);
                    let ex: Vec<Example> = res
                        .iter()
                        .filter(|e| e.value >= a && (e.value < b || (q == 3 && e.value <= b)))
                        .take(3)
                        .cloned()
                        .collect();
                    (a, b, ex)
                })
                .rev()
                .collect();
            LatentCard {
                latent: j,
                fires: st.fires,
                density: st.fires as f64 / tokens,
                max: st.max,
                mean_when_firing: if st.fires > 0 {
                    st.sum / st.fires as f64
                } else {
                    0.0
                },
                top: st.top,
                quantiles,
                histogram: st.hist.to_vec(),
                promotes: promotes[j].clone(),
                suppresses: suppresses[j].clone(),
            }
        })
        .collect())
}

/// Record row `c` of the ring (its context is the ring around it, same sequence only).
fn visit(ring: &VecDeque<Buffered>, c: usize, states: &mut [LatentState], rng: &mut StdRng) {
    let center = &ring[c];
    if center.acts.is_empty() {
        return;
    }
    let seq = center.seq;
    let lo = (0..=c)
        .rev()
        .take_while(|&i| ring[i].seq == seq && c - i <= BEFORE)
        .last()
        .unwrap_or(c);
    let hi = (c..ring.len())
        .take_while(|&i| ring[i].seq == seq && i - c <= AFTER)
        .last()
        .unwrap_or(c);
    let example = |j: u32, value: f32| Example {
        value,
        row: center.row,
        tokens: (lo..=hi).map(|i| ring[i].token).collect(),
        acts: (lo..=hi)
            .map(|i| {
                ring[i]
                    .acts
                    .iter()
                    .find(|(l, _)| *l == j)
                    .map_or(0.0, |(_, v)| *v)
            })
            .collect(),
        center: c - lo,
    };
    for &(j, v) in &center.acts {
        let st = &mut states[j as usize];
        st.fires += 1;
        st.sum += v as f64;
        st.max = st.max.max(v);
        let bin = (((v as f64).log10() - HIST_LO) / HIST_STEP)
            .floor()
            .clamp(0.0, (HIST_BINS - 1) as f64) as usize;
        st.hist[bin] += 1;
        if v > st.top_threshold() {
            let e = example(j, v);
            let at = st.top.partition_point(|x| x.value >= v);
            st.top.insert(at, e);
            st.top.truncate(TOP);
        }
        // Reservoir sampling (Algorithm R), seeded.
        st.seen_for_reservoir += 1;
        if st.reservoir.len() < RESERVOIR {
            st.reservoir.push(example(j, v));
        } else {
            let k = rng.random_range(0..st.seen_for_reservoir);
            if (k as usize) < RESERVOIR {
                st.reservoir[k as usize] = example(j, v);
            }
        }
    }
}

/// The `m` most promoted and most suppressed tokens of each latent's decoder direction
/// through the final norm's gain and the unembedding, computed 256 latents at a time.
#[allow(clippy::type_complexity)]
fn logit_effects(
    sae: &Sae,
    w_u: &Tensor,
    gain: &Tensor,
    m: usize,
) -> Result<(Vec<Vec<(u32, f32)>>, Vec<Vec<(u32, f32)>>)> {
    let n = sae.cfg.d_sae;
    let dir = sae.w_dec.broadcast_mul(&gain.to_device(&Device::Cpu)?)?; // [n, d]
    let (mut up, mut down) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let wt = w_u.t()?; // [d, vocab]
    for s in (0..n).step_by(256) {
        let len = 256.min(n - s);
        let eff: Vec<Vec<f32>> = dir.narrow(0, s, len)?.matmul(&wt)?.to_vec2()?;
        for row in eff {
            let mut idx: Vec<u32> = (0..row.len() as u32).collect();
            let k = m.min(idx.len());
            idx.select_nth_unstable_by(k - 1, |a, b| row[*b as usize].total_cmp(&row[*a as usize]));
            let mut top: Vec<(u32, f32)> = idx[..k].iter().map(|&i| (i, row[i as usize])).collect();
            top.sort_by(|a, b| b.1.total_cmp(&a.1));
            idx.select_nth_unstable_by(k - 1, |a, b| row[*a as usize].total_cmp(&row[*b as usize]));
            let mut bot: Vec<(u32, f32)> = idx[..k].iter().map(|&i| (i, row[i as usize])).collect();
            bot.sort_by(|a, b| a.1.total_cmp(&b.1));
            up.push(top);
            down.push(bot);
        }
    }
    Ok((up, down))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Write `index.html` (a table of all latents) and `latents/NNNNN.js` (one per latent,
/// rendered by the index page's script when opened) to `out`.
pub fn write_html(
    cards: &[LatentCard],
    tokenizer: &Tokenizer,
    title: &str,
    explanations: &HashMap<String, String>,
    out: &Path,
) -> Result<()> {
    let dir = out.join("latents");
    std::fs::create_dir_all(&dir).map_err(|e| Error::Input(format!("{}: {e}", dir.display())))?;
    let tok = |id: u32| tokenizer.token_str(id);
    let ex_json = |e: &Example| {
        serde_json::json!({
            "v": e.value,
            "t": e.tokens.iter().map(|&t| tok(t)).collect::<Vec<_>>(),
            "a": e.acts,
            "c": e.center,
        })
    };
    let mut summary = Vec::with_capacity(cards.len());
    for c in cards {
        let explanation = explanations.get(&c.latent.to_string()).cloned();
        let data = serde_json::json!({
            "latent": c.latent,
            "fires": c.fires,
            "density": c.density,
            "max": c.max,
            "mean": c.mean_when_firing,
            "explanation": explanation,
            "top": c.top.iter().map(ex_json).collect::<Vec<_>>(),
            "quantiles": c.quantiles.iter().map(|(a, b, ex)| serde_json::json!({"lo": a, "hi": b, "ex": ex.iter().map(ex_json).collect::<Vec<_>>()})).collect::<Vec<_>>(),
            "hist": c.histogram,
            "promotes": c.promotes.iter().map(|(t, v)| (tok(*t), *v)).collect::<Vec<_>>(),
            "suppresses": c.suppresses.iter().map(|(t, v)| (tok(*t), *v)).collect::<Vec<_>>(),
        });
        let js = format!(
            "window.LATENT = {};\n",
            serde_json::to_string(&data).unwrap_or_default()
        );
        pragma_model::io::write_atomic(&dir.join(format!("{:05}.js", c.latent)), js.as_bytes())?;
        summary.push(serde_json::json!([
            c.latent,
            c.density,
            c.max,
            c.promotes
                .iter()
                .take(3)
                .map(|(t, _)| tok(*t))
                .collect::<Vec<_>>()
                .join(" "),
            c.top
                .first()
                .map(|e| { e.tokens.iter().map(|&t| tok(t)).collect::<String>() })
                .unwrap_or_default(),
            explanation.unwrap_or_default(),
        ]));
    }
    let html = INDEX.replace("__TITLE__", &esc(title)).replace(
        "__SUMMARY__",
        &serde_json::to_string(&summary)
            .unwrap_or_default()
            .replace("</", "<\\/"),
    );
    pragma_model::io::write_atomic(&out.join("index.html"), html.as_bytes())?;
    Ok(())
}

/// The viewer: a sortable table of latents; clicking one loads `latents/NNNNN.js` with a
/// script tag (works from `file://`, no network) and renders its card.
const INDEX: &str = r##"<!doctype html>
<html><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;display:flex;height:100vh}
#list{width:42%;overflow:auto;border-right:1px solid #ccc}
#card{flex:1;overflow:auto;padding:12px 18px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{padding:3px 6px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
th{position:sticky;top:0;background:#f6f6f6;cursor:pointer}
tr:hover{background:#f0f6ff;cursor:pointer}
.ctx{font-family:ui-monospace,monospace;font-size:13px;white-space:pre-wrap;margin:3px 0;line-height:1.6}
.tk{border-radius:3px;padding:0 1px}
.c{outline:2px solid #333}
.bar{display:inline-block;background:#4a7fd4;height:10px;vertical-align:middle}
h2{margin:6px 0}.muted{color:#777}.pos{color:#0a7d2c}.neg{color:#b3261e}
</style></head><body>
<div id="list"><input id="q" placeholder="filter (latent id, token, explanation)" style="width:95%;margin:6px">
<table><thead><tr><th data-k="0">latent</th><th data-k="1">density</th><th data-k="2">max</th><th>promotes</th><th>top context</th></tr></thead><tbody id="rows"></tbody></table></div>
<div id="card"><h2>__TITLE__</h2><p class="muted">Click a latent.</p></div>
<script>
const S=__SUMMARY__;let key=1,desc=true;
function esc(s){return String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]))}
function rows(){const q=document.getElementById('q').value.toLowerCase();
 const r=S.filter(x=>!q||String(x[0])===q||(x[3]+' '+x[4]+' '+x[5]).toLowerCase().includes(q));
 r.sort((a,b)=>desc?b[key]-a[key]:a[key]-b[key]);
 document.getElementById('rows').innerHTML=r.slice(0,2000).map(x=>`<tr onclick="show(${x[0]})"><td>${x[0]}</td><td>${x[1].toExponential(2)}</td><td>${x[2].toFixed(2)}</td><td>${esc(x[3])}</td><td>${esc(x[4]).slice(0,80)}</td></tr>`).join('')}
document.querySelectorAll('th[data-k]').forEach(h=>h.onclick=()=>{const k=+h.dataset.k;desc=k===key?!desc:true;key=k;rows()});
document.getElementById('q').oninput=rows;rows();
function ctx(e,max){return '<div class="ctx">'+e.t.map((t,i)=>{const a=max>0?Math.min(1,e.a[i]/max):0;
 return `<span class="tk${i===e.c?' c':''}" title="${e.a[i].toFixed(3)}" style="background:rgba(255,120,0,${a.toFixed(2)})">${esc(t)}</span>`}).join('')+` <span class="muted">${e.v.toFixed(3)}</span></div>`}
function show(j){const s=document.createElement('script');s.src='latents/'+String(j).padStart(5,'0')+'.js';
 s.onload=()=>render(window.LATENT);document.body.appendChild(s);history.replaceState(null,'','#'+j)}
if(location.hash.length>1)show(+location.hash.slice(1));
function render(L){const hm=Math.max(1,...L.hist);
 let h=`<h2>latent ${L.latent}</h2><p>fires on ${L.fires} tokens (density ${L.density.toExponential(2)}), max ${L.max.toFixed(3)}, mean when firing ${L.mean.toFixed(3)}</p>`;
 h+=`<p><b>explanation:</b> ${L.explanation?esc(L.explanation):'<span class="muted">none yet (add it to explanations.json)</span>'}</p>`;
 h+=`<p><b>promotes</b> `+L.promotes.map(p=>`<span class="pos">${esc(p[0])}</span> ${p[1].toFixed(2)}`).join(', ')+`<br><b>suppresses</b> `+L.suppresses.map(p=>`<span class="neg">${esc(p[0])}</span> ${p[1].toFixed(2)}`).join(', ')+'</p>';
 h+='<p><b>activation histogram</b> (log10 bins of 0.2 from -3)<br>'+L.hist.map((c,i)=>c?`<span title="10^${(-3+0.2*i).toFixed(1)}: ${c}"><span class="bar" style="width:${Math.max(1,120*c/hm)}px"></span> ${(-3+0.2*i).toFixed(1)}: ${c}</span><br>`:'').join('')+'</p>';
 h+='<h3>top activations</h3>'+L.top.map(e=>ctx(e,L.max)).join('');
 L.quantiles.forEach(q=>{if(q.ex.length){h+=`<h3>interval ${q.lo.toFixed(2)} - ${q.hi.toFixed(2)}</h3>`+q.ex.map(e=>ctx(e,L.max)).join('')}});
 document.getElementById('card').innerHTML=h}
</script></body></html>
"##;
