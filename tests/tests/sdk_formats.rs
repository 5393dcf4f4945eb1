#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Official SDKs as real clients across formats: `anthropic` and `google-genai`
//! against an OpenAI-type, an Anthropic-type and a Gemini-type channel each,
//! and `openai` against Anthropic- and Gemini-type channels (the Python venv
//! comes from `.ci/run`; `OBLIVIOUS_PYTHON` points elsewhere).

use std::process::Command;

use oblivious_e2e::gateway::{channel, repo_root};
use oblivious_e2e::wire_mock::{Wire, WireMock};
use oblivious_e2e::Gateway;

async fn run(script: &str, url: &str, key: &str, model: &str, env: &[(&str, &str)]) -> String {
    let python = std::env::var("OBLIVIOUS_PYTHON")
        .unwrap_or_else(|_| repo_root().join(".venv/bin/python").display().to_string());
    let mut cmd = Command::new(&python);
    cmd.arg(repo_root().join("tests/sdk").join(script)).arg(url).arg(key).arg(model);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot run {python} (run the README's test command to create .venv): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} against {model} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn gateway() -> (Gateway, String, [WireMock; 3]) {
    let oa = WireMock::start(Wire::OpenAi).await;
    let an = WireMock::start(Wire::Anthropic).await;
    let ge = WireMock::start(Wire::Gemini).await;
    let config = [
        "[prices.\"*\"]\nfree = true\n".to_string(),
        channel(
            "openai",
            "openai",
            &format!("{}/v1", oa.base_url()),
            "models = [\"gpt-4o-mini\", \"text-embedding-3-small\"]",
        ),
        channel("anthropic", "anthropic", &an.base_url(), "keys = [\"sk-ant\"]\nmodels = [\"claude-x\"]"),
        channel(
            "gemini",
            "gemini",
            &ge.base_url(),
            "keys = [\"g-key\"]\nmodels = [\"gemini-x\", \"text-embedding-004\"]",
        ),
    ]
    .concat();
    let gw = Gateway::start(&config);
    let key = gw.key(&[]);
    (gw, key, [oa, an, ge])
}

#[tokio::test(flavor = "multi_thread")]
async fn the_anthropic_sdk_reaches_every_channel_type() {
    let (gw, key, _mocks) = gateway().await;
    for model in ["claude-x", "gpt-4o-mini", "gemini-x"] {
        let out = run("anthropic_sdk.py", &gw.url, &key, model, &[]).await;
        assert!(out.contains("errors ok"), "{model}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_google_genai_sdk_reaches_every_channel_type() {
    let (gw, key, _mocks) = gateway().await;
    for (model, embed) in
        [("gemini-x", "text-embedding-004"), ("gpt-4o-mini", "text-embedding-3-small"), ("claude-x", "")]
    {
        let out = run("genai_sdk.py", &gw.url, &key, model, &[("EMBED_MODEL", embed)]).await;
        assert!(out.contains("errors ok"), "{model}: {out}");
    }
    // Current SDKs default to `/v1/models/{model}:method`: served the same way.
    let out = run("genai_sdk.py", &gw.url, &key, "claude-x", &[("EMBED_MODEL", ""), ("GENAI_API_VERSION", "v1")]).await;
    assert!(out.contains("errors ok"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_sdk_reaches_anthropic_and_gemini_channels() {
    let (gw, key, _mocks) = gateway().await;
    for model in ["claude-x", "gemini-x"] {
        let out = run("openai_cross.py", &gw.url, &key, model, &[]).await;
        assert!(out.contains("responses ok"), "{model}: {out}");
    }
}
