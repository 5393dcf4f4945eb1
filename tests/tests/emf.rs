#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Metrics on Lambda: the real `relay` binary, polling a Lambda runtime API
//! (cargo lambda's) over the emulated AWS stack, ends each invocation by
//! printing CloudWatch Embedded Metric Format lines on stdout — the figures
//! the local binary serves to Prometheus, with the labels as dimensions — and
//! prints none with `OBLIVIOUS_EMF=0`.

use std::io::BufRead;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oblivious_core::telemetry as t;
use oblivious_e2e::aws;
use oblivious_e2e::mock::StreamShape;
use oblivious_e2e::Mock;
use oblivious_lambda::Settings;
use serde_json::{json, Value};

const PRICED: &str = "[prices.\"m-*\"]\ninput = 1000\noutput = 1000\n";

fn config(mock: &Mock) -> String {
    format!("{PRICED}\n[[channels]]\nname = \"up\"\ntype = \"openai\"\nbase_url = \"{}\"\nkeys = [\"sk-up\"]\nmodels = [\"m-*\"]\n", mock.base_url())
}

fn chat(stream: bool) -> String {
    json!({ "model": "m-1", "stream": stream, "max_tokens": 20, "messages": [{ "role": "user", "content": "hi there" }] }).to_string()
}

/// The `relay` binary as `aws::run_function` starts it, with its stdout kept
/// (line by line, as CloudWatch Logs would see it) and `env` added.
fn run_relay(runtime_port: u16, s: &Settings, env: &[(&str, &str)]) -> (aws::Child, Arc<Mutex<Vec<String>>>) {
    let mut cmd = aws::function_command("relay", runtime_port, s);
    cmd.env_remove(oblivious_lambda::env::EMF)
        .env_remove(oblivious_lambda::env::EMF_NAMESPACE)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("function binary");
    let stdout = child.stdout.take().expect("stdout");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            sink.lock().unwrap().push(line);
        }
    });
    (aws::Child(child), lines)
}

/// The EMF documents among a function's stdout lines (log lines are the rest).
fn emf_docs(lines: &Mutex<Vec<String>>) -> Vec<Value> {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect()
}

/// Checks a document against the EMF specification: an integer `Timestamp`,
/// directives with a namespace, dimension sets of at most 30 keys naming
/// non-empty string members, and 1 to 100 metric definitions (with a unit)
/// naming a number or `{"Values":[…],"Counts":[…]}` of at most 100 values.
fn check_emf(doc: &Value, namespace: &str) {
    let aws = &doc["_aws"];
    assert!(aws["Timestamp"].as_i64().is_some_and(|ms| ms > 1_700_000_000_000), "{doc}");
    for d in aws["CloudWatchMetrics"].as_array().expect("CloudWatchMetrics") {
        assert_eq!(d["Namespace"], namespace, "{doc}");
        let sets = d["Dimensions"].as_array().expect("Dimensions");
        assert!(!sets.is_empty());
        for set in sets {
            let set = set.as_array().expect("a dimension set");
            assert!(set.len() <= 30);
            for k in set {
                let v = doc[k.as_str().unwrap()].as_str().unwrap_or_else(|| panic!("dimension {k}: {doc}"));
                assert!(!v.is_empty() && v.len() <= 1024 && v.is_ascii(), "{doc}");
            }
        }
        let metrics = d["Metrics"].as_array().expect("Metrics");
        assert!(!metrics.is_empty() && metrics.len() <= 100);
        for m in metrics {
            let name = m["Name"].as_str().unwrap();
            assert!(["Count", "Seconds", "Bytes"].contains(&m["Unit"].as_str().unwrap()), "{doc}");
            let v = &doc[name];
            if !v.is_number() {
                let (values, counts) = (v["Values"].as_array().unwrap(), v["Counts"].as_array().unwrap());
                assert!(!values.is_empty() && values.len() <= 100 && values.len() == counts.len(), "{doc}");
            }
        }
    }
}

fn dimensions(doc: &Value) -> Vec<&str> {
    doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_binary_prints_each_invocations_metrics_as_emf_lines() {
    let mock = Mock::start("up").await;
    mock.set_stream(StreamShape {
        pieces: (0..5).map(|i| format!("p{i} ")).collect(),
        interval: Duration::from_millis(5),
        ..StreamShape::default()
    });
    let st = aws::stack(&config(&mock)).await;
    let (_, key) = aws::customer(&st, 50_000_000).await;
    let (_runtime, port) = aws::lambda_runtime_api();
    let (_relay, stdout) = run_relay(port, &st.settings, &[(oblivious_lambda::env::EMF_NAMESPACE, "ObliviousE2E")]);
    let url = format!("http://127.0.0.1:{port}/lambda-url/_/v1/chat/completions");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();

    const REQUESTS: u64 = 3;
    for stream in [false, true, false] {
        let resp = http
            .post(&url)
            .bearer_auth(&key)
            .body(chat(stream))
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        assert!(text.contains("p4") || text.contains("chat.completion"), "{text}");
    }

    // Each invocation printed its lines before its response ended; the pipe may lag a little.
    let requests = |docs: &[Value]| docs.iter().filter_map(|d| d[t::REQUESTS].as_u64()).sum::<u64>();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut docs = emf_docs(&stdout);
    while requests(&docs) < REQUESTS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        docs = emf_docs(&stdout);
    }
    assert!(!docs.is_empty(), "no EMF line on stdout:\n{}", stdout.lock().unwrap().join("\n"));
    for d in &docs {
        check_emf(d, "ObliviousE2E");
    }

    let answered: Vec<&Value> = docs.iter().filter(|d| d.get(t::REQUESTS).is_some()).collect();
    assert_eq!(requests(&docs), REQUESTS, "{docs:#?}");
    assert_eq!(answered.len(), REQUESTS as usize, "one line per invocation, each with its own request: {docs:#?}");
    let mut durations = 0;
    for d in &answered {
        let dims = dimensions(d);
        for label in ["route", "model", "channel"] {
            assert!(dims.contains(&label), "{label} is a dimension: {d}");
        }
        assert_eq!(
            (d["route"].as_str(), d["model"].as_str(), d["channel"].as_str()),
            (Some("/v1/chat/completions"), Some("m-1"), Some("up")),
            "{d}"
        );
        let units: Vec<(&str, &str)> = d["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["Name"].as_str().unwrap(), m["Unit"].as_str().unwrap()))
            .collect();
        assert!(units.contains(&(t::REQUESTS, "Count")) && units.contains(&(t::REQUEST_DURATION, "Seconds")), "{d}");
        // The request's duration, as a histogram: values (seconds) with their counts.
        let h = &d[t::REQUEST_DURATION];
        let values = h["Values"].as_array().unwrap_or_else(|| panic!("a Values/Counts histogram: {d}"));
        let counts = h["Counts"].as_array().unwrap();
        assert!(values.iter().all(|v| v.as_f64().is_some_and(|s| s > 0.0 && s < 30.0)), "{h}");
        durations += counts.iter().map(|c| c.as_u64().unwrap()).sum::<u64>();
    }
    assert_eq!(durations, REQUESTS, "one duration per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oblivious_emf_0_turns_the_lines_off() {
    let mock = Mock::start("up").await;
    let st = aws::stack(&config(&mock)).await;
    let (_, key) = aws::customer(&st, 50_000_000).await;
    let (_runtime, port) = aws::lambda_runtime_api();
    let (_relay, stdout) = run_relay(port, &st.settings, &[(oblivious_lambda::env::EMF, "0")]);
    let url = format!("http://127.0.0.1:{port}/lambda-url/_/v1/chat/completions");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let resp =
        http.post(&url).bearer_auth(&key).body(chat(false)).header("content-type", "application/json").send().await;
    let resp = resp.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();
    // A line would have been written before the response ended; give the pipe time anyway.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!stdout.lock().unwrap().is_empty(), "the function logs to stdout (so the pipe works)");
    assert_eq!(emf_docs(&stdout), Vec::<Value>::new());
}
