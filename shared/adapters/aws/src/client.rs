//! One signed call to an AWS JSON API (DynamoDB, SQS) over the [`Upstream`]
//! port: POST `/` with `x-amz-target: <prefix>.<Operation>`, signed with
//! SigV4 at the [`Clock`]'s time. No SDK, so the same code runs natively and
//! on the edge (wasm32, the Workers fetch API behind `Upstream`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use oblivious_ports::{Clock, Upstream, UpstreamRequest};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Access key, secret and (for temporary credentials, as Lambda's role gives) the session token.
#[derive(Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

/// The secret and the token stay out of logs.
impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

/// Credentials from the standard variables (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), which Lambda sets for the
/// function's role. On wasm32 there is no process environment: always an error.
pub fn credentials_from_env() -> Result<AwsCredentials, String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (Some(access_key_id), Some(secret_access_key)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"))
    else {
        return Err("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones)".into());
    };
    Ok(AwsCredentials { access_key_id, secret_access_key, session_token: var("AWS_SESSION_TOKEN") })
}

/// The services this crate calls: their signing name and target prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    DynamoDb,
    Sqs,
}

impl Service {
    /// The SigV4 service name, also the first label of its regional host.
    fn name(self) -> &'static str {
        match self {
            Service::DynamoDb => "dynamodb",
            Service::Sqs => "sqs",
        }
    }

    fn target_prefix(self) -> &'static str {
        match self {
            Service::DynamoDb => "DynamoDB_20120810",
            Service::Sqs => "AmazonSQS",
        }
    }
}

/// A call that failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum AwsError {
    /// The service refused: its error code (`__type` without the namespace,
    /// e.g. `TransactionCanceledException`), message, and the whole answer.
    #[error("{service:?} {code}: {message}")]
    Service { service: Service, status: u16, code: String, message: String, body: Value },
    /// No usable answer: connection, timeout, a body that broke off or is not JSON.
    #[error("{0}")]
    Transport(String),
}

impl AwsError {
    /// The service's error code, if it answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Service { code, .. } => Some(code),
            AwsError::Transport(_) => None,
        }
    }

    /// Worth another attempt: no answer, a server-side failure, or throttling.
    fn transient(&self) -> bool {
        match self {
            AwsError::Transport(_) => true,
            AwsError::Service { status, code, .. } => *status >= 500 || THROTTLING.contains(&code.as_str()),
        }
    }
}

/// Error codes the SDKs retry as throttling (their standard retry strategy's list, the ones these services send).
const THROTTLING: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "LimitExceededException",
    "AWS.SimpleQueueService.RequestThrottled",
];

/// Attempts per call (the first and three retries) for transient failures.
const ATTEMPTS: u32 = 4;

struct Inner<U, C> {
    upstream: U,
    clock: C,
    credentials: AwsCredentials,
    region: String,
    dynamodb_url: String,
    sqs_url: String,
}

/// Signed calls to DynamoDB and SQS in one region. Cheap to clone.
pub struct AwsClient<U, C> {
    inner: Arc<Inner<U, C>>,
}

impl<U, C> Clone for AwsClient<U, C> {
    fn clone(&self) -> Self {
        AwsClient { inner: self.inner.clone() }
    }
}

/// The code of an error type: `__type` is `namespace#Code`, sometimes with `:uri` after.
fn error_code(raw: &str) -> &str {
    let code = raw.rsplit('#').next().unwrap_or(raw);
    code.split(':').next().unwrap_or(code)
}

/// `url` with its path `/` (the JSON APIs' only path).
fn root(url: &str) -> String {
    format!("{}/", url.trim_end_matches('/'))
}

impl<U: Upstream, C: Clock> AwsClient<U, C> {
    /// `endpoint`: None → https://dynamodb.{region}.amazonaws.com / https://sqs.{region}.amazonaws.com;
    /// Some(url) → that URL for every service (an emulator such as moto on 127.0.0.1).
    pub fn new(
        upstream: U,
        clock: C,
        credentials: AwsCredentials,
        region: impl Into<String>,
        endpoint: Option<String>,
    ) -> Self {
        let region = region.into();
        let url = |service: Service| match &endpoint {
            Some(url) => root(url),
            None => format!("https://{}.{region}.amazonaws.com/", service.name()),
        };
        let (dynamodb_url, sqs_url) = (url(Service::DynamoDb), url(Service::Sqs));
        AwsClient { inner: Arc::new(Inner { upstream, clock, credentials, region, dynamodb_url, sqs_url }) }
    }

    /// A client for an emulator at `endpoint` (tests, local runs): fixed dummy
    /// credentials and region, nothing read from the environment.
    pub fn emulator(upstream: U, clock: C, endpoint: impl Into<String>) -> Self {
        let credentials =
            AwsCredentials { access_key_id: "test".into(), secret_access_key: "test".into(), session_token: None };
        Self::new(upstream, clock, credentials, "us-east-1", Some(endpoint.into()))
    }

    pub fn upstream(&self) -> &U {
        &self.inner.upstream
    }

    pub fn clock(&self) -> &C {
        &self.inner.clock
    }

    pub fn region(&self) -> &str {
        &self.inner.region
    }

    /// Calls `operation` of `service` with a JSON `body` and returns the JSON
    /// answer; transient failures are retried with backoff, as the SDKs do.
    pub async fn call(&self, service: Service, operation: &str, body: &Value) -> Result<Value, AwsError> {
        let body = Bytes::from(serde_json::to_vec(body).map_err(|e| AwsError::Transport(e.to_string()))?);
        let mut attempt = 0;
        loop {
            match self.once(service, operation, body.clone()).await {
                Err(e) if e.transient() && attempt + 1 < ATTEMPTS => {
                    tracing::debug!(operation, attempt, error = %e, "retrying an AWS call");
                    // 50 ms doubling, plus up to as much again of jitter.
                    let base = 50u64 << attempt;
                    self.inner.clock.sleep(Duration::from_millis(base + self.jitter(base))).await;
                    attempt += 1;
                }
                answer => return answer,
            }
        }
    }

    /// [`call`](Self::call), the answer read as `T`.
    pub(crate) async fn call_as<T: DeserializeOwned>(
        &self,
        service: Service,
        operation: &str,
        body: &Value,
    ) -> Result<T, AwsError> {
        let answer = self.call(service, operation, body).await?;
        serde_json::from_value(answer).map_err(|e| AwsError::Transport(format!("unexpected {operation} answer: {e}")))
    }

    /// A pseudo-random number below `bound` (≥ 1) from the clock's
    /// microseconds, mixed: spreads retries apart without an RNG (none on wasm32 without JS glue).
    pub(crate) fn jitter(&self, bound: u64) -> u64 {
        let mut z = (self.inner.clock.now_us() as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % bound.max(1)
    }

    async fn once(&self, service: Service, operation: &str, body: Bytes) -> Result<Value, AwsError> {
        let inner = &self.inner;
        let url = match service {
            Service::DynamoDb => &inner.dynamodb_url,
            Service::Sqs => &inner.sqs_url,
        };
        let signed = [
            ("content-type".to_string(), "application/x-amz-json-1.0".to_string()),
            ("x-amz-target".to_string(), format!("{}.{operation}", service.target_prefix())),
        ];
        let auth = oblivious_core::sign::sigv4(
            "POST",
            url,
            &signed,
            &body,
            &inner.credentials.access_key_id,
            &inner.credentials.secret_access_key,
            inner.credentials.session_token.as_deref(),
            &inner.region,
            service.name(),
            inner.clock.now_us() / 1_000_000,
        );
        let mut headers = HeaderMap::new();
        for (k, v) in signed.into_iter().chain(auth) {
            let name = HeaderName::try_from(k).map_err(|e| AwsError::Transport(e.to_string()))?;
            let value = HeaderValue::try_from(v).map_err(|e| AwsError::Transport(e.to_string()))?;
            headers.insert(name, value);
        }
        let req = UpstreamRequest { method: Method::POST, url: url.clone(), headers, body };
        let resp = inner.upstream.send(req).await.map_err(|e| AwsError::Transport(format!("{operation}: {e}")))?;
        let mut bytes = Vec::new();
        let mut stream = resp.body;
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.map_err(|e| AwsError::Transport(format!("{operation}: {e}")))?);
        }
        let json = || serde_json::from_slice::<Value>(&bytes);
        if (200..300).contains(&resp.status) {
            // An empty answer is an empty object (nothing to report).
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(Value::Object(Default::default()));
            }
            return json().map_err(|e| AwsError::Transport(format!("{operation}: the answer is not JSON: {e}")));
        }
        let body = json().unwrap_or(Value::Null);
        let text = |k: &str| body.get(k).and_then(Value::as_str);
        // Some answers carry the code only in a header.
        let raw = text("__type")
            .map(str::to_string)
            .or_else(|| resp.headers.get("x-amzn-errortype").and_then(|v| v.to_str().ok()).map(str::to_string))
            .unwrap_or_else(|| format!("HTTP {}", resp.status));
        let code = error_code(&raw).to_string();
        let message = text("message")
            .or_else(|| text("Message"))
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(300).collect());
        Err(AwsError::Service { service, status: resp.status, code, message, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_lose_namespace_and_uri() {
        assert_eq!(
            error_code("com.amazonaws.dynamodb.v20120810#TransactionCanceledException"),
            "TransactionCanceledException"
        );
        assert_eq!(error_code("ThrottlingException:http://internal.amazon.com/coral/"), "ThrottlingException");
        assert_eq!(error_code("com.amazonaws.sqs#QueueDoesNotExist"), "QueueDoesNotExist");
    }

    #[test]
    fn transient_means_no_answer_a_server_failure_or_throttling() {
        let refused = |status, code: &str| AwsError::Service {
            service: Service::DynamoDb,
            status,
            code: code.into(),
            message: String::new(),
            body: Value::Null,
        };
        assert!(AwsError::Transport("reset".into()).transient());
        assert!(refused(500, "InternalServerError").transient());
        assert!(refused(400, "ProvisionedThroughputExceededException").transient());
        assert!(refused(400, "ThrottlingException").transient());
        assert!(!refused(400, "ConditionalCheckFailedException").transient());
        assert!(!refused(400, "TransactionCanceledException").transient());
    }

    #[test]
    fn endpoints_are_regional_unless_overridden() {
        assert_eq!(root("http://127.0.0.1:5400"), "http://127.0.0.1:5400/");
        assert_eq!(root("http://127.0.0.1:5400/"), "http://127.0.0.1:5400/");
    }
}
