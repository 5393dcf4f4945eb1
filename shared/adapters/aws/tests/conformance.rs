//! The store conformance suite over DynamoDB (the moto emulator that `.ci/run`
//! starts; `OBLIVIOUS_TEST_AWS` names its endpoint): each case on its own set
//! of tables, through the same signed-HTTP client the shells use.

use std::sync::atomic::{AtomicU32, Ordering};

use oblivious_aws::{AwsClient, DynamoStore};
use oblivious_native::{HttpUpstream, SystemClock};
use oblivious_ports::Sealer;

static NEXT: AtomicU32 = AtomicU32::new(0);

pub fn endpoint() -> String {
    std::env::var("OBLIVIOUS_TEST_AWS").unwrap_or_else(|_| "http://127.0.0.1:5400".into())
}

async fn fresh() -> DynamoStore<HttpUpstream, SystemClock> {
    let client = AwsClient::emulator(HttpUpstream::new().expect("http client"), SystemClock, endpoint());
    let prefix = format!("conf{}-{}-", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let store = DynamoStore::new(client, prefix, Sealer::new(&[7; 32]));
    store.create_tables().await.expect("create tables (is the emulator running? see .ci/run)");
    store
}

oblivious_ports::store_conformance!(fresh().await);
