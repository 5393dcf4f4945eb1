//! The AWS platform: DynamoDB store, SQS queue, Redis hot state, reqwest
//! upstream. Built once per cold start. DynamoDB and SQS are called over their
//! JSON APIs through the reqwest upstream (the adapter the edge shares); the
//! AWS SDK remains only for SSM parameters, loaded when one is named.

use std::sync::Arc;
use std::time::Instant;

use oblivious_aws::{AwsClient, DynamoStore, SqsQueue};
use oblivious_core::config::{self, Config};
use oblivious_native::{AnyMailer, HttpUpstream, RandomIds, SystemClock};
use oblivious_ports::{Platform, Ports, Sealer};
use oblivious_redis::RedisHot;
use oblivious_relay::Relay;

use crate::env::Settings;
use crate::tasks::TrackedTasks;

pub struct Aws;

impl Platform for Aws {
    type Store = DynamoStore<HttpUpstream, SystemClock>;
    type Hot = RedisHot;
    type Mailer = AnyMailer;
    type Queue = SqsQueue<HttpUpstream, SystemClock>;
    type Upstream = HttpUpstream;
    type Clock = SystemClock;
    type Ids = RandomIds;
    type Tasks = TrackedTasks;
}

/// Signed DynamoDB and SQS calls over the reqwest upstream.
pub type AwsApi = AwsClient<HttpUpstream, SystemClock>;

/// The AWS client the environment describes: credentials from the variables
/// Lambda sets for the role (`AWS_ACCESS_KEY_ID`, …), the region, and the
/// endpoint override (`AWS_ENDPOINT_URL`, an emulator) when set.
pub fn aws_client(s: &Settings) -> Result<AwsApi, String> {
    let credentials = oblivious_aws::credentials_from_env()?;
    let region = s.aws_region.clone().ok_or("set AWS_REGION (Lambda sets it)")?;
    Ok(AwsClient::new(HttpUpstream::new()?, SystemClock, credentials, region, s.aws_endpoint.clone()))
}

/// What a cold start builds.
pub struct Init {
    pub relay: Arc<Relay<Aws>>,
    pub config: Config,
    pub tasks: TrackedTasks,
    /// How long the cold start took, ms.
    pub init_ms: u128,
}

/// A value given directly, else read (decrypted) from the named SSM parameter.
async fn value_or_param(
    ssm: Option<&aws_sdk_ssm::Client>,
    value: &Option<String>,
    param: &Option<String>,
) -> Result<Option<String>, String> {
    if let Some(v) = value {
        return Ok(Some(v.clone()));
    }
    let (Some(name), Some(ssm)) = (param, ssm) else { return Ok(None) };
    let out = ssm
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| format!("SSM parameter {name}: {}", aws_sdk_ssm::error::DisplayErrorContext(e)))?;
    Ok(out.parameter.and_then(|p| p.value))
}

/// Connects every port (the AWS client, Redis) and loads the relay's first snapshot.
pub async fn init(s: &Settings) -> Result<Init, String> {
    let started = Instant::now();
    init_with(s, aws_client(s)?, started).await
}

/// [`init`] with a given AWS client (tests point it at an emulator).
pub async fn init_with(s: &Settings, aws: AwsApi, started: Instant) -> Result<Init, String> {
    // The SDK (region, credentials, `AWS_ENDPOINT_URL` from the environment) only when a secret is named by parameter.
    let named =
        [(&s.secret_key, &s.secret_key_param), (&s.config_toml, &s.config_param), (&s.redis_url, &s.redis_url_param)];
    let ssm = if named.iter().any(|(value, param)| value.is_none() && param.is_some()) {
        Some(aws_sdk_ssm::Client::new(&aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await))
    } else {
        None
    };
    let (secret, config_text, redis_url) = tokio::try_join!(
        value_or_param(ssm.as_ref(), &s.secret_key, &s.secret_key_param),
        value_or_param(ssm.as_ref(), &s.config_toml, &s.config_param),
        value_or_param(ssm.as_ref(), &s.redis_url, &s.redis_url_param),
    )?;
    let secret = secret.ok_or("set OBLIVIOUS_SECRET_KEY or OBLIVIOUS_SECRET_KEY_PARAM (the channel-key secret)")?;
    let sealer = Sealer::from_base64(&secret).map_err(|e| e.to_string())?;
    let config = config::parse("config", config_text.as_deref().unwrap_or(""), |k| std::env::var(k).ok())
        .map_err(|e| e.to_string())?;
    let redis_url = redis_url
        .or_else(|| config.hot.redis_url.clone())
        .ok_or("set OBLIVIOUS_REDIS_URL or OBLIVIOUS_REDIS_URL_PARAM (hot state)")?;
    let tasks = TrackedTasks::default();
    let ports = Ports {
        store: DynamoStore::new(aws.clone(), s.table_prefix.clone(), sealer),
        hot: RedisHot::connect(&redis_url, &s.hot_prefix).await.map_err(|e| format!("hot state: {e}"))?,
        queue: SqsQueue::new(aws.clone(), s.usage_queue_url.clone()),
        // One connection pool for AWS and the providers.
        upstream: aws.upstream().clone(),
        clock: SystemClock,
        ids: RandomIds,
        tasks: tasks.clone(),
        // `[mail]` of the config: SMTP, an HTTP mail API, or off.
        mailer: AnyMailer::from_settings(&config.mail, aws.upstream().clone())?,
    };
    let relay = Relay::new_shared(ports, config.relay.clone()).await.map_err(|e| format!("store: {e}"))?;
    relay.set_rate_limits(config.rate_limits.clone());
    let init_ms = started.elapsed().as_millis();
    tracing::info!(init_ms, "cold start done");
    Ok(Init { relay, config, tasks, init_ms })
}
