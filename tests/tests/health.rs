#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The local gateway's scheduled health check (`[relay] health_check_seconds`):
//! the same pass the AWS health function runs, disabling a channel whose
//! probes keep failing within the window and reviving it when they pass.

use std::time::{Duration, Instant};

use oblivious_e2e::gateway::config;
use oblivious_e2e::mock::Behavior;
use oblivious_e2e::{Gateway, Mock};
use serde_json::Value;

async fn status(gw: &Gateway) -> (String, String) {
    let ch: Value = gw.get_json("/api/admin/channels/1", &gw.admin_key).await;
    (ch["status"].as_str().unwrap().to_string(), ch["status_reason"].as_str().unwrap_or("").to_string())
}

async fn wait_for(gw: &Gateway, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, reason) = status(gw).await;
        if s == want {
            return reason;
        }
        assert!(Instant::now() < deadline, "channel stayed {s} ({reason}), wanted {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_disable_a_failing_channel_and_revive_it() {
    let up = Mock::start("up").await;
    up.set(Behavior::Fail(500));
    let extra = "[relay]\nhealth_check_seconds = 1\nhealth_window_seconds = 60\nchannel_failure_threshold = 2\n";
    let gw = Gateway::start(&config(&[("up", &up.base_url(), "keys = [\"k\"]\nmodels = [\"gpt-4o-mini\"]")], extra));
    let reason = wait_for(&gw, "auto_disabled").await;
    assert!(reason.contains("health check failed 2 times within 60s"), "{reason}");
    assert!(up.calls() >= 2);
    up.set(Behavior::Ok);
    wait_for(&gw, "enabled").await;
}
