//! The `gatehouse` binary: command line, configuration and wiring.

mod cli;
mod commands;
mod config;
mod context;
mod output;
mod policy_file;
mod runtime;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};
use crate::context::Context;

const QUIET_SDK: &str = "rmcp=warn";

fn init_logging() {
    // Logs go to stderr: stdout carries command output and, for `stdio`, the protocol.
    let mut filter =
        EnvFilter::try_from_env("GATEHOUSE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // The MCP SDK logs whole messages (tool arguments, request headers) at
    // debug level. Those can hold secrets, so it never logs below warn.
    if let Ok(directive) = QUIET_SDK.parse() {
        filter = filter.add_directive(directive);
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Context::load(&cli.global)?;
    match cli.command {
        Command::Serve(args) => commands::serve::run(&ctx, &args).await,
        Command::Stdio => commands::stdio::run(&ctx).await,
        Command::Keys(command) => commands::keys::run(&ctx, command).await,
        Command::Clients(command) => commands::clients::run(&ctx, command).await,
        Command::Audit(command) => commands::audit::run(&ctx, command).await,
        Command::Secrets(command) => commands::secrets::run(&ctx, command).await,
        Command::Users(command) => commands::users::run(&ctx, command).await,
        Command::Policy(command) => commands::policy::run(&ctx, command).await,
        Command::Approvals(command) => commands::approvals::run(&ctx, command).await,
        Command::Grants(command) => commands::grants::run(&ctx, command).await,
        Command::CheckConfig(flag) => {
            commands::check_config::run(&ctx, &flag);
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
