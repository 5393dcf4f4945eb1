//! `oblivious`: the local gateway (`serve`) and the CLI that manages it. The
//! CLI works on the same data directory as a running server; the server sees
//! the changes within half a second.

mod backup;
mod cli;
mod config;
mod platform;
mod secret;
mod serve;
mod server;
mod telemetry;
mod users;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// jemalloc's background thread returns freed memory to the system about a
/// second after a burst (`.cargo/config.toml`); glibc's allocator and mimalloc
/// (which purges only on later allocations) left hundreds of MiB resident.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "oblivious", version, about = "Oblivious AI gateway")]
struct Cli {
    /// Data directory holding the SQLite database.
    #[arg(long, global = true, env = "OBLIVIOUS_DATA", default_value = "./data")]
    data: PathBuf,
    /// Log lines as text or as JSON objects (one per line); `OBLIVIOUS_LOG` filters them.
    #[arg(long, global = true, env = "OBLIVIOUS_LOG_FORMAT", value_enum, default_value_t)]
    log_format: telemetry::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(serve::ServeArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Token(cli::TokenCmd),
    /// Manage channels.
    #[command(subcommand)]
    Channel(cli::ChannelCmd),
    /// Manage users and their balances.
    #[command(subcommand)]
    User(users::UserCmd),
    /// Redemption codes.
    #[command(subcommand)]
    Code(cli::CodeCmd),
    /// Back up the database and its secret into a directory, while the gateway serves.
    Backup(backup::BackupArgs),
    /// Restore a backup into the data directory (refused while the gateway runs on it).
    Restore(backup::RestoreArgs),
    /// The secret that encrypts channel keys.
    #[command(subcommand)]
    Secret(secret::SecretCmd),
}

fn main() -> ExitCode {
    let args = Cli::parse();
    // `serve` reads its config first: it says where traces go.
    let loaded = match &args.command {
        Command::Serve(a) => match serve::load(a) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let tracing = loaded.as_ref().and_then(|l| l.config.as_ref()).map(|c| &c.tracing);
    let telemetry = match telemetry::init(args.log_format, tracing) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // SQLite work runs on blocking threads; a bounded pool keeps memory flat under load.
    let runtime = match tokio::runtime::Builder::new_multi_thread().max_blocking_threads(16).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match args.command {
            Command::Serve(a) => serve::run(&args.data, a, loaded.unwrap_or_default()).await,
            Command::Token(c) => cli::token(&args.data, c).await,
            Command::Channel(c) => cli::channel(&args.data, c).await,
            Command::User(c) => users::run(&args.data, c).await,
            Command::Code(c) => cli::code(&args.data, c).await,
            Command::Backup(a) => backup::backup(&args.data, a).await,
            Command::Restore(a) => backup::restore(&args.data, a).await,
            Command::Secret(c) => secret::secret(&args.data, c).await,
        }
    });
    drop(runtime);
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
