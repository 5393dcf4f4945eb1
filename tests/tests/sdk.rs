#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The official OpenAI Python SDK against the gateway (installed by `.ci/run`
//! into `.venv`; `OBLIVIOUS_PYTHON` points elsewhere).

use std::process::Command;

use oblivious_e2e::gateway::{config, repo_root};
use oblivious_e2e::mock::StreamShape;
use oblivious_e2e::{Gateway, Mock};

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_python_sdk_works_against_the_gateway() {
    let mock = Mock::start("a").await;
    let broken = Mock::start("broken").await;
    broken.set_stream(StreamShape { cut_after: Some(1), ..Default::default() });
    let gw = Gateway::start(&config(
        &[
            ("a", &mock.base_url(), "models = [\"gpt-4o-mini\", \"text-embedding-3-small\"]"),
            ("broken", &broken.base_url(), "models = [\"broken-stream\"]"),
        ],
        "",
    ));
    let key = gw.key(&[]);
    let python = std::env::var("OBLIVIOUS_PYTHON")
        .unwrap_or_else(|_| repo_root().join(".venv/bin/python").display().to_string());
    let script = repo_root().join("tests/sdk/openai_sdk.py");
    let url = format!("{}/v1", gw.url);
    let out = tokio::task::spawn_blocking(move || Command::new(&python).arg(&script).arg(&url).arg(&key).output())
        .await
        .unwrap()
        .unwrap_or_else(|e| {
            panic!("cannot run the Python SDK check (run the README's test command to create .venv): {e}")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "SDK check failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("mid-stream error ok"), "{stdout}");
}
