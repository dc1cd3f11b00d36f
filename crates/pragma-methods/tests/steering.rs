//! Steering vectors on a tiny random model: hand computations, operators, file
//! round trip and bad input.

use std::path::Path;

use candle_core::{Tensor, D};
use pragma_methods::steering::*;
use pragma_model::generate::{generate, GenerateOptions, Sampling};
use pragma_model::hooks::{HookPoint, Hooks, Positions};
use pragma_model::llama::{Batch, Logits};
use pragma_model::testing::{capture_one, max_abs, tiny_model};
use pragma_model::{Arch, InputRule, Model};

fn tiny(dir: &Path) -> Model {
    tiny_model(dir, Arch::Llama, 11).expect("tiny model")
}

/// resid_post at `layer`, last token, for BOS + text (computed directly).
fn last_resid(m: &Model, text: &str, layer: usize) -> Tensor {
    let mut ids = vec![m.tokenizer.info.bos.expect("bos")];
    ids.extend(m.tokenizer.encode(text, false).expect("enc"));
    capture_one(m, &ids, HookPoint::ResidPost(layer))
        .expect("capture")
        .get(ids.len() - 1)
        .expect("last")
}

fn pair(p: &str, n: &str) -> Pair {
    Pair::new(Side::Text(p.into()), Side::Text(n.into()))
}

#[test]
fn vectors_equal_hand_computations() {
    let d = tempfile::tempdir().expect("tmp");
    let m = tiny(d.path());
    let pairs = vec![
        pair("the weather is warm", "the weather is cold"),
        pair("I won the game", "I lost the game"),
    ];
    let v = train(
        &m,
        &pairs,
        "x",
        &TrainConfig {
            site: "hook_resid_post".into(),
            layers: vec![0, 2],
            method: Method::Mean,
            position: Position::Last,
            input: InputRule::default(),
        },
    )
    .expect("train");
    for (k, layer) in [0usize, 2].into_iter().enumerate() {
        let want = ((last_resid(&m, "the weather is warm", layer)
            + last_resid(&m, "I won the game", layer))
        .expect("a")
            - (last_resid(&m, "the weather is cold", layer)
                + last_resid(&m, "I lost the game", layer))
            .expect("b"))
        .expect("d")
            / 2.0;
        let want = want.expect("w");
        let diff = max_abs(&(&v.directions[k] - &want).expect("d"));
        assert!(diff < 1e-5, "layer {layer}: mean-diff vector off by {diff}");
        assert!(
            (v.meta.norms[k]
                - want
                    .sqr()
                    .expect("s")
                    .sum_all()
                    .expect("s")
                    .sqrt()
                    .expect("q")
                    .to_scalar::<f32>()
                    .expect("n"))
            .abs()
                < 1e-3
        );
    }
    // With one pair, both PCA variants give back the difference itself (direction,
    // sign and length), which is a hand computation too.
    let one = vec![pair("the weather is warm", "the weather is cold")];
    let want = (last_resid(&m, "the weather is warm", 1)
        - last_resid(&m, "the weather is cold", 1))
    .expect("d");
    for method in [Method::PcaDiff, Method::PcaCenter] {
        let v = train(
            &m,
            &one,
            "x",
            &TrainConfig {
                site: "hook_resid_post".into(),
                layers: vec![1],
                method,
                position: Position::Last,
                input: InputRule::default(),
            },
        )
        .expect("train");
        let diff = max_abs(&(&v.directions[0] - &want).expect("d"));
        assert!(diff < 1e-3 * max_abs(&want), "{method:?}: off by {diff}");
    }
}

#[test]
fn first_pc_finds_the_dominant_direction() {
    // Rows spread along (3, 4)/5 with a little noise along (-4, 3)/5.
    let x = Tensor::new(
        &[
            [3.0f32, 4.0],
            [-6.0, -8.0],
            [1.5, 2.0],
            [-0.4, 0.3],
            [0.4, -0.3],
        ],
        &candle_core::Device::Cpu,
    )
    .expect("x");
    let init = Tensor::new(&[1.0f32, 0.0], &candle_core::Device::Cpu).expect("i");
    let v: Vec<f32> = first_pc(&x, &init).expect("pc").to_vec1().expect("v");
    assert!(
        (v[0].abs() - 0.6).abs() < 1e-4 && (v[1].abs() - 0.8).abs() < 1e-4,
        "{v:?}"
    );
}

#[test]
fn operators_do_what_they_say() {
    let d = tempfile::tempdir().expect("tmp");
    let m = tiny(d.path());
    let pairs = vec![pair("the weather is warm", "the weather is cold")];
    let v = train(
        &m,
        &pairs,
        "x",
        &TrainConfig {
            site: "hook_resid_post".into(),
            layers: vec![1],
            method: Method::Mean,
            position: Position::Last,
            input: InputRule::default(),
        },
    )
    .expect("train");
    let prompt: Vec<u32> = m
        .tokenizer
        .encode("the weather in town", false)
        .expect("enc");
    let opts = GenerateOptions {
        max_tokens: 6,
        sampling: Sampling::default(),
        stop_tokens: vec![],
    };
    let run = |h: &Hooks| {
        generate(
            &m.transformer,
            std::slice::from_ref(&prompt),
            &opts,
            h,
            |_, _| {},
        )
        .expect("gen")
    };
    let base = run(&Hooks::new());
    // Scale 0 gives exactly the unsteered output.
    let h0 = v
        .hooks(&m, Operator::Add, 0.0, None, Positions::All)
        .expect("hooks");
    assert_eq!(run(&h0).tokens, base.tokens);
    // Ablation leaves no component along the vector at the hooked site.
    let mut ha = v
        .hooks(&m, Operator::Ablate, 1.0, None, Positions::All)
        .expect("hooks");
    ha.capture(HookPoint::ResidPost(1));
    let g = run(&ha);
    let u = (&v.directions[0] / v.meta.norms[0] as f64).expect("u");
    let along = g
        .cache
        .get(HookPoint::ResidPost(1))
        .expect("c")
        .broadcast_mul(&u)
        .expect("m")
        .sum(D::Minus1)
        .expect("s");
    assert!(
        max_abs(&along) < 1e-4,
        "component left: {}",
        max_abs(&along)
    );
    // Ablate-then-add leaves exactly `scale` along the unit vector times |v|.
    let mut hb = v
        .hooks(&m, Operator::AblateThenAdd, 2.0, None, Positions::All)
        .expect("hooks");
    hb.capture(HookPoint::ResidPost(1));
    let g = run(&hb);
    let along = g
        .cache
        .get(HookPoint::ResidPost(1))
        .expect("c")
        .broadcast_mul(&u)
        .expect("m")
        .sum(D::Minus1)
        .expect("s");
    let want = 2.0 * v.meta.norms[0];
    assert!((along - want as f64).map(|t| max_abs(&t)).expect("d") < 1e-3 * want);
    // Steering only generated tokens leaves the prompt's activations untouched.
    let mut hg = v
        .hooks(&m, Operator::Add, 5.0, None, Positions::Generated)
        .expect("hooks");
    hg.capture(HookPoint::ResidPost(2));
    let mut hc = Hooks::new();
    hc.capture(HookPoint::ResidPost(2));
    let (a, b) = (run(&hg), run(&hc));
    let n = prompt.len();
    let pa = a
        .cache
        .get(HookPoint::ResidPost(2))
        .expect("a")
        .narrow(1, 0, n)
        .expect("n");
    let pb = b
        .cache
        .get(HookPoint::ResidPost(2))
        .expect("b")
        .narrow(1, 0, n)
        .expect("n");
    assert_eq!(max_abs(&(pa - pb).expect("d")), 0.0);
}

#[test]
fn files_round_trip_and_bad_input_is_refused() {
    let d = tempfile::tempdir().expect("tmp");
    let m = tiny(d.path());
    let pairs = vec![pair("the weather is warm", "the weather is cold")];
    let v = train(
        &m,
        &pairs,
        "abc",
        &TrainConfig {
            site: "hook_resid_post".into(),
            layers: vec![0, 1],
            method: Method::PcaDiff,
            position: Position::Mean,
            input: InputRule::default(),
        },
    )
    .expect("train");
    let p = d.path().join("v.safetensors");
    v.save(&p).expect("save");
    let w = SteeringVector::load(&p).expect("load");
    assert_eq!(w.meta, v.meta);
    assert_eq!(
        max_abs(&(&w.directions[1] - &v.directions[1]).expect("d")),
        0.0
    );
    // Wrong width, layer out of range, NaN scale, layer not in the vector.
    let mut bad = w.clone();
    bad.meta.d_model = 576;
    let e = bad
        .hooks(&m, Operator::Add, 1.0, None, Positions::All)
        .expect_err("width");
    assert!(
        e.to_string().contains("d_model 576")
            && e.to_string().contains("this model has d_model 32"),
        "{e}"
    );
    let mut far = w.clone();
    far.meta.layers = vec![0, 7];
    let e = far
        .hooks(&m, Operator::Add, 1.0, None, Positions::All)
        .expect_err("range");
    assert!(e.to_string().contains("layer 7 is out of range"), "{e}");
    let e = w
        .hooks(&m, Operator::Add, f32::NAN, None, Positions::All)
        .expect_err("nan");
    assert!(e.to_string().contains("finite"), "{e}");
    let e = w
        .hooks(&m, Operator::Add, 1.0, Some(&[2]), Positions::All)
        .expect_err("layer");
    assert!(
        e.to_string().contains("layer 2 is not in this vector"),
        "{e}"
    );
    // Pairs files: empty, malformed (with line number), identical sides.
    let f = d.path().join("p.jsonl");
    std::fs::write(&f, "\n\n").expect("w");
    assert!(read_pairs(&f)
        .expect_err("empty")
        .to_string()
        .contains("no pairs found"));
    std::fs::write(
        &f,
        "{\"positive\": \"a\", \"negative\": \"b\"}\n{\"positive\": \"a\"}\n",
    )
    .expect("w");
    assert!(read_pairs(&f)
        .expect_err("malformed")
        .to_string()
        .contains("p.jsonl:2: expected"));
    std::fs::write(&f, "{\"positive\": \"same\", \"negative\": \"same\"}\n").expect("w");
    assert!(read_pairs(&f)
        .expect_err("identical")
        .to_string()
        .contains("p.jsonl:1: positive and negative are identical"));
    std::fs::write(
        &f,
        "{\"positive\": [{\"role\": \"user\", \"content\": \"hi\"}], \"negative\": \"plain\"}\n",
    )
    .expect("w");
    assert_eq!(read_pairs(&f).expect("chat side").len(), 1);
}

#[test]
fn llama_cpp_control_vectors_round_trip() {
    let d = tempfile::tempdir().expect("tmp");
    let m = tiny(d.path());
    let pairs = vec![pair("the weather is warm", "the weather is cold")];
    let v = train(
        &m,
        &pairs,
        "x",
        &TrainConfig {
            site: "hook_resid_post".into(),
            layers: vec![0, 1, 2],
            method: Method::Mean,
            position: Position::Last,
            input: InputRule::default(),
        },
    )
    .expect("train");
    let p = d.path().join("cv.gguf");
    let written = llama_cpp::export(&v, "llama", &p).expect("export");
    assert_eq!(written, vec![1, 2], "block 0 has no llama.cpp slot");
    let w = llama_cpp::import(&p).expect("import");
    assert_eq!(w.meta.layers, vec![1, 2]);
    assert_eq!(w.meta.method, Method::Imported);
    for (k, l) in [1usize, 2].into_iter().enumerate() {
        assert_eq!(
            max_abs(&(&w.directions[k] - &v.directions[l]).expect("d")),
            0.0
        );
    }
    // The imported vector steers exactly like the original at the same layers.
    let hv = v
        .hooks(&m, Operator::Add, 3.0, Some(&[1, 2]), Positions::All)
        .expect("h");
    let hw = w
        .hooks(&m, Operator::Add, 3.0, None, Positions::All)
        .expect("h");
    let ids = m.tokenizer.encode("the weather", false).expect("enc");
    let b = Batch::single(&ids, m.device()).expect("b");
    let (lv, _) = m.transformer.forward(&b, &hv, Logits::All).expect("f");
    let (lw, _) = m.transformer.forward(&b, &hw, Logits::All).expect("f");
    assert_eq!(max_abs(&(lv.expect("l") - lw.expect("l")).expect("d")), 0.0);
    // A model GGUF is not a control vector.
    let e = llama_cpp::import(&d.path().join("tiny.gguf")).expect_err("not cv");
    assert!(
        e.to_string()
            .contains("expected general.architecture = controlvector"),
        "{e}"
    );
}

#[test]
fn sweeps_report_baseline_at_zero_and_norm_matched_controls() {
    use pragma_methods::sweep::{norm_matched_random, plot_svg, sweep, SweepOptions};
    let d = tempfile::tempdir().expect("tmp");
    let m = tiny(d.path());
    let pairs = vec![
        pair("the weather is warm", "the weather is cold"),
        pair("we won", "we lost"),
    ];
    let v = train(
        &m,
        &pairs,
        "x",
        &TrainConfig {
            site: "hook_resid_post".into(),
            layers: vec![1, 2],
            method: Method::Mean,
            position: Position::Last,
            input: InputRule::default(),
        },
    )
    .expect("train");
    let prompts: Vec<Vec<u32>> = ["is it warm", "the game was", "today we"]
        .iter()
        .map(|t| m.tokenizer.encode(t, false).expect("enc"))
        .collect();
    // Single-character answers are single tokens in the tiny byte-level vocabulary.
    let s = sweep(
        &m,
        &v,
        &prompts,
        &[1, 2],
        &[-2.0, 0.0, 3.0],
        &SweepOptions::new("y", "n", 5),
    )
    .expect("sweep");
    assert_eq!(s.points.len(), 2 * 3 * 2);
    for p in s.points.iter().filter(|p| p.scale == 0.0) {
        assert_eq!(p.logodds, s.baseline, "scale 0 is the unsteered model");
        assert!(p.kl.abs() < 1e-6);
    }
    assert!(s
        .points
        .iter()
        .any(|p| p.scale != 0.0 && (p.logodds - s.baseline).abs() > 1e-3));
    let r = norm_matched_random(&v.directions[0], 9).expect("rand");
    let norm = |t: &Tensor| {
        t.sqr()
            .expect("s")
            .sum_all()
            .expect("s")
            .sqrt()
            .expect("q")
            .to_scalar::<f32>()
            .expect("n")
    };
    assert!((norm(&r) - v.meta.norms[0]).abs() < 1e-3 * v.meta.norms[0]);
    let out = d.path().join("sweep.svg");
    plot_svg(&s, &out).expect("plot");
    assert!(std::fs::read_to_string(&out)
        .expect("svg")
        .starts_with("<svg"));
    let e = sweep(
        &m,
        &v,
        &prompts,
        &[1],
        &[1.0],
        &SweepOptions::new("yes", "n", 5),
    )
    .expect_err("multi-token answer");
    assert!(e.to_string().contains("expected exactly one token"), "{e}");
}

#[test]
fn sweep_measures_reference_nll_and_regex_rates() {
    use pragma_methods::sweep::{nll, sampled_metrics, sweep, SampledMetrics, SweepOptions};
    let d = tempfile::tempdir().expect("tmp");
    let m = tiny(d.path());
    let v = train(
        &m,
        &[pair("warm sun", "cold rain"), pair("we won", "we lost")],
        "x",
        &TrainConfig {
            site: "hook_resid_post".into(),
            layers: vec![1],
            method: Method::Mean,
            position: Position::Last,
            input: InputRule::default(),
        },
    )
    .expect("train");
    let prompts: Vec<Vec<u32>> = ["is it warm", "today we"]
        .iter()
        .map(|t| m.tokenizer.encode(t, false).expect("enc"))
        .collect();
    let reference = m
        .tokenizer
        .encode("the cat sat on the mat", false)
        .expect("enc");
    let base = nll(&m, &reference, &Hooks::new()).expect("nll");
    assert!(base.is_finite() && base > 1.0, "{base}");
    let mut opts = SweepOptions::new("y|Y", "n|N", 1);
    opts.reference = Some(reference.clone());
    let always = SampledMetrics {
        regex: Some(regex::Regex::new("").expect("re")),
        probe: None,
        samples: 2,
        max_tokens: 4,
        temperature: 1.0,
    };
    opts.sampled = Some(always.clone());
    let s = sweep(&m, &v, &prompts, &[1], &[0.0, 5.0], &opts).expect("sweep");
    assert_eq!(s.baseline_nll, Some(base));
    assert_eq!(
        s.baseline_regex,
        Some(1.0),
        "the empty regex matches every sample"
    );
    let zero = s.points.iter().find(|p| p.scale == 0.0).expect("0");
    assert_eq!(zero.dnll, Some(0.0), "scale 0 costs nothing");
    let five = s
        .points
        .iter()
        .find(|p| p.scale == 5.0 && !p.control)
        .expect("5");
    assert!(
        five.dnll.expect("dnll").abs() > 1e-4,
        "steering moves the NLL"
    );
    assert!(s.table().contains("dNLL"));
    // A pattern that cannot occur in the tiny vocabulary's text.
    let never = SampledMetrics {
        regex: Some(regex::Regex::new("ZZZZZZZZ").expect("re")),
        ..always.clone()
    };
    let (r, p) = sampled_metrics(&m, &prompts, &Hooks::new(), &never, 3).expect("rates");
    assert_eq!((r, p), (Some(vec![0.0, 0.0]), None));
    // A probe score: a constant logistic probe (w = 0, b = 2) scores sigmoid(2) everywhere;
    // one along the steering direction scores higher when the vector is added.
    let d_model = m.cfg().d_model;
    let probe = |w: Vec<f32>, b: f32| pragma_methods::probe::Probe {
        meta: pragma_methods::probe::ProbeMeta {
            model: "tiny".into(),
            model_sha256: None,
            d_model,
            hook: "blocks.1.hook_resid_post".into(),
            position: Position::Last,
            method: "logistic".into(),
            c: Some(1.0),
            dataset: "t".into(),
            dataset_sha256: "x".into(),
            classes: ["0".into(), "1".into()],
            val_auroc: None,
            test_auroc: 0.5,
            test_auroc_ci: (0.5, 0.5),
            test_accuracy: 0.5,
            pragma_version: "0".into(),
            input: InputRule::default(),
        },
        w,
        b,
    };
    let constant = SampledMetrics {
        regex: None,
        probe: Some(probe(vec![0.0; d_model], 2.0)),
        ..always.clone()
    };
    let (_, p) = sampled_metrics(&m, &prompts, &Hooks::new(), &constant, 3).expect("probe");
    let want = 1.0 / (1.0 + (-2.0f64).exp());
    assert!(p.expect("scores").iter().all(|s| (s - want).abs() < 1e-6));
    let dir: Vec<f32> = v.directions[0].to_vec1().expect("dir");
    let n2: f32 = dir.iter().map(|x| x * x).sum();
    let along = SampledMetrics {
        regex: None,
        probe: Some(probe(dir.iter().map(|x| x / n2).collect(), 0.0)),
        ..always
    };
    let mut opts = SweepOptions::new("y|Y", "n|N", 1);
    opts.sampled = Some(along);
    let s = sweep(&m, &v, &prompts, &[1], &[-8.0, 8.0], &opts).expect("sweep");
    let at = |x: f32| {
        s.points
            .iter()
            .find(|p| p.scale == x && !p.control)
            .expect("pt")
            .probe_score
            .expect("probe")
    };
    assert!(
        at(8.0) > s.baseline_probe.expect("base") && s.baseline_probe.expect("base") > at(-8.0)
    );
    assert!(s.table().contains("probe"));
    // Answer sets that overlap are refused.
    let e = sweep(
        &m,
        &v,
        &prompts,
        &[1],
        &[1.0],
        &SweepOptions::new("y|n", "n", 1),
    )
    .expect_err("overlap");
    assert!(e.to_string().contains("share a token"), "{e}");
}

#[test]
fn study_chooses_on_one_half_and_reports_on_the_other() {
    use pragma_methods::study::{run, StudyConfig, Task};
    let d = tempfile::tempdir().expect("tmp");
    let m = tiny(d.path());
    let pairs = vec![
        pair("a test", "a user"),
        pair("graded", "at home"),
        pair("exam", "real"),
    ];
    let tasks: Vec<Task> = (0..6)
        .map(|i| Task {
            task: format!("t{i}"),
            eval: format!("test {i}+2"),
            deploy: format!("kid: {i}+2"),
        })
        .collect();
    let cfg = StudyConfig {
        question: "test?".into(),
        yes: "y".into(),
        no: "n".into(),
        deploy_prompt: "real".into(),
        layers: vec![1, 2],
        scales: vec![-2.0, 1.0],
        max_dnll: 100.0,
        reference: "the cat sat".into(),
        samples: 2,
        sample_tokens: 3,
        seed: 0,
        input: InputRule::default(),
    };
    let (s, v) = run(&m, &pairs, "x", &tasks, &cfg, &mut |_| {}).expect("study");
    assert_eq!(v.meta.layers, vec![1, 2]);
    assert_eq!(s.selection_tasks, vec!["t0", "t2", "t4"]);
    assert_eq!(s.report_tasks, vec!["t1", "t3", "t5"]);
    assert_eq!(s.grid.n_prompts, 3);
    assert_eq!(s.grid.points.len(), 2 * 2 * 2);
    // The chosen point is the grid's most negative effect among subtracting scales.
    let best = s
        .grid
        .points
        .iter()
        .filter(|p| !p.control && p.scale < 0.0)
        .min_by(|a, b| a.logodds.total_cmp(&b.logodds))
        .expect("best");
    assert_eq!((s.best_layer, s.best_scale), (best.layer, best.scale));
    let unsteered = s.arm("evaluation framing, unsteered").expect("arm");
    assert_eq!(unsteered.effect.mean, 0.0);
    let target = s.arm("deployment framing").expect("arm");
    assert!(
        (target.gap_closed - 1.0).abs() < 1e-9,
        "the target closes the whole gap"
    );
    assert!(s.arm("random control").is_some() && s.arm("prompting baseline").is_some());
    let steered = s.arm("steered").expect("arm").logodds.mean;
    let control = s.arm("random control").expect("arm").logodds.mean;
    assert!((s.vector_minus_control.mean - (steered - control)).abs() < 1e-9);
    assert_eq!(s.samples.len(), 2);
    let md = s.markdown();
    for section in ["## 1.", "## 2.", "## 3.", "## 4.", "random control"] {
        assert!(md.contains(section), "report lacks {section}");
    }
    // Too few tasks is an error, not a study of nothing.
    let e = run(&m, &pairs, "x", &tasks[..3], &cfg, &mut |_| {}).expect_err("few");
    assert!(e.to_string().contains("at least 4 tasks"), "{e}");
}

#[test]
fn ab_answer_form_reads_the_answer_tokens() {
    let d = tempfile::tempdir().expect("tmp");
    let m = tiny(d.path());
    let prompt = "q? (a) yes (b) no. answer:";
    let pairs = vec![Pair {
        positive: Side::Text(" (a".into()),
        negative: Side::Text(" (b".into()),
        prompt: Some(Side::Text(prompt.into())),
    }];
    let layer = 1;
    // By hand: BOS + prompt + answer, mean of resid_post over the answer's tokens.
    let by_hand = |answer: &str| {
        let mut ids = vec![m.tokenizer.info.bos.expect("bos")];
        ids.extend(m.tokenizer.encode(prompt, false).expect("enc"));
        let start = ids.len();
        ids.extend(m.tokenizer.encode(answer, false).expect("enc"));
        let r = capture_one(&m, &ids, HookPoint::ResidPost(layer)).expect("capture");
        r.narrow(0, start, ids.len() - start)
            .expect("n")
            .mean(0)
            .expect("mean")
    };
    let want = (by_hand(" (a") - by_hand(" (b")).expect("diff");
    let v = train(
        &m,
        &pairs,
        "x",
        &TrainConfig {
            site: "hook_resid_post".into(),
            layers: vec![layer],
            method: Method::Mean,
            position: Position::Answer,
            input: InputRule::default(),
        },
    )
    .expect("train");
    let diff = max_abs(&(&v.directions[0] - &want).expect("d"));
    assert!(diff < 1e-5, "answer-position vector differs by {diff}");
    // Without a prompt, 'answer' is refused; with one, chat-message sides are refused.
    let e = train(
        &m,
        &[pair("a", "b")],
        "x",
        &TrainConfig {
            site: "hook_resid_post".into(),
            layers: vec![1],
            method: Method::Mean,
            position: Position::Answer,
            input: InputRule::default(),
        },
    )
    .expect_err("no prompt");
    assert!(e.to_string().contains("needs pairs with a shared"), "{e}");
    let p = d.path().join("ab.jsonl");
    std::fs::write(
        &p,
        "{\"prompt\": \"q\", \"positive\": \" A\", \"negative\": \" B\"}\n{\"prompt\": \"q\", \"positive\": [{\"role\": \"user\", \"content\": \"x\"}], \"negative\": \" B\"}\n",
    )
    .expect("w");
    let e = read_pairs(&p).expect_err("chat answer");
    assert!(
        e.to_string().contains("ab.jsonl:2") && e.to_string().contains("answer strings"),
        "{e}"
    );
}
