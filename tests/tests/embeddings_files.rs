#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Embeddings on every path honour `encoding_format` and are billed their
//! counted input when the upstream reports none; the data directory and the
//! database files are private to their owner.

use std::sync::{Arc, Mutex};

use base64::Engine;
use oblivious_e2e::gateway::channel;
use oblivious_e2e::wire_mock::{Wire, WireMock};
use oblivious_e2e::Gateway;
use serde_json::{json, Value};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// What the mock upstreams answer: Gemini's and Cohere's mocks send these floats.
const MOCK_VECTOR: [f32; 4] = [0.1, 0.2, 0.3, 0.4];

/// Floats from OpenAI's base64 (little-endian f32).
fn decode(s: &str) -> Vec<f32> {
    let bytes = B64.decode(s).unwrap();
    assert_eq!(bytes.len() % 4, 0, "{s}");
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn as_floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap_or_else(|| panic!("floats expected: {v}")).iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// An OpenAI-compatible embeddings server that answers base64 whatever it is
/// asked and reports no usage; it keeps the bodies it received.
async fn base64_upstream() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = seen.clone();
    let app = axum::Router::new().fallback(move |body: axum::Json<Value>| {
        let keep = keep.clone();
        async move {
            let n = body.0["input"].as_array().map_or(1, Vec::len);
            keep.lock().unwrap().push(body.0);
            let bytes: Vec<u8> = [1.0f32, -2.0, 0.5, 0.25].iter().flat_map(|f| f.to_le_bytes()).collect();
            let data: Vec<Value> =
                (0..n).map(|i| json!({"object": "embedding", "index": i, "embedding": B64.encode(&bytes)})).collect();
            axum::Json(json!({"object": "list", "data": data, "model": "m"}))
        }
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/v1"), seen)
}

struct Setup {
    gw: Gateway,
    key: String,
    openai: WireMock,
    gemini: WireMock,
    cohere: WireMock,
    b64_seen: Arc<Mutex<Vec<Value>>>,
}

/// Gemini, Cohere and two OpenAI-wire channels; the converted models are
/// priced at 1000 units a token, the rest free.
async fn setup() -> Setup {
    let openai = WireMock::start(Wire::OpenAi).await;
    let gemini = WireMock::start(Wire::Gemini).await;
    let cohere = WireMock::start(Wire::Cohere).await;
    let (b64_url, b64_seen) = base64_upstream().await;
    let config = [
        "[prices.\"*\"]\nfree = true\n\n[prices.\"text-embedding-004\"]\ninput = 1000\n\n".to_string(),
        "[prices.\"embed-v4.0\"]\ninput = 1000\n\n[prices.\"b64-embed\"]\ninput = 1000\n".to_string(),
        channel("openai", "openai", &format!("{}/v1", openai.base_url()), "models = [\"text-embedding-3-small\"]"),
        channel("b64", "openai", &b64_url, "models = [\"b64-embed\"]"),
        channel("gemini", "gemini", &gemini.base_url(), "keys = [\"g-key\"]\nmodels = [\"text-embedding-004\"]"),
        channel("cohere", "cohere", &cohere.base_url(), "keys = [\"co-key\"]\nmodels = [\"embed-v4.0\"]"),
    ]
    .concat();
    let gw = Gateway::start(&config);
    let key = gw.key(&[]);
    Setup { gw, key, openai, gemini, cohere, b64_seen }
}

fn close(got: &[f32], want: &[f32]) -> bool {
    got.len() == want.len() && got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6)
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_callers_get_base64_from_converted_channels_when_they_ask() {
    let s = setup().await;
    for model in ["text-embedding-004", "embed-v4.0"] {
        let ask = |format: Option<&str>| {
            let mut body = json!({"model": model, "input": ["hello world", "hi"]});
            if let Some(f) = format {
                body["encoding_format"] = json!(f);
            }
            body
        };
        let r = s.gw.post("/v1/embeddings", &s.key, &ask(Some("base64"))).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["data"].as_array().unwrap().len(), 2, "{model}: {e}");
        for d in e["data"].as_array().unwrap() {
            let s64 = d["embedding"].as_str().unwrap_or_else(|| panic!("{model}: base64 string expected: {e}"));
            let got = decode(s64);
            assert!(close(&got, &MOCK_VECTOR), "{model}: {got:?}");
            // Exactly OpenAI's bytes: the f32s of the upstream's numbers.
            let want: Vec<u8> = MOCK_VECTOR.iter().flat_map(|f| f.to_le_bytes()).collect();
            assert_eq!(s64, B64.encode(want), "{model}");
        }
        for format in [Some("float"), None] {
            let e: Value =
                s.gw.post("/v1/embeddings", &s.key, &ask(format)).send().await.unwrap().json().await.unwrap();
            assert!(close(&as_floats(&e["data"][1]["embedding"]), &MOCK_VECTOR), "{model} {format:?}: {e}");
        }
    }
    // Cohere is asked for floats (and converted), Gemini gets its own shape.
    let sent = s.cohere.seen().last().unwrap().body.clone();
    assert_eq!(sent["embedding_types"], json!(["float"]), "{sent}");
    assert!(s.gemini.seen().last().unwrap().path.ends_with(":batchEmbedContents"));
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_wire_channels_get_the_callers_encoding_format() {
    let s = setup().await;
    for format in ["base64", "float"] {
        let body = json!({"model": "text-embedding-3-small", "input": "hi", "encoding_format": format});
        let r = s.gw.post("/v1/embeddings", &s.key, &body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let sent = s.openai.seen().last().unwrap().body.clone();
        assert_eq!(sent["encoding_format"], format, "passed through as it came: {sent}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gemini_callers_on_openai_wire_channels_get_numbers() {
    let s = setup().await;
    // The upstream is asked for floats...
    let one = json!({"content": {"parts": [{"text": "hello world"}]}});
    let v: Value =
        s.gw.post("/v1beta/models/text-embedding-3-small:embedContent", &s.key, &one)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(v["embedding"]["values"].as_array().unwrap().len(), 4, "{v}");
    let sent = s.openai.seen().last().unwrap().body.clone();
    assert_eq!(sent["encoding_format"], "float", "{sent}");
    // ...and one that answers base64 anyway is decoded.
    let batch = json!({"requests": [
        {"model": "models/b64-embed", "content": {"parts": [{"text": "hello world"}]}},
        {"model": "models/b64-embed", "content": {"parts": [{"text": "hi"}]}},
    ]});
    let r = s.gw.post("/v1beta/models/b64-embed:batchEmbedContents", &s.key, &batch).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    for e in v["embeddings"].as_array().unwrap() {
        assert_eq!(as_floats(&e["values"]), vec![1.0, -2.0, 0.5, 0.25], "{v}");
    }
    assert_eq!(s.b64_seen.lock().unwrap().last().unwrap()["encoding_format"], "float");
}

#[tokio::test(flavor = "multi_thread")]
async fn converted_embeddings_are_counted_and_billed() {
    let s = setup().await;
    let input = json!(["hello world", "hi"]);
    let mut want = Vec::new();
    // An OpenAI caller on Gemini (which counts nothing): the answer and the row carry the counted input.
    let counted = oblivious_core::count::count_input("text-embedding-004", Some(&input));
    assert!(counted > 0);
    let r =
        s.gw.post(
            "/v1/embeddings",
            &s.key,
            &json!({"model": "text-embedding-004", "input": input, "encoding_format": "base64"}),
        )
        .send()
        .await
        .unwrap();
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["usage"], json!({"prompt_tokens": counted, "total_tokens": counted}), "{e}");
    want.push((rid, counted));
    // On Cohere, its billed units (one a text in the mock), in the answer and the row alike.
    let r = s.gw.post("/v1/embeddings", &s.key, &json!({"model": "embed-v4.0", "input": input})).send().await.unwrap();
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["usage"], json!({"prompt_tokens": 2, "total_tokens": 2}), "{e}");
    want.push((rid, 2));
    // A Gemini caller on an OpenAI-wire channel that reports no usage: its texts are counted.
    let batch = json!({"requests": [
        {"model": "models/b64-embed", "content": {"parts": [{"text": "hello world"}]}},
        {"model": "models/b64-embed", "content": {"parts": [{"text": "hi"}]}},
    ]});
    let r = s.gw.post("/v1beta/models/b64-embed:batchEmbedContents", &s.key, &batch).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    want.push((rid, oblivious_core::count::count_input("b64-embed", Some(&input))));
    let rows = s.gw.usage_rows(want.len()).await;
    for (rid, tokens) in want {
        let row = rows.iter().find(|r| r["request_id"] == rid.as_str()).unwrap_or_else(|| panic!("{rid}: {rows:?}"));
        assert_eq!(row["status"], 200, "{row}");
        assert_eq!(row["prompt_tokens"], tokens, "{row}");
        assert_eq!(row["total_tokens"], tokens, "{row}");
        assert_eq!(row["cost"], tokens * 1000, "1000 units a token: {row}");
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn the_data_directory_and_database_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let mut s = setup().await;
    // A request, so the WAL has been written to.
    let r =
        s.gw.post("/v1/embeddings", &s.key, &json!({"model": "text-embedding-3-small", "input": "hi"})).send().await;
    assert_eq!(r.unwrap().status(), 200);
    s.gw.usage_rows(1).await;
    let data = s.gw.data_dir();
    let files = ["oblivious.db", "oblivious.db-wal", "oblivious.db-shm", "secret.key"].map(|f| data.join(f));
    let check = |when: &str| {
        assert_eq!(mode(&data), 0o700, "{when}: {}", data.display());
        for f in &files {
            assert!(f.exists(), "{when}: {} missing", f.display());
            assert_eq!(mode(f), 0o600, "{when}: {}", f.display());
        }
    };
    check("first start");
    // A data directory left looser (by an older version, or by hand) is tightened at start.
    s.gw.crash();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in files.iter().filter(|f| f.exists()) {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    s.gw.restart();
    let r =
        s.gw.post("/v1/embeddings", &s.key, &json!({"model": "text-embedding-3-small", "input": "hi"})).send().await;
    assert_eq!(r.unwrap().status(), 200);
    check("restart");
}

/// The official `openai` Python SDK (`.venv`, or `OBLIVIOUS_PYTHON`) reads the
/// numbers of a Gemini and a Cohere channel, asking for base64 explicitly and by default.
#[tokio::test(flavor = "multi_thread")]
async fn the_openai_python_sdk_reads_converted_embeddings() {
    let s = setup().await;
    let python = std::env::var("OBLIVIOUS_PYTHON")
        .unwrap_or_else(|_| oblivious_e2e::gateway::repo_root().join(".venv/bin/python").display().to_string());
    let script = oblivious_e2e::gateway::repo_root().join("tests/sdk/openai_embeddings.py");
    let (url, key) = (format!("{}/v1", s.gw.url), s.key.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .arg(&script)
            .args([url.as_str(), key.as_str(), "text-embedding-004", "embed-v4.0"])
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("cannot run the Python SDK check (run the README's test command to create .venv): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "SDK check failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("embed-v4.0 default ok"), "{stdout}");
}
