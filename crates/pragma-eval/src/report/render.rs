//! The report as markdown, self-contained HTML and the heatmap SVG.

use super::{PlantedRow, Report, TaskReport};
use crate::detection::Pooling;

impl Report {
    /// The rows every task has, in order of mean AUROC over tasks (heatmap columns).
    fn columns(&self) -> Vec<String> {
        let mut cols: Vec<(String, f64)> = Vec::new();
        for f in self.families.iter().filter(|f| f.family == "detection") {
            for (n, m, _) in &f.techniques {
                if !cols.iter().any(|c| &c.0 == n) {
                    cols.push((n.clone(), *m));
                }
            }
        }
        cols.into_iter().map(|c| c.0).collect()
    }

    /// Tasks x techniques, cells coloured by test AUROC (0.5 white -> 1.0 dark blue;
    /// below 0.5 in orange), each with its value.
    pub fn heatmap_svg(&self) -> String {
        let cols = self.columns();
        let tasks: Vec<&TaskReport> = self
            .tasks
            .iter()
            .filter(|t| t.family == "detection")
            .collect();
        let (cw, ch, left, top) = (74.0, 24.0, 150.0, 120.0);
        let w = left + cw * cols.len() as f64 + 20.0;
        let h = top + ch * tasks.len() as f64 + 40.0;
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
             font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{left}\" y=\"16\" font-size=\"13\">test AUROC, mean over {} seeds ({})</text>\n",
            self.seeds,
            esc(&self.model)
        );
        for (c, name) in cols.iter().enumerate() {
            let x = left + cw * c as f64 + cw / 2.0;
            s += &format!(
                "<text transform=\"translate({x},{}) rotate(-45)\">{}</text>\n",
                top - 6.0,
                esc(name)
            );
        }
        for (r, t) in tasks.iter().enumerate() {
            let y = top + ch * r as f64;
            s += &format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
                left - 6.0,
                y + ch / 2.0 + 4.0,
                esc(&t.task)
            );
            for (c, name) in cols.iter().enumerate() {
                let x = left + cw * c as f64;
                match t.rows.iter().find(|row| &row.name == name) {
                    Some(row) => {
                        let v = row.auroc.mean;
                        // Every row tied with the first at the top is outlined.
                        let best = t.rows.first().is_some_and(|b| b.auroc.mean == v);
                        s += &format!(
                            "<rect x=\"{x}\" y=\"{y}\" width=\"{cw}\" height=\"{ch}\" fill=\"{}\" \
                             stroke=\"{}\" stroke-width=\"{}\"><title>{} / {}: {:.3} [{:.3}, {:.3}]</title></rect>\n\
                             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{}\">{:.2}</text>\n",
                            colour(v),
                            if best { "black" } else { "#ddd" },
                            if best { 2 } else { 1 },
                            esc(&t.task),
                            esc(name),
                            v,
                            row.auroc.lo,
                            row.auroc.hi,
                            x + cw / 2.0,
                            y + ch / 2.0 + 4.0,
                            if v > 0.85 { "white" } else { "black" },
                            v
                        );
                    }
                    None => {
                        s += &format!(
                            "<rect x=\"{x}\" y=\"{y}\" width=\"{cw}\" height=\"{ch}\" fill=\"#f4f4f4\" stroke=\"#ddd\"/>\n"
                        );
                    }
                }
            }
        }
        s += &format!(
            "<text x=\"{left}\" y=\"{}\" fill=\"#555\">best per task outlined; hover a cell for its 95% interval</text>\n</svg>\n",
            h - 14.0
        );
        s
    }

    pub fn markdown(&self) -> String {
        let mut m = format!(
            "# pragma eval: {}\n\nModel {}, hook `{}`, {} split seeds{}. Test AUROC: mean over seeds, \
             95% interval from a two-level bootstrap (seeds, then examples within seed). \
             \"vs best\": the best row minus this one, paired on the same draws, with its \
             interval and p-value; \"noise\" when the interval includes 0.\n\n",
            self.suite,
            self.model,
            self.hook,
            self.seeds,
            self.sae
                .as_ref()
                .map(|s| format!(", SAE {s}"))
                .unwrap_or_default()
        );
        for f in &self.families {
            m += &format!("**{}**: {}\n\n", f.family, f.line);
        }
        m += "![heatmap](heatmap.svg)\n\n";
        for t in &self.tasks {
            if t.family == "planted" {
                m += &match t.planted_sets {
                    Some((items, held)) => format!(
                        "## {} (planted: sets A and B of {items} documents each and {} held-out \
                         checks, drawn per seed from {} base documents)\n\n",
                        t.task,
                        2 * held,
                        t.examples
                    ),
                    None => format!("## {} (planted: {} base documents)\n\n", t.task, t.examples),
                };
            } else if t.family == "study" {
                m += &format!("## {} (study: {} tasks)\n\n", t.task, t.examples);
            } else if t.family == "steering" {
                m += &format!(
                    "## {} (steering: {} concept examples)\n\n",
                    t.task, t.examples
                );
            } else {
                m += &format!(
                    "## {} ({}: {} examples, ~{:.0} test per seed; positive = {})\n\n",
                    t.task, t.family, t.examples, t.test_examples, t.classes[1]
                );
            }
            if !t.rows.is_empty() {
                m += "| technique | test AUROC [95% CI] | vs best | p | val AUROC | pooling (test AUROC mean / max) | chose |\n|---|---|---|---|---|---|---|\n";
                for r in &t.rows {
                    let vs = r
                        .vs_best
                        .map(|p| {
                            (
                                if p.diff.mean == 0.0 && p.diff.lo == 0.0 && p.diff.hi == 0.0 {
                                    "tied best".to_string()
                                } else {
                                    format!(
                                        "{:+.3} [{:+.3}, {:+.3}]{}",
                                        p.diff.mean,
                                        p.diff.lo,
                                        p.diff.hi,
                                        if p.within_noise() { " noise" } else { "" }
                                    )
                                },
                                format!("{:.3}", p.p),
                            )
                        })
                        .unwrap_or(("best".into(), String::new()));
                    let pool = if r.pooling == Pooling::Text {
                        "-".to_string()
                    } else {
                        let chosen = if r.poolings.len() > 1 {
                            r.poolings
                                .iter()
                                .map(|(p, n)| format!("{} x{n}", format!("{p:?}").to_lowercase()))
                                .collect::<Vec<_>>()
                                .join(", ")
                        } else {
                            format!("{:?}", r.pooling).to_lowercase()
                        };
                        format!(
                            "{} ({})",
                            chosen,
                            r.by_pooling
                                .iter()
                                .map(|(_, a)| format!("{a:.3}"))
                                .collect::<Vec<_>>()
                                .join(" / ")
                        )
                    };
                    m += &format!(
                        "| {} | {:.3} [{:.3}, {:.3}] | {} | {} | {} | {} | {} |\n",
                        r.name,
                        r.auroc.mean,
                        r.auroc.lo,
                        r.auroc.hi,
                        vs.0,
                        vs.1,
                        r.val_auroc.map(|v| format!("{v:.3}")).unwrap_or_default(),
                        pool,
                        r.choice.replace('|', "/")
                    );
                }
                m += "\n";
            }
            if let Some(st) = &t.study {
                m += &format!(
                    "The evaluation-awareness study (`pragma steer study`'s defaults): a \
                     difference-of-means vector from contrastive pairs, layer {} and scale {} \
                     chosen on half of the tasks; effects on the other half, in log-odds of \
                     \"yes, this is a test\" against the unsteered evaluation-framed prompts \
                     (negative = less sure it is a test). Gap between framings over all tasks: \
                     {:+.2} [{:+.2}, {:+.2}].\n\n| arm | effect [95% CI] |\n|---|---|\n",
                    st.layer, st.scale, st.gap.mean, st.gap.lo, st.gap.hi
                );
                for (name, e) in &st.arms {
                    m += &format!("| {name} | {:+.2} [{:+.2}, {:+.2}] |\n", e.mean, e.lo, e.hi);
                }
                m += &format!(
                    "| steered minus random control (paired) | {:+.2} [{:+.2}, {:+.2}] |\n\n",
                    st.vector_minus_control.mean,
                    st.vector_minus_control.lo,
                    st.vector_minus_control.hi
                );
            }
            if !t.steering.is_empty() {
                m += &format!(
                    "Steering toward \"{}\". Scores in [0, 1] on the report half of the \
                     instructions (concept: a held-out bag-of-words classifier; relevance: \
                     log-probability gain from the instruction, relative to the unsteered \
                     answer's; fluency: relative perplexity x (1 - repeated trigrams)); \
                     combined = their harmonic mean, 95% interval over instructions and \
                     seeds.\n\n| technique | combined [95% CI] | concept | relevance | fluency | factor per seed | example |\n|---|---|---|---|---|---|---|\n",
                    t.classes[1]
                );
                for r in &t.steering {
                    m += &format!(
                        "| {} | {:.3} [{:.3}, {:.3}] | {:.3} | {:.3} | {:.3} | {} | {}: {} |\n",
                        r.technique,
                        r.combined.mean,
                        r.combined.lo,
                        r.combined.hi,
                        r.concept,
                        r.relevance,
                        r.fluency,
                        r.factors
                            .iter()
                            .map(|f| f.map_or("-".into(), |x| format!("{x}")))
                            .collect::<Vec<_>>()
                            .join(", "),
                        r.example.0.replace('|', "/"),
                        r.example.1.replace('|', "/").replace('\n', " ")
                    );
                }
                m += "\n";
            }
            if !t.planted.is_empty() {
                let rates = &t.planted[0].rates;
                m += &format!(
                    "Plant: {} ({}). Per rate: seeds with a hit in the top 1 / 5 / 10 \
                     candidates (a hit detects held-out planted documents with AUROC >= {}), \
                     median rank of the first hit, mean discoveries at FDR {}.\n\n| technique |{}\n|---|{}\n",
                    t.task,
                    t.kind.as_deref().unwrap_or("?"),
                    crate::planted::HIT_AUROC,
                    crate::planted::FDR_Q,
                    rates
                        .iter()
                        .map(|r| if t.kind.as_deref() == Some("null") {
                            " null pair |".to_string()
                        } else {
                            format!(" p = {}% |", r.rate * 100.0)
                        })
                        .collect::<String>(),
                    "---|".repeat(rates.len())
                );
                for row in &t.planted {
                    m += &format!("| {} |", row.technique);
                    for r in &row.rates {
                        m += &format!(
                            " {}/{}/{} of {}, rank {}, disc {:.1} |",
                            r.hit_at[0],
                            r.hit_at[1],
                            r.hit_at[2],
                            r.seeds,
                            r.median_first_hit.map_or("-".into(), |v| format!("{v}")),
                            r.mean_discoveries
                        );
                    }
                    m += "\n";
                }
                m += "\nTop candidates (first seed, highest rate): ";
                let highest = |row: &PlantedRow| {
                    row.rates
                        .iter()
                        .max_by(|a, b| a.rate.total_cmp(&b.rate))
                        .cloned()
                };
                m += &t
                    .planted
                    .iter()
                    .map(|row| {
                        format!(
                            "{}: {}",
                            row.technique,
                            highest(row)
                                .map(|r| r
                                    .top
                                    .iter()
                                    .map(|c| format!("{} ({:.2})", c.name, c.heldout_auroc))
                                    .collect::<Vec<_>>()
                                    .join(", "))
                                .unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                m += "\n\n";
                for row in &t.planted {
                    if let Some(a) = highest(row).and_then(|r| r.answer) {
                        m += &format!(
                            "The model's answer ({}, first seed, highest rate): \"{}\"\n\n",
                            row.technique,
                            a.replace('\n', " ").trim()
                        );
                    }
                }
            }
            if !t.missing.is_empty() {
                m += &format!("Not computed yet: {} cells.\n\n", t.missing.len());
            }
        }
        if !self.skipped.is_empty() {
            m += "## Not run\n\n";
            let mut seen = std::collections::BTreeSet::new();
            for (t, tech, why) in &self.skipped {
                if seen.insert((t, tech)) {
                    m += &format!("- {t} / {tech}: {why}\n");
                }
            }
        }
        m
    }

    pub fn html(&self, svg: &str) -> String {
        let md = self.markdown();
        let mut body = String::new();
        let mut in_table = false;
        for line in md.lines() {
            if line.starts_with("|---") {
                continue;
            }
            if let Some(row) = line.strip_prefix('|') {
                let cells: Vec<&str> = row
                    .trim_end_matches('|')
                    .split('|')
                    .map(str::trim)
                    .collect();
                if !in_table {
                    body += "<table><tr>";
                    body += &cells
                        .iter()
                        .map(|c| format!("<th>{}</th>", esc(c)))
                        .collect::<String>();
                    body += "</tr>\n";
                    in_table = true;
                } else {
                    body += "<tr>";
                    body += &cells
                        .iter()
                        .map(|c| format!("<td>{}</td>", esc(c)))
                        .collect::<String>();
                    body += "</tr>\n";
                }
                continue;
            }
            if in_table {
                body += "</table>\n";
                in_table = false;
            }
            if let Some(h) = line.strip_prefix("## ") {
                body += &format!("<h2>{}</h2>\n", esc(h));
            } else if let Some(h) = line.strip_prefix("# ") {
                body += &format!("<h1>{}</h1>\n", esc(h));
            } else if line.starts_with("![heatmap]") {
                body += svg;
            } else if !line.is_empty() {
                body += &format!("<p>{}</p>\n", esc(line).replace("**", ""));
            }
        }
        if in_table {
            body += "</table>\n";
        }
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>pragma eval: {}</title>\
             <style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}\
             table{{border-collapse:collapse;font-size:13px;margin-bottom:1em}}\
             td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}\
             th{{background:#f0f0f0}}svg{{max-width:100%;height:auto}}</style></head><body>\n{body}</body></html>\n",
            esc(&self.suite)
        )
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// 0.5 -> white, 1.0 -> dark blue; below 0.5 shades of orange (worse than chance).
fn colour(v: f64) -> String {
    if !v.is_finite() {
        return "#eeeeee".into();
    }
    let t = ((v - 0.5) * 2.0).clamp(-1.0, 1.0);
    let (r, g, b) = if t >= 0.0 {
        (
            255.0 - t * (255.0 - 8.0),
            255.0 - t * (255.0 - 48.0),
            255.0 - t * (255.0 - 107.0),
        )
    } else {
        let u = -t;
        (255.0, 255.0 - u * 120.0, 255.0 - u * 200.0)
    };
    format!("#{:02x}{:02x}{:02x}", r as u8, g as u8, b as u8)
}
