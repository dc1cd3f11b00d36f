//! The web UI: HTTP checks (bad parameters are 400/404, never a panic; only the server's
//! own assets are served; the API key), and the pages in a real browser (Debian's
//! chromium driven through chromium-driver over WebDriver): collections -> collection ->
//! transcript -> overlay change -> diff, and transcript text holding markup renders as
//! inert text. Screenshots go to target/ui-screenshots/.
//!
//! Without `chromedriver` on PATH the browser test is skipped with a message, unless the
//! environment variable CI is set (CI installs chromium and chromium-driver).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use pragma_methods::sae::{Arch as SaeArch, Normalize, Sae, SaeConfig};
use pragma_model::testing::{tiny_config, tiny_weights, write_gguf};
use pragma_model::{Arch, Model};
use pragma_transcripts::db::Db;
use pragma_transcripts::model::{Message, Role, Run, Transcript};
use pragma_transcripts::score::{score, Scorer, ScorerKind};
use serde_json::Map;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/transcripts")
        .join(name)
}

fn run(key: &str, text: &str) -> Run {
    Run {
        key: key.into(),
        sample_id: None,
        epoch: None,
        metadata: Map::new(),
        scores: Map::new(),
        transcripts: vec![Transcript {
            name: None,
            metadata: Map::new(),
            messages: vec![
                Message::new(Role::User, "Show me something."),
                Message::new(Role::Assistant, text),
            ],
        }],
        source: String::new(),
    }
}

pub const EVIL: &str = "<script>window.__pwned = 1</script></textarea><a href=\"javascript:window.__pwned=2\" id=\"evil-link\">click</a><img src=x onerror=\"window.__pwned=3\">";

/// A database with collections `a`, `b` (words differ) and `evil`, scored by a tiny SAE
/// on a tiny model; the model's tokenizer.
fn setup(dir: &Path) -> (PathBuf, Arc<pragma_model::Tokenizer>) {
    let cfg = tiny_config(Arch::Llama);
    let gguf = dir.join("tiny.gguf");
    write_gguf(
        &gguf,
        &cfg,
        &tiny_weights(&cfg, 4).expect("w"),
        GgmlDType::F32,
    )
    .expect("gguf");
    let model = Model::load(gguf.to_str().expect("utf8"), &mut |_| {}).expect("model");
    let db_path = dir.join("t.db");
    let mut db = Db::open(&db_path).expect("db");
    let words = ["red", "blue", "green", "cold", "warm", "soft"];
    let mk = |zebra: bool| -> Vec<Run> {
        (0..24)
            .map(|i| {
                let mut t = format!(
                    "{} {} {}",
                    words[i % 6],
                    words[(i + 2) % 6],
                    words[(i + 3) % 6]
                );
                if zebra && i % 2 == 0 {
                    t += " zebra";
                }
                run(&format!("r{i}"), &t)
            })
            .collect()
    };
    db.import("a", "a", "1", "test", &mk(false)).expect("a");
    db.import("b", "b", "2", "test", &mk(true)).expect("b");
    db.import(
        "evil",
        "evil",
        "3",
        "test",
        &[run("evil-run", EVIL), run("huge", &"x".repeat(200_000))],
    )
    .expect("evil");
    let (fmt, runs) =
        pragma_transcripts::import::read(&fixture("docent.json"), None).expect("docent");
    db.import("docent", "docent.json", "4", fmt.name(), &runs)
        .expect("docent");
    let sae = tiny_sae(cfg.d_model);
    for c in ["a", "b", "evil", "docent"] {
        let scorers = [Scorer {
            name: "sae:tiny".into(),
            kind: ScorerKind::Sae {
                sae: sae.clone(),
                top_k: 8,
            },
        }];
        score(
            &mut db,
            &model,
            c,
            &scorers,
            &Default::default(),
            &mut |_, _| {},
        )
        .expect("score");
    }
    (db_path, Arc::new(model.tokenizer.clone()))
}

/// A ReLU SAE on blocks.1.hook_resid_post with random encoder columns (seeded).
fn tiny_sae(d: usize) -> Sae {
    let n = 16;
    let mut rng = pragma_methods::stats::XorShift::mixed(7, 1);
    let w: Vec<f32> = (0..d * n).map(|_| (rng.next_f64() - 0.5) as f32).collect();
    let w_enc = Tensor::from_vec(w, (d, n), &Device::Cpu).expect("w");
    Sae {
        cfg: SaeConfig {
            arch: SaeArch::Relu,
            d_in: d,
            d_sae: n,
            hook_name: "blocks.1.hook_resid_post".into(),
            apply_b_dec_to_input: false,
            normalize: Normalize::None,
            rescale_acts_by_decoder_norm: false,
            reshape_hook_z: false,
            model_name: None,
            metadata: serde_json::Value::Null,
        },
        w_dec: w_enc.t().expect("t").contiguous().expect("c"),
        w_enc,
        b_enc: Tensor::zeros(n, candle_core::DType::F32, &Device::Cpu).expect("b"),
        b_dec: Tensor::zeros(d, candle_core::DType::F32, &Device::Cpu).expect("b"),
        threshold: None,
    }
}

async fn start(db: &Path, tok: Arc<pragma_model::Tokenizer>, key: Option<String>) -> SocketAddr {
    let app = pragma_server::router(
        Db::open(db).expect("db"),
        pragma_server::App {
            tokenizer: Some(tok),
            api_key: key,
            ..Default::default()
        },
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(l, app).await.expect("serve");
    });
    addr
}

/// Status code and body of a raw HTTP/1.1 GET (so the test sees exactly what is sent).
async fn get(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bad_parameters_assets_and_keys() {
    let d = tempfile::tempdir().expect("tmp");
    let (db, tok) = setup(d.path());
    let addr = start(&db, tok.clone(), None).await;
    let (c, body) = get(addr, "/", "").await;
    assert_eq!(c, 200, "{body}");
    assert!(
        body.contains("content-security-policy: default-src 'self'"),
        "{body}"
    );
    for (path, want) in [
        ("/t/abc", 400),
        ("/t/999999", 404),
        ("/c/nope", 404),
        ("/c/a?page=-1", 400),
        ("/c/a?q=%22unbalanced", 400),
        ("/c/a?where=model", 400),
        ("/t/1?latent=x", 400),
        ("/api/diff", 400),
        ("/api/diff?a=a&b=nope", 404),
        ("/static/../Cargo.toml", 404),
        ("/static/%2e%2e/Cargo.toml", 404),
        ("/etc/passwd", 404),
        ("/api/collections", 200),
        ("/api/c/a/search?q=red", 200),
        ("/api/diff?a=a&b=b", 200),
        ("/static/app.js", 200),
        ("/c/a/outliers", 200),
        ("/c/a/outliers?scorer=sae%3Atiny", 200),
        ("/c/a/outliers?scorer=nope", 404),
        ("/c/a/outliers?scorer=sae%3Atiny&pool=median", 400),
        ("/api/c/a/outliers?scorer=sae%3Atiny", 200),
        ("/c/b/clusters?k=2", 200),
        ("/c/b/clusters?k=1", 400),
        ("/c/b/clusters?k=abc", 400),
        ("/api/c/b/clusters?k=2&sae=sae%3Atiny", 200),
        ("/feature/sae:tiny/3", 200),
        ("/api/feature/sae:tiny/3", 200),
        ("/feature/sae:nope/3", 404),
        ("/feature/sae:tiny/x", 400),
    ] {
        let (c, body) = get(addr, path, "").await;
        assert_eq!(c, want, "{path}: {body}");
    }
    // The API returns what the library returns.
    let (_, body) = get(addr, "/api/diff?a=a&b=b", "").await;
    assert!(body.contains("\"name\":\"zebra\""), "{body}");
    // An oversized request line is refused, and the server still answers after.
    let long = format!("/c/a?q={}", "a".repeat(100_000));
    let (c, _) = get(addr, &long, "").await;
    assert!(c == 431 || c == 414 || c == 400 || c == 0, "oversized: {c}");
    assert_eq!(get(addr, "/", "").await.0, 200);

    // With a key: refused without it, served with the header or the login cookie.
    let keyed = start(&db, tok, Some("s3cret".into())).await;
    assert_eq!(get(keyed, "/api/collections", "").await.0, 401);
    assert_eq!(
        get(keyed, "/api/collections", "x-api-key: wrong\r\n")
            .await
            .0,
        401
    );
    assert_eq!(
        get(keyed, "/api/collections", "x-api-key: s3cret\r\n")
            .await
            .0,
        200
    );
    assert_eq!(
        get(keyed, "/", "Cookie: pragma_key=s3cret\r\n").await.0,
        200
    );
    let (c, body) = get(keyed, "/login?key=s3cret", "").await;
    assert_eq!(c, 303, "{body}");
    assert!(
        body.to_lowercase()
            .contains("set-cookie: pragma_key=s3cret"),
        "{body}"
    );

    // Binding beyond loopback without a key is refused before anything is served.
    let e = pragma_server::serve(
        pragma_server::ServeConfig {
            db: db.clone(),
            addr: "0.0.0.0:0".parse().expect("addr"),
            api_key: None,
            openai: None,
            project: None,
        },
        None,
        None,
        &mut |_| {},
    )
    .map(|_| ())
    .expect_err("refused");
    assert!(e.to_string().contains("--api-key"), "{e}");
}

fn chromedriver() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("chromedriver"))
            .find(|c| c.is_file())
    })
}

/// Headless chromium through chromium-driver, with its profile under `dir`; `None` (the
/// test skips) without chromedriver on PATH, unless CI is set (then it fails).
async fn browser(dir: &Path) -> Option<(fantoccini::Client, tokio::process::Child)> {
    let Some(driver) = chromedriver() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have chromedriver (apt-get install chromium chromium-driver)"
        );
        eprintln!("skipped: no chromedriver on PATH (apt-get install chromium chromium-driver)");
        return None;
    };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let child = tokio::process::Command::new(driver)
        .arg(format!("--port={port}"))
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromedriver");
    let profile = dir.join("chrome-profile");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", "--window-size=1200,900",
                     format!("--user-data-dir={}", profile.display())]
        }),
    );
    let mut client = None;
    for _ in 0..50 {
        match fantoccini::ClientBuilder::native()
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => {
                client = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
    Some((client.expect("connect to chromedriver"), child))
}

fn screenshots() -> PathBuf {
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots");
    std::fs::create_dir_all(&shots).expect("mkdir");
    shots
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_walks_the_pages_and_markup_stays_inert() {
    let d = tempfile::tempdir().expect("tmp");
    let Some((c, mut child)) = browser(d.path()).await else {
        return;
    };
    let (db, tok) = setup(d.path());
    let addr = start(&db, tok, None).await;
    let shots = screenshots();
    let base = format!("http://{addr}");
    let shot = |name: &str| shots.join(format!("{name}.png"));
    use fantoccini::Locator;

    // Collections -> collection b.
    c.goto(&format!("{base}/")).await.expect("goto");
    let table = c
        .find(Locator::Id("collections"))
        .await
        .expect("table")
        .text()
        .await
        .expect("text");
    assert!(
        table.contains("docent") && table.contains("evil"),
        "{table}"
    );
    std::fs::write(shot("1-collections"), c.screenshot().await.expect("shot")).expect("w");
    c.find(Locator::LinkText("b"))
        .await
        .expect("link")
        .click()
        .await
        .expect("click");
    // -> the first transcript.
    let first = c.find(Locator::Css("#transcripts a")).await.expect("row");
    first.click().await.expect("click");
    assert!(c
        .current_url()
        .await
        .expect("url")
        .path()
        .starts_with("/t/"));
    assert!(
        c.find_all(Locator::Css("div.msg"))
            .await
            .expect("msgs")
            .len()
            >= 2
    );
    // Choosing an overlay submits the form (the page's script): tokens appear with values.
    let sel = c.find(Locator::Id("overlay")).await.expect("select");
    sel.select_by_value("sae:tiny").await.expect("select");
    let mut toks = Vec::new();
    for _ in 0..50 {
        toks = c.find_all(Locator::Css("span.tok")).await.expect("tokens");
        if !toks.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        !toks.is_empty(),
        "no overlay tokens after choosing an overlay"
    );
    let url = c.current_url().await.expect("url");
    assert!(
        url.query().unwrap_or("").contains("overlay=sae%3Atiny"),
        "{url}"
    );
    let title = toks[0].attr("title").await.expect("attr").expect("title");
    assert!(title.parse::<f64>().is_ok(), "{title}");
    // Hover shows the value (the title attribute); a latent picker lists the top latents.
    assert!(c.find(Locator::Id("latent")).await.is_ok());
    std::fs::write(
        shot("2-transcript-overlay"),
        c.screenshot().await.expect("shot"),
    )
    .expect("w");
    // The latent's page, from the overlay: its strongest activations link back.
    c.find(Locator::Id("feature-link"))
        .await
        .expect("link")
        .click()
        .await
        .expect("click");
    assert!(c
        .current_url()
        .await
        .expect("url")
        .path()
        .starts_with("/feature/sae:tiny/"));
    let rows = c
        .find_all(Locator::Css("#feature-top tr"))
        .await
        .expect("rows");
    assert!(rows.len() >= 2, "header and at least one activation");
    assert!(c.find(Locator::Css("svg rect")).await.is_ok(), "histogram");
    std::fs::write(shot("2b-feature"), c.screenshot().await.expect("shot")).expect("w");

    // Diff: the planted word is the top n-gram.
    c.goto(&format!("{base}/diff?a=a&b=b")).await.expect("goto");
    let tables = c
        .find_all(Locator::Css("table.diff"))
        .await
        .expect("tables");
    assert!(!tables.is_empty());
    let body = c
        .find(Locator::Css("main"))
        .await
        .expect("main")
        .text()
        .await
        .expect("text");
    assert!(body.contains("zebra"), "{body}");
    std::fs::write(shot("3-diff"), c.screenshot().await.expect("shot")).expect("w");

    // Clusters and outliers pages, reached by their links from the collection.
    c.goto(&format!("{base}/c/b")).await.expect("goto");
    c.find(Locator::LinkText("clusters"))
        .await
        .expect("link")
        .click()
        .await
        .expect("click");
    let rows = c
        .find_all(Locator::Css("#clusters tr"))
        .await
        .expect("rows");
    assert!(rows.len() >= 3, "header and at least 2 clusters");
    c.goto(&format!("{base}/c/b/outliers?scorer=sae%3Atiny"))
        .await
        .expect("goto");
    assert!(!c
        .find_all(Locator::Css("#outliers tr"))
        .await
        .expect("rows")
        .is_empty());

    // Markup in transcript text is inert: no script ran, no link was made, the text shows.
    c.goto(&format!("{base}/c/evil")).await.expect("goto");
    c.find(Locator::LinkText("evil-run"))
        .await
        .expect("link")
        .click()
        .await
        .expect("click");
    let pwned = c
        .execute("return window.__pwned === undefined;", vec![])
        .await
        .expect("js");
    assert_eq!(
        pwned,
        serde_json::Value::Bool(true),
        "transcript markup ran"
    );
    assert!(
        c.find(Locator::Id("evil-link")).await.is_err(),
        "a link was made from transcript text"
    );
    let text = c
        .find(Locator::Css("main"))
        .await
        .expect("main")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains("<script>window.__pwned = 1</script>"),
        "{text}"
    );
    std::fs::write(shot("4-inert-markup"), c.screenshot().await.expect("shot")).expect("w");
    // A 200k-character message renders.
    c.goto(&format!("{base}/c/evil")).await.expect("goto");
    c.find(Locator::LinkText("huge"))
        .await
        .expect("link")
        .click()
        .await
        .expect("click");
    assert!(c.find(Locator::Css("div.msg.assistant")).await.is_ok());
    c.close().await.expect("close");
    let _ = child.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steering_playground_answers_side_by_side() {
    let d = tempfile::tempdir().expect("tmp");
    let (db, tok) = setup(d.path());
    let gguf = d.path().join("tiny.gguf");
    let model = Arc::new(Model::load(gguf.to_str().expect("utf8"), &mut |_| {}).expect("model"));
    use pragma_methods::steering::Side;
    use pragma_methods::steering::{train, Pair, TrainConfig};
    let pairs: Vec<Pair> = ["red cat", "blue dog", "warm sun", "cold rain"]
        .iter()
        .map(|t| {
            Pair::new(
                Side::Text(format!("I love the {t}")),
                Side::Text(format!("I hate the {t}")),
            )
        })
        .collect();
    let v = train(&model, &pairs, "test", &TrainConfig::new(&[0, 1])).expect("train");
    let app = pragma_server::router(
        Db::open(&db).expect("db"),
        pragma_server::App {
            tokenizer: Some(tok),
            playground: Some(pragma_server::Playground {
                model: model.clone(),
                vectors: vec![("love".into(), v)],
                saes: vec![("sae:tiny".into(), tiny_sae(model.cfg().d_model))],
            }),
            ..Default::default()
        },
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(l, app).await.expect("serve");
    });
    let (c, body) = get(
        addr,
        "/api/steer?prompt=Tell%20me%20a%20story&vector=love&scale=50&max_tokens=8",
        "",
    )
    .await;
    assert_eq!(c, 200, "{body}");
    let json = body.split("\r\n\r\n").nth(1).expect("body");
    let v: serde_json::Value = serde_json::from_str(json.trim()).expect("json");
    let (u, st) = (
        v["unsteered"].as_str().expect("u"),
        v["steered"].as_str().expect("s"),
    );
    assert_ne!(u, st, "a large scale changes the answer");
    // The unsteered answer is the model's own greedy answer.
    let direct = pragma_methods::steering::side_by_side(
        &model,
        "Tell me a story",
        &pragma_methods::steering::SteeringVector::load(&{
            let p = d.path().join("v.safetensors");
            train(&model, &pairs, "test", &TrainConfig::new(&[0, 1]))
                .expect("t")
                .save(&p)
                .expect("save");
            p
        })
        .expect("load"),
        pragma_methods::steering::Operator::Add,
        0.0,
        None,
        8,
    )
    .expect("direct");
    assert_eq!(direct.unsteered, u);
    assert_eq!(direct.steered, u, "scale 0 steers nothing");
    let (c, body) = get(
        addr,
        "/steer?prompt=Hi&vector=love&layer=1&scale=5&max_tokens=4",
        "",
    )
    .await;
    assert_eq!(c, 200, "{body}");
    assert!(body.contains("id=\"steered\""), "{body}");
    for (path, want) in [
        ("/api/steer?prompt=Hi&vector=nope", 404),
        ("/api/steer?prompt=Hi&vector=love&scale=abc", 400),
        ("/api/steer?prompt=Hi&vector=love&layer=9", 400),
        ("/api/steer?prompt=Hi&vector=love&op=twist", 400),
        ("/api/steer?prompt=Hi&vector=love&max_tokens=100000", 400),
        ("/api/steer", 400),
    ] {
        assert_eq!(get(addr, path, "").await.0, want, "{path}");
    }
    // A latent's page with the SAE given: its logit table, as the library computes it.
    let (c, body) = get(addr, "/feature/sae:tiny/2", "").await;
    assert_eq!(c, 200, "{body}");
    assert!(body.contains("id=\"feature-logits\""), "{body}");
    let (top, _) =
        pragma_methods::sae::latent_logits(&tiny_sae(model.cfg().d_model), &model, 2, 10)
            .expect("logits");
    assert!(
        body.contains(&format!("{:+.2}", top[0].1)),
        "top logit {:+.2} missing",
        top[0].1
    );
    // Without a playground the page says how to get one.
    let plain = start(&db, tok_of(&model), None).await;
    let (c, body) = get(plain, "/steer", "").await;
    assert_eq!(c, 200);
    assert!(body.contains("--vector NAME=FILE"), "{body}");
}

fn tok_of(m: &Model) -> Arc<pragma_model::Tokenizer> {
    Arc::new(m.tokenizer.clone())
}

/// A check-in with one proxy task, `probe` against `bow`, judged by the library's rule.
fn checkin(
    p: &pragma_research::Project,
    db: &pragma_research::RunDb,
    number_hint: f64,
    probe: pragma_research::Score,
) -> pragma_research::checkin::Checkin {
    use pragma_research::checkin::{
        project_key, Checkin, Evidence, ProxyCheckin, Role, TechniqueVerdict,
    };
    use pragma_research::Score;
    let bow = Score {
        mean: 0.7,
        lo: 0.65,
        hi: 0.75,
    };
    let v = pragma_research::verdict("probe", probe, &[("bow".into(), bow)], p.time_box_day, 0)
        .expect("verdict");
    let proxies = vec![ProxyCheckin {
        task: "eval-awareness".into(),
        family: "detection".into(),
        metric: "test AUROC".into(),
        evidence: vec![
            Evidence {
                name: "probe".into(),
                role: Role::Technique,
                score: probe,
                previous: None,
            },
            Evidence {
                name: "bow".into(),
                role: Role::Baseline,
                score: bow,
                previous: None,
            },
        ],
        verdicts: vec![TechniqueVerdict {
            technique: "probe".into(),
            verdict: v,
            previous: None,
        }],
    }];
    Checkin {
        number: 0,
        at: 1.7e9 + number_hint,
        at_utc: pragma_research::runs::utc(1.7e9 + number_hint),
        project: project_key(p, db),
        north_star: p.north_star.clone(),
        time_box: p.time_box.clone(),
        days_left: 10,
        model: "tiny".into(),
        model_sha256: "ab".repeat(32),
        says: pragma_research::checkin::summarize(&proxies, 10, &p.time_box),
        proxies,
        run_id: Some(7),
        eval_dir: "e".into(),
        computed: 3,
        cached: 0,
        rerun_of: None,
    }
}

/// `/project`: the project file, every check-in's verdicts, the trend plot and the latest
/// evidence, read from the project's runs database on each request (a new check-in shows
/// on reload); markup in the north star stays text; 404 without a project. In a real
/// browser when chromedriver is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_page_shows_the_checkins() {
    let d = tempfile::tempdir().expect("tmp");
    pragma_eval::suite::Suite::write_default(&d.path().join("eval/suite")).expect("suite");
    let p = pragma_research::Project::init(
        d.path(),
        "models <b>should</b> not notice",
        "2999-01-01",
        "eval/suite/default.toml",
    )
    .expect("init");
    let runs = pragma_research::RunDb::open(&d.path().join(".pragma/runs.db")).expect("db");
    let near = pragma_research::Score {
        mean: 0.72,
        lo: 0.6,
        hi: 0.8,
    };
    runs.add_checkin(&checkin(&p, &runs, 0.0, near))
        .expect("add");

    let tdb = d.path().join("t.db");
    Db::open(&tdb).expect("db");
    let app = pragma_server::router(
        Db::open(&tdb).expect("db"),
        pragma_server::App {
            project: Some(p.path.clone()),
            ..Default::default()
        },
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(l, app).await.expect("serve");
    });
    let (code, body) = get(addr, "/project", "").await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("within noise")
            && body.contains("keep going")
            && body.contains("class=\"trend\""),
        "{body}"
    );
    assert!(
        body.contains("models &lt;b&gt;should&lt;/b&gt; not notice"),
        "{body}"
    );
    // A second check-in, now ahead: the page shows both, newest first, on reload.
    let far = pragma_research::Score {
        mean: 0.95,
        lo: 0.9,
        hi: 0.99,
    };
    runs.add_checkin(&checkin(&p, &runs, 86_400.0, far))
        .expect("add");
    let (_, body) = get(addr, "/project", "").await;
    assert!(
        body.contains("continue: probe on eval-awareness is ahead of every baseline, beyond noise")
            && body.contains("Check-in 2 in full"),
        "{body}"
    );
    let (code, json) = get(addr, "/api/project", "").await;
    let json = json.split("\r\n\r\n").nth(1).expect("body");
    let v: serde_json::Value = serde_json::from_str(json).expect("json");
    assert_eq!(code, 200);
    assert_eq!(v["checkins"].as_array().expect("checkins").len(), 2);
    assert_eq!(
        v["checkins"][1]["proxies"][0]["verdicts"][0]["verdict"]["standing"],
        "ahead"
    );

    // Without a project: a 404 that says how to get one.
    let app = pragma_server::router(Db::open(&tdb).expect("db"), Default::default());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let plain = l.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(l, app).await.expect("serve");
    });
    let (code, body) = get(plain, "/project", "").await;
    assert!(code == 404 && body.contains("pragma.toml"), "{body}");

    let Some((c, mut child)) = browser(d.path()).await else {
        return;
    };
    use fantoccini::Locator;
    c.goto(&format!("http://{addr}/project"))
        .await
        .expect("goto");
    let rows = c
        .find(Locator::Id("checkins"))
        .await
        .expect("table")
        .text()
        .await
        .expect("text");
    assert!(rows.contains("eval-awareness / probe: ahead"), "{rows}");
    assert_eq!(
        c.find_all(Locator::Css("svg.trend circle"))
            .await
            .expect("points")
            .len(),
        4,
        "two series x two check-ins"
    );
    std::fs::write(
        screenshots().join("5-project.png"),
        c.screenshot().await.expect("shot"),
    )
    .expect("w");
    c.close().await.expect("close");
    let _ = child.kill().await;
}
