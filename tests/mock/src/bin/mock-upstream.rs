#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Runs the mock OpenAI upstream on 127.0.0.1 (for trying the gateway by hand
//! and for benchmarks): `mock-upstream [PORT]`.

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(9100);
    let mock = oblivious_mock::Mock::start_on("mock", port).await;
    println!("mock upstream on {}", mock.base_url());
    let _ = tokio::signal::ctrl_c().await;
}
