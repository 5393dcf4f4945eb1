//! SQLite adapters for the local runtime: the durable [`Store`](oblivious_ports::Store)
//! and an outbox-backed [`Queue`](oblivious_ports::Queue). WAL mode lets the CLI
//! and a running server share one database file.

mod accounts;
mod analytics;
pub mod backup;
mod db;
mod ledger;
pub mod lock;
mod queue;
pub mod rotate;
mod rows;
pub mod seal;
mod store;

pub use db::Db;
pub use oblivious_ports::{Sealer, SECRET_ENV};
pub use queue::{OutboxJob, SqliteQueue};
pub use seal::{existing_sealer, sealer_for_dir};
pub use store::SqliteStore;
