//! What a function reads from its environment at cold start. Terraform sets
//! these (`terraform/lambda.tf`); secrets come from SSM Parameter Store by name.

/// Environment variable names.
pub const TABLE_PREFIX: &str = "OBLIVIOUS_TABLE_PREFIX";
pub const USAGE_QUEUE_URL: &str = "OBLIVIOUS_USAGE_QUEUE_URL";
pub const REDIS_URL: &str = "OBLIVIOUS_REDIS_URL";
pub const REDIS_URL_PARAM: &str = "OBLIVIOUS_REDIS_URL_PARAM";
pub const SECRET_KEY_PARAM: &str = "OBLIVIOUS_SECRET_KEY_PARAM";
pub const CONFIG_TOML: &str = "OBLIVIOUS_CONFIG_TOML";
pub const CONFIG_PARAM: &str = "OBLIVIOUS_CONFIG_PARAM";
pub const HOT_PREFIX: &str = "OBLIVIOUS_HOT_PREFIX";
/// `0` (or `false`, `off`, `no`) turns the EMF metric lines off (on by default; see [`crate::emf`]).
pub const EMF: &str = "OBLIVIOUS_EMF";
/// The CloudWatch namespace of those metrics (default `Oblivious`).
pub const EMF_NAMESPACE: &str = "OBLIVIOUS_EMF_NAMESPACE";
/// Set by Lambda itself (`AWS_DEFAULT_REGION` is the older name the CLI also reads).
pub const AWS_REGION: &str = "AWS_REGION";
pub const AWS_DEFAULT_REGION: &str = "AWS_DEFAULT_REGION";
/// Every AWS call goes here instead (an emulator), as the AWS SDKs and CLI read it.
pub const AWS_ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";

/// What a deployment sets on every function (`terraform/lambda.tf`; a test
/// checks it does). Secrets are named by parameter, never given as values.
pub const DEPLOYED: &[&str] =
    &[TABLE_PREFIX, USAGE_QUEUE_URL, REDIS_URL_PARAM, SECRET_KEY_PARAM, CONFIG_PARAM, HOT_PREFIX];

/// A function's settings, read once.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Tables are `{prefix}users`, `{prefix}tokens`, …
    pub table_prefix: String,
    pub usage_queue_url: String,
    /// Redis URL (`redis://` or `rediss://`), or the SSM parameter holding it.
    pub redis_url: Option<String>,
    pub redis_url_param: Option<String>,
    pub hot_prefix: String,
    /// The channel-key sealing secret: `OBLIVIOUS_SECRET_KEY` itself, or the SSM parameter holding it.
    pub secret_key: Option<String>,
    pub secret_key_param: Option<String>,
    /// The TOML config (relay settings, rate limits, alerts; and channels,
    /// groups, prices that the admin function syncs), or the SSM parameter holding it.
    pub config_toml: Option<String>,
    pub config_param: Option<String>,
    /// The region of DynamoDB and SQS.
    pub aws_region: Option<String>,
    /// One endpoint for every AWS service (an emulator), else the regional ones.
    pub aws_endpoint: Option<String>,
}

impl Settings {
    pub fn from_env() -> Settings {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Settings {
        Settings {
            table_prefix: get(TABLE_PREFIX).unwrap_or_else(|| "oblivious-".into()),
            usage_queue_url: get(USAGE_QUEUE_URL).unwrap_or_default(),
            redis_url: get(REDIS_URL),
            redis_url_param: get(REDIS_URL_PARAM),
            hot_prefix: get(HOT_PREFIX).unwrap_or_else(|| "obl:".into()),
            secret_key: get(oblivious_ports::SECRET_ENV),
            secret_key_param: get(SECRET_KEY_PARAM),
            config_toml: get(CONFIG_TOML),
            config_param: get(CONFIG_PARAM),
            aws_region: get(AWS_REGION).or_else(|| get(AWS_DEFAULT_REGION)),
            aws_endpoint: get(AWS_ENDPOINT_URL),
        }
    }
}
