//! The `gatehouse` binary: command line, configuration and wiring.

mod alerts_config;
mod cli;
mod commands;
mod config;
mod context;
mod file_watch;
mod lifecycle;
mod output;
mod policy_file;
mod process_hardening;
mod runtime;
mod secret_sealing;
mod telemetry;
mod upstream_secrets;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use opentelemetry_sdk::trace::SdkTracer;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::cli::{Cli, Command, LogFormat};
use crate::context::Context;

/// The MCP SDK logs whole messages (tool arguments, request headers) at
/// debug level, which can hold secrets, so it never logs below warn. Its
/// service loop also logs every JSON-RPC error response at warn, with a
/// `Debug` dump: a refused call is an audit record, not a warning, so that
/// module logs errors only.
const QUIET_SDK: [&str; 2] = ["rmcp=warn", "rmcp::service=error"];

/// `tracer`: spans are exported too (`[traces]`).
fn init_logging(format: LogFormat, tracer: Option<SdkTracer>) {
    // Logs go to stderr: stdout carries command output and, for `stdio`, the protocol.
    let mut filter =
        EnvFilter::try_from_env("GATEHOUSE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    for directive in QUIET_SDK {
        if let Ok(directive) = directive.parse() {
            filter = filter.add_directive(directive);
        }
    }
    // The filter applies to both: no span below its level is exported.
    let base = tracing_subscriber::registry()
        .with(filter)
        .with(tracer.map(|tracer| tracing_opentelemetry::layer().with_tracer(tracer)));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        // Colour codes only for a person at a terminal, never into files and pipes.
        LogFormat::Text => base
            .with(logs.with_ansi(std::io::stderr().is_terminal()))
            .init(),
        // The fields of the enclosing spans (the request's `request_id`)
        // go into every line, flattened, so a collector can index them.
        LogFormat::Json => base
            .with(
                logs.json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(true),
            )
            .init(),
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let ctx = Context::load(&cli.global)?;
    telemetry::install_propagator();
    // Spans are exported by the servers only, never by a CLI command.
    let telemetry = match cli.command {
        Command::Serve(_) | Command::Stdio => telemetry::start(&ctx.config.traces)?,
        _ => None,
    };
    let (telemetry, tracer) = telemetry.unzip();
    init_logging(cli.global.log_format, tracer);
    let done = run_command(&ctx, cli.command).await;
    if let Some(telemetry) = telemetry {
        telemetry.shutdown().await;
    }
    done
}

async fn run_command(ctx: &Context, command: Command) -> anyhow::Result<ExitCode> {
    let done = match command {
        Command::Serve(args) => commands::serve::run(ctx, &args).await,
        Command::Stdio => commands::stdio::run(ctx).await,
        Command::Keys(command) => commands::keys::run(ctx, command).await,
        Command::Clients(command) => commands::clients::run(ctx, command).await,
        Command::Audit(command) => commands::audit::run(ctx, command).await,
        Command::Secrets(command) => commands::secrets::run(ctx, command).await,
        Command::Users(command) => commands::users::run(ctx, command).await,
        // The one command whose exit status carries its answer.
        Command::Policy(command) => return commands::policy::run(ctx, command).await,
        Command::Approvals(command) => commands::approvals::run(ctx, command).await,
        Command::Grants(command) => commands::grants::run(ctx, command).await,
        Command::Upstreams(command) => commands::upstreams::run(ctx, command).await,
        Command::Lifecycle(command) => commands::lifecycle::run(ctx, command).await,
        Command::Alerts(command) => commands::alerts::run(ctx, command).await,
        Command::CheckConfig(flag) => commands::check_config::run(ctx, &flag),
    };
    done.map(|()| ExitCode::SUCCESS)
}

// The request path allocates and frees many small objects on every call
// (futures, JSON values, header maps); mimalloc serves them with a fraction
// of glibc malloc's cost (measured in bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // Before anything reads a secret or starts a child.
    if let Err(error) = process_hardening::keep_memory_private() {
        output::error(&format!(
            "cannot keep this process's memory private from other processes of its user: {error}"
        ));
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            // A command's failure is output for the person who ran it, not a log line.
            output::error(&output::error_message(&error));
            ExitCode::FAILURE
        }
    }
}
