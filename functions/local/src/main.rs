//! `oblivious`: the local gateway (`serve`) and the CLI that manages it. The
//! CLI works on the same data directory as a running server; the server sees
//! the changes within half a second.

mod cli;
mod config;
mod platform;
mod serve;
mod server;

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
    User(cli::UserCmd),
    /// Redemption codes.
    #[command(subcommand)]
    Code(cli::CodeCmd),
}

fn main() -> ExitCode {
    let args = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OBLIVIOUS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
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
            Command::Serve(a) => serve::run(&args.data, a).await,
            Command::Token(c) => cli::token(&args.data, c).await,
            Command::Channel(c) => cli::channel(&args.data, c).await,
            Command::User(c) => cli::user(&args.data, c).await,
            Command::Code(c) => cli::code(&args.data, c).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
