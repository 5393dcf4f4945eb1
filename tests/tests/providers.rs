#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Provider types beyond chat conversion: OpenAI-compatible presets and their
//! quirks, the OpenAI endpoints relayed as they are (images, audio, moderations,
//! rerank), channel model listings, and usage recorded for converted requests.

use oblivious_e2e::gateway::{channel, json_of};
use oblivious_e2e::wire_mock::{Wire, WireMock};
use oblivious_e2e::Gateway;
use serde_json::{json, Value};

async fn setup() -> (Gateway, String, WireMock, WireMock, WireMock, WireMock) {
    let oa = WireMock::start(Wire::OpenAi).await;
    let an = WireMock::start(Wire::Anthropic).await;
    let ge = WireMock::start(Wire::Gemini).await;
    let co = WireMock::start(Wire::Cohere).await;
    let oa_v1 = format!("{}/v1", oa.base_url());
    let config = [
        "[prices.\"*\"]\nfree = true\n".to_string(),
        channel(
            "openai",
            "openai",
            &oa_v1,
            "models = [\"gpt-4o-mini\", \"dall-e-3\", \"tts-1\", \"whisper-1\", \"omni-moderation-latest\", \"jina-reranker\"]",
        ),
        channel("deepseek", "deepseek", &oa_v1, "models = [\"deepseek-reasoner\"]"),
        channel(
            "mistral",
            "mistral",
            &oa_v1,
            "models = [\"mistral-large\"]\nmodel_mapping = { \"le-chat\" = \"mistral-large\" }",
        ),
        channel("anthropic", "anthropic", &an.base_url(), "keys = [\"sk-ant\"]\nmodels = [\"claude-x\"]"),
        channel("claude-any", "anthropic", &an.base_url(), "keys = [\"sk-ant\"]\nmodels = [\"claude-*\"]"),
        channel("gemini", "gemini", &ge.base_url(), "keys = [\"g-key\"]\nmodels = [\"gemini-x\", \"text-embedding-004\"]"),
        channel("cohere", "cohere", &co.base_url(), "keys = [\"co-key\"]\nmodels = [\"rerank-v3.5\", \"embed-v4.0\"]"),
    ]
    .concat();
    let gw = Gateway::start(&config);
    let key = gw.key(&[]);
    (gw, key, oa, an, ge, co)
}

#[tokio::test(flavor = "multi_thread")]
async fn presets_handle_their_quirks() {
    let (gw, key, oa, ..) = setup().await;
    let http = reqwest::Client::new();
    // DeepSeek's reasoning_content reaches an Anthropic client as a thinking block.
    let v: Value = json_of(http
        .post(format!("{}/v1/messages", gw.url))
        .header("x-api-key", &key)
        .json(&json!({"model": "deepseek-reasoner", "max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 1024},
                      "messages": [{"role": "user", "content": "hi"}]}))).await;
    assert_eq!(v["content"][0]["type"], "thinking", "{v}");
    assert_eq!(v["content"][0]["thinking"], "Let me think.");
    assert_eq!(v["content"][1]["text"], "Hello, world!");
    let sent = oa.seen().last().unwrap().body.clone();
    assert_eq!(sent["reasoning_effort"], "low", "{sent}");
    // Mistral refuses stream_options: never sent, and an alias maps across formats.
    let r = gw
        .post(
            "/v1/chat/completions",
            &key,
            &json!({"model": "le-chat", "stream": true,
            "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().contains("[DONE]"));
    let sent = oa.seen().last().unwrap().body.clone();
    assert_eq!(sent["model"], "mistral-large");
    assert!(sent.get("stream_options").is_none(), "{sent}");
    let r = reqwest::Client::new()
        .post(format!("{}/v1/messages", gw.url))
        .header("x-api-key", &key)
        .json(&json!({"model": "le-chat", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(oa.seen().last().unwrap().body["model"], "mistral-large");
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_endpoints_are_relayed_as_they_are() {
    let (gw, key, oa, _an, ge, co) = setup().await;
    let img: Value =
        json_of(gw.post("/v1/images/generations", &key, &json!({"model": "dall-e-3", "prompt": "a cat"}))).await;
    assert_eq!(img["data"][0]["url"], "https://example.com/cat.png", "{img}");
    let speech = gw
        .post("/v1/audio/speech", &key, &json!({"model": "tts-1", "input": "hello", "voice": "alloy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(speech.headers()["content-type"], "audio/mpeg");
    assert!(speech.bytes().await.unwrap().starts_with(b"ID3"));
    let form = reqwest::multipart::Form::new()
        .text("model", "whisper-1")
        .part("file", reqwest::multipart::Part::bytes(b"RIFF....WAVE".to_vec()).file_name("a.wav"));
    let t: Value = reqwest::Client::new()
        .post(format!("{}/v1/audio/transcriptions", gw.url))
        .bearer_auth(&key)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(t["text"], "hello from audio", "{t}");
    let m: Value =
        json_of(gw.post("/v1/moderations", &key, &json!({"model": "omni-moderation-latest", "input": "hi"}))).await;
    assert_eq!(m["results"][0]["flagged"], false, "{m}");
    // Rerank in the Cohere/Jina shape, to an OpenAI-wire server and to Cohere's /v2/rerank.
    for (model, mock) in [("jina-reranker", &oa), ("rerank-v3.5", &co)] {
        let r: Value = json_of(gw.post(
            "/v1/rerank",
            &key,
            &json!({"model": model, "query": "q", "documents": ["a", "b"], "top_n": 2}),
        ))
        .await;
        assert_eq!(r["results"].as_array().unwrap().len(), 2, "{model}: {r}");
        assert!(mock.seen().last().unwrap().path.ends_with("rerank"));
    }
    // OpenAI embeddings to Gemini and Cohere channels, converted both ways.
    for (model, mock) in [("text-embedding-004", &ge), ("embed-v4.0", &co)] {
        let e: Value = json_of(gw.post("/v1/embeddings", &key, &json!({"model": model, "input": ["a", "b"]}))).await;
        assert_eq!(e["data"].as_array().unwrap().len(), 2, "{model}: {e}");
        assert_eq!(e["data"][1]["embedding"].as_array().unwrap().len(), 4, "{model}: {e}");
        let seen = mock.seen().last().unwrap().clone();
        assert!(seen.path.ends_with(":batchEmbedContents") || seen.path == "/v2/embed", "{}", seen.path);
    }
    let r =
        gw.post("/v1/embeddings", &key, &json!({"model": "embed-v4.0", "input": [[1, 2, 3]]})).send().await.unwrap();
    assert_eq!(r.status(), 400, "token ids cannot be converted");
    // A multipart upload without a model is refused before any upstream call.
    let form = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(vec![1, 2, 3]));
    let r = reqwest::Client::new()
        .post(format!("{}/v1/audio/transcriptions", gw.url))
        .bearer_auth(&key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Chat-only channels do not get these endpoints.
    let r = gw.post("/v1/images/generations", &key, &json!({"model": "claude-x", "prompt": "x"})).send().await.unwrap();
    assert_eq!(r.status(), 503);
}

#[tokio::test(flavor = "multi_thread")]
async fn channels_list_their_upstream_models() {
    let (gw, _key, ..) = setup().await;
    let (_, list) = gw.admin(reqwest::Method::GET, "/api/admin/channels?per_page=100", None).await;
    for (name, want) in [("anthropic", "claude-x"), ("gemini", "gemini-x"), ("openai", "gpt-4o-mini")] {
        let id = list["data"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap()["id"].clone();
        let (status, v) = gw.admin(reqwest::Method::GET, &format!("/api/admin/channels/{id}/models"), None).await;
        assert_eq!(status, 200, "{v}");
        assert!(v["models"].as_array().unwrap().iter().any(|m| m == want), "{name}: {v}");
    }
    // A channel with only a pattern is tested with the first upstream model it matches.
    let id = list["data"].as_array().unwrap().iter().find(|c| c["name"] == "claude-any").unwrap()["id"].clone();
    let (status, v) = gw.admin(reqwest::Method::POST, &format!("/api/admin/channels/{id}/test"), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["ok"], true, "{v}");
    assert_eq!(v["result"]["model"], "claude-x", "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn converted_requests_are_metered_from_the_upstreams_usage() {
    let (gw, key, ..) = setup().await;
    let http = reqwest::Client::new();
    for stream in [false, true] {
        let r = http
            .post(format!("{}/v1/messages", gw.url))
            .header("x-api-key", &key)
            .json(&json!({"model": "gemini-x", "max_tokens": 50, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap();
    }
    let rows = gw.usage_rows(2).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in rows {
        assert_eq!(row["endpoint"], "/v1/messages", "{row}");
        assert_eq!(row["prompt_tokens"], 12, "{row}");
        assert_eq!(row["completion_tokens"], 4, "{row}");
        assert_eq!(row["usage_estimated"], false, "{row}");
    }
}
