//! The emulated AWS stack for end-to-end tests: DynamoDB tables and SQS
//! queues (with a dead-letter queue) on the moto emulator `.ci/run` starts,
//! Redis for hot state, and the Lambda functions' cold start over them.
//! Events are the real payloads AWS sends: Function URL requests (payload
//! format 2.0, as in the Lambda developer guide's "Invoking Lambda function
//! URLs") and SQS batches (`Records` of the "Using Lambda with Amazon SQS" example).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use base64::Engine;
use bytes::Bytes;
use http_body_util::BodyExt;
use oblivious_aws::{AwsClient, DynamoStore, Service, SqsQueue};
use oblivious_lambda::{Init, Settings};
use oblivious_native::{HttpUpstream, SystemClock};
use oblivious_ports::{Sealer, Store};
use serde_json::{json, Value};
use tower::ServiceExt;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The sealing secret of every test stack.
const SECRET: [u8; 32] = [42; 32];

/// How many receives before SQS moves a message to the dead-letter queue.
pub const MAX_RECEIVES: u32 = 3;

/// The emulator: `OBLIVIOUS_TEST_AWS`, else the one `.ci/run` starts on port 5400.
pub fn endpoint() -> String {
    std::env::var("OBLIVIOUS_TEST_AWS").unwrap_or_else(|_| "http://127.0.0.1:5400".into())
}

/// The AWS client of the tests (the one the functions use, pointed at the emulator).
pub type Aws = AwsClient<HttpUpstream, SystemClock>;

pub fn client() -> Aws {
    AwsClient::emulator(HttpUpstream::new().expect("http client"), SystemClock, endpoint())
}

/// An SQS call the adapter does not make itself (queue admin, raw messages).
pub async fn sqs(aws: &Aws, operation: &str, body: Value) -> Value {
    aws.call(Service::Sqs, operation, &body).await.unwrap_or_else(|e| panic!("SQS {operation}: {e}"))
}

pub struct Stack {
    pub prefix: String,
    pub store: DynamoStore<HttpUpstream, SystemClock>,
    pub aws: Aws,
    pub queue: SqsQueue<HttpUpstream, SystemClock>,
    pub dlq_url: String,
    pub settings: Settings,
    pub init: Init,
}

/// Tables, queues and a cold-started function set of their own, configured by `config` (TOML).
pub async fn stack(config: &str) -> Stack {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let prefix = format!("e2e{}-{n}-", std::process::id());
    let aws = client();
    let store = DynamoStore::new(aws.clone(), prefix.clone(), Sealer::new(&SECRET));
    store.create_tables().await.expect("tables (is the emulator running? see .ci/run)");

    let dlq = sqs(&aws, "CreateQueue", json!({ "QueueName": format!("{prefix}usage-dlq") })).await;
    let dlq_url = dlq["QueueUrl"].as_str().expect("dlq url").to_string();
    let attrs = sqs(&aws, "GetQueueAttributes", json!({ "QueueUrl": dlq_url, "AttributeNames": ["QueueArn"] })).await;
    let dlq_arn = attrs["Attributes"]["QueueArn"].as_str().expect("dlq arn");
    let redrive = json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVES.to_string() }).to_string();
    let queue = sqs(
        &aws,
        "CreateQueue",
        json!({ "QueueName": format!("{prefix}usage"), "Attributes": { "RedrivePolicy": redrive } }),
    )
    .await;
    let queue_url = queue["QueueUrl"].as_str().expect("queue url").to_string();

    let settings = Settings {
        table_prefix: prefix.clone(),
        usage_queue_url: queue_url.clone(),
        redis_url: Some(crate::gateway::redis_url()),
        hot_prefix: format!("{prefix}:"),
        secret_key: Some(base64::engine::general_purpose::STANDARD.encode(SECRET)),
        config_toml: Some(config.to_string()),
        ..Settings::default()
    };
    let init = cold_start(&settings).await;
    oblivious_admin::bootstrap::ensure_basics(&init.relay.ports).await.expect("basics");
    oblivious_lambda::scheduled::sync_config(&init).await.expect("config sync");
    Stack { prefix, store, queue: SqsQueue::new(aws.clone(), queue_url), aws, dlq_url, settings, init }
}

/// A function's cold start against the emulator.
pub async fn cold_start(settings: &Settings) -> Init {
    oblivious_lambda::init_with(settings, client(), Instant::now()).await.expect("cold start")
}

/// A Function URL invocation event (payload format 2.0).
pub fn function_url_event(method: &str, path_and_query: &str, headers: &[(&str, &str)], body: &str) -> String {
    event_v2(method, path_and_query, headers, body, "$default", "abcdefghij.lambda-url.us-east-1.on.aws")
}

/// An HTTP API (API Gateway v2) invocation event, payload format 2.0, for
/// the route `route_key` matched (`ANY /api/me/{proxy+}`, `$default`): the
/// shape of "Working with AWS Lambda proxy integrations for HTTP APIs", with
/// the `x-forwarded-*` headers API Gateway adds.
pub fn http_api_event(
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &str,
    route_key: &str,
) -> String {
    let mut all = vec![("x-forwarded-for", "203.0.113.9"), ("x-forwarded-port", "443")];
    all.extend_from_slice(headers);
    event_v2(method, path_and_query, &all, body, route_key, "abcdefghij.execute-api.us-east-1.amazonaws.com")
}

/// The variables of `route_key` (`{id}`, `{proxy+}`) as `path` binds them.
fn path_parameters(route_key: &str, path: &str) -> Value {
    let Some((_, template)) = route_key.split_once(' ') else { return Value::Null };
    let mut params = serde_json::Map::new();
    let given: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for (i, seg) in template.trim_start_matches('/').split('/').enumerate() {
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            match name.strip_suffix('+') {
                Some(name) => params.insert(name.into(), json!(given[i.min(given.len())..].join("/"))),
                None => params.insert(name.into(), json!(given.get(i).copied().unwrap_or_default())),
            };
        }
    }
    if params.is_empty() {
        Value::Null
    } else {
        Value::Object(params)
    }
}

fn event_v2(
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &str,
    route_key: &str,
    domain: &str,
) -> String {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let mut h = serde_json::Map::new();
    h.insert("host".into(), json!(domain));
    h.insert("x-forwarded-proto".into(), json!("https"));
    h.insert("user-agent".into(), json!("oblivious-e2e"));
    for (k, v) in headers {
        h.insert(k.to_ascii_lowercase(), json!(v));
    }
    let prefix = domain.split('.').next().unwrap_or_default();
    json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": query,
        "headers": h,
        "queryStringParameters": if query.is_empty() { Value::Null } else {
            Value::Object(query.split('&').filter_map(|p| p.split_once('=')).map(|(k, v)| (k.to_string(), json!(v))).collect())
        },
        "pathParameters": path_parameters(route_key, path),
        "requestContext": {
            "accountId": "anonymous",
            "apiId": prefix,
            "domainName": domain,
            "domainPrefix": prefix,
            "http": { "method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9", "userAgent": "oblivious-e2e" },
            "requestId": format!("req-{}", SEQ.fetch_add(1, Ordering::Relaxed)),
            "routeKey": route_key,
            "stage": "$default",
            "time": "24/Nov/2026:10:00:00 +0000",
            "timeEpoch": 1_795_514_400_000i64
        },
        "body": body,
        "isBase64Encoded": false
    })
    .to_string()
}

/// The HTTP API's routes as `terraform/lambda.tf` declares them
/// (`local.api_routes`: route key → function), parsed with python-hcl2
/// (`tests/terraform/dump.py`, the venv `.ci/run` fills).
pub fn terraform_api_routes() -> Vec<(String, String)> {
    let root = crate::gateway::repo_root();
    let python = std::env::var("OBLIVIOUS_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join(".venv/bin/python"));
    let out = std::process::Command::new(&python)
        .arg(root.join("tests/terraform/dump.py"))
        .arg(root.join("terraform"))
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (python with python-hcl2, see .ci/run)", python.display()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tf: Value = serde_json::from_slice(&out.stdout).expect("dump.py prints JSON");
    let routes = tf["locals"]["api_routes"].as_object().expect("local.api_routes in terraform/");
    routes.iter().map(|(k, v)| (k.clone(), v.as_str().expect("a function name").to_string())).collect()
}

/// The route an HTTP API picks for a request ("Routing API requests" in
/// the HTTP API guide): a full match of the path before one through a greedy
/// `{proxy+}`, `$default` when nothing matches; among matches, the one with
/// more literal segments (`/api/me/keys/{proxy+}` over `/api/me/{proxy+}`),
/// then fewer path variables, then a named method over `ANY`.
pub fn pick_route<'a>(routes: &'a [(String, String)], method: &str, path: &str) -> Option<&'a (String, String)> {
    let given: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let rank = |route_key: &str| {
        let (m, template) = route_key.split_once(' ')?;
        if m != "ANY" && !m.eq_ignore_ascii_case(method) {
            return None;
        }
        let segs: Vec<&str> = template.trim_start_matches('/').split('/').collect();
        let (mut literal, mut vars, mut greedy) = (0usize, 0usize, false);
        for (i, seg) in segs.iter().enumerate() {
            if seg.starts_with('{') && seg.ends_with("+}") {
                // Greedy: the last segment, one or more of the path's.
                if i != segs.len() - 1 || given.len() <= i || given[i..].iter().any(|g| g.is_empty()) {
                    return None;
                }
                greedy = true;
                break;
            }
            let g = given.get(i)?;
            if seg.starts_with('{') {
                if g.is_empty() {
                    return None;
                }
                vars += 1;
            } else if seg != g {
                return None;
            } else {
                literal += 1;
            }
        }
        if !greedy && segs.len() != given.len() {
            return None;
        }
        Some((greedy, std::cmp::Reverse(literal), vars, m == "ANY"))
    };
    routes
        .iter()
        .filter_map(|r| rank(&r.0).map(|k| (k, r)))
        .min_by_key(|(k, _)| *k)
        .map(|(_, r)| r)
        .or_else(|| routes.iter().find(|r| r.0 == "$default"))
}

/// One HTTP API in front of several functions' apps, routed as Terraform routes it.
pub struct HttpApi {
    pub routes: Vec<(String, String)>,
    pub apps: std::collections::BTreeMap<String, Router>,
}

/// What the HTTP API answered, and which route and function answered it.
pub struct Routed {
    pub status: u16,
    pub body: Value,
    pub route_key: String,
    pub function: String,
}

impl HttpApi {
    /// The routes of `terraform/`, each function's app by name.
    pub fn new(apps: Vec<(&str, Router)>) -> HttpApi {
        let apps = apps.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        HttpApi { routes: terraform_api_routes(), apps }
    }

    /// Which function a request reaches, by route.
    pub fn function_for(&self, method: &str, path: &str) -> String {
        pick_route(&self.routes, method, path).map(|r| r.1.clone()).unwrap_or_default()
    }

    /// A JSON request (`bearer`: an access token or API key) through the route it matches.
    pub async fn call(&self, method: &str, path: &str, bearer: Option<&str>, body: Option<Value>) -> Routed {
        let (route_key, function) = pick_route(&self.routes, method, path.split('?').next().unwrap_or(path))
            .cloned()
            .unwrap_or_else(|| panic!("no route for {method} {path} and no $default"));
        let app = self.apps.get(&function).unwrap_or_else(|| panic!("route {route_key} goes to `{function}`"));
        let auth = bearer.map(|b| format!("Bearer {b}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let a = invoke(app, &http_api_event(method, path, &headers, &body, &route_key)).await;
        let text = a.text();
        let body = if text.is_empty() { Value::Null } else { a.json() };
        Routed { status: a.status, body, route_key, function }
    }
}

/// An answered invocation: status, headers, and the body's frames as they came.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub frames: Vec<Bytes>,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.frames.concat()).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text()).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Feeds an event through `lambda_http`'s parser into a function's app and reads the whole answer.
pub async fn invoke(app: &Router, event: &str) -> Answer {
    let req = lambda_http::request::from_str(event).expect("a valid Function URL event");
    let resp = app.clone().oneshot(req.map(axum::body::Body::new)).await.expect("infallible");
    let (parts, mut body) = resp.into_parts();
    let mut frames = Vec::new();
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(30), body.frame()).await.expect("body stalled") {
        if let Ok(data) = frame.expect("body frame").into_data() {
            frames.push(data);
        }
    }
    Answer { status: parts.status.as_u16(), headers: parts.headers, frames }
}

/// What one pass of the SQS event source mapping did.
#[derive(Debug, Default)]
pub struct Drained {
    pub batches: usize,
    pub delivered: usize,
    pub failed: usize,
}

/// Plays the SQS event source mapping: receives batches (visible again after
/// `visibility`), invokes the consumer with them, deletes what it did not
/// report as failed; stops once a receive comes back empty.
pub async fn drain(stack: &Stack, consumer: &Init, visibility: Duration) -> Drained {
    let mut d = Drained::default();
    loop {
        let got = stack.queue.receive(10, Duration::from_secs(0), visibility).await.expect("receive");
        if got.is_empty() {
            return d;
        }
        d.batches += 1;
        d.delivered += got.len();
        let records: Vec<Value> = got
            .iter()
            .map(|m| {
                json!({
                    "messageId": m.message_id,
                    "receiptHandle": m.receipt,
                    "body": m.body,
                    "attributes": {
                        "ApproximateReceiveCount": m.receive_count.to_string(),
                        "SentTimestamp": "1795514400000",
                        "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                        "ApproximateFirstReceiveTimestamp": "1795514400001"
                    },
                    "messageAttributes": {},
                    "md5OfBody": "",
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:usage",
                    "awsRegion": "us-east-1"
                })
            })
            .collect();
        let event: aws_lambda_events::event::sqs::SqsEvent =
            serde_json::from_value(json!({ "Records": records })).expect("SQS event");
        let answer = oblivious_lambda::jobs::handle(consumer, event).await;
        let failed: Vec<&str> = answer.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        d.failed += failed.len();
        let done: Vec<String> =
            got.iter().filter(|m| !failed.contains(&m.message_id.as_str())).map(|m| m.receipt.clone()).collect();
        stack.queue.delete(&done).await.expect("delete");
        if !failed.is_empty() {
            // Failed messages come back once their visibility timeout passes (with a margin).
            tokio::time::sleep(visibility + Duration::from_millis(500)).await;
        }
    }
}

/// Messages waiting in a queue (visible and in flight).
pub async fn depth(aws: &Aws, url: &str) -> u64 {
    let names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"];
    let out = sqs(aws, "GetQueueAttributes", json!({ "QueueUrl": url, "AttributeNames": names })).await;
    names.iter().filter_map(|k| out["Attributes"][k].as_str().and_then(|v| v.parse::<u64>().ok())).sum()
}

/// A process killed when dropped.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `cargo lambda watch --only-lambda-apis` (from the venv `.ci/run` fills) on a
/// free port: AWS's Lambda runtime API and Function URL front, without
/// building anything. Returns the process and its port.
pub fn lambda_runtime_api() -> (Child, u16) {
    let bin = std::env::var("OBLIVIOUS_CARGO_LAMBDA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| crate::gateway::repo_root().join(".venv/bin/cargo-lambda"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let child = std::process::Command::new(&bin)
        .args(["lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P", &port.to_string()])
        // It stops scheduling invocations when its stdin closes.
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (pip install cargo-lambda, see .ci/run)", bin.display()));
    let child = Child(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "cargo lambda did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, port)
}

/// Runs one of the `oblivious-lambda` binaries against a runtime API, with a
/// stack's settings in its environment, as Lambda would.
pub fn run_function(name: &str, runtime_port: u16, settings: &Settings) -> Child {
    let mut cmd = function_command(name, runtime_port, settings);
    cmd.stdout(std::process::Stdio::null());
    Child(cmd.spawn().expect("function binary"))
}

/// The command [`run_function`] spawns, for a caller to add to (environment, stdout).
pub fn function_command(name: &str, runtime_port: u16, settings: &Settings) -> std::process::Command {
    let bin = crate::gateway::repo_root().join("target/debug").join(name);
    assert!(bin.exists(), "{} is missing: run `cargo build -p oblivious-lambda`", bin.display());
    let mut cmd = std::process::Command::new(bin);
    cmd.env("AWS_LAMBDA_RUNTIME_API", format!("http://127.0.0.1:{runtime_port}/.rt"))
        .env("AWS_LAMBDA_FUNCTION_NAME", "_")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_ENDPOINT_URL", endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env(oblivious_lambda::env::TABLE_PREFIX, &settings.table_prefix)
        .env(oblivious_lambda::env::USAGE_QUEUE_URL, &settings.usage_queue_url)
        .env(oblivious_lambda::env::HOT_PREFIX, &settings.hot_prefix)
        .env(oblivious_lambda::env::REDIS_URL, settings.redis_url.as_deref().unwrap_or_default())
        .env(oblivious_ports::SECRET_ENV, settings.secret_key.as_deref().unwrap_or_default())
        .env(oblivious_lambda::env::CONFIG_TOML, settings.config_toml.as_deref().unwrap_or_default());
    cmd
}

/// An admin key, made the way the `setup` binary makes it.
pub async fn admin_key(st: &Stack) -> String {
    let ports = &st.init.relay.ports;
    let admin = st.store.user_by_name("admin").await.unwrap().unwrap();
    let req = oblivious_admin::CreateToken { name: "admin".into(), ..Default::default() };
    oblivious_admin::create_token(&ports.store, &ports.ids, &ports.clock, req, admin.id).await.unwrap().1
}

/// Calls the admin function with a Function URL event; returns status and JSON.
pub async fn admin(st: &Stack, key: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    let app = oblivious_lambda::http::admin_app(&st.init);
    let auth = format!("Bearer {key}");
    let ev = function_url_event(
        method,
        path,
        &[("authorization", &auth), ("content-type", "application/json")],
        &body.to_string(),
    );
    let a = invoke(&app, &ev).await;
    (a.status, a.json())
}

/// A user with `quota` and a key; returns (user id, key).
pub async fn customer(st: &Stack, quota: i64) -> (i64, String) {
    let root = admin_key(st).await;
    let (status, user) = admin(st, &root, "POST", "/api/admin/users", json!({ "name": "carol", "quota": quota })).await;
    assert_eq!(status, 201, "{user}");
    let uid = user["id"].as_i64().unwrap();
    let (status, tok) =
        admin(st, &root, "POST", "/api/admin/tokens", json!({ "name": "carol-key", "user_id": uid })).await;
    assert_eq!(status, 201, "{tok}");
    (uid, tok["key"].as_str().unwrap().to_string())
}
