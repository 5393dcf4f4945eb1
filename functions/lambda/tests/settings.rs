//! Reading a function's settings from its environment. (Being an integration
//! test also makes `cargo test` build this package's binaries, which the
//! end-to-end tests run under a Lambda runtime API.)

use oblivious_lambda::env::{self, Settings};

#[test]
fn settings_come_from_the_environment_with_defaults() {
    let none = Settings::from_lookup(|_| None);
    assert_eq!((none.table_prefix.as_str(), none.hot_prefix.as_str()), ("oblivious-", "obl:"));
    assert_eq!((none.redis_url, none.secret_key, none.config_toml), (None, None, None));
    let vars = [
        (env::TABLE_PREFIX, "prod-"),
        (env::USAGE_QUEUE_URL, "https://sqs.eu-west-1.amazonaws.com/1/usage"),
        (env::REDIS_URL_PARAM, "/oblivious/redis-url"),
        (env::SECRET_KEY_PARAM, "/oblivious/secret-key"),
        (env::CONFIG_PARAM, "/oblivious/config"),
    ];
    let s = Settings::from_lookup(|k| vars.iter().find(|(name, _)| *name == k).map(|(_, v)| v.to_string()));
    assert_eq!(s.table_prefix, "prod-");
    assert_eq!(s.usage_queue_url, "https://sqs.eu-west-1.amazonaws.com/1/usage");
    assert_eq!(s.redis_url_param.as_deref(), Some("/oblivious/redis-url"));
    assert_eq!(s.secret_key_param.as_deref(), Some("/oblivious/secret-key"));
    assert_eq!(s.config_param.as_deref(), Some("/oblivious/config"));
}

#[test]
fn emf_metrics_are_on_unless_turned_off() {
    use oblivious_lambda::emf::namespace;
    let given = |vars: Vec<(&'static str, &'static str)>| {
        move |k: &str| vars.iter().find(|(name, _)| *name == k).map(|(_, v)| v.to_string())
    };
    assert_eq!(namespace(given(vec![])).as_deref(), Some("Oblivious"));
    assert_eq!(namespace(given(vec![(env::EMF_NAMESPACE, "Gateway/Prod")])).as_deref(), Some("Gateway/Prod"));
    assert_eq!(namespace(given(vec![(env::EMF, "1")])).as_deref(), Some("Oblivious"));
    for off in ["0", "false", "OFF", "no"] {
        assert_eq!(namespace(given(vec![(env::EMF, off), (env::EMF_NAMESPACE, "X")])), None, "{off}");
    }
}
