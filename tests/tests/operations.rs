#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! What an operator runs the gateway on: `/metrics` (only where configured),
//! `/healthz` and `/readyz`, JSON logs with one line per request, OpenTelemetry
//! traces over OTLP, `[server] trusted_proxies`, and a SIGTERM that loses no stream.

use std::time::Duration;

use futures_util::future::join_all;
use futures_util::StreamExt;
use oblivious_e2e::gateway::{config, temp_dir, Launch, STRICT_PRICES};
use oblivious_e2e::mock::StreamShape;
use oblivious_e2e::otlp;
use oblivious_e2e::{Gateway, Mock};
use serde_json::{json, Value};

fn chat(model: &str, stream: bool) -> Value {
    json!({ "model": model, "stream": stream, "max_tokens": 8, "messages": [{ "role": "user", "content": "hi" }] })
}

/// The value of the series whose labels include every `label="value"` pair given.
fn series(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn scrape(gw: &Gateway, url: &str) -> String {
    gw.http.get(url).send().await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_only_where_configured_and_count_what_happened() {
    let up = Mock::start("up").await;
    let channel = [("up", up.base_url(), "keys = [\"k\"]\nmodels = [\"gpt-4o-mini\"]")];
    let channels: Vec<_> = channel.iter().map(|(n, u, m)| (*n, u.as_str(), *m)).collect();

    let plain = Gateway::start(&config(&channels, ""));
    assert!(plain.metrics_url.is_none(), "no [metrics] section: no metrics endpoint");
    let resp = plain.http.get(format!("{}/metrics", plain.url)).send().await.unwrap();
    assert_eq!(resp.status(), 404, "never on the main port without a setting");

    let gw = Gateway::start(&config(&channels, "[metrics]\nlisten = \"127.0.0.1:0\"\n"));
    let metrics = gw.metrics_url.clone().expect("the gateway printed its metrics address");
    assert!(!metrics.starts_with(&gw.url), "a listener of its own: {metrics} vs {}", gw.url);
    assert_eq!(gw.http.get(format!("{}/metrics", gw.url)).send().await.unwrap().status(), 404);
    let key = gw.key(&[]);
    for _ in 0..3 {
        assert_eq!(
            gw.post("/v1/chat/completions", &key, &chat("gpt-4o-mini", false)).send().await.unwrap().status(),
            200
        );
    }
    let mut s = gw.post("/v1/chat/completions", &key, &chat("gpt-4o-mini", true)).send().await.unwrap().bytes_stream();
    while s.next().await.is_some() {}
    let typed = gw.post("/v1/chat/completions", &key, &chat("a-model-nobody-serves-1234", false)).send().await.unwrap();
    assert_eq!(typed.status(), 404);
    gw.settle().await;

    let text = scrape(&gw, &metrics).await;
    let ok = [("route", "/v1/chat/completions"), ("format", "openai"), ("model", "gpt-4o-mini"), ("channel", "up")];
    let ok_200: Vec<_> = ok.iter().copied().chain([("status", "200")]).collect();
    assert_eq!(series(&text, "oblivious_requests_total", &ok_200), Some(4.0), "{text}");
    assert_eq!(series(&text, "oblivious_request_duration_seconds_count", &ok_200), Some(4.0));
    assert!(series(&text, "oblivious_request_duration_seconds_bucket", &[("le", "+Inf")]).is_some());
    assert_eq!(series(&text, "oblivious_requests_total", &[("model", "other"), ("status", "404")]), Some(1.0));
    assert!(!text.contains("a-model-nobody-serves"), "a caller's made-up model is never a label");
    assert_eq!(series(&text, "oblivious_upstream_attempts_total", &[("channel", "up"), ("outcome", "ok")]), Some(4.0));
    assert_eq!(series(&text, "oblivious_ttfb_seconds_count", &[("channel", "up")]), Some(4.0));
    assert!(series(&text, "oblivious_tokens_total", &[("model", "gpt-4o-mini"), ("kind", "prompt")]).unwrap() > 0.0);
    assert_eq!(series(&text, "oblivious_channel_status", &[("channel", "up"), ("status", "enabled")]), Some(1.0));
    assert_eq!(series(&text, "oblivious_model_channels_enabled", &[("model", "gpt-4o-mini")]), Some(1.0));
    assert_eq!(series(&text, "oblivious_reservations_open", &[]), Some(0.0));
    assert_eq!(series(&text, "oblivious_queue_depth", &[("state", "waiting")]), Some(0.0));
    assert!(series(&text, "process_resident_memory_bytes", &[]).unwrap() > 1e6);
    assert!(
        series(&text, "oblivious_cache_requests_total", &[("cache", "principal"), ("result", "hit")]).unwrap() >= 3.0
    );
    for secret in [key.as_str(), gw.admin_key.as_str(), "user_id", "token_id", "request_id"] {
        assert!(!text.contains(secret), "no key or id in any label: {secret}");
    }

    let main = Gateway::start(&config(&channels, "[metrics]\nlisten = \"main\"\n"));
    assert_eq!(main.metrics_url.as_deref(), Some(format!("{}/metrics", main.url).as_str()));
    assert!(scrape(&main, &format!("{}/metrics", main.url)).await.contains("oblivious_build_info"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_says_which_check_fails() {
    let up = Mock::start("up").await;
    let gw = Gateway::start(&config(&[("up", &up.base_url(), "models = [\"m\"]")], ""));
    let get = |path: &'static str| {
        let (http, url) = (gw.http.clone(), gw.url.clone());
        async move {
            let resp = http.get(format!("{url}{path}")).send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(get("/healthz").await, (200, json!({ "status": "ok" })));
    let (status, ready) = get("/readyz").await;
    assert_eq!((status, &ready["status"]), (200, &json!("ready")), "{ready}");
    for check in ["store", "channels", "migrations", "config"] {
        assert_eq!(ready["checks"][check]["ok"], true, "{ready}");
    }

    let (s, _) = gw.admin(reqwest::Method::PATCH, "/api/admin/channels/1", Some(json!({ "status": "disabled" }))).await;
    assert_eq!(s, 200);
    let (status, ready) = get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["checks"]["channels"], json!({ "ok": false, "error": "none of the 1 channels is enabled" }));
    assert_eq!(ready["checks"]["store"]["ok"], true);

    // A config file that no longer parses: the running config stays, readiness says so.
    std::fs::write(&gw.config, "[relay\nbroken").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let (_, ready) = get("/readyz").await;
        if ready["checks"]["config"]["ok"] == false {
            break ready;
        }
        assert!(std::time::Instant::now() < deadline, "the broken config was not reported: {ready}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(ready["checks"]["config"]["error"].as_str().unwrap().contains("oblivious.toml"), "{ready}");
    assert_eq!(get("/healthz").await.0, 200, "alive all along");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_one_line_per_request_and_no_secret() {
    let up = Mock::start("up").await;
    let dir = temp_dir("logs");
    let log = dir.join("gateway.log");
    let channel_key = "sk-upstream-9f8e7d6c5b4a39281706";
    let launch = Launch {
        args: vec!["--log-format".into(), "json".into()],
        env: vec![("OBLIVIOUS_LOG".into(), "debug".into())],
        log_file: Some(log.clone()),
        ..Launch::default()
    };
    let more = format!("keys = [\"{channel_key}\"]\nmodels = [\"gpt-4o-mini\"]");
    let gw = Gateway::launch(&config(&[("up", &up.base_url(), &more)], ""), launch);
    let key = gw.key(&[]);
    let mut ids = vec![];
    for (model, stream) in [("gpt-4o-mini", false), ("gpt-4o-mini", true), ("nope", false)] {
        let resp = gw.post("/v1/chat/completions", &key, &chat(model, stream)).send().await.unwrap();
        ids.push(resp.headers()["x-request-id"].to_str().unwrap().to_string());
        let _ = resp.bytes().await.unwrap();
    }
    let wrong = gw.post("/v1/chat/completions", "sk-not-a-real-key-0000000000000000", &chat("gpt-4o-mini", false));
    assert_eq!(wrong.send().await.unwrap().status(), 401);
    gw.settle().await;

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let access: Vec<&Value> = lines.iter().filter(|l| l["target"] == "oblivious::access").collect();
    assert_eq!(access.len(), 3, "one line per relayed request: {access:#?}");
    for (line, id) in access.iter().zip(&ids) {
        assert_eq!(line["level"], "INFO");
        assert_eq!(&line["request_id"], id, "the line carries the id the caller saw");
        for field in ["user_id", "token_id", "route", "model", "channel", "status", "latency_ms", "cost"] {
            assert!(!line[field].is_null(), "{field} in {line}");
        }
    }
    assert_eq!(access[1]["stream"], true);
    assert!(access[0]["prompt_tokens"].as_i64().unwrap() > 0);
    assert_eq!(access[2]["status"], 404);
    for secret in [key.as_str(), gw.admin_key.as_str(), channel_key, "sk-not-a-real-key"] {
        assert!(!text.contains(secret), "a secret reached the log: {secret}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_streaming_request_is_one_trace_from_the_callers_span_to_the_upstream() {
    let otlp = otlp::Receiver::start().await;
    let up = Mock::start("up").await;
    let extra = format!("[tracing]\notlp_endpoint = \"{}\"\nservice_name = \"gw-under-test\"\n", otlp.endpoint());
    let launch = Launch { env: vec![("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into())], ..Launch::default() };
    let gw = Gateway::launch(
        &config(&[("up", &up.base_url(), "keys = [\"k\"]\nmodels = [\"gpt-4o-mini\"]")], &extra),
        launch,
    );
    let key = gw.key(&[]);
    let (trace_id, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let resp = gw
        .post("/v1/chat/completions", &key, &chat("gpt-4o-mini", true))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .send()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&resp.bytes().await.unwrap()).contains("[DONE]"));

    let want = ["POST /v1/chat/completions", "auth", "limits", "reserve", "select", "convert", "upstream", "settle"];
    let spans = otlp
        .wait_for(Duration::from_secs(15), |s| {
            want.iter().all(|w| s.iter().any(|x| x.name == *w && x.trace_id == trace_id))
        })
        .await;
    let ours: Vec<_> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let root = ours.iter().find(|s| s.name == "POST /v1/chat/completions").expect("the request span, named by route");
    assert_eq!(root.parent_id, caller_span, "the caller's span is the parent");
    assert_eq!(root.service, "gw-under-test");
    for step in &want[1..] {
        let s = ours.iter().find(|s| s.name == *step).unwrap_or_else(|| panic!("no {step} span: {ours:#?}"));
        assert_eq!(s.parent_id, root.span_id, "{step} is a child of the request");
        assert!(s.start_ns >= root.start_ns && s.start_ns <= root.end_ns, "{step} starts within the request");
        if *step != "settle" {
            assert!(s.end_ns <= root.end_ns, "{step} ends within the request");
        }
    }
    let upstream = ours.iter().find(|s| s.name == "upstream").unwrap();
    assert_eq!(upstream.attr("channel"), Some("up"));
    assert_eq!(upstream.attr("outcome"), Some("ok"));
    // Settling runs off the response path: it starts as the stream ends, inside the request, and may end after it.
    let settle = ours.iter().find(|s| s.name == "settle").unwrap();
    assert!(settle.start_ns >= upstream.end_ns, "the request lasts until its stream ended");
    assert_eq!(
        up.traceparents(),
        vec![format!("00-{trace_id}-{}-01", upstream.span_id)],
        "the upstream got the attempt's span as its parent"
    );

    // Without a caller's context: a trace of its own.
    gw.post("/v1/chat/completions", &key, &chat("gpt-4o-mini", false)).send().await.unwrap();
    let spans = otlp
        .wait_for(Duration::from_secs(15), |s| {
            s.iter().any(|x| x.name == "POST /v1/chat/completions" && x.trace_id != trace_id)
        })
        .await;
    let fresh = spans.iter().find(|x| x.name == "POST /v1/chat/completions" && x.trace_id != trace_id).unwrap();
    assert!(fresh.parent_id.is_empty(), "a root: {fresh:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_traceparent_reaches_the_upstream_with_tracing_off() {
    let up = Mock::start("up").await;
    let gw = Gateway::start(&config(&[("up", &up.base_url(), "models = [\"gpt-4o-mini\"]")], ""));
    let key = gw.key(&[]);
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let resp = gw.post("/v1/chat/completions", &key, &chat("gpt-4o-mini", false)).header("traceparent", tp);
    assert_eq!(resp.send().await.unwrap().status(), 200);
    assert_eq!(up.traceparents(), vec![tp.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    let up = Mock::start("up").await;
    let channel = [("up", up.base_url(), "models = [\"gpt-4o-mini\"]")];
    let channels: Vec<_> = channel.iter().map(|(n, u, m)| (*n, u.as_str(), *m)).collect();
    let status = |gw: &Gateway, key: &str, header: (&'static str, &'static str)| {
        let req = gw.post("/v1/chat/completions", key, &chat("gpt-4o-mini", false)).header(header.0, header.1);
        async move { req.send().await.unwrap().status().as_u16() }
    };

    // No trusted proxies: the header is the caller's word, and ignored.
    let direct = Gateway::start(&config(&channels, ""));
    let key = direct.key(&["--ips", "198.51.100.0/24"]);
    assert_eq!(status(&direct, &key, ("x-forwarded-for", "198.51.100.7")).await, 403);

    let proxied = Gateway::start(&config(&channels, "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n"));
    let key = proxied.key(&["--ips", "198.51.100.0/24"]);
    assert_eq!(status(&proxied, &key, ("x-forwarded-for", "198.51.100.7")).await, 200);
    assert_eq!(
        status(&proxied, &key, ("x-forwarded-for", "198.51.100.7, 127.0.0.1")).await,
        200,
        "hops through trusted proxies"
    );
    assert_eq!(
        status(&proxied, &key, ("x-forwarded-for", "198.51.100.7, 203.0.113.5")).await,
        403,
        "the nearest untrusted hop counts"
    );
    assert_eq!(status(&proxied, &key, ("forwarded", "for=198.51.100.7;proto=https")).await, 200);
    assert_eq!(status(&proxied, &key, ("forwarded", "for=\"[2001:db8::1]:443\"")).await, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_16_streams_loses_none() {
    let up = Mock::start("up").await;
    up.set_stream(StreamShape {
        pieces: vec!["x".into(); 12],
        interval: Duration::from_millis(100),
        ..Default::default()
    });
    let extra = format!("{STRICT_PRICES}\n[server]\nshutdown_timeout_ms = 20000\n\n[prices.\"m-*\"]\ninput = 1\noutput = 1\nper_request = 0.01\n");
    let mut gw = Gateway::start(&config(&[("up", &up.base_url(), "models = [\"m-stream\"]")], &extra));
    let (_, user) =
        gw.admin(reqwest::Method::POST, "/api/admin/users", Some(json!({ "name": "s", "quota": 10_000_000 }))).await;
    let key = gw.key(&["--user", "s"]);
    let mut streams = vec![];
    for _ in 0..16 {
        let resp = gw.post("/v1/chat/completions", &key, &chat("m-stream", true)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        streams.push(resp);
    }
    let readers =
        streams.into_iter().map(|r| async move { String::from_utf8_lossy(&r.bytes().await.unwrap()).to_string() });
    let readers = tokio::spawn(join_all(readers));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let took = gw.terminate(Duration::from_secs(30)).expect("exits after SIGTERM once the streams end");
    let bodies = readers.await.unwrap();
    println!("SIGTERM during 16 streams of ~1.2 s: exited after {took:?}");
    for b in &bodies {
        assert!(b.contains("[DONE]") && b.matches("\"x\"").count() == 12, "a stream was cut: {b}");
    }
    gw.restart();
    let rows = gw.usage_rows(16).await;
    assert_eq!(rows.len(), 16, "every stream left its usage row");
    let charged: i64 = rows.iter().map(|r| r["cost"].as_i64().unwrap()).sum();
    assert!(rows.iter().all(|r| r["cost"].as_i64().unwrap() >= 10_000 && r["status"] == 200), "{rows:?}");
    let (_, after) = gw.admin(reqwest::Method::GET, &format!("/api/admin/users/{}", user["id"]), None).await;
    assert_eq!(after["quota"], 10_000_000 - charged, "the balance moved by exactly the usage log");
    let (_, open) = gw.admin(reqwest::Method::GET, "/api/admin/reservations?state=reserved", None).await;
    assert_eq!(open["total"], 0, "{open}");
}
