//! `setup`: run once by an operator (not a Lambda), with the deployment's environment
//! and AWS credentials in the standard variables (`AWS_ACCESS_KEY_ID`, …,
//! `AWS_REGION`; a profile's with `eval "$(aws configure export-credentials
//! --format env)"`): creates the tables when asked (`--create-tables`, for an
//! emulator; Terraform creates them on AWS), the `default` group and the
//! `admin` user, and prints a new admin API key once.

use oblivious_lambda::platform::aws_client;
use oblivious_lambda::{init, Settings};

#[tokio::main]
async fn main() -> Result<(), String> {
    let settings = Settings::from_env();
    if std::env::args().any(|a| a == "--create-tables") {
        let sealer = oblivious_ports::Sealer::new(&[0; 32]);
        let store = oblivious_aws::DynamoStore::new(aws_client(&settings)?, &settings.table_prefix, sealer);
        store.create_tables().await.map_err(|e| e.to_string())?;
    }
    let init = init(&settings).await?;
    let ports = &init.relay.ports;
    let admin = oblivious_admin::bootstrap::ensure_basics(ports).await?;
    let req = oblivious_admin::CreateToken { name: "admin (setup)".into(), ..Default::default() };
    let (_, key) = oblivious_admin::create_token(&ports.store, &ports.ids, &ports.clock, req, admin.id)
        .await
        .map_err(|e| e.message)?;
    println!("Admin API key (shown once, keep it): {key}");
    Ok(())
}
